"""Reading OVMF's debug log (debugcon, port 0x402): the self-test's lines,
ASSERTs, CPU exceptions, mm-mp's own lines and CpuHotplugSmm's."""

import re

SELFTEST = re.compile(
    r"MmMpSelfTest: (\d+) passed, (\d+) failed \((\d+) \[DIFF\] checks: (\d+) differ from mm-mp, "
    r"(\d+) skipped; (mm-mp|stock EDK2)\)"
)
SELFTEST_FAILED = re.compile(r"MmMpSelfTest: FAILED (.*)")
SELFTEST_SLOTS = re.compile(r"MmMpSelfTest: (\d+) CPU slots, (\d+) populated, BSP (\d+), MM MP by (mm-mp|stock EDK2)")
ASSERT = re.compile(r"ASSERT(_EFI_ERROR)? *[\[(]|ASSERT \[")
EXCEPTION = re.compile(r"!!!! (X64|IA32) Exception Type - ([0-9A-Fa-f]+)")
MMMP_CONFIG = re.compile(
    r"mm-mp: (\d+) CPUs, (traditional|relaxed) mode, election (on|off), (\d+) tokens, (\d+) bytes of SMRAM, "
    r"timeouts (\d+)/(\d+) us"
)
STATISTICS = re.compile(r"mm-mp statistics: (.*)")
HOTPLUG_APPLIED = re.compile(r"mm-mp: processor table: (\d+) CPUs present \((\d+) added, (\d+) removed since start\)")
HOT_ADDED = re.compile(r"hot-added APIC ID 0x([0-9A-Fa-f]+), SMBASE 0x[0-9A-Fa-f]+, EFI_SMM_CPU_SERVICE_PROTOCOL assigned number (\d+)")
HOT_UNPLUG_STARTED = re.compile(r"Started hot-unplug on ProcessorNum (\d+), APIC ID 0x([0-9A-Fa-f]+)")
UNPLUGGED = re.compile(r"Unplugged ProcessorNum (\d+), QemuSelector (\d+)")
GAVE_UP = re.compile(r"mm-mp: AP gave up waiting for the BSP")
NOT_ARRIVED = re.compile(r"mm-mp: not every CPU arrived at the SMI rendezvous")


def parse_statistics(text):
    """'2 SMIs, 0 spurious, ...' -> {'SMIs': 2, 'spurious': 0, ...}."""
    stats = {}
    for part in text.split(","):
        m = re.match(r"\s*(\d+) (.+?)\s*$", part)
        if m:
            stats[m.group(2)] = int(m.group(1))
    return stats


class FirmwareLog:
    def __init__(self, text):
        self.text = text
        self.lines = text.splitlines()

    @classmethod
    def read(cls, path):
        try:
            with open(path, "rb") as f:
                return cls(f.read().decode("latin-1"))
        except OSError:
            return cls("")

    def selftest(self):
        """The summary as a dict, or None if the self-test printed none."""
        m = None
        for m in SELFTEST.finditer(self.text):
            pass
        if m is None:
            return None
        return {
            "passed": int(m.group(1)),
            "failed": int(m.group(2)),
            "diff_checks": int(m.group(3)),
            "differ": int(m.group(4)),
            "skipped": int(m.group(5)),
            "by": m.group(6),
            "line": m.group(0),
        }

    def selftest_failures(self):
        return [m.group(1).strip() for m in SELFTEST_FAILED.finditer(self.text)]

    def selftest_slots(self):
        m = SELFTEST_SLOTS.search(self.text)
        if not m:
            return None
        return {"slots": int(m.group(1)), "populated": int(m.group(2)), "bsp": int(m.group(3)), "by": m.group(4)}

    def asserts(self):
        return [l.strip() for l in self.lines if ASSERT.search(l)]

    def exceptions(self):
        return [l.strip() for l in self.lines if EXCEPTION.search(l)]

    def mmmp_config(self):
        m = MMMP_CONFIG.search(self.text)
        if not m:
            return None
        return {
            "cpus": int(m.group(1)),
            "mode": m.group(2),
            "election": m.group(3) == "on",
            "tokens": int(m.group(4)),
            "smram": int(m.group(5)),
            "timeout1": int(m.group(6)),
            "timeout2": int(m.group(7)),
        }

    def statistics(self):
        """The last statistics line of mm-mp (self-test's), parsed."""
        found = None
        for m in STATISTICS.finditer(self.text):
            found = m
        return parse_statistics(found.group(1)) if found else None

    def hotplug_applied(self):
        """The last 'processor table' line of the full swap: (present,
        added, removed) or None."""
        found = None
        for m in HOTPLUG_APPLIED.finditer(self.text):
            found = m
        return tuple(int(found.group(i)) for i in (1, 2, 3)) if found else None

    def hot_added(self):
        return [(int(m.group(1), 16), int(m.group(2))) for m in HOT_ADDED.finditer(self.text)]

    def hot_unplug_started(self):
        return [(int(m.group(1)), int(m.group(2), 16)) for m in HOT_UNPLUG_STARTED.finditer(self.text)]

    def unplugged(self):
        return [int(m.group(1)) for m in UNPLUGGED.finditer(self.text)]

    def gave_up(self):
        return len(GAVE_UP.findall(self.text))

    def not_arrived(self):
        return len(NOT_ARRIVED.findall(self.text))
