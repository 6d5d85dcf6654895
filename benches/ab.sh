#!/bin/bash
# A/B of two builds of the perf bench on this machine: runs them
# alternately, N clean runs each, one run of SECTION per call, and prints
# the median (and every value) of each figure per binary. Single runs move
# by about 10 % with the host's placement of the two vCPUs; alternating
# runs see the same placements (docs/PERFORMANCE.md, "Method"). A figure
# whose run warned of time-shared vCPUs (ping-pong over 200 ns) is dropped
# and its run repeated (at most 4 N attempts). For [2] the straight-line
# reference and mm-mp's ratio to it are printed too ("/straight"): the
# ratio moves less with the host's mode than the figures.
#
# usage: bash benches/ab.sh BIN_A BIN_B [N=6] [SECTION=rendezvous]
#   BIN_A, BIN_B  bench executables: `cargo bench --bench perf --no-run`
#                 prints the path of the current one; copy it away before
#                 building the other version
#   SECTION       latency | rendezvous  (MM_MP_BENCH_MODE limits [2] to
#                 one sync mode, as for the bench itself)
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
exec python3 - "$1" "$2" "${3:-6}" "${4:-rendezvous}" <<'EOF'
import os, re, statistics, subprocess, sys

bins, n, section = sys.argv[1:3], int(sys.argv[3]), sys.argv[4]
if section == "latency":
    figures = ["dispatch"]
else:
    mode = os.environ.get("MM_MP_BENCH_MODE")
    figures = [mode] if mode else ["traditional", "relaxed"]
summary = re.compile(
    r"\s+(?:(traditional|relaxed): ([\d.]+) ping-pongs per SMI"
    r"|(dispatch) round trip: ([\d.]+)x"
    r"|(traditional|relaxed)-straight: ([\d.]+) ping-pongs per SMI.*straight-line ([\d.]+))"
)
runs = {}


def one_run(side, binary):
    """Parse one run; keep each figure's block unless it warned."""
    out = subprocess.run(
        [binary, "--bench", section, "--runs", "1"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    block, name = {}, None

    def commit():
        for key, value in block.items():
            runs.setdefault((key, side), []).append(value)

    for line in out:
        m = summary.match(line)
        if m and (m.group(1) or m.group(3)):
            commit()
            name = m.group(1) or m.group(3)
            block = {name: float(m.group(2) or m.group(4))}
        elif m and m.group(5):
            block[m.group(5) + "-straight"] = float(m.group(6))
            block[m.group(5) + "/straight"] = float(m.group(7))
        elif "WARNING" in line:
            print(line.strip(), file=sys.stderr)
            block = {}
    commit()


def clean(side):
    return min(len(runs.get((f, side), [])) for f in figures)


for _ in range(4 * n):
    if all(clean(s) >= n for s in "AB"):
        break
    for side, binary in zip("AB", bins):
        one_run(side, binary)
for (name, side), v in sorted(runs.items()):
    every = " ".join("%.2f" % x for x in v)
    print("%-22s %s: median %.2f  n=%d (%s)" % (name, side, statistics.median(v), len(v), every))
EOF
