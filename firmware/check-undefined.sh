#!/usr/bin/env bash
# Undefined-symbol and relocation check of the firmware object (docs/BEHAVIOUR.md §9).
#
#   check-undefined.sh <object before renaming> <object as shipped>
#
# What a firmware link pulls in from the library is the object made by
# `ld -r --gc-sections` rooted at the MmMp* exports (firmware/Makefile), so
# that is what is checked; the archive itself also carries compiler_builtins
# members with references (e.g. __udivti3, __compilerrt_abort_impl) that no
# link of mm-mp ever pulls in.
#
# Allow-list (docs/INTEGRATION.md, "What the library needs from firmware"):
#   before renaming: memcpy memset memmove memcmp bcmp
#   as shipped:      MmMpMemCopy MmMpMemSet MmMpMemMove MmMpMemCompare
#                    MmMpMemBcmp  (the shim's MmMpLib implements them)
# Relocations in loaded sections: only kinds GenFw converts
# (R_X86_64_64, PC32, PLT32, GOTPCREL, GOTPCRELX, REX_GOTPCRELX, NONE).
set -euo pipefail
raw="$1"
obj="$2"
fail=0

. "$(dirname "$0")/allow-list.sh"
check_undefined nm "$raw" "$ALLOWED_RAW"
check_undefined nm "$obj" "$ALLOWED_SHIPPED"

# Relocations of allocated sections only (debug and unwind sections are
# dropped by EDK2's linker script).
bad="$(readelf -rW "$obj" | awk '
  /^Relocation section/ { sec = $3; gsub(/'"'"'/, "", sec); next }
  sec ~ /^\.rela\.(debug|eh_frame|comment)/ { next }
  /R_X86_64_/ { print sec, $3 }' |
  grep -Ev ' R_X86_64_(64|PC32|PLT32|GOTPCREL|GOTPCRELX|REX_GOTPCRELX|NONE)$' || true)"
if [ -n "$bad" ]; then
  echo "relocations GenFw cannot convert:" >&2
  echo "$bad" | sort | uniq -c >&2
  fail=1
else
  echo "relocations of loaded sections: $(readelf -rW "$obj" | awk '
    /^Relocation section/ { sec = $3; gsub(/'"'"'/, "", sec); next }
    sec ~ /^\.rela\.(debug|eh_frame|comment)/ { next }
    /R_X86_64_/ { print $3 }' | sort | uniq -c | awk '{ printf "%s %s  ", $2, $1 }')"
fi

# No thread-local storage, no writable-and-executable sections.
if readelf -SW "$obj" | grep -Eq '\.t(data|bss)'; then
  echo "thread-local sections present" >&2
  fail=1
fi

if [ "$fail" -ne 0 ]; then
  echo "firmware undefined-symbol check: FAILED" >&2
  exit 1
fi
echo "firmware undefined-symbol check: passed"
