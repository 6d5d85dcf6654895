#!/usr/bin/env python3
"""Mutation testing of mm-mp: would a test notice if this line were wrong?

    python3 tests/mutation.py                      # every mutant of src/
    python3 tests/mutation.py src/sync/busy.rs     # the mutants of some files
    python3 tests/mutation.py -j 2                 # two mutants at a time
    python3 tests/mutation.py --resume             # go on where a run stopped
    python3 tests/mutation.py --retest-missed      # again, the ones missed last time
    python3 tests/mutation.py --report --save tests/mutation-outcomes.jsonl
                                                   # the summary; keep it as the record
    python3 tests/mutation.py --caught-in tests/mutation-outcomes.jsonl \
        --sample 16 --seed 1 --loom never          # CI's smoke

cargo-mutants (`cargo install cargo-mutants`) makes the mutants: it lists
every small plausible bug it can write into the source (a function body
replaced by a default value, an operator swapped, a condition negated,
...). This driver runs them, because the project's tests are not one
`cargo test`: for each mutant, in a copy of the repository
(target/mutation/outcomes-tree<k>, one per worker, each with its own
warm target directory), it

1. writes the mutation into the file;
2. builds the test binaries one at a time, quickest and most pointed
   first (`cargo test --no-run --lib` / `--test NAME`), so a mutant the
   unit tests catch costs one build; a mutant that does not compile is
   *unviable*;
3. runs each binary as soon as it is built, with a time limit of
   max(--timeout, 5 x the binary's time on the unmutated tree); the
   first failure ends the mutant as *caught*, a binary that outlives its
   limit (for a binary with a thread per CPU, then also a second run's
   limit of max(180 s, 30 x its time)) as *timeout* (a hang the tests
   provoked: caught too);
4. if every binary passed and the file holds concurrency code (sync/,
   the mailbox, broadcast, tokens, the rendezvous, SmmCpuSyncLib), runs
   the loom models (`--cfg loom`, profile loom, LOOM_MAX_PREEMPTIONS=3);
5. otherwise the mutant is *missed*, or *equivalent* when its name is
   in tests/mutants-equivalent.txt (each one argued in
   docs/RELIABILITY.md, "Mutation testing").

Every outcome is appended to target/mutation/outcomes.jsonl as it comes,
keyed by the mutant's name without its line and column (so outcomes
survive edits elsewhere in a file); the summary (caught / timeout /
missed / equivalent / unviable, the kill ratio over the viable ones, each
missed mutant, and a line per file) is printed at the end. Exit status 1
when any mutant of the run was missed, so CI's smoke fails when the tests
weaken. .cargo/mutants.toml keeps cargo-mutants away from test helpers. docs/RELIABILITY.md ("Mutation testing") has the last full run
and the argument for every survivor that is equivalent.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(REPO, "target", "mutation")
OUTCOMES = os.path.join(WORK, "outcomes.jsonl")
EQUIVALENT = os.path.join(REPO, "tests", "mutants-equivalent.txt")

# Test binaries, quickest and most pointed first (target names; "lib" is
# the unit tests of src/). The loom models are step 4, not here.
ORDER = [
    "lib",
    "deterministic",
    "wide",
    "bad_input",
    "hostile",
    "faults",
    "cpu_service",
    "sync_lib",
    "scenarios",
    "threads",
    "ffi_sync",
    "c_header",
    "model",
    "long_run",
]
LOOM = ("loom", "loom_sync")
# Binaries with a thread per CPU: the ones a loaded machine slows down.
REAL_THREADS = ("cpu_service", "sync_lib", "scenarios", "threads", "ffi_sync", "long_run")


def test_binaries(tree):
    """ORDER, then any test file of tests/ it does not name (a new one runs
    last until it is given its place)."""
    here = set(ORDER) | set(LOOM)
    extra = sorted(f[:-3] for f in os.listdir(os.path.join(tree, "tests")) if f.endswith(".rs") and f[:-3] not in here)
    return ORDER + extra
# Files whose mutants get the loom models when the other tests miss them.
LOOM_FILES = (
    "src/sync/",
    "src/mailbox.rs",
    "src/broadcast.rs",
    "src/tokens.rs",
    "src/rendezvous.rs",
    "src/sync_lib.rs",
    "src/dispatch.rs",
)
# The environment of every test run: CI's sizes, a shorter long run.
TEST_ENV = {"MM_MP_MODEL_CASES": "800", "MM_MP_LONG_RUN_SMIS": "500", "RUST_BACKTRACE": "0"}
OUTCOME_KINDS = ("caught", "timeout", "missed", "equivalent", "unviable")

print_lock = threading.Lock()


def log(text):
    with print_lock:
        print(text, flush=True)


def list_mutants(files):
    cmd = ["cargo", "mutants", "--list", "--json"]
    for f in files:
        cmd += ["-f", f]
    out = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def stable(name):
    """A mutant's name without its line and column, so the list of
    equivalent mutants survives edits elsewhere in the file."""
    file, _, rest = name.partition(":")
    return file + ":" + rest.split(": ", 1)[-1] if ": " in rest else name


def position(name):
    """(line, column) of a mutant's name, for ordering."""
    parts = name.split(":")
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return 0, 0


def keys(names):
    """name -> (stable name, rank among the mutants of that stable name by
    position): a key that survives lines added or removed elsewhere in the
    file, so outcomes recorded before an edit still match."""
    groups = {}
    for n in names:
        groups.setdefault(stable(n), []).append(n)
    out = {}
    for k, group in groups.items():
        for rank, n in enumerate(sorted(group, key=position)):
            out[n] = (k, rank)
    return out


def keys_in_order(mutants):
    """The `keys` of a list of mutants, in the list's order."""
    k = keys([m["name"] for m in mutants])
    return [k[m["name"]] for m in mutants]


def equivalents():
    names = set()
    if os.path.exists(EQUIVALENT):
        with open(EQUIVALENT) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    names.add(stable(line))
    return names


def apply(text, mutant):
    """The file's text with the mutant's span replaced (1-based lines and
    columns, end exclusive)."""
    lines = text.split("\n")
    span = mutant["span"]
    (l0, c0), (l1, c1) = (span["start"]["line"], span["start"]["column"]), (span["end"]["line"], span["end"]["column"])

    def offset(line, col):
        return sum(len(l) + 1 for l in lines[: line - 1]) + col - 1

    a, b = offset(l0, c0), offset(l1, c1)
    return text[:a] + mutant["replacement"] + text[b:]


class Worker:
    """One scratch copy of the repository and its target directory."""

    def __init__(self, place, k, timeout, loom):
        self.tree = "%s-tree%d" % (place, k)
        self.target = "%s-target%d" % (place, k)
        self.timeout = timeout
        self.loom = loom
        self.baseline = {}

    def sync(self):
        """Copy the files git tracks, as they are in the working tree; leave
        unchanged files (and the target directory) alone."""
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
        for rel in files.decode().split("\0"):
            src = os.path.join(REPO, rel)
            if not rel or not os.path.isfile(src):
                continue
            dst = os.path.join(self.tree, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(src, "rb") as f:
                data = f.read()
            try:
                with open(dst, "rb") as f:
                    if f.read() == data:
                        continue
            except OSError:
                pass
            with open(dst, "wb") as f:
                f.write(data)

    def run(self, cmd, timeout, env=None):
        """(returncode or None on timeout, seconds, output tail)."""
        start = time.monotonic()
        e = dict(os.environ)
        e.update(TEST_ENV)
        e.update(env or {})
        try:
            p = subprocess.run(cmd, cwd=self.tree, env=e, capture_output=True, text=True, timeout=timeout)
            return p.returncode, time.monotonic() - start, (p.stdout + p.stderr)[-3000:]
        except subprocess.TimeoutExpired as t:
            out = (t.stdout or b"") + (t.stderr or b"")
            if isinstance(out, bytes):
                out = out.decode("utf-8", "replace")
            return None, time.monotonic() - start, out[-3000:]

    def build(self, name):
        """Build one test binary; its path, or None when it does not build."""
        sel = ["--lib"] if name == "lib" else ["--test", name]
        cmd = ["cargo", "test", "--no-run", "--message-format=json", "--target-dir", self.target] + sel
        p = subprocess.run(cmd, cwd=self.tree, capture_output=True, text=True)
        if p.returncode != 0:
            return None
        for line in p.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"].get("test"):
                return msg["executable"]
        return None

    def prepare(self):
        """Sync, build and time every binary on the unmutated tree."""
        self.sync()
        self.binaries = test_binaries(self.tree)
        for name in self.binaries:
            exe = self.build(name)
            if exe is None:
                raise SystemExit("the unmutated tree does not build " + name)
            rc, secs, out = self.run([exe], 1800)
            if rc != 0:
                raise SystemExit("the unmutated tree fails %s:\n%s" % (name, out))
            self.baseline[name] = secs

    def test(self, mutant):
        rel = mutant["file"]
        path = os.path.join(self.tree, rel)
        with open(path) as f:
            original = f.read()
        t0 = time.monotonic()

        def done(outcome, **kw):
            kw.update(outcome=outcome, seconds=round(time.monotonic() - t0, 1))
            return kw

        try:
            with open(path, "w") as f:
                f.write(apply(original, mutant))
            for name in self.binaries:
                exe = self.build(name)
                if exe is None:
                    # A mutant that compiles for the first binary compiles
                    # for all: a later failure is the scratch tree's.
                    return done("unviable", by="build " + name)
                limit = max(self.timeout, 5 * self.baseline[name])
                rc, secs, out = self.run([exe], limit)
                if rc is None and name in REAL_THREADS:
                    # A loaded machine slows the real-thread tests many
                    # times over: a hang is a binary that outlives a second,
                    # much longer limit too. (The stepped tests' baselines
                    # are near 0 s: the first limit is a margin of 1000x.)
                    rc, secs, out = self.run([exe], max(180, 30 * self.baseline[name]))
                if rc is None:
                    return done("timeout", by=name)
                if rc != 0:
                    return done("caught", by=name, test=first_failure(out))
            if self.loom == "always" or (self.loom == "auto" and rel.startswith(LOOM_FILES)):
                cmd = ["cargo", "test", "--profile", "loom", "--target-dir", os.path.join(self.target, "loom")]
                for t in LOOM:
                    cmd += ["--test", t]
                rc, secs, out = self.run(cmd, 3600, env={"RUSTFLAGS": "--cfg loom", "LOOM_MAX_PREEMPTIONS": "3"})
                if rc is None:
                    return done("timeout", by="loom")
                if rc != 0 and "test result" not in out:
                    return done("unviable", by="loom build")
                if rc != 0:
                    return done("caught", by="loom", test=first_failure(out))
            return done("missed")
        finally:
            with open(path, "w") as f:
                f.write(original)


def first_failure(output):
    for line in output.splitlines():
        if line.startswith("test ") and line.rstrip().endswith("FAILED"):
            return line.split()[1]
    return ""


def summarize(results):
    counts = {k: 0 for k in OUTCOME_KINDS}
    per_file = {}
    for r in results:
        counts[r["outcome"]] += 1
        f = per_file.setdefault(r["name"].split(":")[0], {k: 0 for k in OUTCOME_KINDS})
        f[r["outcome"]] += 1
    log("")
    log("%-24s %7s %7s %7s %7s %7s" % ("file", *OUTCOME_KINDS))
    for name in sorted(per_file):
        log("%-24s %7d %7d %7d %7d %7d" % (name, *(per_file[name][k] for k in OUTCOME_KINDS)))
    killed = counts["caught"] + counts["timeout"]
    viable = killed + counts["missed"] + counts["equivalent"]
    log("")
    log("%d mutants: %d caught, %d timeout, %d missed, %d equivalent, %d unviable" % (
        len(results), counts["caught"], counts["timeout"], counts["missed"], counts["equivalent"],
        counts["unviable"]))
    if viable:
        log("killed %.1f %% of the viable ones (%.1f %% of those not argued equivalent)" % (
            100.0 * killed / viable, 100.0 * killed / max(1, viable - counts["equivalent"])))
    for r in results:
        if r["outcome"] == "missed":
            log("MISSED " + r["name"])
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="source files (default: every file of src/)")
    p.add_argument("--sample", type=int, help="test only N mutants, chosen with --seed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=int, default=30, help="least seconds per test binary (default 30)")
    p.add_argument("--loom", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--resume", action="store_true", help="skip mutants already in outcomes.jsonl")
    p.add_argument("--retest-missed", action="store_true",
                   help="only the mutants outcomes.jsonl has as missed (after new tests)")
    p.add_argument("--retest-timeouts", action="store_true",
                   help="only the mutants outcomes.jsonl has as timeout in a real-thread binary "
                        "(again, with the second limit)")
    p.add_argument("--re", help="only mutants whose name contains this text")
    p.add_argument("--caught-in", metavar="FILE",
                   help="only mutants an outcomes file records as caught (CI's smoke: "
                        "a mutant the tests caught must stay caught)")
    p.add_argument("--outcomes", default=OUTCOMES, help="where outcomes are kept (default %(default)s)")
    p.add_argument("--trees", default="", help="a name for this run's scratch trees, to run beside another run on the same outcomes")
    p.add_argument("--report", action="store_true", help="only the summary of outcomes.jsonl")
    p.add_argument("--save", metavar="FILE",
                   help="with --report: write the outcome of every current mutant to FILE "
                        "(tests/mutation-outcomes.jsonl is the record of the last full run)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    a = p.parse_args()

    mutants = list_mutants(a.files)
    if a.re:
        mutants = [m for m in mutants if a.re in m["name"]]
    if a.caught_in:
        killed = {}
        with open(a.caught_in) as f:
            for line in f:
                r = json.loads(line)
                # Caught ones only: a timeout takes its whole limit to
                # confirm.
                killed[r["name"]] = r["outcome"] == "caught" and not (
                    a.loom == "never" and r.get("by") == "loom")
        killed_keys = {k for n, k in keys(killed).items() if killed[n]}
        mutants = [m for m, k in zip(mutants, keys_in_order(mutants)) if k in killed_keys]
    if a.sample:
        mutants = random.Random(a.seed).sample(mutants, min(a.sample, len(mutants)))
    os.makedirs(WORK, exist_ok=True)
    recorded = {}
    if os.path.exists(a.outcomes):
        with open(a.outcomes) as f:
            for line in f:
                r = json.loads(line)
                recorded[r["name"]] = r
    # Outcomes by the current names of the mutants (see `keys`).
    by_key = {k: recorded[n] for n, k in keys(recorded).items()}
    previous = {}
    for n, k in keys([m["name"] for m in mutants]).items():
        if k in by_key:
            previous[n] = dict(by_key[k], name=n)
    equivalent = equivalents()
    if a.retest_missed or a.retest_timeouts:
        again = {"missed"} if a.retest_missed else set()
        again |= {"timeout"} if a.retest_timeouts else set()
        mutants = [m for m in mutants if previous.get(m["name"], {}).get("outcome") in again
                   and stable(m["name"]) not in equivalent
                   and (previous[m["name"]]["outcome"] != "timeout" or previous[m["name"]].get("by") in REAL_THREADS)]
    done = {} if (a.retest_missed or a.retest_timeouts) else (previous if a.resume else {})
    if a.report:
        results = []
        for m in mutants:
            r = previous.get(m["name"])
            if r:
                if r["outcome"] == "missed" and stable(m["name"]) in equivalent:
                    r = dict(r, outcome="equivalent")
                results.append(r)
        log("%d of %d mutants have an outcome" % (len(results), len(mutants)))
        if a.save:
            with open(a.save, "w") as f:
                for r in results:
                    f.write(json.dumps(r, sort_keys=True) + "\n")
            log("saved to " + a.save)
        return 1 if summarize(results)["missed"] else 0
    todo = [m for m in mutants if m["name"] not in done]
    log("%d mutants (%d already done), %d worker(s)" % (len(mutants), len(mutants) - len(todo), a.jobs))

    # Each outcomes file has its own scratch trees: a smoke run does not
    # disturb a full run going on beside it.
    place = os.path.splitext(os.path.abspath(a.outcomes))[0] + ("-" + a.trees if a.trees else "")
    workers = [Worker(place, k, a.timeout, a.loom) for k in range(max(1, a.jobs))]
    for w in workers:
        w.prepare()
    log("baseline seconds: " + ", ".join("%s %.1f" % (n, workers[0].baseline[n]) for n in workers[0].binaries))

    results = {m["name"]: done[m["name"]] for m in mutants if m["name"] in done}
    queue = list(enumerate(todo, 1))
    qlock = threading.Lock()
    out = open(a.outcomes, "a")

    def work(w):
        while True:
            with qlock:
                if not queue:
                    return
                i, m = queue.pop(0)
            r = w.test(m)
            if r["outcome"] == "missed" and stable(m["name"]) in equivalent:
                r["outcome"] = "equivalent"
            r["name"] = m["name"]
            with qlock:
                results[m["name"]] = r
                out.write(json.dumps(r) + "\n")
                out.flush()
            log("%4d/%d %-10s %s%s (%.0f s)" % (i, len(todo), r["outcome"].upper(), m["name"],
                                                (" [" + r["by"] + "]") if r.get("by") else "", r["seconds"]))

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    counts = summarize([results[m["name"]] for m in mutants if m["name"] in results])
    return 1 if counts["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
