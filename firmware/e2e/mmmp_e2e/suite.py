"""The suite: build, boot matrix, empty hot-plug slots, Linux guest
(variables from every CPU, CPU hot-add and hot-remove), timing."""

import datetime
import os
import re
import shutil
import statistics
import sys
import time

from . import build, cli, fwlog, guest, qemu, qmp, workspace
from .report import Report

HOTPLUG_MAXCPUS = 4

# Why EDK2's MpService (stock and drop-in) loses MMIs in OVMF's relaxed
# mode; mm-mp's rendezvous pulls the BSP in instead.
RELAXED_EDK2 = (
    "without broadcast SMIs an SMI raised on one CPU enters that CPU alone; OVMF's BSP election hook "
    "(SmmCpuPlatformHookLibQemu) lets only the boot CPU become BSP, so on any other CPU EDK2's rendezvous "
    "waits the 100 ms arrival timeout, does not know a BSP to send an SMI IPI to, and leaves: the MMI "
    "(the variable request) never runs and the caller reads back stale data (docs/INTEGRATION.md)"
)
SHELL_MARK = "MMMP-E2E-SHELL"

# Why Standalone MM gets no empty-slot boot: EDK2's CPU driver, stock
# or swapped, needs an SMBASE for every possible CPU.
STANDALONE_SLOTS = (
    "EDK2's PiSmmCpuStandaloneMm takes every possible CPU's SMBASE from the SMM base HOBs PEI made for "
    "the CPUs present, and stops at 'ASSERT PiSmmCpuCommon.c(530): NumberOfProcessors == MaxNumberOfCpus' "
    "when maxcpus exceeds them (stock and swap alike; OVMF's Standalone MM has no CPU hot-plug)"
)


class Target:
    """One firmware build: a variant (stock, drop-in, full swap) for one MM
    flavour (traditional, standalone) with one toolchain tag."""

    def __init__(self, variant, mm="traditional", toolchain="GCC"):
        self.variant = variant
        self.mm = mm
        self.toolchain = toolchain
        self.key = workspace.variant_key(variant, mm, toolchain)
        self.fw = None

    @property
    def title(self):
        extra = [x for x in ("standalone MM" if self.mm == "standalone" else None,
                             self.toolchain if self.toolchain != "GCC" else None) if x]
        return workspace.VARIANT_TITLES[self.variant] + (" [%s]" % ", ".join(extra) if extra else "")

    @property
    def swap(self):
        return self.variant == "swap"

    def qemu_args(self):
        """OVMF's Standalone MM runs out of MMRAM in QEMU's default 16 MiB
        TSEG (VariableSmm.c ASSERTs 'Out of Resources' at start-up)."""
        return ["-global", "mch.extended-tseg-mbytes=64"] if self.mm == "standalone" else []


class BootResult:
    def __init__(self, ok, seconds, log, reason=""):
        self.ok = ok
        self.seconds = seconds
        self.log = log
        self.reason = reason


def median(values):
    return statistics.median(values) if values else float("nan")


class Suite:
    def __init__(self, args, report=None):
        self.args = args
        self.report = report or Report()
        self.work = os.path.abspath(args.work)
        self.runs_dir = os.path.join(self.work, "runs")
        self.targets = []  # built, in build order
        self.primary = {}  # variant -> Target of the first MM flavour and toolchain
        self.var_medians = {}  # (variant, cpu) -> vartest summary
        self.hotplug_blocked = None  # reason, once QEMU is known not to hot-plug
        self.qemu = None
        self.accel = None
        self.boot_seq = 0

    # ------------------------------------------------------------------
    # Set-up.

    def say(self, text):
        self.report.info(text)

    def start(self):
        a = self.args
        r = self.report
        r.section("mm-mp firmware end-to-end suite")
        self.qemu = qemu.Qemu(a.qemu, a.qemu_data)
        self.accel = self.qemu.accel(a.accel)
        self.ws = workspace.Workspace(a.edk2, self.work, printer=self.say)
        self.say("date: %s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        self.say("EDK2: %s at %s%s" % (self.ws.edk2, self.ws.commit, " (with local changes)" if self.ws.dirty else ""))
        self.say("QEMU: %s (%s)%s" % (self.qemu.version_text, self.qemu.path,
                                     (", data " + self.qemu.data_dir) if self.qemu.data_dir else ""))
        if self.accel == "tcg":
            self.say("accelerator: TCG, %s-threaded (KVM %s)" % (
                a.tcg_threads, "not asked for" if a.accel == "tcg" else "cannot do SMM here or is absent"))
        else:
            self.say("accelerator: KVM with SMM")
        self.say("work directory: %s (logs of every boot under runs/)" % self.work)

    def run(self):
        self.start()
        a = self.args
        try:
            self.phase_build()
            if "boot" in a.phases:
                self.phase_boot()
            if "slots" in a.phases:
                self.phase_slots()
            if "linux" in a.phases:
                self.phase_linux()
            if "timing" in a.phases:
                self.phase_timing()
        except (workspace.PrepareError, build.BuildError, guest.GuestError, qemu.VmError) as e:
            self.report.check("suite set-up", False, str(e))
        return self.report.finish()

    def phase_build(self):
        a = self.args
        self.report.section("workspace and builds")
        if "build" in a.phases:
            self.ws.prepare_base()
        for mm in a.mm:
            for toolchain in a.toolchains:
                for variant in a.variants:
                    self.build_target(Target(variant, mm, toolchain))

    def build_target(self, t):
        a = self.args
        if "build" in a.phases:
            tree = self.ws.prepare_variant(t.variant, t.mm, t.toolchain)
            logfile = os.path.join(self.ws.logs, "build-%s.log" % t.key)
            try:
                fw, seconds = build.run_build(tree, logfile, toolchain=t.toolchain,
                                              defines=build.default_defines(t.mm),
                                              env_extra=build.toolchain_env(t.toolchain, a.clang_bin))
            except build.BuildError as e:
                self.report.check("build %s" % t.title, False, str(e))
                return
            driver = "PiSmmCpuStandaloneMm" if t.mm == "standalone" else "PiSmmCpuDxeSmm"
            self.report.check("build %s" % t.title, True, "%.0f s, %s.efi %s bytes, log %s" % (
                seconds, driver, fw.module_size(driver), logfile))
        else:
            fw = build.Firmware(self.ws.tree(t.key), t.toolchain, "DEBUG")
            if not fw.exists():
                self.report.check("firmware %s" % t.title, False, "not built (run with the build phase)")
                return
        t.fw = fw
        self.targets.append(t)
        if t.mm == a.mm[0] and t.toolchain == a.toolchains[0]:
            self.primary[t.variant] = t

    # ------------------------------------------------------------------
    # Boots to the shell.

    def esp_dir(self, t):
        """A FAT directory with the shell as the removable-media boot file
        and a startup.nsh that prints a mark and powers off."""
        fw = t.fw
        esp = os.path.join(self.work, "esp", t.key)
        os.makedirs(os.path.join(esp, "EFI", "BOOT"), exist_ok=True)
        shutil.copy(fw.shell(), os.path.join(esp, "EFI", "BOOT", "BOOTX64.EFI"))
        with open(os.path.join(esp, "startup.nsh"), "w", newline="") as f:
            f.write("echo %s\r\nreset -s\r\n" % SHELL_MARK)
        return esp

    def new_run_dir(self, name):
        self.boot_seq += 1
        d = os.path.join(self.runs_dir, "%03d-%s" % (self.boot_seq, re.sub(r"[^A-Za-z0-9.-]+", "-", name)))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    def machine(self, t, run_dir, cpus, maxcpus=None, relaxed=False, memory=1024):
        vars_copy = os.path.join(run_dir, "vars.fd")
        shutil.copy(t.fw.vars, vars_copy)
        return qemu.machine_args(t.fw.code, vars_copy, cpus, maxcpus=maxcpus, memory=memory, accel=self.accel,
                                 tcg_thread=self.args.tcg_threads, relaxed=relaxed,
                                 debuglog=os.path.join(run_dir, "firmware.log")) + t.qemu_args()

    def boot_to_shell(self, t, cpus, maxcpus=None, relaxed=False, name=None):
        """Boot to the UEFI shell, let startup.nsh power off; seconds from
        QEMU's start to its exit."""
        name = name or "%s-%d" % (t.key, cpus)
        run_dir = self.new_run_dir(name)
        esp = self.esp_dir(t)
        args = self.machine(t, run_dir, cpus, maxcpus, relaxed)
        args += ["-drive", "if=none,id=esp,format=raw,readonly=on,file=fat:" + esp,
                 "-device", "virtio-blk-pci,drive=esp"]
        timeout = self.args.boot_timeout
        logfile = os.path.join(run_dir, "firmware.log")
        with qemu.Vm(self.qemu, args, run_dir, "boot") as vm:
            m = self.wait_or_assert(vm, r"Press ESC in \d+ seconds|" + SHELL_MARK, timeout, logfile)
            if m and m.group(0) != SHELL_MARK.encode():
                # Any key but ESC runs startup.nsh at once.
                vm.send("\r")
                m = self.wait_or_assert(vm, SHELL_MARK, 120, logfile)
            if not m:
                log = fwlog.FirmwareLog.read(logfile)
                stuck = log.asserts() + log.exceptions()
                if stuck:
                    why = "stopped at %s after %.0f s" % (stuck[0], vm.elapsed())
                elif vm.proc.poll() is None:
                    why = "no shell after %.0f s" % vm.elapsed()
                else:
                    why = "QEMU exited (%s) before the shell: %s" % (vm.proc.returncode, vm.stderr_text().strip()[-300:])
                return BootResult(False, vm.elapsed(), log, why + "; logs in " + run_dir)
            rc = vm.wait_exit(120)
            seconds = vm.elapsed()
        log = fwlog.FirmwareLog.read(os.path.join(run_dir, "firmware.log"))
        if rc != 0:
            return BootResult(False, seconds, log, "no power-off after the shell (exit %s); logs in %s" % (rc, run_dir))
        return BootResult(True, seconds, log)

    def wait_or_assert(self, vm, pattern, timeout, logfile):
        """wait_for PATTERN, looking at the firmware log every few seconds:
        a DEBUG build stops for good at an ASSERT or a CPU exception, so
        there is no point in waiting longer (None then)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            m = vm.wait_for(pattern, min(left, 10))
            if m or vm.proc.poll() is not None:
                return m
            log = fwlog.FirmwareLog.read(logfile)
            if log.asserts() or log.exceptions():
                return None

    def check_firmware_log(self, what, t, log, relaxed=False, cpus=None, slots=None):
        """The self-test line, no ASSERT or CPU exception; for the swap the
        mode line and, in relaxed mode, IPIs."""
        r = self.report
        st = log.selftest()
        expect_by = "mm-mp" if t.swap else "stock EDK2"
        if st is None:
            r.check(what + ": self-test", False, "no MmMpSelfTest summary in the firmware log")
        else:
            fails = log.selftest_failures()
            r.check(what + ": self-test", st["failed"] == 0 and st["by"] == expect_by,
                    st["line"].split(": ", 1)[1] + ("; " + "; ".join(fails) if fails else ""))
        bad = log.asserts() + log.exceptions()
        r.check(what + ": no ASSERT, no CPU exception", not bad, bad[0] if bad else "")
        if slots is not None:
            s = log.selftest_slots()
            r.check(what + ": self-test sees the empty slots", s is not None and (s["slots"], s["populated"]) == slots,
                    "%s" % (s,))
        if t.swap:
            cfg = log.mmmp_config()
            mode = "relaxed" if relaxed else "traditional"
            r.check(what + ": mm-mp runs in %s mode" % mode, cfg is not None and cfg["mode"] == mode,
                    "mm-mp: %s" % (cfg,))
            stats = log.statistics()
            if relaxed and cpus and cpus > 1:
                ipis = (stats or {}).get("IPIs", 0)
                r.check(what + ": directed SMI IPIs sent", ipis > 0, "%d IPIs; statistics %s" % (ipis, stats))
            if log.gave_up():
                self.say("%s: %d 'AP gave up waiting for the BSP' warnings (see docs/INTEGRATION.md)" % (
                    what, log.gave_up()))

    def phase_boot(self):
        a = self.args
        self.report.section("boot to the UEFI shell and power off")
        for t in self.targets:
            for mode in a.modes:
                relaxed = mode == "relaxed"
                for n in (a.relaxed_cpus if relaxed else a.cpus):
                    what = "%s, %s, %d vCPU%s" % (t.title, mode, n, "" if n == 1 else "s")
                    res = self.boot_to_shell(t, n, relaxed=relaxed, name="%s-%s-%d" % (t.key, mode, n))
                    if not self.report.check(what + ": shell reached, powered off", res.ok,
                                             ("%.1f s" % res.seconds) if res.ok else res.reason):
                        bad = res.log.asserts() + res.log.exceptions()
                        if bad:
                            self.say("first ASSERT/exception: " + bad[0])
                        continue
                    self.check_firmware_log(what, t, res.log, relaxed=relaxed, cpus=n)

    def phase_slots(self):
        """A hot-plug platform's empty slots: -smp 2,maxcpus=4."""
        self.report.section("empty hot-plug slots (-smp 2,maxcpus=%d)" % HOTPLUG_MAXCPUS)
        for t in self.targets:
            what = "%s, 2 of %d slots" % (t.title, HOTPLUG_MAXCPUS)
            if t.mm == "standalone":
                self.report.skip(what, STANDALONE_SLOTS)
                continue
            res = self.boot_to_shell(t, 2, maxcpus=HOTPLUG_MAXCPUS, name="%s-slots" % t.key)
            if self.report.check(what + ": shell reached, powered off", res.ok,
                                 ("%.1f s" % res.seconds) if res.ok else res.reason):
                self.check_firmware_log(what, t, res.log, slots=(HOTPLUG_MAXCPUS, 2))

    # ------------------------------------------------------------------
    # Linux.

    def phase_linux(self):
        a = self.args
        self.report.section("Linux guest: UEFI variables from every CPU, CPU hot-plug")
        image = guest.GuestImage(os.path.join(self.work, "guest"), printer=self.say)
        self.kernel, self.initrd = image.build()
        self.say("guest: %s + %s (%s)" % (os.path.basename(self.kernel), self.initrd, guest.KERNEL_CMDLINE))
        order = [self.primary[v] for v in ("stock", "dropin", "swap") if v in self.primary]
        for t in order:
            self.linux_traditional(t)
        if "relaxed" in a.modes:
            for t in order:
                self.linux_variables_only(t, relaxed=True)

    def start_linux(self, t, run_dir, cpus, maxcpus=None, relaxed=False):
        args = self.machine(t, run_dir, cpus, maxcpus, relaxed)
        args += ["-kernel", self.kernel, "-initrd", self.initrd, "-append", guest.KERNEL_CMDLINE]
        return qemu.Vm(self.qemu, args, run_dir, "linux")

    def vars_on(self, g, what, cpu, count, prefix, role, known_reason=None):
        rc, out = g.run("taskset -c %d vartest %d %d %s" % (cpu, cpu, count, prefix), timeout=60 + count * 30)
        summary, bad, on = guest.parse_vartest(out or "")
        ok = rc == 0 and summary is not None and summary["ok"] == count and on == [cpu]
        if summary is not None:
            detail = "%d/%d ok, median write %.1f ms, read %.1f ms, delete %.1f ms, ran on CPU %s" % (
                summary["ok"], count, summary["write_us"] / 1000, summary["read_us"] / 1000,
                summary["delete_us"] / 1000, on)
        else:
            detail = "no summary (rc %s)" % rc
        if bad:
            detail += "; " + bad[0][:300]
        name = "%s: %d variables written, read back, deleted on CPU %d (%s)" % (what, count, cpu, role)
        if not ok and known_reason:
            self.report.known_failure(name, detail + ". Why: " + known_reason)
        else:
            self.report.check(name, ok, detail)
        return summary, bad

    def linux_variables_only(self, t, relaxed):
        """Variables from the BSP and the AP in relaxed mode (QEMU without
        broadcast SMIs: the writing CPU enters SMM alone)."""
        a = self.args
        what = "Linux, %s, %s" % (t.title, "relaxed" if relaxed else "traditional")
        run_dir = self.new_run_dir("linux-%s-%s" % (t.key, "relaxed" if relaxed else "traditional"))
        with self.start_linux(t, run_dir, 2, relaxed=relaxed) as vm:
            g = guest.Guest(vm, self.say)
            ready = g.wait_ready(a.boot_timeout)
            if not self.report.check(what + ": guest up with efivarfs", ready is not None and ready[0] == 2,
                                     "nproc %s, %s variables" % ready if ready else "no READY line; logs in " + run_dir):
                return
            known = RELAXED_EDK2 if (relaxed and not t.swap) else None
            for cpu in (0, 1):
                self.vars_on(g, what, cpu, a.vars, "r%d-" % cpu, "BSP" if cpu == 0 else "AP", known)
            g.run("sync", timeout=30)
        log = fwlog.FirmwareLog.read(os.path.join(run_dir, "firmware.log"))
        bad = log.asserts() + log.exceptions()
        self.report.check(what + ": no ASSERT, no CPU exception", not bad, bad[0] if bad else "")

    def linux_traditional(self, t):
        a = self.args
        what = "Linux, %s" % t.title
        run_dir = self.new_run_dir("linux-%s" % t.key)
        with self.start_linux(t, run_dir, 2, maxcpus=HOTPLUG_MAXCPUS) as vm:
            g = guest.Guest(vm, self.say)
            ready = g.wait_ready(a.boot_timeout)
            if not self.report.check(what + ": guest up with efivarfs", ready is not None and ready[0] == 2,
                                     ("nproc %s, %s variables" % ready) if ready else "no READY line; logs in " + run_dir):
                return
            for cpu in (0, 1):
                summary, _ = self.vars_on(g, what, cpu, a.vars, "v%d-" % cpu, "BSP" if cpu == 0 else "AP")
                if summary:
                    self.var_medians[(t.variant, cpu)] = summary
            adds, removes = self.hotplug(vm, g, what, t)
            g.run("sync", timeout=30)
        log = fwlog.FirmwareLog.read(os.path.join(run_dir, "firmware.log"))
        bad = log.asserts() + log.exceptions()
        self.report.check(what + ": no ASSERT, no CPU exception in the firmware log", not bad, bad[0] if bad else "")
        if adds:
            added = log.hot_added()
            self.report.check(what + ": CpuHotplugSmm added every CPU (AddProcessor)", len(added) == adds,
                              "%d of %d hot-added lines" % (len(added), adds))
            unplugged = log.unplugged()
            self.report.check(what + ": CpuHotplugSmm ejected every removed CPU (RemoveProcessor)",
                              len(unplugged) == removes, "%d of %d ejections" % (len(unplugged), removes))
            if t.swap:
                applied = log.hotplug_applied()
                self.report.check(what + ": mm-mp applied every add and removal",
                                  applied is not None and applied[1:] == (adds, removes),
                                  "processor table line %s; expected %d added, %d removed" % (applied, adds, removes))

    # ------------------------------------------------------------------
    # CPU hot-plug.

    def hotplug(self, vm, g, what, t):
        """Cycles of add / online / variables / offline / remove, then two
        CPUs at once. Returns (adds, removes) that completed."""
        a = self.args
        if a.hotplug_cycles == 0:
            return 0, 0
        if t.mm == "standalone":
            self.report.skip(what + ": CPU hot-plug", "OVMF's Standalone MM build has no CpuHotplugSmm")
            return 0, 0
        if self.hotplug_blocked:
            self.report.skip(what + ": CPU hot-plug", self.hotplug_blocked)
            return 0, 0
        q = vm.connect_qmp()
        adds = removes = 0
        plan = [[0]] * a.hotplug_cycles + [[0, 1]]
        for k, batch in enumerate(plan):
            label = "cycle %d" % (k + 1) if len(batch) == 1 else "two CPUs at once"
            plugged, free = qmp.hotpluggable_slots(q.command("query-hotpluggable-cpus"))
            if len(free) < len(batch):
                self.report.check("%s: %s" % (what, label), False, "only %d free CPU slots" % len(free))
                break
            before = g.cpus()
            ids = []
            for j in batch:
                driver, props = free[j]
                dev = "mmmp-hp-%d-%d" % (k, j)
                q.command("device_add", driver=driver, id=dev, **props)
                ids.append(dev)
            new = guest.wait_until(lambda: sorted(set(g.cpus()) - set(before)) if len(
                set(g.cpus()) - set(before)) >= len(batch) else None, 180, step=1.0)
            if not new or len(new) < len(batch):
                reason = self.diagnose_hotplug_hang(q)
                if reason:
                    self.hotplug_blocked = reason
                    self.report.skip(what + ": CPU hot-plug", reason)
                else:
                    self.report.check("%s: %s: guest sees the new CPU" % (what, label), False,
                                      "no new CPU after 180 s; guest CPUs %s" % (before,))
                return adds, removes
            ok = True
            for cpu in new:
                rc, out = g.run("online %d" % cpu, timeout=120)
                ok &= rc == 0
            adds += len(batch)
            for n, cpu in enumerate(new):
                summary, _ = self.vars_on(g, "%s: %s" % (what, label), cpu, 3, "h%d%d-" % (k, n), "hot-added")
                ok &= summary is not None and summary["ok"] == 3
            for cpu in new:
                rc, out = g.run("offline %d" % cpu, timeout=120)
                ok &= rc == 0
            deleted = True
            for dev in ids:
                q.command("device_del", id=dev)
            for dev in ids:
                ev = q.wait_event("DEVICE_DELETED", 180, match={"device": dev})
                deleted &= ev is not None
            gone = all(g.run("wait_gone %d 60" % cpu, timeout=90)[0] == 0 for cpu in new)
            if deleted and gone:
                removes += len(batch)
            self.report.check("%s: %s: add, online, variables, offline, remove" % (what, label),
                              ok and deleted and gone,
                              "guest CPU%s %s; DEVICE_DELETED %s; gone from the guest %s" % (
                                  "s" if len(new) > 1 else "", ",".join(map(str, new)), deleted, gone))
            if vm.proc.poll() is not None:
                self.report.check(what + ": QEMU still running", False, vm.stderr_text().strip()[-300:])
                break
        return adds, removes

    def diagnose_hotplug_hang(self, q):
        """After a hot-add that never completed: if the new CPU sits halted
        outside SMM while the others wait inside, QEMU dropped the new
        CPU's pending SMI at INIT (a QEMU TCG limitation, not firmware's)."""
        try:
            text = q.command("human-monitor-command", timeout=30, **{"command-line": "info registers -a"})
        except qmp.QmpError:
            return None
        found = qemu.lost_pending_smi(text)
        if found and self.accel == "tcg":
            inside, halted = found
            return ("QEMU %d.%d.%d under TCG lost the hot-added CPU's pending SMI at INIT: CPU%s %s wait in SMM "
                    "for it while CPU%s %s halted outside SMM (a QEMU limitation, docs/INTEGRATION.md; run with "
                    "QEMU=/path to a QEMU that keeps the SMI)" % (
                        self.qemu.version + ("s" if len(inside) > 1 else "", ",".join(map(str, inside)),
                                             "s" if len(halted) > 1 else "", ",".join(map(str, halted)))))
        return None

    # ------------------------------------------------------------------
    # Timing.

    def phase_timing(self):
        a = self.args
        if not ("stock" in self.primary and "swap" in self.primary):
            self.report.skip("timing", "needs the stock and the full-swap builds")
            return
        self.report.section("timing: boot to power-off, stock and full swap alternating")
        rows = []
        for n in a.timing_cpus:
            times = {"stock": [], "swap": []}
            for run in range(a.timing_runs):
                sides = ("stock", "swap") if run % 2 == 0 else ("swap", "stock")
                for side in sides:
                    res = self.boot_to_shell(self.primary[side], n, name="timing-%s-%d" % (side, n))
                    if res.ok:
                        times[side].append(res.seconds)
                    else:
                        self.report.check("timing %s %d vCPUs run %d" % (side, n, run + 1), False, res.reason)
            if times["stock"] and times["swap"]:
                ms, mw = median(times["stock"]), median(times["swap"])
                rows.append([n, "%.2f (%.2f-%.2f)" % (ms, min(times["stock"]), max(times["stock"])),
                             "%.2f (%.2f-%.2f)" % (mw, min(times["swap"]), max(times["swap"])),
                             "%.3f" % (mw / ms), "%d + %d" % (len(times["stock"]), len(times["swap"]))])
        self.report.table("Boot to power-off, seconds: median (min-max) of alternating runs, %s" % self.accel_text(),
                          ["vCPUs", "stock", "full swap", "swap/stock", "runs"], rows)
        vrows = []
        for cpu in (0, 1):
            s, w = self.var_medians.get(("stock", cpu)), self.var_medians.get(("swap", cpu))
            if s and w:
                vrows.append([cpu, "BSP" if cpu == 0 else "AP", "%.2f" % (s["write_us"] / 1000),
                              "%.2f" % (w["write_us"] / 1000), "%.3f" % (w["write_us"] / max(1, s["write_us"])),
                              "%.2f / %.2f" % (s["delete_us"] / 1000, w["delete_us"] / 1000)])
        if vrows:
            self.report.table("Linux guest, median ms per variable write (%d variables per CPU, same run)" % a.vars,
                              ["CPU", "role", "stock write", "swap write", "swap/stock", "delete stock / swap"], vrows)

    def accel_text(self):
        if self.accel == "tcg":
            return "TCG %s-threaded, QEMU %d.%d.%d" % ((self.args.tcg_threads,) + self.qemu.version)
        return "KVM, QEMU %d.%d.%d" % self.qemu.version


def main(argv=None):
    args = cli.parse(sys.argv[1:] if argv is None else argv)
    return Suite(args).run()
