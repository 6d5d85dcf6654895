#!/usr/bin/env bash
# Build the C-ABI fuzz target with libFuzzer's coverage instrumentation
# (stable rustc flags, the ones cargo-fuzz uses with `-s none`) and run it.
#
#   bash fuzz/run.sh [RUNS] [extra libFuzzer args...]
#
# RUNS defaults to 20000 (the CI smoke run). The corpus lives in
# target/fuzz-corpus (not committed); crashes are written to
# target/fuzz-artifacts/ and make the script fail.
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-20000}"
shift || true
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Ccodegen-units=1"
# --target keeps RUSTFLAGS away from build scripts (as cargo-fuzz does).
cargo build --release --bin c_abi --target x86_64-unknown-linux-gnu --target-dir ../target/fuzz
corpus=../target/fuzz-corpus
artifacts=../target/fuzz-artifacts
mkdir -p "$corpus" "$artifacts"
../target/fuzz/x86_64-unknown-linux-gnu/release/c_abi "$corpus" -artifact_prefix="$artifacts/" -runs="$runs" -max_len=512 -print_final_stats=1 "$@"
