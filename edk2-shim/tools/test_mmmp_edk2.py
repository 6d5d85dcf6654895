#!/usr/bin/env python3
"""Tests of mmmp-edk2.py swap/unswap on a synthetic module INF (written
here, shaped like PiSmmCpuDxeSmm.inf's sections), run by tests/run-all.sh."""

import os
import subprocess
import sys
import tempfile

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
    print("mmmp-edk2.py: swap/unswap tests passed")


if __name__ == "__main__":
    main()
