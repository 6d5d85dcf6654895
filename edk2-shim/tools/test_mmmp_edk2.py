#!/usr/bin/env python3
"""Tests of mmmp-edk2.py swap/unswap on synthetic module INFs (written
here, shaped like PiSmmCpuDxeSmm.inf's and PiSmmCpuStandaloneMm.inf's
sections), and of install's file sync; run by tests/run-all.sh."""

import importlib.util
import os
import subprocess
import sys
import tempfile
import time

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mmmp-edk2.py")

INF = """[Defines]
  BASE_NAME = Demo

[Sources]
  Demo.c
  MpService.c
  CpuService.c   # services
  CpuService.h
  SmmMp.h
  SmmMp.c

[Sources.X64]
  X64/Entry.nasm

[Packages]
  MdePkg/MdePkg.dec
  UefiCpuPkg/UefiCpuPkg.dec

[LibraryClasses]
  BaseLib
  SmmCpuSyncLib
  DebugLib
"""


# PiSmmCpuStandaloneMm.inf's shape: the same three sources, other
# neighbours (MM_STANDALONE entry library, no DXE-only libraries).
STANDALONE_INF = """[Defines]
  INF_VERSION = 0x0001001B
  BASE_NAME = PiSmmCpuStandaloneMm
  MODULE_TYPE = MM_STANDALONE
  ENTRY_POINT = PiCpuStandaloneMmEntry

[Sources]
  PiSmmCpuCommon.c
  PiSmmCpuStandaloneMm.c
  MpService.c
  SyncTimer.c
  CpuS3.c
  CpuService.c
  SmmMp.h
  SmmMp.c
  NonMmramMapStandaloneMm.c

[Sources.X64]
  X64/SmiEntry.nasm

[Packages]
  MdePkg/MdePkg.dec
  MdeModulePkg/MdeModulePkg.dec
  UefiCpuPkg/UefiCpuPkg.dec

[LibraryClasses]
  StandaloneMmDriverEntryPoint
  SmmCpuSyncLib
  MmServicesTableLib
"""


def run(*args, expect=0):
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)
    if p.returncode != expect:
        raise SystemExit("mmmp-edk2.py %s: exit %d (want %d)\n%s%s" % (" ".join(args), p.returncode, expect, p.stdout, p.stderr))
    return p


def entries(text, section):
    out, inside = [], False
    for line in text.splitlines():
        s = line.split("#", 1)[0].strip()
        if s.startswith("["):
            inside = s.lower() == section.lower()
        elif inside and s:
            out.append(s)
    return out


def main():
    with tempfile.TemporaryDirectory() as ws:
        module = os.path.join(ws, "UefiCpuPkg", "Demo")
        os.makedirs(module)
        os.makedirs(os.path.join(ws, "MmMpPkg", "PiSmmCpuDxeSmm"))
        open(os.path.join(ws, "MmMpPkg", "PiSmmCpuDxeSmm", "MmMpService.c"), "w").close()
        inf = os.path.join(module, "Demo.inf")
        for newline in ("\n", "\r\n"):
            with open(inf, "w", newline="") as f:
                f.write(INF.replace("\n", newline))
            run("swap", inf)
            with open(inf, newline="") as f:
                text = f.read()
            assert ("\r\n" in text) == (newline == "\r\n"), "line endings changed"
            src = entries(text, "[Sources]")
            assert src == ["../../MmMpPkg/PiSmmCpuDxeSmm/MmMpService.c", "Demo.c", "CpuService.h", "SmmMp.h"], src
            assert entries(text, "[Sources.X64]") == ["X64/Entry.nasm"]
            assert entries(text, "[Packages]") == ["MmMpPkg/MmMpPkg.dec", "MdePkg/MdePkg.dec", "UefiCpuPkg/UefiCpuPkg.dec"]
            assert entries(text, "[LibraryClasses]") == ["MmMpLib", "BaseLib", "DebugLib"]
            run("swap", inf, expect=1)  # twice: refused, nothing changed
            with open(inf, newline="") as f:
                assert f.read() == text
            run("unswap", inf)
            with open(inf, newline="") as f:
                assert f.read() == INF.replace("\n", newline), "unswap did not restore the INF"
            run("unswap", inf, expect=1)
        # The Standalone MM driver's INF, swapped and restored the same way.
        standalone = os.path.join(module, "PiSmmCpuStandaloneMm.inf")
        for newline in ("\n", "\r\n"):
            original = STANDALONE_INF.replace("\n", newline)
            with open(standalone, "w", newline="") as f:
                f.write(original)
            run("swap", standalone)
            with open(standalone, newline="") as f:
                text = f.read()
            assert ("\r\n" in text) == (newline == "\r\n"), "line endings changed"
            src = entries(text, "[Sources]")
            assert src == ["../../MmMpPkg/PiSmmCpuDxeSmm/MmMpService.c", "PiSmmCpuCommon.c", "PiSmmCpuStandaloneMm.c",
                           "SyncTimer.c", "CpuS3.c", "SmmMp.h", "NonMmramMapStandaloneMm.c"], src
            assert entries(text, "[LibraryClasses]") == ["MmMpLib", "StandaloneMmDriverEntryPoint", "MmServicesTableLib"]
            assert entries(text, "[Packages]")[0] == "MmMpPkg/MmMpPkg.dec"
            run("unswap", standalone)
            with open(standalone, newline="") as f:
                assert f.read() == original, "unswap did not restore the Standalone MM INF byte for byte"
        # An INF without the three sources is refused and left alone.
        with open(inf, "w") as f:
            f.write(INF.replace("  MpService.c\n", ""))
        run("swap", inf, expect=1)
        assert not os.path.exists(inf + ".mmmp-orig")
        # No installed package: refused.
        os.remove(os.path.join(ws, "MmMpPkg", "PiSmmCpuDxeSmm", "MmMpService.c"))
        with open(inf, "w") as f:
            f.write(INF)
        run("swap", inf, expect=1)
    check_sync()
    print("mmmp-edk2.py: swap/unswap and install-sync tests passed")


def check_sync():
    """install's sync: changed files are written anew (new mtime, so an
    incremental EDK2 build rebuilds them), unchanged ones are left alone,
    files no longer in the package are removed."""
    spec = importlib.util.spec_from_file_location("mmmp_edk2", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "src"), os.path.join(d, "dst")
        os.makedirs(os.path.join(src, "Lib"))
        for name, text in (("a.c", "a"), ("Lib/b.c", "b")):
            with open(os.path.join(src, name), "w") as f:
                f.write(text)
        wanted = {n: os.path.join(src, n) for n in ("a.c", "Lib/b.c")}
        assert tool.sync_files(wanted, dst) == 2
        old = time.time() - 1000
        for n in wanted:
            os.utime(os.path.join(dst, n), (old, old))
        with open(os.path.join(src, "a.c"), "w") as f:
            f.write("a2")
        with open(os.path.join(dst, "stale.c"), "w") as f:
            f.write("x")
        assert tool.sync_files(wanted, dst) == 2  # a.c rewritten, stale.c removed
        assert os.path.getmtime(os.path.join(dst, "a.c")) > old + 500, "changed file keeps an old time"
        assert os.path.getmtime(os.path.join(dst, "Lib/b.c")) == old, "unchanged file rewritten"
        assert not os.path.exists(os.path.join(dst, "stale.c"))
        with open(os.path.join(dst, "a.c")) as f:
            assert f.read() == "a2"


if __name__ == "__main__":
    main()
