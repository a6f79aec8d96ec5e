#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZ_SECONDS each, default 30) so CI
# catches a new crash; exits non-zero when any target crashes, hangs or runs
# out of memory, and names the input that did it (fuzz/artifacts/<target>/).
#
# Needs only the stable Rust toolchain: cargo-fuzz is installed from
# crates.io when missing, and `-s none` builds without a sanitizer, which
# makes cargo-fuzz pass no -Z flag at all (only stable -C flags and
# --cfg fuzzing). appwall forbids unsafe code, so panics, overflow checks,
# hangs and memory blow-ups are what there is to catch. RUSTC_BOOTSTRAP=1
# is set only so FUZZ_SANITIZER=address (-Zsanitizer) can work on stable.
#
# Env: FUZZ_SECONDS (per target), FUZZ_TARGETS (space-separated subset),
#      FUZZ_NO_SEED=1 (skip building seeds from captures; committed seeds only),
#      FUZZ_SANITIZER (default none).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
sanitizer="${FUZZ_SANITIZER:-none}"
if [ "$sanitizer" != none ]; then export RUSTC_BOOTSTRAP=1; fi
# Target name and -max_len: the structured stream inputs need room, the
# split invariant feeds every byte as up to two thousand segments, so keep it short.
TARGETS_ALL="packet_view:4096 stream_engine:8192 stream_split:2048 hosts_file:4096 rule_files:8192 capture_reader:16384 squid_import:4096 quic_hello:4096 http_messages:4200"
seconds="${FUZZ_SECONDS:-30}"

if ! command -v c++ >/dev/null 2>&1; then
  echo "fuzz/ci.sh: libfuzzer-sys needs a C++ compiler (apt-get install g++)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/ci.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
cargo fuzz --version

if [ "${FUZZ_NO_SEED:-0}" != "1" ]; then
  ./seed.sh
fi
# Build every target once up front (a build error is a failure too).
cargo fuzz build -s "$sanitizer"

failed=()
for entry in $TARGETS_ALL; do
  t="${entry%%:*}"
  max_len="${entry#*:}"
  if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $t "* ]]; then
    continue
  fi
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ -d "seeds/$t" ]; then cp -f seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
  echo "=== fuzz $t for ${seconds}s"
  log="artifacts/$t/ci.log"
  if cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^Done|stat::number_of_executed_units|stat::average_exec_per_sec" "$log" || true
  else
    echo "!!! fuzz target $t FAILED; last lines of $log:"
    tail -n 40 "$log"
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz/ci.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/;"
  echo "replay with: cargo fuzz run -s none <target> <input>)"
  exit 1
fi
echo "fuzz/ci.sh: all targets ran without a crash"
