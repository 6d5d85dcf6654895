"""Command line of the suite (firmware/e2e/run.sh)."""

import argparse
import os

PHASES = ("build", "boot", "slots", "linux", "timing")
FULL_CPUS = (1, 2, 4, 8, 32)
QUICK_CPUS = (2, 4)


def csv_ints(text):
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected numbers separated by commas: %r" % text)
    if not values or any(v < 1 or v > 255 for v in values):
        raise argparse.ArgumentTypeError("vCPU counts must be 1..255: %r" % text)
    return values


def csv_choice(choices):
    def parse(text):
        values = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [v for v in values if v not in choices]
        if not values or bad:
            raise argparse.ArgumentTypeError("choose from %s: %r" % (",".join(choices), text))
        return values

    return parse


def default_clang_bin():
    """/usr/lib/llvm-N/bin for rustc's LLVM major version N, else clang's
    directory on PATH."""
    import re
    import shutil
    import subprocess

    try:
        out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
        m = re.search(r"LLVM version: (\d+)", out)
        if m and os.path.isdir("/usr/lib/llvm-%s/bin" % m.group(1)):
            return "/usr/lib/llvm-%s/bin" % m.group(1)
    except OSError:
        pass
    clang = shutil.which("clang")
    return os.path.dirname(clang) if clang else "/usr/bin"


def parser():
    p = argparse.ArgumentParser(
        prog="firmware/e2e/run.sh",
        description="Build OVMF from your EDK2 checkout (stock, SmmCpuSyncLib drop-in, full swap), boot it in "
        "QEMU with 1..32 vCPUs and a Linux guest, and check mm-mp in real firmware. "
        "EDK2=/path/to/edk2 is required (the checkout is never written).",
        epilog="Environment: EDK2 (required), QEMU (qemu-system-x86_64 to use), QEMU_DATA (its -L data "
        "directory), KERNEL + KERNEL_MODULES (a guest kernel of your own), E2E_WORK (work directory).",
    )
    p.add_argument("--quick", action="store_true",
                   help="full swap only, 2 and 4 vCPUs, 3 hot-plug cycles, 10 variables per CPU, no timing")
    p.add_argument("--variants", type=csv_choice(("stock", "dropin", "swap")), default=None,
                   help="firmware variants (default: stock,dropin,swap)")
    p.add_argument("--cpus", type=csv_ints, default=None, help="vCPU counts to boot (default: 1,2,4,8,32)")
    p.add_argument("--modes", type=csv_choice(("traditional", "relaxed")), default=("traditional", "relaxed"),
                   help="sync modes to boot: traditional (broadcast SMIs) and relaxed (directed SMI IPIs)")
    p.add_argument("--mm", type=csv_choice(("traditional", "standalone")), default=("traditional",),
                   help="MM flavours: traditional (PiSmmCpuDxeSmm, default) and/or standalone "
                   "(PiSmmCpuStandaloneMm, OVMF's STANDALONE_MM_ENABLE): boot and slot checks for each")
    p.add_argument("--toolchains", type=csv_choice(("GCC", "CLANGDWARF", "CLANGPDB")), default=("GCC",),
                   help="EDK2 toolchain tags to build with (default GCC; CLANGDWARF links the ELF object, "
                   "CLANGPDB the PE/COFF one): boot and slot checks for each")
    p.add_argument("--clang-bin", default=os.environ.get("CLANG_BIN"),
                   help="directory of clang, lld and the LLVM tools for the CLANG* toolchains "
                   "(default: /usr/lib/llvm-N/bin of rustc's LLVM version N)")
    p.add_argument("--phases", type=csv_choice(PHASES), default=PHASES,
                   help="what to run (default: all): " + ",".join(PHASES))
    p.add_argument("--hotplug-cycles", type=int, default=None, help="CPU add/remove cycles (default 10)")
    p.add_argument("--vars", type=int, default=None, help="variables per CPU in the Linux guest (default 20)")
    p.add_argument("--timing-runs", type=int, default=5, help="boots per side for the timing table (default 5)")
    p.add_argument("--timing-cpus", type=csv_ints, default=(8, 32), help="vCPU counts of the timing table")
    p.add_argument("--relaxed-cpus", type=csv_ints, default=None,
                   help="vCPU counts booted in relaxed mode (default: the --cpus counts up to 8)")
    p.add_argument("--work", default=os.environ.get("E2E_WORK"), help="work directory (default: target/e2e)")
    p.add_argument("--qemu", default=os.environ.get("QEMU"), help="qemu-system-x86_64 to use")
    p.add_argument("--qemu-data", default=os.environ.get("QEMU_DATA"), help="QEMU's -L data directory")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto: KVM when it can do SMM, else TCG")
    p.add_argument("--tcg-threads", choices=("single", "multi"), default="single",
                   help="TCG threading (default single: steadier timings on a small host)")
    p.add_argument("--boot-timeout", type=int, default=900, help="seconds for one boot to power off")
    p.add_argument("--edk2", default=os.environ.get("EDK2"), help="EDK2 checkout (or EDK2=...)")
    return p


def parse(argv):
    p = parser()
    args = p.parse_args(argv)
    if not args.edk2:
        p.error("set EDK2=/path/to/edk2 (a checkout with its submodules; OpenSSL may be absent)")
    if args.quick:
        args.variants = args.variants or ("swap",)
        args.cpus = args.cpus or QUICK_CPUS
        args.hotplug_cycles = 3 if args.hotplug_cycles is None else args.hotplug_cycles
        args.vars = 10 if args.vars is None else args.vars
        if "timing" in args.phases and args.phases == PHASES:
            args.phases = tuple(x for x in PHASES if x != "timing")
    args.variants = args.variants or ("stock", "dropin", "swap")
    args.cpus = args.cpus or FULL_CPUS
    args.hotplug_cycles = 10 if args.hotplug_cycles is None else args.hotplug_cycles
    args.vars = 20 if args.vars is None else args.vars
    if args.relaxed_cpus is None:
        args.relaxed_cpus = tuple(n for n in args.cpus if n <= 8) or args.cpus
    if args.hotplug_cycles < 0 or args.vars < 1 or args.timing_runs < 1:
        p.error("--hotplug-cycles >= 0, --vars >= 1, --timing-runs >= 1")
    if args.clang_bin is None:
        args.clang_bin = default_clang_bin()
    if args.work is None:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        args.work = os.path.join(repo, "target", "e2e")
    return args
