#!/usr/bin/env python3
"""Put mm-mp into an EDK2 tree: the integrator's side of edk2-shim/.

  mmmp-edk2.py install DEST
      Build the firmware objects (make -C firmware, and make -C firmware
      coff when the LLVM tools are there) and copy MmMpPkg into
      DEST/MmMpPkg (DEST: the WORKSPACE or a directory of PACKAGES_PATH),
      with include/mm_mp.h as MmMpPkg/Include/mm_mp.h and the objects as
      MmMpPkg/Library/MmMpLib/MmMpRust.o (ELF) and MmMpRust.obj (COFF).
      Run it again after updating mm-mp.

  mmmp-edk2.py swap INF [--package DIR]
      Edit PiSmmCpuDxeSmm.inf (INF) so that the driver is built with
      MmMpPkg/PiSmmCpuDxeSmm/MmMpService.c in place of MpService.c,
      SmmMp.c and CpuService.c: the three sources are dropped, MmMpService.c
      is added by a path relative to the INF, MmMpPkg.dec goes to
      [Packages] and MmMpLib to [LibraryClasses] (SmmCpuSyncLib, which only
      MpService.c used, is dropped). DIR is the installed MmMpPkg (default:
      found next to the INF's package). The original is kept as
      INF.mmmp-orig.

  mmmp-edk2.py unswap INF
      Restore INF from INF.mmmp-orig.

The platform DSC then needs one line for the full swap (MmMpLib mapped for
the driver) - see docs/INTEGRATION.md.
"""

import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG_SRC = os.path.join(ROOT, "edk2-shim", "MmMpPkg")
REPLACED = ("MpService.c", "SmmMp.c", "CpuService.c")
SWAP_SOURCE = os.path.join("PiSmmCpuDxeSmm", "MmMpService.c")


def fail(message):
    print("mmmp-edk2: " + message, file=sys.stderr)
    sys.exit(1)


def install(dest):
    firmware = os.path.join(ROOT, "firmware")
    subprocess.run(["make", "-C", firmware], check=True)
    obj = os.path.join(ROOT, "target", "firmware", "MmMpRust.o")
    coff = os.path.join(ROOT, "target", "firmware", "MmMpRust.obj")
    # The COFF object (CLANGPDB, Visual Studio) needs LLVM tools of
    # rustc's LLVM version; without them only the ELF toolchains work.
    if subprocess.run(["make", "-C", firmware, "coff"]).returncode != 0:
        print("mmmp-edk2: no COFF object (MmMpLibCoff.inf and SmmCpuSyncLibMmMpCoff.inf will not build); "
              "GCC and CLANGDWARF builds are not affected", file=sys.stderr)
        coff = None
    header = os.path.join(ROOT, "include", "mm_mp.h")
    target = os.path.join(os.path.abspath(dest), "MmMpPkg")
    wanted = {}
    for root, _, files in os.walk(PKG_SRC):
        for name in files:
            src = os.path.join(root, name)
            wanted[os.path.relpath(src, PKG_SRC)] = src
    wanted[os.path.join("Include", "mm_mp.h")] = header
    wanted[os.path.join("Library", "MmMpLib", "MmMpRust.o")] = obj
    if coff:
        wanted[os.path.join("Library", "MmMpLib", "MmMpRust.obj")] = coff
    changed = sync_files(wanted, target)
    print("installed %s (%d files changed)" % (target, changed))


def sync_files(wanted, target):
    """Make TARGET hold exactly WANTED (relative path -> source file).
    A file whose content changed is written anew, so it gets the current
    time and an incremental EDK2 build rebuilds what uses it; an unchanged
    file is left alone (no needless rebuild). Returns the number of files
    written or removed."""
    changed = 0
    for rel, src in sorted(wanted.items()):
        dst = os.path.join(target, rel)
        with open(src, "rb") as f:
            data = f.read()
        try:
            with open(dst, "rb") as f:
                if f.read() == data:
                    continue
        except OSError:
            pass
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(data)
        changed += 1
    for root, _, files in os.walk(target):
        for name in files:
            path = os.path.join(root, name)
            if os.path.relpath(path, target) not in wanted:
                os.remove(path)
                changed += 1
    return changed


def sections(lines):
    """Yield (section name lower-case, start, end) for every [Section]."""
    starts = [i for i, l in enumerate(lines) if l.strip().startswith("[")]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        yield lines[start].strip().lower(), start, end


def entry(line):
    """The INF entry of a line: text before a comment, stripped."""
    return line.split("#", 1)[0].strip()


def swap(inf, package):
    inf = os.path.abspath(inf)
    if not os.path.isfile(inf):
        fail("no such INF: " + inf)
    backup = inf + ".mmmp-orig"
    if os.path.exists(backup):
        fail("already swapped (%s exists); run unswap first" % backup)
    module_dir = os.path.dirname(inf)
    if package is None:
        # <ws>/UefiCpuPkg/PiSmmCpuDxeSmm/X.inf -> <ws>/MmMpPkg
        package = os.path.join(os.path.dirname(os.path.dirname(module_dir)), "MmMpPkg")
    source = os.path.join(os.path.abspath(package), SWAP_SOURCE)
    if not os.path.isfile(source):
        fail("MmMpPkg not installed at %s (run install first, or pass --package)" % package)
    rel = os.path.relpath(source, module_dir).replace(os.sep, "/")

    with open(inf, newline="") as f:
        text = f.read()
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    out = list(lines)
    removed = []
    # Walk sections from the end so that insertions keep earlier indices.
    for name, start, end in reversed(list(sections(lines))):
        body = out[start + 1:end]
        if name == "[sources]":
            keep = [l for l in body if entry(l) not in REPLACED]
            removed += [entry(l) for l in body if entry(l) in REPLACED]
            keep.insert(0, "  " + rel)
            out[start + 1:end] = keep
        elif name == "[packages]":
            if not any(entry(l) == "MmMpPkg/MmMpPkg.dec" for l in body):
                body.insert(0, "  MmMpPkg/MmMpPkg.dec")
            out[start + 1:end] = body
        elif name == "[libraryclasses]":
            body = [l for l in body if entry(l) != "SmmCpuSyncLib"]
            body.insert(0, "  MmMpLib")
            out[start + 1:end] = body
    if sorted(removed) != sorted(REPLACED):
        fail("expected %s in [Sources] of %s, found %s" % (", ".join(REPLACED), inf, ", ".join(removed) or "none"))
    shutil.copy2(inf, backup)
    with open(inf, "w", newline="") as f:
        f.write(newline.join(out) + newline)
    print("swapped %s: %s -> %s" % (inf, ", ".join(REPLACED), rel))


def unswap(inf):
    inf = os.path.abspath(inf)
    backup = inf + ".mmmp-orig"
    if not os.path.exists(backup):
        fail("not swapped: %s missing" % backup)
    shutil.move(backup, inf)
    print("restored " + inf)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="copy MmMpPkg (with header and object) into an EDK2 tree")
    p.add_argument("dest")
    p = sub.add_parser("swap", help="build PiSmmCpuDxeSmm with MmMpService.c")
    p.add_argument("inf")
    p.add_argument("--package", default=None)
    p = sub.add_parser("unswap", help="undo swap")
    p.add_argument("inf")
    args = parser.parse_args()
    if args.command == "install":
        install(args.dest)
    elif args.command == "swap":
        swap(args.inf, args.package)
    else:
        unswap(args.inf)


if __name__ == "__main__":
    main()
