"""PASS/FAIL/SKIP/KNOWN lines, informational lines and the closing count."""

import sys
import time


class Report:
    """One line per check, a closing `N passed, M failed` line.

    A skipped check is not a pass: it is counted apart and named with its
    reason, so a run that could not exercise something says so."""

    def __init__(self, out=None):
        self.out = out if out is not None else sys.stdout
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.known = 0
        self.failures = []
        self.tables = []

    def _line(self, text):
        print(text, file=self.out, flush=True)

    def check(self, name, ok, detail=""):
        """Record one check; returns ok so callers can chain on it."""
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(name)
        self._line("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""))
        return ok

    def skip(self, name, reason):
        self.skipped += 1
        self._line("SKIP %s: %s" % (name, reason))

    def known_failure(self, name, reason):
        """A check that fails on the reference (stock EDK2, or QEMU), for
        a reason the suite names; not mm-mp's, so not counted as a
        failure, nor as a pass."""
        self.known += 1
        self._line("KNOWN %s: %s" % (name, reason))

    def info(self, text):
        self._line("     " + text)

    def section(self, title):
        self._line("")
        self._line("== " + title)

    def table(self, title, header, rows):
        """Keep a table for the end of the run and print it now."""
        self.tables.append((title, header, rows))
        self._print_table(title, header, rows)

    def _print_table(self, title, header, rows):
        widths = [len(h) for h in header]
        for row in rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(str(cell)))
        self._line("")
        self._line(title)
        self._line("| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(header)) + " |")
        self._line("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in rows:
            self._line("| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |")

    def summary(self):
        """The closing line: `N passed, M failed` (and the skips, if any)."""
        text = "%d passed, %d failed" % (self.passed, self.failed)
        extra = []
        if self.skipped:
            extra.append("%d skipped" % self.skipped)
        if self.known:
            extra.append("%d known failure%s of stock EDK2 or QEMU" % (self.known, "" if self.known == 1 else "s"))
        if extra:
            text += " (" + ", ".join(extra) + ")"
        return text

    def finish(self):
        for title, header, rows in self.tables:
            self._print_table(title, header, rows)
        if self.failures:
            self._line("")
            self._line("failed: " + "; ".join(self.failures))
        self._line("")
        self._line(self.summary())
        return 0 if self.failed == 0 else 1


class Stopwatch:
    def __init__(self):
        self.start = time.monotonic()

    def seconds(self):
        return time.monotonic() - self.start
