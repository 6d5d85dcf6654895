#!/usr/bin/env bash
# No-reachable-panic check (docs/INTEGRATION.md).
#
#   check-no-panic.sh <firmware static library with .llvmbc removed>
#
# Links all_exports.c -- a program that calls every export and every
# protocol member -- against the firmware build of the library with
# -Wl,--gc-sections, runs it, and fails if the linked program contains any
# panic machinery: core::panicking, the panic handler (rust_begin_unwind),
# bounds-check, slice-index, unwrap/expect and arithmetic-overflow failure
# paths. A control first shows that the same patterns do find that
# machinery in the toolchain's own libcore, so an empty result is not an
# accident of the patterns. (The archive itself has none left to find:
# its one LTO module holds only what the exports reach.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lib="$1"
out="$(dirname "$lib")"
exe="$out/all_exports"
patterns='panicking|rust_begin_unwind|panic_bounds_check|slice_(start_|end_)?index|index_len_fail|unwrap_failed|expect_failed|panic_const|panic_fmt|begin_panic|_panic'

core="$(ls "$(rustc --print sysroot)"/lib/rustlib/x86_64-unknown-linux-gnu/lib/libcore-*.rlib | head -1)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && ar x "$core" && for o in *.o; do objcopy --remove-section=.llvmbc --remove-section=.llvmcmd "$o"; done)
control="$(nm -C "$tmp"/*.o 2>/dev/null | grep -Ec "$patterns" || true)"
echo "control: $control panic-machinery symbols in $(basename "$core")"
if [ "$control" -eq 0 ]; then
  echo "the control found nothing: the patterns no longer match rustc's symbol names" >&2
  exit 1
fi

${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -ffunction-sections -fdata-sections \
  -I"$here/../include" "$here/all_exports.c" "$lib" -Wl,--gc-sections -lpthread -o "$exe"
"$exe"

# nm -C shows both legacy and v0-mangled Rust names demangled; -a keeps
# local symbols (the program is not stripped).
found="$(nm -a -C "$exe" | grep -E "$patterns" || true)"
if [ -n "$found" ]; then
  echo "panic machinery linked into $exe:" >&2
  echo "$found" >&2
  echo "no-reachable-panic check: FAILED" >&2
  exit 1
fi
n="$(nm -a "$exe" | grep -c ' [Tt] MmMp' || true)"
echo "no-reachable-panic check: passed ($n MmMp* functions linked, no panic machinery)"
