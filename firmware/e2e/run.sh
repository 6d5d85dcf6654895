#!/usr/bin/env bash
# mm-mp's firmware end-to-end suite: OVMF from your EDK2 checkout, booted in
# QEMU with mm-mp swapped in. Usage and what it checks: docs/INTEGRATION.md
# ("Rerun the proof"), or `bash firmware/e2e/run.sh --help`.
#
#   EDK2=/path/to/edk2 bash firmware/e2e/run.sh            # everything
#   EDK2=/path/to/edk2 bash firmware/e2e/run.sh --quick    # full swap, 2 and 4 vCPUs
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from mmmp_e2e.suite import main; sys.exit(main(sys.argv[2:]))' "$here" "$@"
