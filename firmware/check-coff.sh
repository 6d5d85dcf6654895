#!/usr/bin/env bash
# Checks of the PE/COFF firmware object (docs/INTEGRATION.md, "Toolchains").
#
#   check-coff.sh <COFF object before renaming> <COFF object as shipped> <ELF object as shipped>
#
# * undefined symbols: the same allow-list as the ELF object (memcpy
#   memset memmove memcmp bcmp before renaming, MmMpMem* as shipped);
# * exported names: the same external functions as the ELF object;
# * relocations: only kinds a PE image carries (IMAGE_REL_AMD64_ADDR64,
#   which becomes a DIR64 base relocation; REL32 and REL32_1..5, which are
#   resolved at link time; ADDR32NB, image-relative, in the unwind tables);
#   no absolute 32-bit ADDR32, no thread-local storage;
# * no panic machinery in the object (a control shows the patterns match
#   the toolchain's libcore);
# * lld-link accepts it: a DLL of the object and the memory functions,
#   every MmMp* function exported, no undefined symbol, garbage-collected
#   (/OPT:REF), has no panic machinery in its map and carries DIR64 base
#   relocations.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
raw="$1"
obj="$2"
elf="$3"
bin="${LLVM_BIN:?LLVM_BIN: the LLVM tools (see firmware/Makefile)}"
fail=0
patterns='panicking|rust_begin_unwind|panic_bounds_check|slice_(start_|end_)?index|index_len_fail|unwrap_failed|expect_failed|panic_const|panic_fmt|begin_panic|_panic'

. "$here/allow-list.sh"
check_undefined "$bin/llvm-nm" "$raw" "$ALLOWED_RAW"
check_undefined "$bin/llvm-nm" "$obj" "$ALLOWED_SHIPPED"

# External functions defined: the same names in both objects.
coff_exports="$("$bin/llvm-nm" -g --defined-only "$obj" | awk '$2 == "T" { print $3 }' | sort)"
elf_exports="$(nm -g --defined-only "$elf" | awk '$2 == "T" { print $3 }' | sort)"
if [ "$coff_exports" != "$elf_exports" ]; then
  echo "exported functions differ between the ELF and the COFF object:" >&2
  diff <(echo "$elf_exports") <(echo "$coff_exports") >&2 || true
  fail=1
else
  echo "exported functions: $(echo "$coff_exports" | wc -l), the same as the ELF object's"
fi

# Relocation kinds.
kinds="$("$bin/llvm-readobj" --relocations "$obj" | awk '/IMAGE_REL_AMD64_/ { print $2 }' | sort | uniq -c)"
echo "relocations: $(echo "$kinds" | awk '{ printf "%s %s  ", $2, $1 }')"
bad="$(echo "$kinds" | awk '{ print $2 }' | grep -Ev '^IMAGE_REL_AMD64_(ADDR64|ADDR32NB|REL32|REL32_[1-5])$' || true)"
if [ -n "$bad" ]; then
  echo "relocation kinds a PE image cannot carry: $(echo $bad)" >&2
  fail=1
fi
if "$bin/llvm-objdump" -h "$obj" | awk '{ print $2 }' | grep -q '^\.tls'; then
  echo "thread-local sections present" >&2
  fail=1
fi

# No panic machinery, with a control on libcore.
core="$(ls "$(rustc --print sysroot)"/lib/rustlib/x86_64-unknown-linux-gnu/lib/libcore-*.rlib | head -1)"
control="$("$bin/llvm-nm" -C "$core" 2>/dev/null | grep -Ec "$patterns" || true)"
echo "control: $control panic-machinery symbols in $(basename "$core")"
if [ "$control" -eq 0 ]; then
  echo "the control found nothing: the patterns no longer match rustc's symbol names" >&2
  fail=1
fi
found="$("$bin/llvm-nm" -C "$obj" | grep -E "$patterns" || true)"
if [ -n "$found" ]; then
  echo "panic machinery in $obj:" >&2
  echo "$found" >&2
  fail=1
fi

# A link by lld-link.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/mem.c" <<'EOF'
typedef unsigned long long UINTN;
void *MmMpMemCopy (void *D, const void *S, UINTN N) { char *d = D; const char *s = S; while (N--) *d++ = *s++; return D; }
void *MmMpMemMove (void *D, const void *S, UINTN N) { return MmMpMemCopy (D, S, N); }
void *MmMpMemSet (void *D, int V, UINTN N) { char *d = D; while (N--) *d++ = (char)V; return D; }
int MmMpMemCompare (const void *A, const void *B, UINTN N) { const unsigned char *a = A, *b = B; for (; N; N--, a++, b++) if (*a != *b) return *a - *b; return 0; }
int MmMpMemBcmp (const void *A, const void *B, UINTN N) { return MmMpMemCompare (A, B, N); }
EOF
"$bin/clang" --target=x86_64-pc-windows-msvc -O2 -ffreestanding -fno-builtin -c "$tmp/mem.c" -o "$tmp/mem.obj"
exports="$(for f in $coff_exports; do case "$f" in MmMp*) printf '/EXPORT:%s ' "$f";; esac; done)"
if "$bin/lld-link" /DLL /NOENTRY /NODEFAULTLIB /OPT:REF /MACHINE:X64 /OUT:"$tmp/mm_mp.dll" \
     /MAP:"$tmp/mm_mp.map" $exports "$tmp/mem.obj" "$obj" >"$tmp/link.log" 2>&1; then
  dir64="$("$bin/llvm-readobj" --coff-basereloc "$tmp/mm_mp.dll" | grep -c 'Type: DIR64' || true)"
  linked="$(grep -Ec "$patterns" "$tmp/mm_mp.map" || true)"
  echo "lld-link: DLL with $(echo "$exports" | wc -w) exports, $dir64 DIR64 base relocations"
  if [ "$linked" -ne 0 ]; then
    echo "panic machinery in the linked DLL's map:" >&2
    grep -E "$patterns" "$tmp/mm_mp.map" >&2
    fail=1
  fi
else
  echo "lld-link refused the object:" >&2
  cat "$tmp/link.log" >&2
  fail=1
fi

if [ "$fail" -ne 0 ]; then
  echo "COFF object check: FAILED" >&2
  exit 1
fi
echo "COFF object check: passed"
