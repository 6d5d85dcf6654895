"""Building OvmfPkgX64 in a prepared tree."""

import glob
import os
import shlex
import subprocess
import time

from .workspace import PLATFORM_DSC


class BuildError(Exception):
    pass


class Firmware:
    """What a build produced: the flash images, the shell and the driver."""

    def __init__(self, tree, toolchain, target):
        self.tree = tree
        self.toolchain = toolchain
        self.target = target
        self.out = os.path.join(tree, "Build", "OvmfX64", "%s_%s" % (target, toolchain))
        self.code = os.path.join(self.out, "FV", "OVMF_CODE.fd")
        self.vars = os.path.join(self.out, "FV", "OVMF_VARS.fd")

    def shell(self):
        """The UEFI shell application (booted from a FAT directory: OVMF
        does not start its built-in shell option by itself)."""
        candidates = sorted(glob.glob(os.path.join(self.out, "X64", "Shell.efi")))
        candidates += sorted(glob.glob(os.path.join(self.out, "X64", "ShellPkg", "Application", "Shell", "*", "OUTPUT", "Shell.efi")))
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise BuildError("no Shell.efi under " + self.out)

    def module_size(self, name):
        path = os.path.join(self.out, "X64", name + ".efi")
        return os.path.getsize(path) if os.path.isfile(path) else None

    def exists(self):
        return os.path.isfile(self.code) and os.path.isfile(self.vars)


def build_command(toolchain="GCC", target="DEBUG", defines=None, jobs=None):
    """The EDK2 `build` invocation (as a list) for OvmfPkgX64 with SMM."""
    jobs = jobs or os.cpu_count() or 2
    cmd = ["build", "-p", PLATFORM_DSC, "-a", "X64", "-t", toolchain, "-b", target, "-n", str(jobs)]
    for name, value in sorted((defines or {}).items()):
        cmd += ["-D", "%s=%s" % (name, value)]
    return cmd


def default_defines(mm="traditional"):
    d = {"SMM_REQUIRE": "TRUE", "NETWORK_ENABLE": "FALSE"}
    if mm == "standalone":
        d["STANDALONE_MM_ENABLE"] = "TRUE"
    return d


def toolchain_env(toolchain, clang_bin):
    """Environment a toolchain tag needs: the CLANG* tags find clang, lld
    and the LLVM tools through CLANG_BIN (and CLANGDWARF's objcopy through
    CLANGDWARF_X64_PREFIX, as tools_def.txt reads it)."""
    if not toolchain.startswith("CLANG"):
        return {}
    prefix = clang_bin.rstrip("/") + "/"
    return {"CLANG_BIN": prefix, "CLANGDWARF_X64_PREFIX": prefix}


def run_build(tree, logfile, toolchain="GCC", target="DEBUG", defines=None, env_extra=None):
    """Source edksetup.sh in TREE and run build; returns (Firmware, seconds).
    The whole output goes to LOGFILE."""
    cmd = build_command(toolchain, target, defines)
    script = "set -e; cd %s; export WORKSPACE=$PWD PACKAGES_PATH=$PWD; unset EDK_TOOLS_PATH CONF_PATH; . ./edksetup.sh >/dev/null; %s" % (
        shlex.quote(tree),
        " ".join(shlex.quote(c) for c in cmd),
    )
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.update(env_extra or {})
    start = time.monotonic()
    with open(logfile, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        r = subprocess.run(["bash", "-c", script], stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.monotonic() - start
    fw = Firmware(tree, toolchain, target)
    if r.returncode != 0 or not fw.exists():
        raise BuildError("build failed after %.0f s; last lines of %s:\n%s" % (seconds, logfile, tail(logfile, 25)))
    return fw, seconds


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
