#!/usr/bin/env bash
# Builds the seed corpora of every fuzz target in fuzz/corpus/<target>/
# (git-ignored) from real inputs:
#   - frames, file heads and TCP/UDP flows of ../shared/captures (or $CAPTURES);
#   - the shipped rules/*.toml and rules/hosts.example;
#   - appwall's own sample traffic (src/sample.rs);
#   - the small hand-made seeds committed in fuzz/seeds/<target>/.
# Nothing is written next to the captures, and no capture file is copied
# whole: capture_reader gets each file's first 4 KiB.
# Usage: fuzz/seed.sh   (idempotent; seeds are named by content hash)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
captures="${CAPTURES:-$root/../shared/captures}"
corpus="$here/corpus"
mkdir -p "$corpus"
# The generator is a plain (uninstrumented) build: a separate target dir
# keeps it from invalidating the fuzz build.
cargo run --quiet --manifest-path "$here/Cargo.toml" --features seed --bin seed \
  --target-dir "$here/target/seed" -- "$captures" "$root/rules" "$corpus"
for dir in "$here"/seeds/*/; do
  t="$(basename "$dir")"
  mkdir -p "$corpus/$t"
  cp -f "$dir"* "$corpus/$t/" 2>/dev/null || true
done
