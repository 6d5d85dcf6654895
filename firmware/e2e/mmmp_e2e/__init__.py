"""mm-mp's firmware end-to-end suite: OVMF built from a user's EDK2 checkout
(stock, SmmCpuSyncLib drop-in, full MpService swap), booted in QEMU to the
UEFI shell and into a Linux guest that writes UEFI variables and hot-plugs
CPUs. Entry point: firmware/e2e/run.sh (docs/INTEGRATION.md)."""
