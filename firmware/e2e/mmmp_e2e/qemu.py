"""QEMU: which one, which accelerator, and a running virtual machine.

A Vm has its serial port on QEMU's stdin/stdout (pipes), the firmware
debug log (debugcon, port 0x402) in a file and QMP on a unix socket. The
serial output is read by a thread into a buffer that callers search with
wait_for(); terminal escape sequences of OVMF's console are dropped."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from .qmp import Qmp

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>c]")

# QEMU's switches for OVMF's relaxed-mode configuration: no broadcast SMI
# (then QEMU must not offer the CPU hot-plug SMI features either, or
# OVMF's SmiFeatures.c ASSERTs), so every SMI enters one CPU and the
# others are pulled in by directed SMI IPIs.
RELAXED_GLOBALS = [
    "ICH9-LPC.x-smi-broadcast=off",
    "ICH9-LPC.x-smi-cpu-hotplug=off",
    "ICH9-LPC.x-smi-cpu-hotunplug=off",
]


class VmError(Exception):
    pass


def strip_ansi(holder, data):
    """Drop terminal escape sequences from a stream read in chunks: a
    sequence cut by a chunk boundary is held back (in holder._ansi_tail)
    until the next chunk completes it."""
    data = getattr(holder, "_ansi_tail", b"") + data
    holder._ansi_tail = b""
    cut = data.rfind(b"\x1b")
    if cut != -1 and len(data) - cut < 16 and not ANSI.match(data, cut):
        data, holder._ansi_tail = data[:cut], data[cut:]
    return ANSI.sub(b"", data)


class Qemu:
    """A qemu-system-x86_64 binary, its version and data directory."""

    def __init__(self, path=None, data_dir=None):
        self.path = path or shutil.which("qemu-system-x86_64")
        if not self.path or not os.access(self.path, os.X_OK):
            raise VmError("no qemu-system-x86_64 (set QEMU=/path)")
        out = subprocess.run([self.path, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
        self.version_text = out.splitlines()[0] if out else "unknown"
        self.version = tuple(int(x) for x in m.groups()) if m else (0, 0, 0)
        self.data_dir = data_dir
        self._accel = None

    def base_args(self):
        return ["-L", self.data_dir] if self.data_dir else []

    def kvm_can_smm(self):
        """KVM usable here and willing to emulate SMM (it refuses SMM on
        hosts whose kernel lacks it; QEMU then stops at start-up)."""
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False
        try:
            r = subprocess.run(
                [self.path] + self.base_args() + ["-machine", "q35,smm=on", "-accel", "kvm", "-display", "none",
                                                  "-nodefaults", "-S", "-monitor", "stdio"],
                input="quit\n",
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0

    def accel(self, want="auto"):
        """'kvm' when KVM can do SMM (or was asked for), else 'tcg'."""
        if want in ("kvm", "tcg"):
            return want
        if self._accel is None:
            self._accel = "kvm" if self.kvm_can_smm() else "tcg"
        return self._accel


def cpu_states(info_registers):
    """[(cpu, in_smm, halted)] from HMP `info registers -a` output."""
    states = []
    for block in re.split(r"^CPU#", info_registers, flags=re.M)[1:]:
        m = re.match(r"(\d+)", block)
        f = re.search(r"SMM=(\d) HLT=(\d)", block)
        if m and f:
            states.append((int(m.group(1)), f.group(1) == "1", f.group(2) == "1"))
    return states


def lost_pending_smi(info_registers):
    """The signature of a hot-added CPU whose pending SMI QEMU dropped at
    INIT: some CPUs wait inside SMM while another sits halted outside it.
    Returns (CPUs in SMM, CPUs halted outside SMM) or None."""
    states = cpu_states(info_registers)
    inside = [c for c, smm, _ in states if smm]
    halted = [c for c, smm, hlt in states if not smm and hlt]
    if inside and halted:
        return inside, halted
    return None


def machine_args(code, vars_copy, cpus, maxcpus=None, memory=1024, accel="tcg", tcg_thread="single",
                 relaxed=False, debuglog=None):
    """The QEMU options every boot of the suite shares."""
    smp = "%d" % cpus + ((",maxcpus=%d" % maxcpus) if maxcpus and maxcpus > cpus else "")
    if accel == "tcg":
        accel_arg = "tcg,thread=%s" % tcg_thread
    else:
        accel_arg = accel
    args = [
        "-machine", "q35,smm=on",
        "-accel", accel_arg,
        "-m", str(memory),
        "-smp", smp,
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
        "-drive", "if=pflash,format=raw,unit=1,file=" + vars_copy,
        "-display", "none",
        "-nodefaults",
        "-no-user-config",
        "-serial", "stdio",
        "-monitor", "none",
    ]
    if debuglog:
        args += ["-debugcon", "file:" + debuglog, "-global", "isa-debugcon.iobase=0x402"]
    if relaxed:
        for g in RELAXED_GLOBALS:
            args += ["-global", g]
    return args


class Vm:
    """A running QEMU. Use as a context manager; always killed at the end."""

    def __init__(self, qemu, args, workdir, name):
        self.qemu = qemu
        self.name = name
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.qmp_path = os.path.join(tempfile.mkdtemp(prefix="mmmp-qmp-"), "qmp.sock")
        self.args = [qemu.path] + qemu.base_args() + args + ["-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        self.serial_log = os.path.join(workdir, name + ".serial.log")
        self.stderr_log = os.path.join(workdir, name + ".stderr.log")
        self.proc = None
        self.qmp = None
        self.buf = b""
        self.cursor = 0
        self.cond = threading.Condition()
        self.start_time = None
        self.end_time = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def start(self):
        with open(os.path.join(self.dir, self.name + ".cmdline"), "w") as f:
            f.write(" ".join(self.args) + "\n")
        self._serial_file = open(self.serial_log, "wb")
        self._stderr_file = open(self.stderr_log, "wb")
        self.start_time = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr_file)
        self._reader = threading.Thread(target=self._read_serial, daemon=True)
        self._reader.start()

    def _read_serial(self):
        out = self.proc.stdout
        while True:
            data = out.read1(65536) if hasattr(out, "read1") else out.read(1)
            if not data:
                break
            self._serial_file.write(data)
            self._serial_file.flush()
            with self.cond:
                self.buf += strip_ansi(self, data)
                self.cond.notify_all()
        with self.cond:
            if self.end_time is None:
                self.end_time = time.monotonic()
            self.cond.notify_all()

    def connect_qmp(self):
        if self.qmp is None:
            self.qmp = Qmp(self.qmp_path)
        return self.qmp

    def text(self):
        with self.cond:
            return self.buf.decode("utf-8", "replace")

    def wait_for(self, pattern, timeout, from_cursor=True):
        """Wait until PATTERN (a regex) appears in the serial output after
        the cursor; moves the cursor past the match. Returns the match or
        None (timeout, or QEMU exited)."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf, self.cursor if from_cursor else 0)
                if m:
                    self.cursor = m.end()
                    return m
                if self.proc.poll() is not None and not self._reader.is_alive():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))

    def send(self, text):
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait_exit(self, timeout):
        """Wait for QEMU to exit; returns its exit code or None."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=5)
        if self.end_time is None:
            self.end_time = time.monotonic()
        return rc

    def elapsed(self):
        end = self.end_time if self.end_time is not None else time.monotonic()
        return end - self.start_time

    def kill(self):
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self._reader.join(timeout=5)
        for f in ("_serial_file", "_stderr_file"):
            if hasattr(self, f):
                getattr(self, f).close()
        shutil.rmtree(os.path.dirname(self.qmp_path), ignore_errors=True)

    def stderr_text(self):
        try:
            with open(self.stderr_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
