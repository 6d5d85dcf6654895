"""Preparing EDK2 trees from the user's checkout.

The user's checkout ($EDK2) is never written. The suite copies it (without
.git and Build) into WORK/base, makes the edits a machine without some
submodules needs there and builds BaseTools in it (BaseTools compiles
against the MdePkg beside it); every firmware variant is then a copy of
the base with its own edits and its own Build directory. Every edit is
printed as `edit: FILE:LINE: what (why)`; an edit found already applied
(a reused tree) is printed as `kept: ...`.
"""

import hashlib
import os
import re
import shutil
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOOL = os.path.join(REPO, "edk2-shim", "tools", "mmmp-edk2.py")

# The firmware variants: what replaces EDK2's multi-processor code.
VARIANTS = ("stock", "dropin", "swap")
VARIANT_TITLES = {
    "stock": "stock",
    "dropin": "SmmCpuSyncLib drop-in",
    "swap": "full swap",
}

# The CPU driver and the self-test, per MM flavour.
DRIVER_INF = {
    "traditional": "UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf",
    "standalone": "UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuStandaloneMm.inf",
}
SELFTEST_INF = {
    "traditional": "MmMpPkg/MmMpSelfTest/MmMpSelfTest.inf",
    "standalone": "MmMpPkg/MmMpSelfTest/MmMpSelfTestStandaloneMm.inf",
}
PLATFORM_DSC = "OvmfPkg/OvmfPkgX64.dsc"
PLATFORM_FDF = "OvmfPkg/OvmfPkgX64.fdf"
NULL_CRYPT_INF = "CryptoPkg/Library/BaseCryptLibNull/BaseCryptLibNull.inf"
OPENSSL_MARKER = "CryptoPkg/Library/OpensslLib/openssl/include/openssl"


class PrepareError(Exception):
    pass


class EditLog:
    """Prints every edit; keeps them for the tree's record."""

    def __init__(self, printer=print):
        self.printer = printer
        self.lines = []

    def edit(self, path, line, what, why, kept=False):
        text = "%s: %s%s: %s (%s)" % (
            "kept" if kept else "edit",
            path,
            (":%d" % line) if line else "",
            what,
            why,
        )
        self.lines.append(text)
        self.printer(text)


# ---------------------------------------------------------------------------
# Text files with EDK2 line endings.


def read_lines(path):
    """(lines without terminators, newline) of a text file."""
    with open(path, newline="") as f:
        text = f.read()
    newline = "\r\n" if "\r\n" in text else "\n"
    return text.splitlines(), newline


def write_lines(path, lines, newline):
    with open(path, "w", newline="") as f:
        f.write(newline.join(lines) + newline)


def strip_comment(line):
    return line.split("#", 1)[0].strip()


# ---------------------------------------------------------------------------
# DSC / FDF surgery.


def find_component(lines, inf):
    """(first, last) line index of INF's component entry in a DSC: one line,
    or the line with `{` through its closing `}`. None if absent."""
    for i, line in enumerate(lines):
        entry = strip_comment(line)
        if entry == inf or entry.startswith(inf + " ") or entry == inf + "{" or entry.startswith(inf + "{"):
            if entry.endswith("{"):
                for j in range(i + 1, len(lines)):
                    if strip_comment(lines[j]) == "}":
                        return i, j
                raise PrepareError("unterminated component block of %s" % inf)
            return i, i
    return None


def dsc_component_after(path, rel, anchor_inf, new_inf, log, why):
    """Add NEW_INF as a component right after ANCHOR_INF's entry."""
    lines, nl = read_lines(path)
    if find_component(lines, new_inf) is not None:
        log.edit(rel, find_component(lines, new_inf)[0] + 1, "component " + new_inf, why, kept=True)
        return
    span = find_component(lines, anchor_inf)
    if span is None:
        raise PrepareError("%s has no component %s" % (rel, anchor_inf))
    indent = re.match(r"\s*", lines[span[0]]).group(0)
    lines.insert(span[1] + 1, indent + new_inf)
    write_lines(path, lines, nl)
    log.edit(rel, span[1] + 2, "component %s after %s" % (new_inf, anchor_inf), why)


def dsc_library_in_component(path, rel, component_inf, library_class, library_inf, log, why):
    """Map LIBRARY_CLASS to LIBRARY_INF in COMPONENT_INF's <LibraryClasses>
    (replacing an existing mapping of that class)."""
    lines, nl = read_lines(path)
    span = find_component(lines, component_inf)
    if span is None:
        raise PrepareError("%s has no component %s" % (rel, component_inf))
    first, last = span
    if first == last:
        raise PrepareError("%s: component %s has no <LibraryClasses> block" % (rel, component_inf))
    wanted = "%s|%s" % (library_class, library_inf)
    section = None
    for i in range(first + 1, last):
        entry = strip_comment(lines[i])
        if entry.startswith("<"):
            section = entry.lower()
            continue
        if section == "<libraryclasses>" and entry.split("|", 1)[0].strip() == library_class:
            if entry.replace(" ", "") == wanted:
                log.edit(rel, i + 1, wanted, why, kept=True)
                return
            indent = re.match(r"\s*", lines[i]).group(0)
            old = entry
            lines[i] = indent + wanted
            write_lines(path, lines, nl)
            log.edit(rel, i + 1, "%s -> %s" % (old, wanted), why)
            return
    for i in range(first + 1, last):
        if strip_comment(lines[i]).lower() == "<libraryclasses>":
            indent = re.match(r"\s*", lines[i + 1] if i + 1 < last else lines[i]).group(0) or "      "
            lines.insert(i + 1, indent + wanted)
            write_lines(path, lines, nl)
            log.edit(rel, i + 2, "added " + wanted, why)
            return
    raise PrepareError("%s: component %s has no <LibraryClasses> block" % (rel, component_inf))


def fdf_inf_after(path, rel, anchor_inf, new_inf, log, why):
    """Add `INF NEW_INF` right after `INF ANCHOR_INF` (same firmware volume,
    same !if branch)."""
    lines, nl = read_lines(path)

    def inf_of(line):
        entry = strip_comment(line)
        if not entry.upper().startswith("INF "):
            return None
        return entry.split()[-1]

    for i, line in enumerate(lines):
        if inf_of(line) == new_inf:
            log.edit(rel, i + 1, "INF " + new_inf, why, kept=True)
            return
    for i, line in enumerate(lines):
        if inf_of(line) == anchor_inf:
            indent = re.match(r"\s*", line).group(0)
            lines.insert(i + 1, indent + "INF  " + new_inf)
            write_lines(path, lines, nl)
            log.edit(rel, i + 2, "INF %s after %s" % (new_inf, anchor_inf), why)
            return
    raise PrepareError("%s has no INF %s" % (rel, anchor_inf))


# ---------------------------------------------------------------------------
# Environment edits: what a checkout without some submodules needs.


def submodule_paths(tree):
    path = os.path.join(tree, ".gitmodules")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [m.group(1).strip() for m in re.finditer(r"^\s*path\s*=\s*(.+)$", f.read(), re.M)]


def absent_submodules(tree):
    """Submodule directories that are missing or empty."""
    absent = []
    for rel in submodule_paths(tree):
        full = os.path.join(tree, rel)
        if not os.path.isdir(full) or not os.listdir(full):
            absent.append(rel)
    return absent


def dec_include_dirs(dec_path):
    """Every directory listed in the [Includes*] sections of a DEC file."""
    lines, _ = read_lines(dec_path)
    dirs = []
    in_includes = False
    for line in lines:
        entry = strip_comment(line)
        if entry.startswith("["):
            in_includes = entry.lower().startswith("[includes")
            continue
        if in_includes and entry:
            dirs.append(entry)
    return dirs


def placeholder_include_dirs(tree, log):
    """Create the include directories DEC files list inside absent
    submodules: BaseTools refuses a package whose include directory does
    not exist, even when no module of the build uses it."""
    absent = absent_submodules(tree)
    if not absent:
        return
    for top in sorted(os.listdir(tree)):
        pkg = os.path.join(tree, top)
        if not os.path.isdir(pkg):
            continue
        for name in sorted(os.listdir(pkg)):
            if not name.endswith(".dec"):
                continue
            for inc in dec_include_dirs(os.path.join(pkg, name)):
                rel = os.path.normpath(os.path.join(top, inc.replace("\\", "/")))
                if not any(rel == a or rel.startswith(a + os.sep) for a in absent):
                    continue
                full = os.path.join(tree, rel)
                if os.path.isdir(full):
                    continue
                os.makedirs(full)
                log.edit(rel, 0, "empty directory", "listed in %s/%s; submodule absent" % (top, name))


def null_crypto(tree, log):
    """Without OpenSSL, map every BaseCryptLib of the platform DSC (and the
    .dsc.inc files it includes from OvmfPkg/Include/Dsc) to
    BaseCryptLibNull. OVMF without secure boot and network needs no
    working cryptography."""
    if os.path.isdir(os.path.join(tree, OPENSSL_MARKER)):
        return
    candidates = [PLATFORM_DSC] + sorted(
        os.path.join("OvmfPkg/Include/Dsc", n)
        for n in os.listdir(os.path.join(tree, "OvmfPkg/Include/Dsc"))
        if n.endswith(".inc")
    )
    pattern = re.compile(r"^(\s*)BaseCryptLib\s*\|\s*(CryptoPkg/Library/BaseCryptLib\w*/\w+\.inf)(.*)$")
    for rel in candidates:
        path = os.path.join(tree, rel)
        lines, nl = read_lines(path)
        changed = False
        for i, line in enumerate(lines):
            m = pattern.match(line)
            if not m:
                continue
            if m.group(2) == NULL_CRYPT_INF:
                log.edit(rel, i + 1, "BaseCryptLib|" + NULL_CRYPT_INF, "no OpenSSL submodule", kept=True)
                continue
            lines[i] = "%sBaseCryptLib|%s%s" % (m.group(1), NULL_CRYPT_INF, m.group(3))
            changed = True
            log.edit(rel, i + 1, "BaseCryptLib %s -> BaseCryptLibNull" % m.group(2), "no OpenSSL submodule")
        if changed:
            write_lines(path, lines, nl)


# ---------------------------------------------------------------------------
# Trees.


def checkout_identity(edk2):
    """(commit or 'unknown', dirty flag, a digest of both) of the checkout."""
    commit = "unknown"
    dirty = False
    try:
        commit = subprocess.run(
            ["git", "-C", edk2, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", edk2, "status", "--porcelain", "--untracked-files=no"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        status = ""
    digest = hashlib.sha256((os.path.abspath(edk2) + commit + status).encode()).hexdigest()[:16]
    return commit, dirty, digest


def copy_tree(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(
        src,
        dst,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", "Build"),
    )


def read_stamp(tree):
    try:
        with open(os.path.join(tree, ".mmmp-e2e-stamp")) as f:
            return f.read().strip()
    except OSError:
        return None


def write_stamp(tree, stamp):
    with open(os.path.join(tree, ".mmmp-e2e-stamp"), "w") as f:
        f.write(stamp + "\n")


class Workspace:
    """WORK/base (environment edits, BaseTools) and WORK/trees/<variant>."""

    def __init__(self, edk2, work, printer=print, run=subprocess.run):
        self.edk2 = os.path.abspath(edk2)
        self.work = os.path.abspath(work)
        self.printer = printer
        self.run = run
        self.base = os.path.join(self.work, "base")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.commit, self.dirty, self.identity = checkout_identity(self.edk2)

    def check_checkout(self):
        for rel in ("edksetup.sh", PLATFORM_DSC, PLATFORM_FDF, DRIVER_INF["traditional"]):
            if not os.path.isfile(os.path.join(self.edk2, rel)):
                raise PrepareError("%s is not an EDK2 checkout with OvmfPkg (no %s)" % (self.edk2, rel))
        for rel in ("BaseTools/Source/C/BrotliCompress/brotli/c", "MdeModulePkg/Library/BrotliCustomDecompressLib/brotli/c"):
            if not os.path.isdir(os.path.join(self.edk2, rel)):
                raise PrepareError(
                    "%s: submodule %s is missing; run `git submodule update --init` in the checkout "
                    "(OpenSSL may stay absent)" % (self.edk2, os.path.dirname(rel))
                )

    def prepare_base(self):
        """Copy the checkout, apply the environment edits, build BaseTools."""
        self.check_checkout()
        stamp = "base " + self.identity
        log = EditLog(self.printer)
        if read_stamp(self.base) != stamp:
            self.printer("copying %s to %s (without .git and Build)" % (self.edk2, self.base))
            copy_tree(self.edk2, self.base)
            fresh = True
        else:
            fresh = False
        placeholder_include_dirs(self.base, log)
        null_crypto(self.base, log)
        basetools_ok = os.path.isfile(os.path.join(self.base, "BaseTools/Source/C/bin/GenFw"))
        if fresh or not basetools_ok:
            logfile = os.path.join(self.logs, "basetools.log")
            self.printer("building BaseTools (log: %s)" % logfile)
            with open(logfile, "w") as out:
                r = self.run(
                    ["make", "-C", "BaseTools", "-j%d" % (os.cpu_count() or 2)],
                    cwd=self.base,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if r.returncode != 0:
                raise PrepareError("BaseTools did not build; see " + logfile)
        write_stamp(self.base, stamp)
        return log.lines

    def tree(self, key):
        return os.path.join(self.work, "trees", key)

    def prepare_variant(self, variant, mm="traditional", toolchain="GCC"):
        """A copy of the base with MmMpPkg installed and the variant's
        edits; returns the tree's path."""
        key = variant_key(variant, mm, toolchain)
        tree = self.tree(key)
        stamp = "variant %s %s %s" % (key, self.identity, read_stamp(self.base))
        if read_stamp(tree) != stamp:
            self.printer("copying the base tree to %s" % tree)
            copy_tree(self.base, tree)
        log = EditLog(self.printer)
        self.install_package(tree)
        apply_variant_edits(tree, variant, mm, log, coff=is_coff_toolchain(toolchain))
        write_stamp(tree, stamp)
        return tree

    def install_package(self, tree):
        """MmMpPkg with the current header and firmware object, by the
        project's own tool (which runs `make -C firmware`)."""
        logfile = os.path.join(self.logs, "install.log")
        with open(logfile, "a") as out:
            r = self.run([_python(), TOOL, "install", tree], stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise PrepareError("mmmp-edk2.py install failed; see " + logfile)
        self.printer("installed MmMpPkg into %s (mmmp-edk2.py install)" % tree)


def _python():
    import sys

    return sys.executable or "python3"


def variant_key(variant, mm="traditional", toolchain="GCC"):
    """The tree's name: the variant, then the MM flavour and the toolchain
    when they are not the defaults (traditional MM, GCC)."""
    parts = [variant]
    if mm != "traditional":
        parts.append(mm)
    if toolchain != "GCC":
        parts.append(toolchain.lower())
    return "-".join(parts)


def is_coff_toolchain(toolchain):
    """Toolchains that link PE/COFF objects (lld-link, link.exe): they take
    MmMpPkg's *Coff.inf library instances."""
    return toolchain == "CLANGPDB" or toolchain.startswith("VS")


def apply_variant_edits(tree, variant, mm, log, coff=False):
    """The self-test in every variant; the SmmCpuSyncLib line (drop-in) or
    the INF swap and the MmMpLib line (full swap). COFF: the library
    instances that carry the COFF object."""
    if variant not in VARIANTS:
        raise PrepareError("unknown variant " + variant)
    driver = DRIVER_INF[mm]
    dsc = os.path.join(tree, PLATFORM_DSC)
    fdf = os.path.join(tree, PLATFORM_FDF)
    dsc_component_after(dsc, PLATFORM_DSC, driver, SELFTEST_INF[mm], log, "MmMpSelfTest")
    fdf_inf_after(fdf, PLATFORM_FDF, driver, SELFTEST_INF[mm], log, "MmMpSelfTest")
    if variant == "dropin":
        dsc_library_in_component(
            dsc,
            PLATFORM_DSC,
            driver,
            "SmmCpuSyncLib",
            "MmMpPkg/Library/SmmCpuSyncLibMmMp/SmmCpuSyncLibMmMp%s.inf" % ("Coff" if coff else ""),
            log,
            "level 1: SmmCpuSyncLib drop-in",
        )
    elif variant == "swap":
        inf = os.path.join(tree, driver)
        if os.path.exists(inf + ".mmmp-orig"):
            log.edit(driver, 0, "swapped by mmmp-edk2.py", "level 2: full swap", kept=True)
        else:
            r = subprocess.run([_python(), TOOL, "swap", inf], capture_output=True, text=True)
            if r.returncode != 0:
                raise PrepareError("mmmp-edk2.py swap: " + (r.stderr or r.stdout).strip())
            log.edit(driver, 0, "mmmp-edk2.py swap: " + r.stdout.strip().split(": ", 1)[-1], "level 2: full swap")
        dsc_library_in_component(
            dsc,
            PLATFORM_DSC,
            driver,
            "MmMpLib",
            "MmMpPkg/Library/MmMpLib/MmMpLib%s.inf" % ("Coff" if coff else ""),
            log,
            "level 2: full swap",
        )
