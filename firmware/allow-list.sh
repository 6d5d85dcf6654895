# Sourced by check-undefined.sh and check-coff.sh: the undefined symbols a
# firmware object may have, and the check of one object against them.
#
#   check_undefined NM FILE ALLOWED...   sets fail=1 on a symbol not allowed

# Before renaming, and as shipped (the shim's MmMpLib implements these).
ALLOWED_RAW="memcpy memset memmove memcmp bcmp"
ALLOWED_SHIPPED="MmMpMemCopy MmMpMemSet MmMpMemMove MmMpMemCompare MmMpMemBcmp"

check_undefined() {
  local nm="$1" file="$2" allowed="$3" sym found
  found="$("$nm" -u "$file" | awk '{ print $NF }' | sort -u)"
  echo "undefined symbols of $(basename "$file"): $(echo $found)"
  for sym in $found; do
    if ! grep -qw -- "$sym" <<<"$allowed"; then
      echo "  NOT ALLOWED: $sym" >&2
      fail=1
    fi
  done
}
