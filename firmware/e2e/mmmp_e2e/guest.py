"""The Linux guest: Debian's kernel package, a busybox-static initramfs
built here, and the console protocol the suite drives it with.

Packages come from the machine's apt sources with `apt-get download`
(no root needed) and are unpacked with `dpkg -x` into the cache
directory; KERNEL=/path/vmlinuz and KERNEL_MODULES=/path/lib/modules/<v>
use a kernel of your own instead."""

import glob
import io
import os
import re
import shutil
import stat
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_SRC = os.path.join(os.path.dirname(HERE), "guest")
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX_PKG = "busybox-static"
KERNEL_CMDLINE = "console=ttyS0 loglevel=3 panic=-1 rdinit=/init"


class GuestError(Exception):
    pass


# ---------------------------------------------------------------------------
# cpio (newc), what the kernel unpacks as its initramfs.


def _cpio_header(ino, mode, size, name, nlink=1, rdev=(0, 0)):
    name_bytes = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name_bytes), 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad = (4 - (len(head) + len(name_bytes)) % 4) % 4
    return head + name_bytes + b"\0" * pad


def cpio_archive(entries):
    """ENTRIES: (name, kind, payload) with kind 'dir', 'file' (payload:
    (bytes, mode)), 'symlink' (payload: target) or 'chr' (payload:
    (major, minor)). Returns the archive's bytes."""
    out = io.BytesIO()
    for ino, (name, kind, payload) in enumerate(entries, start=1):
        if kind == "dir":
            out.write(_cpio_header(ino, stat.S_IFDIR | 0o755, 0, name, nlink=2))
        elif kind == "file":
            data, mode = payload
            out.write(_cpio_header(ino, stat.S_IFREG | mode, len(data), name))
            out.write(data)
            out.write(b"\0" * ((4 - len(data) % 4) % 4))
        elif kind == "symlink":
            data = payload.encode()
            out.write(_cpio_header(ino, stat.S_IFLNK | 0o777, len(data), name))
            out.write(data)
            out.write(b"\0" * ((4 - len(data) % 4) % 4))
        elif kind == "chr":
            out.write(_cpio_header(ino, stat.S_IFCHR | 0o600, 0, name, rdev=payload))
        else:
            raise ValueError(kind)
    out.write(_cpio_header(len(entries) + 1, 0, 0, "TRAILER!!!", nlink=1))
    data = out.getvalue()
    return data + b"\0" * ((512 - len(data) % 512) % 512)


def cpio_names(data):
    """The member names of a newc archive (for tests and checks)."""
    names, pos = [], 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] != b"070701":
            raise ValueError("bad cpio magic at %d" % pos)
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        if name == "TRAILER!!!":
            break
        names.append(name)
        pos += size
        pos += (4 - pos % 4) % 4
    return names


# ---------------------------------------------------------------------------
# Building the guest.


class GuestImage:
    def __init__(self, cache, printer=print, kernel=None, modules=None):
        self.cache = os.path.abspath(cache)
        self.printer = printer
        self.kernel = kernel or os.environ.get("KERNEL")
        self.modules = modules or os.environ.get("KERNEL_MODULES")
        os.makedirs(self.cache, exist_ok=True)

    def _download(self, package):
        """Unpack PACKAGE (downloaded once into the cache) and return the
        directory it was unpacked into."""
        debs = glob.glob(os.path.join(self.cache, package + "_*.deb"))
        if not debs:
            self.printer("downloading Debian package %s (apt-get download)" % package)
            r = subprocess.run(["apt-get", "download", package], cwd=self.cache, capture_output=True, text=True)
            debs = glob.glob(os.path.join(self.cache, package + "_*.deb"))
            if r.returncode != 0 or not debs:
                raise GuestError("apt-get download %s failed: %s" % (package, (r.stderr or r.stdout).strip()))
        deb = sorted(debs)[-1]
        root = os.path.join(self.cache, "unpacked", os.path.basename(deb)[:-4])
        if not os.path.isdir(root):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            r = subprocess.run(["dpkg", "-x", deb, tmp], capture_output=True, text=True)
            if r.returncode != 0:
                raise GuestError("dpkg -x %s: %s" % (deb, r.stderr.strip()))
            os.rename(tmp, root)
        return root

    def _kernel_package(self):
        r = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True, text=True)
        m = re.search(r"Depends: (linux-image-\S+)", r.stdout)
        if not m:
            raise GuestError("cannot resolve %s with apt-cache (set KERNEL and KERNEL_MODULES)" % KERNEL_META)
        return m.group(1)

    def kernel_files(self):
        """(vmlinuz, directory holding kernel/fs/efivarfs/efivarfs.ko)."""
        if self.kernel:
            if not self.modules:
                raise GuestError("KERNEL needs KERNEL_MODULES (its lib/modules/<version> directory)")
            return self.kernel, self.modules
        root = self._download(self._kernel_package())
        vmlinuz = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
        mods = sorted(glob.glob(os.path.join(root, "lib", "modules", "*")))
        if not vmlinuz or not mods:
            raise GuestError("no vmlinuz / modules in " + root)
        return vmlinuz[-1], mods[-1]

    def busybox(self):
        root = self._download(BUSYBOX_PKG)
        path = os.path.join(root, "bin", "busybox")
        if not os.path.isfile(path):
            raise GuestError("no bin/busybox in " + root)
        return path

    def vartest(self):
        out = os.path.join(self.cache, "vartest")
        src = os.path.join(GUEST_SRC, "vartest.c")
        if not os.path.isfile(out) or os.path.getmtime(out) < os.path.getmtime(src):
            r = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out, src],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise GuestError("gcc -static vartest.c: " + r.stderr.strip())
        return out

    def build(self):
        """Returns (kernel, initrd)."""
        vmlinuz, modules = self.kernel_files()
        efivarfs = os.path.join(modules, "kernel", "fs", "efivarfs", "efivarfs.ko")
        if not os.path.isfile(efivarfs):
            raise GuestError("no efivarfs.ko in %s (a kernel with CONFIG_EFIVAR_FS=y needs none: "
                             "set KERNEL_MODULES to an empty dir with that path)" % modules)

        def read(path):
            with open(path, "rb") as f:
                return f.read()

        entries = [
            ("bin", "dir", None),
            ("dev", "dir", None),
            ("dev/console", "chr", (5, 1)),
            ("lib", "dir", None),
            ("proc", "dir", None),
            ("sys", "dir", None),
            ("tmp", "dir", None),
            ("init", "file", (read(os.path.join(GUEST_SRC, "init")), 0o755)),
            ("bin/busybox", "file", (read(self.busybox()), 0o755)),
            ("bin/sh", "symlink", "busybox"),
            ("bin/vartest", "file", (read(self.vartest()), 0o755)),
            ("lib/efivarfs.ko", "file", (read(efivarfs), 0o644)),
        ]
        initrd = os.path.join(self.cache, "initrd.cpio")
        with open(initrd, "wb") as f:
            f.write(cpio_archive(entries))
        return vmlinuz, initrd


# ---------------------------------------------------------------------------
# Talking to the guest.


# The serial output is searched while it arrives: a number is only
# complete once its line ends (else "efivars=2" would match the first
# digit of "efivars=21").
READY = r"MMMP-GUEST-READY nproc=(\d+) efivars=(\d+)\r?\n"


def end_of(tag):
    """The line `<tag> <exit code>` that ends a guest command."""
    return re.escape(tag) + r" (\d+)\r?\n"


class Guest:
    """Commands over the serial console of a running Vm."""

    def __init__(self, vm, printer=print):
        self.vm = vm
        self.printer = printer
        self.n = 0

    def wait_ready(self, timeout):
        m = self.vm.wait_for(READY, timeout)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def run(self, command, timeout=120):
        """Run COMMAND in the guest's shell; returns (rc, output) or
        (None, output so far) on timeout."""
        self.n += 1
        tag = "@@END %d" % self.n
        start = self.vm.cursor
        self.vm.send("{ %s ; } 2>&1; echo \"%s $?\"\n" % (command, tag))
        m = self.vm.wait_for(end_of(tag), timeout)
        text = self.vm.text()
        if not m:
            return None, text[start:]
        out = self.vm.buf[start:m.start()].decode("utf-8", "replace")
        return int(m.group(1)), out

    def cpus(self):
        """{n: online} of the guest's logical CPUs."""
        rc, out = self.run("cpus", timeout=30)
        found = {}
        for m in re.finditer(r"cpu(\d+)=(\d)", out or ""):
            found[int(m.group(1))] = m.group(2) == "1"
        return found


def parse_vartest(text):
    """The SUMMARY line of vartest and its BAD lines."""
    summary = None
    for m in re.finditer(
        r"SUMMARY cpu=(\d+) n=(\d+) ok=(\d+) bad=(\d+) write_med_us=(-?\d+) read_med_us=(-?\d+) delete_med_us=(-?\d+)",
        text,
    ):
        summary = {
            "cpu": int(m.group(1)),
            "n": int(m.group(2)),
            "ok": int(m.group(3)),
            "bad": int(m.group(4)),
            "write_us": int(m.group(5)),
            "read_us": int(m.group(6)),
            "delete_us": int(m.group(7)),
        }
    bad = [l.strip() for l in text.splitlines() if l.startswith("BAD ")]
    on = sorted({int(m.group(1)) for m in re.finditer(r"^VAR cpu=\d+ i=\d+ on=(-?\d+)", text, re.M)})
    return summary, bad, on


def wait_until(pred, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
