#!/usr/bin/env bash
# The C programs under valgrind's memcheck (docs/RELIABILITY.md):
# the C example (4 CPU threads, SMIs that dispatch, broadcast, check, wait
# and ask the CPU service) and firmware/all_exports (every export and
# protocol member, linked against the firmware build). Any error, or a
# definite leak, fails.
#
# helgrind and DRD are not run: they model pthread primitives, not C11/Rust
# atomics, and on x86 the library's acquire/release operations are plain
# loads and stores to them, so every hand-off is reported as a race
# (91 helgrind and 102 DRD reports on the C example, all on atomics or on
# data those atomics publish). The library's synchronisation is checked
# by the loom models instead (tests/loom.rs, tests/loom_sync.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
make -s -C c-examples four_cpus
make -s -C firmware check >/dev/null
for prog in c-examples/four_cpus target/firmware/all_exports; do
  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite "$prog" >/dev/null
  echo "memcheck clean: $prog"
done
