#!/usr/bin/env bash
# Flakiness check: ROUNDS rounds (default 100) of two copies of the whole
# test suite at once, each copy running every test binary of `cargo test`
# in turn, so each test runs beside a loaded machine. Prints one line per
# round and every failure; exits 1 if any binary failed.
#   bash tests/stress.sh [ROUNDS]
set -uo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-100}"
bins=$(cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"].get("test"):
        print(m["executable"])
')
[ -n "$bins" ] || { echo "the test binaries do not build" >&2; exit 2; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

copy() {
  for b in $bins; do
    if ! "$b" -q >"$out/$1.txt" 2>&1; then
      echo "FAIL copy $1 $(basename "$b")"
      grep -E "panicked|FAILED" "$out/$1.txt" | head -3
    fi
  done
}

failed=0
for i in $(seq 1 "$rounds"); do
  start=$(date +%s)
  result=$( (copy a & copy b & wait) )
  [ -n "$result" ] && { echo "$result"; failed=1; }
  echo "round $i: $(($(date +%s) - start)) s"
done
exit $failed
