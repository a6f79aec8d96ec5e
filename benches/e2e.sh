#!/usr/bin/env bash
# End-to-end throughput of appwall through a namespace gateway (issue 5).
#
#   client 192.0.2.10 (listed: msn) ── gateway ── server 198.51.100.10
#
# Scenarios (gateway rules): plain forwarding; kernel port rules only; kernel
# string match on every packet; a minimal C accept-all NFQUEUE program
# (benches/e2e/nfq_accept.c, built here from the repo) behind appwall's own
# rules, with and without the queue's GSO flag; appwall run (inspection,
# fast path); appwall run --accept-all; appwall run --no-fast-path; appwall
# run --queues 2; appwall run with 100,000 listed hosts. Optional: kset1,
# kset100k, kset1m (appwall's kernel rules with every host list in an ipset
# of 1 / 100k / 1M entries and no queue: the kernel rule cost alone) and
# hosts1m; with --baseline PATH, baseline and baseline-acceptall (appwall run,
# and run --accept-all, with another appwall binary, e.g. the one before a
# change, measured in the same run as the new one). The bulk host entries are 10.x addresses that only fill sets; no
# packet is ever sent to them. Traffic: iperf3 TCP bulk; UDP datagrams of 64 payload
# bytes from one thread as fast as it can send (benches/e2e/udp.rs),
# counted where they arrive (server interface); wrk HTTP keep-alive against
# nginx; wrk with "Connection: close" (one connection per request); the
# verdict ceiling ("ceiling": the listener is stopped by pid while one second
# of 64-byte datagrams fills its queue, then resumed; verdicts per second
# while it works off that backlog alone, nothing else running in the lab;
# queue listeners then run with --queue-maxlen 300000 and a 512 MiB buffer).
# Medians over --runs rounds, interleaved so that load from elsewhere
# spreads over every scenario alike. Queued scenarios run fail-closed: in
# fail-open mode the kernel accepts overflow uninspected and counts it
# nowhere, which would flatter the figures. The machine's own load is
# sampled (1 s of /proc/stat: busy and steal) before and after, and printed
# with the results: figures from a busy machine are only good as ratios.
#
# Only RFC 5737 addresses, only inside namespaces named aw-e2e-<pid>-*;
# every command is bounded by `timeout`; namespaces, processes (by pid) and
# with them all rules and queues are removed on exit, error or Ctrl-C.
# Needs root. See README.md, "Performance", "Live, through a namespace gateway".
set -euo pipefail

usage() {
    cat <<'EOF'
usage: benches/e2e.sh [--quick] [--runs N] [--seconds S] [--scenarios LIST]
                      [--traffic LIST] [--out DIR] [--appwall PATH] [--baseline PATH]
                      [--queues N] [--perf]

  --quick           1 round of 3 s per cell (about 2 minutes)
  --runs N          rounds (default 3); each figure is the median of N runs
  --seconds S       seconds per run (default 4)
  --scenarios LIST  plain,ports,string,cqueue,cqueue-nogso,acceptall,appwall,nofast,
                    queues2,hosts100k (default); also kset1,kset100k,kset1m,hosts1m
  --traffic LIST    tcp,udp,http,conn (default); also dl (HTTP keep-alive download),
                    ceiling (verdict ceiling: backlog drained per second, queue
                    listeners only)
  --out DIR         results directory (default target/e2e)
  --appwall PATH    appwall binary (default: cargo build --release, then a copy)
  --baseline PATH   another appwall binary for the scenarios baseline (appwall run)
                    and baseline-acceptall (run --accept-all), added to the list
                    unless --scenarios names them; compare two builds in one run
  --queues N        appwall --queues (default 1)
  --perf            profile every cell system-wide (perf record -a) and split the
                    CPU time into stages (benches/e2e/perf-stages.sh): CPU per
                    request and per verdict, in perf-*.md beside the report
EOF
}

RUNS=3
SECS=4
SCENARIOS=plain,ports,string,cqueue,cqueue-nogso,acceptall,appwall,nofast,queues2,hosts100k
TRAFFIC=tcp,udp,http,conn
OUT=
APPWALL=
BASELINE=
SCENARIOS_SET=
QUEUES=1
PERF=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) RUNS=1; SECS=3 ;;
        --runs) RUNS=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --scenarios) SCENARIOS=$2; SCENARIOS_SET=1; shift ;;
        --traffic) TRAFFIC=$2; shift ;;
        --out) OUT=$2; shift ;;
        --appwall) APPWALL=$2; shift ;;
        --baseline) BASELINE=$2; shift ;;
        --queues) QUEUES=$2; shift ;;
        --perf) PERF=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "e2e: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$RUNS$SECS$QUEUES" in *[!0-9]*) echo "e2e: --runs, --seconds, --queues take integers" >&2; exit 2 ;; esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] ||
    { echo "e2e: --runs 1..20, --seconds 1..60" >&2; exit 2; }

CEIL_OPTS=() CEIL_C=()
case ",$TRAFFIC," in
    *,ceiling,*) CEIL_OPTS=(--queue-maxlen 300000 --rcvbuf 536870912); CEIL_C=(300000 536870912) ;;
esac
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "e2e: --baseline $BASELINE is not an executable" >&2; exit 2; }
    [ -n "$SCENARIOS_SET" ] || SCENARIOS=$SCENARIOS,baseline,baseline-acceptall
fi
case ",$SCENARIOS," in
    *,baseline,*|*,baseline-acceptall,*)
        [ -n "$BASELINE" ] || { echo "e2e: scenario baseline needs --baseline PATH" >&2; exit 2; } ;;
esac
[ "$(id -u)" = 0 ] || { echo "e2e: needs root (network namespaces, iptables, NFQUEUE)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/e2e}
mkdir -p "$OUT"

# --- tools -------------------------------------------------------------------
need=()
for t in ip iptables iptables-restore iperf3 wrk nginx jq timeout cc; do
    command -v "$t" >/dev/null || need+=("$t")
done
[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need+=(libnetfilter-queue-dev)
[ -z "$PERF" ] || command -v perf >/dev/null || { echo "e2e: --perf needs perf (apt-get install linux-perf)" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
    echo "e2e: missing: ${need[*]}; installing iperf3 wrk nginx-light jq gcc libnetfilter-queue-dev with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3 wrk nginx-light jq gcc libnetfilter-queue-dev >&2 ||
        { echo "e2e: install failed; need ${need[*]}" >&2; exit 1; }
fi

# --- state and cleanup -------------------------------------------------------
TAG="aw-e2e-$$"
NS_C="$TAG-c" NS_G="$TAG-g" NS_S="$TAG-s"
WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
CREATED_NS=()
PIDS=()        # long-lived servers, by pid
AW_PID=        # the running appwall (or C listener), by pid
NS_INO=        # gateway netns inode, for appwall's lock file

stop_pid() {   # SIGTERM, wait up to 5 s, then SIGKILL; by pid only
    local p=$1 i
    kill -0 "$p" 2>/dev/null || return 0
    kill -CONT "$p" 2>/dev/null || true   # stopped by the ceiling measurement
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}

cleanup() {
    local rc=$? p ns
    trap - EXIT INT TERM
    [ -n "$AW_PID" ] && stop_pid "$AW_PID"
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    wait 2>/dev/null || true
    for ns in "${CREATED_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    [ -n "$NS_INO" ] && rm -f "/run/appwall/netns-$NS_INO.lock"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "e2e: interrupted" >&2; exit 130' INT TERM

inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# --- binaries -----------------------------------------------------------------
if [ -z "$APPWALL" ]; then
    echo "e2e: cargo build --release" >&2
    (cd "$ROOT" && timeout 900 cargo build --release --quiet) >&2
    APPWALL=$ROOT/target/release/appwall
fi
# Private copies: others may rebuild target/ while we measure.
cp "$APPWALL" "$WORK/appwall"
APPWALL=$WORK/appwall
if [ -n "$BASELINE" ]; then
    cp "$BASELINE" "$WORK/appwall-baseline"
    BASELINE=$WORK/appwall-baseline
fi
# The UDP sender uses std only: rustc builds it directly.
rustc --edition 2021 -O -o "$WORK/e2e_udp" "$ROOT/benches/e2e/udp.rs"
cc -O2 -o "$WORK/e2e_nfq_accept" "$ROOT/benches/e2e/nfq_accept.c" -lnetfilter_queue

# --- lab ---------------------------------------------------------------------
for ns in "$NS_C" "$NS_G" "$NS_S"; do
    ip netns add "$ns"
    CREATED_NS+=("$ns")
    inns "$ns" ip link set lo up
done
ip link add c0 netns "$NS_C" type veth peer name gc netns "$NS_G"
ip link add s0 netns "$NS_S" type veth peer name gs netns "$NS_G"
inns "$NS_C" ip addr add 192.0.2.10/24 dev c0
inns "$NS_G" ip addr add 192.0.2.1/24 dev gc
inns "$NS_G" ip addr add 198.51.100.1/24 dev gs
inns "$NS_S" ip addr add 198.51.100.10/24 dev s0
for x in "$NS_C c0" "$NS_G gc" "$NS_G gs" "$NS_S s0"; do
    set -- $x
    inns "$1" ip link set "$2" up
done
inns "$NS_C" ip route add default via 192.0.2.1
inns "$NS_S" ip route add default via 198.51.100.1
inns "$NS_G" sysctl -qw net.ipv4.ip_forward=1
# Many short connections from one client address: widen its port range.
inns "$NS_C" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
inns "$NS_S" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
# The UDP flood is counted at the server's interface and dropped before any
# socket (no receiver to bottleneck, no ICMP replies).
inns "$NS_S" iptables -t raw -A PREROUTING -p udp --dport 9 -j DROP
NS_INO=$(inns "$NS_G" readlink /proc/self/ns/net | tr -dc 0-9)

echo "192.0.2.10 msn" >"$WORK/hosts"
# N listed hosts: the lab client plus N-1 /32s that do not aggregate
# (every other address of 10.0.0.0/8; set members only, never addressed).
gen_hosts() {   # N FILE
    [ -s "$2" ] && return 0
    { echo "192.0.2.10 msn"
      awk -v n="$1" 'BEGIN{for (i = 1; i < n; i++) { a = 2 * i; printf "10.%d.%d.%d msn\n", int(a / 65536) % 256, int(a / 256) % 256, a % 256 }}'
    } >"$2"
}

# Servers: iperf3 and nginx (one process, no master: a pid is the whole server).
mkdir -p "$WORK/nginx" "$WORK/www"
head -c $((16 << 20)) /dev/urandom >"$WORK/www/big"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    keepalive_requests 10000000;
    keepalive_timeout 60;
    server {
        listen 198.51.100.10:80 reuseport backlog=4096;
        location / { default_type text/plain; return 200 "hello from the e2e server\n"; }
        # 16 MiB body for the keep-alive download (dl): read from the page cache.
        location = /big { root $WORK/www; default_type application/octet-stream; }
    }
}
EOF
ip netns exec "$NS_S" iperf3 -s -B 198.51.100.10 -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!)
ip netns exec "$NS_S" nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)
for i in $(seq 50); do
    inns "$NS_S" ss -ltn 2>/dev/null | grep -q '198.51.100.10:80 ' &&
        inns "$NS_S" ss -ltn 2>/dev/null | grep -q '198.51.100.10:5201 ' && break
    sleep 0.1
done
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "e2e: a server did not start" >&2; cat "$WORK"/*.log >&2; exit 1; }; done
timeout 5 ip netns exec "$NS_C" bash -c 'exec 3<>/dev/tcp/198.51.100.10/80' ||
    { echo "e2e: the lab does not forward client -> server" >&2; exit 1; }

# --- scenarios ---------------------------------------------------------------
flush_rules() {
    inns "$NS_G" iptables -t mangle -F
    inns "$NS_G" iptables -t mangle -X
    inns "$NS_G" iptables -t filter -F
    inns "$NS_G" iptables -t filter -X
}

start_appwall() {   # [--hosts FILE] extra options...; AWBIN: another binary
    local i hosts=$WORK/hosts t0 bin=${AWBIN:-$APPWALL}
    if [ "${1:-}" = --hosts ]; then hosts=$2; shift 2; fi
    t0=$(date +%s.%N)
    # --queue-rate off: the traffic comes from one load generator address,
    # far above any per-source share; the bench measures the queue path.
    # (Older binaries, run as --baseline, have no such limit or option.)
    local qr=()
    "$bin" run --help 2>/dev/null | grep -q -- --queue-rate && qr=(--queue-rate off)
    # --perf: the daemon's own latency histograms per stage as well.
    [ -n "$PERF" ] && "$bin" run --help 2>/dev/null | grep -q -- --stage-timings && qr+=(--stage-timings)
    rm -f "$WORK/status.json"
    ip netns exec "$NS_G" "$bin" run --hosts "$hosts" --queues "$QUEUES" \
        --fail-closed "${qr[@]}" --status-file "$WORK/status.json" --stats-interval 3600 "${CEIL_OPTS[@]}" "$@" \
        >"$WORK/appwall.log" 2>&1 &
    AW_PID=$!
    for i in $(seq 300); do
        kill -0 "$AW_PID" 2>/dev/null || { cat "$WORK/appwall.log" >&2; echo "e2e: appwall exited" >&2; exit 1; }
        if inns "$NS_G" iptables -t mangle -S APPWALL_INSPECT 2>/dev/null | grep -q NFQUEUE; then
            awk -v a="$t0" -v b="$(date +%s.%N)" -v h="$(wc -l <"$hosts")" \
                'BEGIN{printf "  appwall up with %d hosts in %.1f s\n", h, b - a}' >&2
            return 0
        fi
        sleep 0.1
    done
    echo "e2e: appwall did not install its rules in 30 s" >&2
    exit 1
}

stop_appwall() {
    [ -n "$AW_PID" ] || return 0
    stop_pid "$AW_PID"
    wait "$AW_PID" 2>/dev/null || true
    AW_PID=
}

setup() {
    case "$1" in
        plain) ;;
        ports)
            # appwall's own rules without the queueing part.
            "$APPWALL" rules --hosts "$WORK/hosts" --family ipv4 --queue-rate off |
                grep -v -e NFQUEUE -e '-j APPWALL_INSPECT' | inns "$NS_G" iptables-restore --noflush ;;
        string)
            # The kernel's own payload search, on every packet of the listed host.
            for d in -s -d; do
                inns "$NS_G" iptables -t mangle -A PREROUTING "$d" 192.0.2.10 \
                    -m string --algo bm --string gateway.dll -j DROP
            done ;;
        kset*)
            # appwall's kernel rules, every host list in an ipset, no queue:
            # what the per-packet rule walk costs with 1, 100k or 1M entries.
            local n=${1#kset} t0
            n=${n/k/000}; n=${n/m/000000}
            gen_hosts "$n" "$WORK/hosts-$n"
            t0=$(date +%s.%N)
            "$APPWALL" rules --hosts "$WORK/hosts-$n" --family ipv4 --ipset-threshold 0 --format ipset |
                inns "$NS_G" ipset restore
            "$APPWALL" rules --hosts "$WORK/hosts-$n" --family ipv4 --ipset-threshold 0 --queue-rate off |
                grep -v -e NFQUEUE | inns "$NS_G" iptables-restore --noflush
            awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$n" 'BEGIN{printf "  kernel rules for %d hosts in %.1f s\n", n, b - a}' >&2 ;;
        cqueue|cqueue-nogso)
            "$APPWALL" rules --hosts "$WORK/hosts" --family ipv4 --fail-closed --queue-rate off |
                inns "$NS_G" iptables-restore --noflush
            ip netns exec "$NS_G" "$WORK/e2e_nfq_accept" 0 $([ "$1" = cqueue-nogso ] && echo nogso || echo gso) "${CEIL_C[@]}" >"$WORK/cqueue.log" 2>&1 &
            AW_PID=$!
            for i in $(seq 50); do
                grep -q bound "$WORK/cqueue.log" && break
                kill -0 "$AW_PID" 2>/dev/null || { cat "$WORK/cqueue.log" >&2; exit 1; }
                sleep 0.1
            done ;;
        appwall) start_appwall ;;
        acceptall) start_appwall --accept-all ;;
        baseline) AWBIN=$BASELINE start_appwall ;;
        baseline-acceptall) AWBIN=$BASELINE start_appwall --accept-all ;;
        nofast) start_appwall --no-fast-path ;;
        queues2) QUEUES=2 start_appwall ;;
        hosts100k) gen_hosts 100000 "$WORK/hosts-100000"; start_appwall --hosts "$WORK/hosts-100000" ;;
        hosts1m) gen_hosts 1000000 "$WORK/hosts-1000000"; start_appwall --hosts "$WORK/hosts-1000000" ;;
        *) echo "e2e: unknown scenario $1" >&2; exit 2 ;;
    esac
}

teardown() {   # SCENARIO ROUND
    stop_appwall
    # The final status write holds the scenario's stage latencies (--perf).
    if [ -n "$PERF" ] && [ -s "$WORK/status.json" ]; then
        jq -r --arg s "$1" --arg r "$2" '(.stages // [])[] |
            [$r, $s, .stage, .count, (.p50_ns // 0), (.p90_ns // 0), (.p99_ns // 0), (if .count > 0 then .sum_ns / .count else 0 end)] | @tsv' \
            "$WORK/status.json" >>"$STAGES_RAW" || true
    fi
    flush_rules
    inns "$NS_G" ipset destroy 2>/dev/null || true   # this namespace's sets only
    inns "$NS_G" conntrack -F >/dev/null 2>&1 || true
}

# Machine load outside the lab: 1 s of /proc/stat, busy and steal in % of
# all cpus (the lab is idle while sampling).
machine_load() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    echo "$a $b" | awk '{t=$6-$3; if (t<=0) t=1; printf "busy %.0f%%, steal %.0f%%, load average %s", 100*($4-$1)/t, 100*($5-$2)/t, la}' la="$(cut -d' ' -f1-3 /proc/loadavg)"
}

# --- measurements ------------------------------------------------------------
cpu_ticks() {   # busy total (all cpus, jiffies)
    awk '/^cpu /{b=$2+$3+$4+$7+$8; t=b+$5+$6+$9; print b, t}' /proc/stat
}
aw_ticks() {    # utime+stime of appwall (all its threads)
    if [ -n "$AW_PID" ] && [ -r "/proc/$AW_PID/stat" ]; then
        sed 's/.*) //' "/proc/$AW_PID/stat" | awk '{print $12+$13}'
    else
        echo 0
    fi
}
queue_counters() {   # queued(id_sequence) queue_dropped user_dropped, summed over queues
    inns "$NS_G" cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null |
        awk '{q+=$6; u+=$7; s+=$8} END{print s+0, q+0, u+0}'
}
queue_ids() {        # "queue:id_sequence" per queue, one word each
    inns "$NS_G" cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null | awk '{printf "%s:%s ", $1, $8}'
}
top_queue_pct() {    # BEFORE AFTER (queue_ids): share of the busiest queue, % (empty: nothing queued)
    awk -v a="$1" -v b="$2" 'BEGIN{
        n = split(a, A, " "); for (i = 1; i <= n; i++) { split(A[i], x, ":"); before[x[1]] = x[2] }
        n = split(b, B, " "); for (i = 1; i <= n; i++) { split(B[i], x, ":"); d = x[2] - before[x[1]]; t += d; if (d > m) m = d }
        if (t > 0) printf "%.0f", 100 * m / t; else printf "-"}'
}
retrans() {          # TCP segments retransmitted by the server and the client
    { inns "$NS_S" cat /proc/net/snmp; inns "$NS_C" cat /proc/net/snmp; } |
        awk '/^Tcp:/{ if (!h) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i; h = 1 } else { s += $c; h = 0 } } END{print s+0}'
}

# The verdict ceiling: the listener (by pid) stopped while one second of
# datagrams fills its queue, then resumed; python in the gateway namespace
# polls the queue's backlog every millisecond until it is worked off.
PY_DRAIN='
import os, signal, sys, time
pid = int(sys.argv[1])
def waiting():
    with open("/proc/net/netfilter/nfnetlink_queue") as f:
        return sum(int(l.split()[2]) for l in f if l.strip())
n = waiting()
t0 = time.monotonic()
os.kill(pid, signal.SIGCONT)
while waiting() > 0 and time.monotonic() - t0 < 30:
    time.sleep(0.001)
print(n, time.monotonic() - t0)
'

# Runs one traffic type; prints "value unit".
traffic() {
    local t=$1 lim=$((SECS + 20)) j
    case "$t" in
        tcp)
            j=$(timeout -k 2 "$lim" ip netns exec "$NS_C" iperf3 -c 198.51.100.10 -p 5201 -t "$SECS" -J) || true
            echo "$j" | jq -r '(.end.sum_received.bits_per_second // 0) / 1e9 | "\(.) Gbit/s"' ;;
        udp)
            # Datagrams that reached the server per second.
            local r0 r1 t0 t1
            r0=$(inns "$NS_S" cat /sys/class/net/s0/statistics/rx_packets)
            t0=$(date +%s.%N)
            timeout -k 2 "$lim" ip netns exec "$NS_C" "$WORK/e2e_udp" 198.51.100.10:9 "$SECS" 64 >>"$WORK/udp.log" || true
            sleep 0.2   # let the queue drain
            t1=$(date +%s.%N)
            r1=$(inns "$NS_S" cat /sys/class/net/s0/statistics/rx_packets)
            awk -v n="$((r1 - r0))" -v s="$SECS" 'BEGIN{print n/s, "pkt/s"}' ;;
        http|conn)
            local hdr=()
            [ "$t" = conn ] && hdr=(-H "Connection: close")
            j=$(timeout -k 2 "$lim" ip netns exec "$NS_C" wrk -t1 -c64 -d"${SECS}s" "${hdr[@]}" http://198.51.100.10/ 2>&1) || true
            echo "$j" >>"$WORK/wrk.log"
            echo "$j" | awk '/^Requests\/sec:/{r=$2} END{print (r==""?0:r), "req/s"}' ;;
        dl)
            # HTTP bulk download over keep-alive: 16 MiB responses, 4 connections;
            # every request is judged (issue 11), the replies ride the fast path.
            j=$(timeout -k 2 "$lim" ip netns exec "$NS_C" wrk -t1 -c4 -d"${SECS}s" http://198.51.100.10/big 2>&1) || true
            echo "$j" >>"$WORK/wrk.log"
            echo "$j" | awk '/^Transfer\/sec:/{v=$2; m=1; if (v ~ /GB$/) m=8; else if (v ~ /MB$/) m=8/1024; else if (v ~ /KB$/) m=8/1048576;
                sub(/[KMG]?B$/, "", v); g=v*m} END{print (g==""?0:g), "Gbit/s"}' ;;
        ceiling)
            [ -n "$AW_PID" ] || { echo "0 kverdict/s"; return 0; }
            kill -STOP "$AW_PID"
            timeout -k 2 "$lim" ip netns exec "$NS_C" "$WORK/e2e_udp" 198.51.100.10:9 1 64 >>"$WORK/udp.log" || true
            timeout -k 2 40 ip netns exec "$NS_G" python3 -c "$PY_DRAIN" "$AW_PID" |
                awk '{ if ($2 > 0) print $1 / $2 / 1000, "kverdict/s"; else print 0, "kverdict/s" }'
            kill -CONT "$AW_PID" 2>/dev/null || true ;;
        *) echo "e2e: unknown traffic $t" >&2; exit 2 ;;
    esac
}

RAW="$OUT/raw-$(date +%Y%m%d-%H%M%S).tsv"
printf 'round\tscenario\ttraffic\tvalue\tunit\tcpu_busy_pct\tlistener_cpu_pct\tverdicts_per_s\tqueue_dropped\tuser_dropped\tretrans\ttop_queue_pct\n' >"$RAW"
HZ=$(getconf CLK_TCK)
PERF_FREQ=997
PERF_RAW="${RAW%.tsv}.perf.tsv"
STAGES_RAW="${RAW%.tsv}.stages.tsv"
[ -z "$PERF" ] || printf 'round\tscenario\ttraffic\tstage\tcpu_seconds\trequests\tqueued\n' >"$PERF_RAW"
[ -z "$PERF" ] || printf 'round\tscenario\tstage\tcount\tp50_ns\tp90_ns\tp99_ns\tmean_ns\n' >"$STAGES_RAW"
NCPU=$(nproc)

LOAD_START=$(machine_load)
echo "e2e: $(nproc) cpus; before: $LOAD_START; $RUNS round(s) x ${SECS}s; scenarios $SCENARIOS; traffic $TRAFFIC" >&2
case "$LOAD_START" in busy\ [0-9]%*|busy\ 1[0-9]%*) ;; *) echo "e2e: warning: the machine is busy; compare ratios within this run only" >&2 ;; esac
IFS=, read -r -a SCEN <<<"$SCENARIOS"
IFS=, read -r -a TRAF <<<"$TRAFFIC"
for r in $(seq "$RUNS"); do
    for s in "${SCEN[@]}"; do
        setup "$s"
        for t in "${TRAF[@]}"; do
            sleep 0.3
            read -r b0 t0 < <(cpu_ticks)
            a0=$(aw_ticks)
            read -r q0 qd0 ud0 < <(queue_counters)
            qi0=$(queue_ids)
            rt0=$(retrans)
            s0=$(date +%s.%N)
            PERF_PID=
            if [ -n "$PERF" ]; then
                timeout -k 2 $((SECS + 10)) perf record -q -a -F "$PERF_FREQ" -o "$WORK/perf.data" -- sleep "$SECS" \
                    >/dev/null 2>"$WORK/perf.log" &
                PERF_PID=$!
            fi
            read -r v unit < <(traffic "$t")
            s1=$(date +%s.%N)
            [ -z "$PERF_PID" ] || wait "$PERF_PID" || true
            read -r b1 t1 < <(cpu_ticks)
            a1=$(aw_ticks)
            read -r q1 qd1 ud1 < <(queue_counters)
            rt=$(( $(retrans) - rt0 ))
            tq=$(top_queue_pct "$qi0" "$(queue_ids)")
            if [ -n "$PERF_PID" ]; then
                "$ROOT/benches/e2e/perf-stages.sh" "$WORK/perf.data" "$PERF_FREQ" '^(appwall-q|e2e_nfq_accept)' |
                    awk -v r="$r" -v s="$s" -v t="$t" -v n="$(awk -v v="$v" -v d="$SECS" -v t="$t" 'BEGIN{print (t=="http"||t=="conn") ? v*d : 0}')" \
                        -v q="$((q1 - q0 - (ud1 - ud0)))" -F'\t' '{printf "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", r, s, t, $1, $2, n, q}' >>"$PERF_RAW"
                mv "$WORK/perf.data" "${RAW%.tsv}.$s.$t.perf.data"   # last round kept, for perf report
            fi
            line=$(awk -v r="$r" -v s="$s" -v t="$t" -v v="$v" -v u="$unit" \
                -v b="$((b1 - b0))" -v tt="$((t1 - t0))" -v a="$((a1 - a0))" -v hz="$HZ" -v n="$NCPU" \
                -v q="$((q1 - q0 - (ud1 - ud0)))" -v qd="$((qd1 - qd0))" -v ud="$((ud1 - ud0))" -v s0="$s0" -v s1="$s1" \
                -v rt="$rt" -v tq="$tq" \
                'BEGIN{el=s1-s0; printf "%s\t%s\t%s\t%.6g\t%s\t%.0f\t%.0f\t%.0f\t%d\t%d\t%d\t%s\n", r, s, t, v, u,
                    (tt>0?100*n*b/tt:0), (el>0?100*a/hz/el:0), (el>0?q/el:0), qd, ud, rt, tq}')
            printf '%s\n' "$line" >>"$RAW"
            printf '%s\n' "$line" | awk -F'\t' '{printf "  round %s %-9s %-4s %12.4g %-7s cpu %3s%% listener %3s%% verdicts/s %s drops %s/%s retrans %s top queue %s%%\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12}' >&2
        done
        teardown "$s" "$r"
    done
done
LOAD_END=$(machine_load)

# --- report ------------------------------------------------------------------
REPORT="${RAW%.tsv}.md"
{
    echo "# appwall e2e: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cpus, kernel $(uname -r)"
    echo
    echo "$RUNS round(s) x ${SECS} s per cell, interleaved, medians. Machine outside the lab, 1 s samples: before $LOAD_START; after $LOAD_END."
    echo "Cells: median [ratio to plain] {ratio to acceptall}. TCP Gbit/s, UDP 64-byte kpkt/s received, HTTP req/s keep-alive, new connections/s, verdicts/s working off a stopped listener's backlog."
    echo
    awk -F'\t' -v scen="$SCENARIOS" -v traf="$TRAFFIC" '
        function median(key,   n, i, j, a, tmp) {
            n = split(vals[key], a, " ")
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1]+0 > a[j]+0; j--) { tmp = a[j]; a[j] = a[j-1]; a[j-1] = tmp }
            if (n == 0) return ""
            return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
        }
        function fmt(t, v) {
            if (t == "tcp" || t == "dl") return sprintf("%.2f", v)
            if (t == "udp") return sprintf("%.0fk", v/1000)
            if (t == "ceiling") return sprintf("%.0fk", v)
            return sprintf("%.1fk", v/1000)
        }
        NR > 1 {
            k = $2 SUBSEP $3
            vals[k] = vals[k] " " $4; vals["c" k] = vals["c" k] " " $6
            vals["a" k] = vals["a" k] " " $7; vals["q" k] = vals["q" k] " " $8
            qd[k] += $9; ud[k] += $10; rt[k] += $11
            if ($12 != "-") vals["t" k] = vals["t" k] " " $12
        }
        END {
            ns = split(scen, S, ","); nt = split(traf, T, ",")
            name["tcp"] = "TCP bulk Gbit/s"; name["udp"] = "UDP 64 B pkt/s"; name["http"] = "HTTP req/s"; name["conn"] = "new conn/s"; name["dl"] = "HTTP download Gbit/s"; name["ceiling"] = "verdict ceiling /s"
            printf "| scenario |"; for (j = 1; j <= nt; j++) printf " %s |", name[T[j]]; print ""
            printf "|---|"; for (j = 1; j <= nt; j++) printf "---:|"; print ""
            for (i = 1; i <= ns; i++) {
                printf "| %s |", S[i]
                for (j = 1; j <= nt; j++) {
                    m = median(S[i] SUBSEP T[j]); p = median("plain" SUBSEP T[j]); a = median("acceptall" SUBSEP T[j])
                    c = fmt(T[j], m)
                    if (p != "" && p > 0) c = c sprintf(" [%.2f]", m/p)
                    if (a != "" && a > 0) c = c sprintf(" {%.2f}", m/a)
                    printf " %s |", c
                }
                print ""
            }
            print ""
            print "Medians: machine-wide CPU busy (% of one core, all cores summed), the queue listener process (appwall or the C program), verdicts/s (kernel id_sequence less socket drops); kernel queue drops summed over runs (queue full / socket full); TCP retransmissions of server and client summed over runs; median share of the busiest queue (50% is an even spread over 2 queues):"
            print ""
            printf "| scenario |"; for (j = 1; j <= nt; j++) printf " %s: cpu, listener, verdicts/s, drops, retrans, top queue |", T[j]; print ""
            printf "|---|"; for (j = 1; j <= nt; j++) printf "---|"; print ""
            for (i = 1; i <= ns; i++) {
                printf "| %s |", S[i]
                for (j = 1; j <= nt; j++) {
                    k = S[i] SUBSEP T[j]
                    tq = median("t" k)
                    printf " %s%%, %s%%, %s, %d/%d, %d, %s |", median("c" k), median("a" k), median("q" k), qd[k], ud[k], rt[k], (tq == "" ? "-" : tq "%")
                }
                print ""
            }
        }
    ' "$RAW"
} >"$REPORT.tmp"
if [ -n "$PERF" ]; then
    {
        echo
        echo "## Where the CPU time goes (perf record -a, $PERF_FREQ Hz, self time by function)"
        echo
        echo "Microseconds of CPU (all cores) per request, medians over rounds; k-: kernel netfilter in any process (rules, conntrack, queue hand-off); l-: the rest of the kernel in the listener (syscall, forwarding resumed after a verdict); u-: the listener's own code; lab: client, server and packet forwarding (wrk, nginx, iperf3, softirq threads, idle-time softirq); outside (the rest of the machine) and idle are left out of the total. Stages: benches/e2e/perf-stages.sh."
        echo
        awk -F'\t' '
            function median(key,   n, i, j, a, tmp) {
                n = split(vals[key], a, " ")
                for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1]+0 > a[j]+0; j--) { tmp = a[j]; a[j] = a[j-1]; a[j-1] = tmp }
                if (n == 0) return 0
                return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
            }
            NR > 1 && $6 > 0 {
                k = $2 " / " $3
                if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
                st[$4] = 1
                vals[k SUBSEP $4] = vals[k SUBSEP $4] " " (1e6 * $5 / $6)
                vq[k SUBSEP $1] = $7 / $6
                if ($4 != "outside" && $4 != "idle") tot[k SUBSEP $1] += 1e6 * $5 / $6
            }
            END {
                ns = split("k-rules k-conntrack k-queue l-syscall l-forward u-parse u-table u-judge u-queue u-other lab", S, " ")
                printf "| scenario / traffic | verdicts per request |"; for (i = 1; i <= ns; i++) printf " %s |", S[i]; print " total |"
                printf "|---|---:|"; for (i = 1; i <= ns; i++) printf "---:|"; print "---:|"
                for (o = 1; o <= nk; o++) {
                    k = order[o]; v = ""; t = ""
                    for (x in vq) { split(x, y, SUBSEP); if (y[1] == k) { v = v " " vq[x]; t = t " " tot[x] } }
                    vals[k SUBSEP "vq"] = v; vals[k SUBSEP "tot"] = t
                    printf "| %s | %.1f |", k, median(k SUBSEP "vq")
                    for (i = 1; i <= ns; i++) printf " %.1f |", median(k SUBSEP S[i])
                    printf " %.1f |\n", median(k SUBSEP "tot")
                }
            }
        ' "$PERF_RAW"
        if [ "$(wc -l <"$STAGES_RAW")" -gt 1 ]; then
            echo
            echo "## Latency per stage of a queued packet (appwall run --stage-timings)"
            echo
            echo "All traffic of a scenario together, last round; percentiles are upper bounds of power-of-two buckets, the mean is exact. queue_wait: kernel receive timestamp to the worker holding the packet (hooks before the queue, queue, socket, receive call); judge: parse, connection table, engine; verdict: handing the verdict over (a batch entry, or a system call when a batch or a drop/mark goes out)."
            echo
            echo "| scenario | stage | samples | p50 | p90 | p99 | mean |"
            echo "|---|---|---:|---:|---:|---:|---:|"
            awk -F'\t' 'NR > 1 { last[$2 SUBSEP $3] = $0; if (!(($2 SUBSEP $3) in seen)) { seen[$2 SUBSEP $3] = 1; order[++n] = $2 SUBSEP $3 } }
                function us(ns) { return ns >= 67108864 * 2 ? ">67 ms" : sprintf("%.1f us", ns / 1000) }
                END { for (i = 1; i <= n; i++) { split(last[order[i]], f, "\t")
                    printf "| %s | %s | %d | %s | %s | %s | %s |\n", f[2], f[3], f[4], us(f[5]), us(f[6]), us(f[7]), us(f[8]) } }' "$STAGES_RAW"
        fi
    } >>"$REPORT.tmp"
fi
mv "$REPORT.tmp" "$REPORT"
cat "$REPORT"
echo "e2e: raw figures in $RAW${PERF:+ and $PERF_RAW}, report in $REPORT" >&2
