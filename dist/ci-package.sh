#!/usr/bin/env bash
# CI for the package: build the .deb (dist/build-deb.sh), install it, check
# the installed unit (systemd-analyze verify, and security exposure <= 2.5),
# the logrotate snippet and the completions, run the installed binary's
# `demo`, run the installed unit's whole life (dist/ci-lifecycle.sh: its
# Exec* lines in a private network namespace, with a notification
# listener), then purge the package. Needs root (apt-get, namespaces); works
# without systemd as PID 1 (the unit's commands are run as systemd would).
#
#   dist/ci-package.sh                               # release build, as shipped
#   APPWALL_BIN=target/debug/appwall dist/ci-package.sh  # reuse a build: faster
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "ci-package: needs root" >&2; exit 1; }
t0=$(date +%s)
step() { echo "== ci-package: $* ($(($(date +%s) - t0)) s)"; }
export DEBIAN_FRONTEND=noninteractive

step "tools"
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v logrotate >/dev/null || missing+=(logrotate)
command -v strip >/dev/null || missing+=(binutils)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "build"
deb=$(dist/build-deb.sh)
echo "$deb"

unit=/usr/lib/systemd/system/appwall.service
purge() { apt-get purge -y -qq appwall >/dev/null 2>&1 || true; }
trap purge EXIT
step "install"
apt-get install -y -qq "$deb" >/dev/null
test -x /usr/bin/appwall
test -f "$unit"
test -f /usr/share/man/man8/appwall-run.8.gz
test -f /etc/appwall/hosts

step "systemd-analyze verify"
# Documentation= is looked up with man(1) when it is there.
man_opt=--man=no
command -v man >/dev/null && man_opt=--man=yes
systemd-analyze verify "$man_opt" "$unit"

step "systemd-analyze security"
report=$(systemd-analyze security --offline=true "$unit")
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
echo "exposure: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.5) }' || {
  echo "$report" >&2
  echo "ci-package: exposure ${exposure:-unknown} is above 2.5" >&2
  exit 1
}

step "logrotate, completions, check"
logrotate -d /etc/logrotate.d/appwall >/dev/null 2>&1 || { logrotate -d /etc/logrotate.d/appwall; exit 1; }
bash -n /usr/share/bash-completion/completions/appwall
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_appwall; fi
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/appwall.fish; fi
# The shipped hosts file lists nobody: valid (exit 0), with a warning.
warn=$(/usr/bin/appwall check --hosts /etc/appwall/hosts 2>&1 >/dev/null)
grep -q "lists no hosts" <<<"$warn" || { echo "ci-package: no warning for an empty hosts file: $warn" >&2; exit 1; }
# What ExecReload runs must fail on a bad file, so no signal is sent.
bad=$(mktemp)
echo "192.0.2.1 -j ACCEPT" >"$bad"
if /usr/bin/appwall check --hosts "$bad" >/dev/null 2>&1; then
  rm -f "$bad"; echo "ci-package: check accepted a bad hosts file" >&2; exit 1
fi
rm -f "$bad"

step "installed demo"
/usr/bin/appwall demo

step "lifecycle of the installed unit (dist/ci-lifecycle.sh)"
timeout 180 dist/ci-lifecycle.sh

step "purge"
purge
trap - EXIT
test ! -e /usr/bin/appwall
step "ok"
