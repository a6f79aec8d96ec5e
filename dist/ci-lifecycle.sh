#!/usr/bin/env bash
# CI for the installed package's whole life, without systemd as PID 1: the
# commands of the *installed* unit (ExecStartPre, ExecStart, ExecReload,
# ExecStop, ExecStopPost, with its Environment= and EnvironmentFile=, read
# from the unit file, never copied here) are run as systemd would run them,
# inside a private gateway network namespace between a client and a server
# namespace (RFC 5737 addresses only), with NOTIFY_SOCKET served by a small
# listener. Checked, each step timed:
#
#   start     READY=1 only with the NFQUEUE rules in; the instance shows in
#             `appwall status` (and --json)
#   traffic   MSNP from the listed client is blocked (an event is written),
#             an HTTP request passes
#   metrics   --metrics-listen (added through /etc/default/appwall, as an
#             admin would) answers a scrape
#   reload    ExecReload: READY=1 again; a broken hosts file fails ExecReload
#             before any signal and the running policy stays
#   rotation  the installed logrotate snippet (logrotate -f, own state file;
#             its `systemctl kill` reaches the daemon through a shim): the
#             next event lands in the new file
#   watchdog  WATCHDOG=1 pings arrive (WATCHDOG_USEC shortened to 2 s)
#   stop      KillSignal: STOPPING=1, exit 0, no rule left
#
# Needs root, the package installed, iptables, ipset, curl, python3,
# logrotate. Called by dist/ci-package.sh; on its own:
#
#   dist/ci-lifecycle.sh
#
# /etc/appwall/hosts and /etc/default/appwall are replaced for the run and
# put back on exit; namespaces and processes are removed on every exit path.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "ci-lifecycle: needs root" >&2; exit 1; }
unit=${APPWALL_UNIT:-/usr/lib/systemd/system/appwall.service}
[ -f "$unit" ] || { echo "ci-lifecycle: no unit at $unit (is the package installed?)" >&2; exit 1; }

t0=$(date +%s%N)
step() { echo "== ci-lifecycle: $* ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"; }
fail() {
  echo "ci-lifecycle: FAILED: $*" >&2
  [ -f "${tmp:-/nonexistent}/daemon.log" ] && { echo "--- daemon log" >&2; tail -n 40 "$tmp/daemon.log" >&2; }
  [ -f "${tmp:-/nonexistent}/notify.lines" ] && { echo "--- notifications" >&2; cat "$tmp/notify.lines" >&2; }
  [ -f "${tmp:-/nonexistent}/commands.log" ] && { echo "--- unit commands" >&2; tail -n 20 "$tmp/commands.log" >&2; }
  exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/appwall-lifecycle.XXXXXX")
chmod 755 "$tmp"
tag="awl$$"
ns_c="$tag-client" ns_g="$tag-gw" ns_s="$tag-server"
pids=()
main_pid=""
hosts=/etc/appwall/hosts
defaults=/etc/default/appwall
created_run=""
run_dirs=()

cleanup() {
  local rc=$?
  set +e
  if [ -n "$main_pid" ] && kill -0 "$main_pid" 2>/dev/null; then
    kill -TERM "$main_pid"
    for _ in $(seq 50); do kill -0 "$main_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$main_pid" 2>/dev/null
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "$ns_c" "$ns_g" "$ns_s"; do ip netns del "$ns" 2>/dev/null; done
  for f in "$hosts" "$defaults"; do
    if [ -e "$tmp/saved$(basename "$f")" ]; then
      cp -p "$tmp/saved$(basename "$f")" "$f"
    elif [ -e "$tmp/absent$(basename "$f")" ]; then
      rm -f "$f"
    fi
  done
  # RuntimeDirectory= goes with the service: what this run added to it.
  [ -n "$created_run" ] && rm -rf "$created_run"
  for d in "${run_dirs[@]}"; do
    comm -13 "$tmp/run-before$(basename "$d")" <(ls -A "$d" 2>/dev/null | sort) 2>/dev/null \
      | while read -r f; do [ -n "$f" ] && rm -rf "${d:?}/$f"; done
  done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the unit, as systemd reads it -----------------------------------------
# unit.py KEY: values of [Service] KEY, one per line.
# unit.py cmds KIND: each command of KIND (ExecStart, ExecReload, ...) with
#   the environment expanded as systemd does ($VAR split into words, ${VAR}
#   one word; $MAINPID from the environment), as "FLAGS<TAB>shell words".
# unit.py env: the service's environment (Environment= then
#   EnvironmentFile=, later wins), shell-quoted KEY=VALUE words.
cat >"$tmp/unit.py" <<'PY'
import os, re, shlex, sys

unit, what = sys.argv[1], sys.argv[2:]
service, section, cur = [], None, ""
for raw in open(unit, encoding="utf-8"):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip()[:1] in "#;"):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    line, cur = cur + line, ""
    line = line.strip()
    if line.startswith("["):
        section = line
    elif section == "[Service]" and "=" in line:
        k, v = line.split("=", 1)
        service.append((k.strip(), v.strip()))

def values(key):
    return [v for k, v in service if k == key]

def environment():
    env = {}
    for v in values("Environment"):
        for word in shlex.split(v):
            k, _, val = word.partition("=")
            env[k] = val
    for v in values("EnvironmentFile"):
        optional = v.startswith("-")
        path = v[1:] if optional else v
        if not os.path.exists(path):
            if optional:
                continue
            sys.exit(f"EnvironmentFile {path} is missing")
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            k, _, val = line.partition("=")
            words = shlex.split(val, comments=False) or [""]
            env[k.strip()] = " ".join(words)
    return env

def expand(cmdline, env):
    env = dict(env, MAINPID=os.environ.get("MAINPID", ""))
    out = []
    for word in shlex.split(cmdline):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            out.extend(env.get(m.group(1), "").split())
            continue
        out.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return out

if what[0] == "cmds":
    env = environment()
    for v in values(what[1]):
        words = expand(v, env)
        first = words[0]
        flags = re.match(r"[-@:+!]*", first).group(0)
        words[0] = first[len(flags):]
        if "@" in flags:
            words.pop(1)  # @: the second word is argv[0]
        print(f"{flags or '.'}\t{shlex.join(words)}")
elif what[0] == "env":
    print(" ".join(shlex.quote(f"{k}={v}") for k, v in environment().items()))
else:
    for v in values(what[0]):
        print(v)
PY
unit_py() { MAINPID="$main_pid" python3 "$tmp/unit.py" "$unit" "$@"; }
one() { unit_py "$1" | tail -n 1; }

# Runs every command of KIND in the gateway namespace with the service's
# environment, in order, each bounded by `timeout`; a failing one without
# the `-` prefix fails the lot (systemd's rule). Returns its status.
run_kind() {
  local kind=$1 flags words envw
  envw=$(unit_py env)
  while IFS=$'\t' read -r flags words; do
    eval "local argv=($words)"
    echo "   $kind: ${argv[*]}"
    if ! eval "timeout 20 ip netns exec $ns_g env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin $envw \"\${argv[@]}\"" \
      >>"$tmp/commands.log" 2>&1; then
      [[ $flags == *-* ]] && continue
      return 1
    fi
  done < <(unit_py cmds "$kind")
}

# Waits (up to $3 s, default 15) until the listener has logged $2 messages
# holding the line $1.
wait_notify() {
  local want=$1 n=${2:-1} limit=${3:-15} i
  for ((i = 0; i < limit * 20; i++)); do
    [ "$(grep -c -x -- "$want" "$tmp/notify.lines" 2>/dev/null || true)" -ge "$n" ] && return 0
    sleep 0.05
  done
  fail "no $n x $want from the daemon within ${limit}s"
}

in_gw() { timeout 10 ip netns exec "$ns_g" "$@"; }
# grep -c reads to the end: with pipefail, grep -q would stop early and let
# iptables-save die of SIGPIPE once its output outgrows one write.
rules_in() { in_gw iptables-save | grep -c -- "-j NFQUEUE" >/dev/null; }
appwall_rules() { { in_gw iptables-save; in_gw ip6tables-save; in_gw ipset list -n; } 2>/dev/null | grep -ci appwall || true; }
status_json() { in_gw /usr/bin/appwall status --json; }
json() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(json.dumps(v) if not isinstance(v,str) else v)' "$1"; }

# MSNP from the listed client: "blocked" when the server's answer never
# comes (reset or silence), "passed" when it does.
msnp_attempt() {
  timeout 10 ip netns exec "$ns_c" python3 - <<'PY'
import socket
s = socket.create_connection(("198.51.100.10", 80), timeout=3)
try:
    s.sendall(b"VER 1 MSNP8 CVR0\r\n")
    print("passed" if s.recv(100) else "blocked")
except OSError:
    print("blocked")
PY
}

step "unit $unit"
exec_start=$(unit_py cmds ExecStart)
[ "$(wc -l <<<"$exec_start")" -eq 1 ] || fail "ExecStart must be one command: $exec_start"
[ "$(one Type)" = notify ] || fail "the unit is not Type=notify"
[ "$(one NotifyAccess)" = main ] || fail "NotifyAccess is not main"
wd=$(one WatchdogSec)
[ -n "$wd" ] || fail "no WatchdogSec"
kill_signal=$(one KillSignal); kill_signal=${kill_signal:-SIGTERM}
stop_timeout=$(one TimeoutStopSec); stop_timeout=${stop_timeout%s}; stop_timeout=${stop_timeout:-90}
echo "   ExecStart: $(cut -f2 <<<"$exec_start"); WatchdogSec=$wd KillSignal=$kill_signal"

step "configuration: hosts and /etc/default/appwall"
for f in "$hosts" "$defaults"; do
  if [ -e "$f" ]; then cp -p "$f" "$tmp/saved$(basename "$f")"; else touch "$tmp/absent$(basename "$f")"; fi
done
echo "192.0.2.10 msn" >"$hosts"
# The unit's own options plus a scrape endpoint, the way the defaults file
# says to change them.
unit_options=$(unit_py Environment | python3 -c '
import shlex, sys
for line in sys.stdin:
    for w in shlex.split(line):
        if w.startswith("APPWALL_OPTIONS="):
            print(w.split("=", 1)[1])')
printf 'APPWALL_OPTIONS="%s --metrics-listen 127.0.0.1:9474"\n' "$unit_options" >"$defaults"
grep -q -- "--events /var/log/appwall/events.jsonl" "$defaults" || fail "the unit's APPWALL_OPTIONS write no event log: $unit_options"
events=/var/log/appwall/events.jsonl

step "namespaces $ns_c, $ns_g, $ns_s"
for ns in "$ns_c" "$ns_g" "$ns_s"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip link add c0 netns "$ns_c" type veth peer name gc netns "$ns_g"
ip link add s0 netns "$ns_s" type veth peer name gs netns "$ns_g"
ip -n "$ns_c" addr add 192.0.2.10/24 dev c0
ip -n "$ns_g" addr add 192.0.2.1/24 dev gc
ip -n "$ns_g" addr add 198.51.100.1/24 dev gs
ip -n "$ns_s" addr add 198.51.100.10/24 dev s0
for l in "$ns_c c0" "$ns_g gc" "$ns_g gs" "$ns_s s0"; do ip -n ${l% *} link set ${l#* } up; done
ip -n "$ns_c" route add default via 192.0.2.1
ip -n "$ns_s" route add default via 198.51.100.1
ip netns exec "$ns_g" sysctl -qw net.ipv4.ip_forward=1
mkdir -p "$tmp/www"
echo "hello from the server" >"$tmp/www/index.html"
ip netns exec "$ns_s" python3 -m http.server 80 --bind 198.51.100.10 --directory "$tmp/www" \
  >"$tmp/server.log" 2>&1 &
pids+=($!)

# systemd's directories for the unit.
for d in $(one RuntimeDirectory); do
  [ -d "/run/$d" ] || created_run="/run/$d"
  mkdir -p "/run/$d"
  ls -A "/run/$d" | sort >"$tmp/run-before$d"
  run_dirs+=("/run/$d")
done
for d in $(one LogsDirectory); do mkdir -p "/var/log/$d"; done
for d in $(one StateDirectory); do mkdir -p "/var/lib/$d"; done
rm -f "$events"

step "notification listener"
cat >"$tmp/listen.py" <<'PY'
import os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    while True:
        msg = s.recv(4096).decode(errors="replace")
        for line in msg.splitlines():
            f.write(line + "\n")
PY
python3 "$tmp/listen.py" "$tmp/notify.sock" "$tmp/notify.lines" &
pids+=($!)
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.05; done
[ -S "$tmp/notify.sock" ] || fail "the listener did not bind"
touch "$tmp/notify.lines"

step "start: ExecStartPre, ExecStart"
run_kind ExecStartPre || fail "ExecStartPre failed"
# Expanded now: /etc/default/appwall has changed since the first look.
exec_start=$(unit_py cmds ExecStart)
echo "   ExecStart: $(cut -f2 <<<"$exec_start")"
IFS=$'\t' read -r _ start_words <<<"$exec_start"
eval "start_argv=($start_words)"
envw=$(unit_py env)
# As systemd does: a clean environment, the unit's, NOTIFY_SOCKET and the
# watchdog (2 s here instead of WatchdogSec=$wd, so pings show in the run).
# `exec`: the background job's pid is the daemon's ($MAINPID).
eval "exec ip netns exec $ns_g env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  NOTIFY_SOCKET=$tmp/notify.sock WATCHDOG_USEC=2000000 $envw \"\${start_argv[@]}\"" \
  >"$tmp/daemon.log" 2>&1 &
main_pid=$!
wait_notify READY=1 1 30
rules_in || fail "READY=1 without the NFQUEUE rules"
grep -q "rules installed" "$tmp/daemon.log" || fail "READY=1 before the daemon logged its rules installed"
grep -q "^STATUS=filtering" "$tmp/notify.lines" || fail "no STATUS with READY"
grep -q "^WATCHDOG=1" "$tmp/notify.lines" && fail "a watchdog ping before READY"
echo "   READY=1 from pid $main_pid; rules installed"

step "appwall status, --json"
in_gw /usr/bin/appwall status >"$tmp/status.txt" || fail "appwall status: $(cat "$tmp/status.txt")"
sed 's/^/   /' "$tmp/status.txt" | head -n 4
[ "$(status_json | json running)" = true ] || fail "status --json: not running"
[ "$(status_json | json pid)" = "$main_pid" ] || fail "status --json names another pid"

step "traffic through the gateway"
[ "$(msnp_attempt)" = blocked ] || fail "MSNP from the listed client passed"
timeout 10 ip netns exec "$ns_c" curl -sf --max-time 5 http://198.51.100.10/ | grep -q "hello from the server" \
  || fail "an ordinary HTTP request did not pass"
for _ in $(seq 40); do [ -s "$events" ] && break; sleep 0.05; done
grep -q '"app_proto":"msn"' "$events" || fail "no msn event in $events"
echo "   MSNP blocked (event written), HTTP passed"

step "metrics scrape"
in_gw curl -sf --max-time 5 http://127.0.0.1:9474/metrics >"$tmp/metrics.txt" || fail "no answer from --metrics-listen"
grep -q "^appwall_" "$tmp/metrics.txt" && tail -n 1 "$tmp/metrics.txt" | grep -q "^# EOF" \
  || fail "not OpenMetrics: $(head -n 3 "$tmp/metrics.txt")"
echo "   $(grep -c '^appwall_' "$tmp/metrics.txt") series"

step "reload: ExecReload"
printf '192.0.2.10 msn\n203.0.113.0/24 msn\n' >"$hosts"
run_kind ExecReload || fail "ExecReload failed on a good hosts file"
wait_notify RELOADING=1 1
wait_notify READY=1 2
grep -q "^MONOTONIC_USEC=" "$tmp/notify.lines" || fail "RELOADING=1 without MONOTONIC_USEC"
grep -q -x "STATUS=filtering on queues .*; policy reloaded" "$tmp/notify.lines" \
  || fail "READY=1 after the reload does not say it was taken"
echo "   RELOADING=1 (MONOTONIC_USEC), READY=1: policy reloaded"

step "reload with a broken hosts file"
echo "192.0.2.10 -j ACCEPT" >"$hosts"
if run_kind ExecReload; then fail "ExecReload took a broken hosts file"; fi
sleep 0.3
[ "$(grep -c -x RELOADING=1 "$tmp/notify.lines")" -eq 1 ] || fail "a signal reached the daemon"
grep -q "reload refused" "$tmp/daemon.log" && fail "the daemon saw the broken file"
rules_in || fail "the rules are gone"
[ "$(msnp_attempt)" = blocked ] || fail "the running policy did not stay"
printf '192.0.2.10 msn\n203.0.113.0/24 msn\n' >"$hosts"
echo "   refused before any signal; MSNP still blocked"

step "log rotation: installed logrotate snippet"
# Its postrotate asks systemd to send SIGUSR1 to the main process; without
# systemd, a shim on PATH does exactly that (and accepts nothing else).
mkdir -p "$tmp/shim"
cat >"$tmp/shim/systemctl" <<EOF
#!/bin/sh
[ "\$*" = "kill --kill-whom=main -s USR1 appwall.service" ] || { echo "unexpected: systemctl \$*" >&2; exit 1; }
echo "systemctl \$*" >>"$tmp/shim.log"
exec kill -USR1 $main_pid
EOF
chmod 755 "$tmp/shim/systemctl"
before=$(wc -l <"$events")
reopened() { grep -c "event log .* reopened" "$tmp/daemon.log" || true; }
reopens=$(reopened)
PATH="$tmp/shim:$PATH" timeout 20 logrotate -f -s "$tmp/logrotate.state" /etc/logrotate.d/appwall \
  || fail "logrotate failed"
[ -s "$tmp/shim.log" ] || fail "logrotate's postrotate did not signal the daemon"
[ -f "$events.1" ] || fail "no rotated $events.1"
for _ in $(seq 60); do [ "$(reopened)" -gt "$reopens" ] && break; sleep 0.05; done
[ "$(reopened)" -gt "$reopens" ] || fail "the daemon did not reopen its event log"
[ "$(msnp_attempt)" = blocked ] || fail "MSNP passed after rotation"
for _ in $(seq 60); do [ -s "$events" ] && break; sleep 0.05; done
grep -q '"app_proto":"msn"' "$events" || fail "the new event is not in the new $events"
[ "$(wc -l <"$events.1")" -eq "$before" ] || fail "an event went to the rotated file"
echo "   rotated to $events.1 ($before lines); the next event is in the new file"

step "watchdog"
wait_notify WATCHDOG=1 1 5
echo "   $(grep -c -x WATCHDOG=1 "$tmp/notify.lines") pings"

step "stop: ExecStop, $kill_signal, ExecStopPost"
run_kind ExecStop || fail "ExecStop failed"
kill -s "${kill_signal#SIG}" "$main_pid"
wait_notify STOPPING=1 1 5
rc=0
timeout "$stop_timeout" tail --pid="$main_pid" -f /dev/null || fail "still running after TimeoutStopSec=$stop_timeout"
wait "$main_pid" || rc=$?
main_pid=""
[ "$rc" -eq 0 ] || fail "exit code $rc"
[ "$(appwall_rules)" -eq 0 ] || fail "rules or sets left: $(appwall_rules)"
run_kind ExecStopPost || fail "ExecStopPost failed"
echo "   STOPPING=1, exit 0, no rule left"

step "ok"
