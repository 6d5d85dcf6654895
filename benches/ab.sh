#!/bin/bash
# A/B of two builds of the perf bench on this machine: runs them
# alternately, N times each, one run of SECTION per call, and prints the
# median (and every value) of each figure per binary. Single runs move by
# about 10 % with the host's placement of the two vCPUs; alternating runs
# see the same placements (docs/PERFORMANCE.md, "Method").
#
# usage: bash benches/ab.sh BIN_A BIN_B [N=6] [SECTION=rendezvous]
#   BIN_A, BIN_B  bench executables: `cargo bench --bench perf --no-run`
#                 prints the path of the current one; copy it away before
#                 building the other version
#   SECTION       latency | rendezvous
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
A=$1 B=$2 N=${3:-6} SECTION=${4:-rendezvous}
for _ in $(seq "$N"); do
  for side in A B; do
    bin=$A
    [ "$side" = B ] && bin=$B
    out=$("$bin" --bench "$SECTION" --runs 1 2>&1)
    # The bench's own warning (time-shared CPUs) goes to the terminal.
    grep WARNING <<<"$out" >&2 || true
    grep -E "per SMI|round trip:" <<<"$out" |
      sed "s/dispatch round trip:/dispatch:/" |
      awk -v side="$side" '{print side, $1, $2}'
  done
done | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    side, name, value = line.split()[:3]
    runs.setdefault((name.rstrip(":"), side), []).append(float(value.rstrip("x")))
for (name, side), v in sorted(runs.items()):
    every = " ".join("%.2f" % x for x in v)
    print("%-12s %s: median %.2f  (%s)" % (name, side, statistics.median(v), every))
'
