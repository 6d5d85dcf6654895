#!/usr/bin/env bash
# Every check and test of mm-mp, in the order a failure is cheapest to see.
# Called by .ci/run; run it yourself with `bash tests/run-all.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

echo "== cargo test (unit, deterministic, real threads, hostile input, C header)"
cargo test

echo "== C header drift (build.rs regenerates include/mm_mp.h)"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git diff --exit-code -- include/mm_mp.h || {
    echo "include/mm_mp.h differs from the committed header: commit the regenerated file" >&2
    exit 1
  }
fi

echo "== loom models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
RUSTFLAGS="--cfg loom" cargo test --profile loom --target-dir target/loom --test loom --test loom_sync

echo "== mutation smoke: ${MM_MP_MUTANTS:-16} mutants of src/ the tests caught, a fixed sample (tests/mutation.py)"
# cargo-mutants writes the mutants; it is installed into target/tools the
# first time (about 3 minutes), never into ~/.cargo.
if ! command -v cargo-mutants >/dev/null 2>&1; then
  [ -x target/tools/bin/cargo-mutants ] ||
    cargo install --quiet --locked --root target/tools cargo-mutants --version 27.1.0
  export PATH="$PWD/target/tools/bin:$PATH"
fi
# The sample is drawn from the mutants a test failed on in the last full
# run, without the loom models (tests/mutation-outcomes.jsonl): each must
# still make a test fail.
python3 tests/mutation.py --caught-in tests/mutation-outcomes.jsonl \
  --sample "${MM_MP_MUTANTS:-16}" --seed "${MM_MP_MUTANTS_SEED:-1}" --loom never \
  --outcomes target/mutation/smoke.jsonl

echo "== firmware build: undefined symbols, relocations, no reachable panic"
make -C firmware check

echo "== valgrind memcheck (C example, every export)"
bash tests/valgrind.sh

echo "== fuzzing the C ABI: smoke run (libFuzzer, ${MM_MP_FUZZ_RUNS:-20000} runs)"
cargo fmt --manifest-path fuzz/Cargo.toml --check
bash fuzz/run.sh "${MM_MP_FUZZ_RUNS:-20000}"

echo "== edk2-shim: INF swap tool"
python3 edk2-shim/tools/test_mmmp_edk2.py

echo "== firmware end-to-end suite: its own checks (the suite itself needs EDK2: docs/INTEGRATION.md)"
python3 firmware/e2e/test_e2e.py

echo "== C example (4 pthreads CPUs)"
make -C c-examples run
