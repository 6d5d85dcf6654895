#!/usr/bin/env python3
"""The firmware end-to-end suite's own checks, run by tests/run-all.sh (CI
cannot fetch EDK2, so it checks the suite's parts instead of running it):
argument parsing, reading firmware logs (excerpts in testdata/, written by
this project in OVMF's and mm-mp's line formats), the QMP driver against a
fake QMP server, the DSC/FDF/DEC edits on synthetic files, the initramfs
writer and the guest's output parsing."""

import io
import json
import os
import re
import socket
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from mmmp_e2e import build, cli, fwlog, guest, qemu, qmp, report, suite, workspace  # noqa: E402


def testdata(name):
    with open(os.path.join(HERE, "testdata", name)) as f:
        return f.read()


class Cli(unittest.TestCase):
    def test_edk2_required(self):
        env = os.environ.pop("EDK2", None)
        try:
            with self.assertRaises(SystemExit), open(os.devnull, "w") as null:
                old, sys.stderr = sys.stderr, null
                try:
                    cli.parse([])
                finally:
                    sys.stderr = old
        finally:
            if env is not None:
                os.environ["EDK2"] = env

    def test_full_defaults(self):
        a = cli.parse(["--edk2", "/x"])
        self.assertEqual(a.variants, ("stock", "dropin", "swap"))
        self.assertEqual(a.cpus, (1, 2, 4, 8, 32))
        self.assertEqual(a.relaxed_cpus, (1, 2, 4, 8))
        self.assertEqual((a.hotplug_cycles, a.vars), (10, 20))
        self.assertIn("timing", a.phases)

    def test_flavours(self):
        a = cli.parse(["--edk2", "/x", "--mm", "traditional,standalone", "--toolchains", "CLANGPDB,GCC"])
        self.assertEqual(a.mm, ("traditional", "standalone"))
        self.assertEqual(a.toolchains, ("CLANGPDB", "GCC"))
        self.assertTrue(a.clang_bin)

    def test_quick(self):
        a = cli.parse(["--edk2", "/x", "--quick"])
        self.assertEqual(a.variants, ("swap",))
        self.assertEqual(a.cpus, (2, 4))
        self.assertEqual(a.hotplug_cycles, 3)
        self.assertNotIn("timing", a.phases)

    def test_bad_lists(self):
        for bad in (["--cpus", "2,x"], ["--cpus", "0"], ["--variants", "stock,other"], ["--vars", "0"]):
            with self.assertRaises(SystemExit), open(os.devnull, "w") as null:
                old, sys.stderr = sys.stderr, null
                try:
                    cli.parse(["--edk2", "/x"] + bad)
                finally:
                    sys.stderr = old


class FirmwareLogs(unittest.TestCase):
    def test_swap_relaxed(self):
        log = fwlog.FirmwareLog(testdata("swap-relaxed.log"))
        st = log.selftest()
        self.assertEqual((st["passed"], st["failed"], st["diff_checks"], st["by"]), (22, 0, 2, "mm-mp"))
        self.assertEqual(log.selftest_slots(), {"slots": 4, "populated": 4, "bsp": 0, "by": "mm-mp"})
        cfg = log.mmmp_config()
        self.assertEqual((cfg["cpus"], cfg["mode"], cfg["timeout1"]), (4, "relaxed", 100000))
        self.assertEqual(log.statistics()["IPIs"], 3)
        self.assertEqual(log.statistics()["CPUs added"], 0)
        self.assertEqual(log.gave_up(), 2)
        self.assertEqual(log.asserts() + log.exceptions(), [])

    def test_stock_failures(self):
        log = fwlog.FirmwareLog(testdata("stock-failures.log"))
        self.assertEqual(log.selftest()["failed"], 1)
        self.assertEqual(log.selftest()["by"], "stock EDK2")
        self.assertEqual(log.selftest_failures(), ["GetProcessorInfo of every slot (Success)"])
        self.assertEqual(len(log.asserts()), 1)
        self.assertTrue(log.asserts()[0].startswith("ASSERT [PiSmmCpuDxeSmm]"))
        self.assertEqual(len(log.exceptions()), 1)
        self.assertEqual(log.selftest_slots()["populated"], 2)
        self.assertIsNone(log.mmmp_config())
        self.assertIsNone(log.statistics())

    def test_hotplug(self):
        log = fwlog.FirmwareLog(testdata("hotplug.log"))
        self.assertEqual(log.hot_added(), [(2, 2), (3, 3)])
        self.assertEqual(log.hot_unplug_started(), [(2, 2)])
        self.assertEqual(log.unplugged(), [2])
        self.assertEqual(log.hotplug_applied(), (3, 2, 1))

    def test_empty(self):
        log = fwlog.FirmwareLog("")
        self.assertIsNone(log.selftest())
        self.assertIsNone(log.hotplug_applied())


class QemuParts(unittest.TestCase):
    def test_lost_pending_smi(self):
        self.assertEqual(qemu.lost_pending_smi(testdata("info-registers.txt")), ([0, 1], [2]))
        running = testdata("info-registers.txt").replace("SMM=1", "SMM=0")
        self.assertIsNone(qemu.lost_pending_smi(running))
        self.assertEqual(qemu.cpu_states(""), [])

    def test_strip_ansi_across_chunks(self):
        raw = b"\x1b[009;001HPress \x1b[1m\x1b[37m\x1b[40mESC\x1b[0m in 5 seconds\r\n" * 3

        class Holder:
            pass

        for size in range(1, 12):
            h = Holder()
            out = b"".join(qemu.strip_ansi(h, raw[i:i + size]) for i in range(0, len(raw), size))
            self.assertEqual(out.count(b"Press ESC in 5 seconds"), 3, size)
            self.assertNotIn(b"\x1b", out)

    def test_machine_args(self):
        args = qemu.machine_args("code.fd", "vars.fd", 2, maxcpus=4, relaxed=True, debuglog="fw.log")
        self.assertIn("2,maxcpus=4", args)
        for g in qemu.RELAXED_GLOBALS:
            self.assertIn(g, args)
        self.assertIn("tcg,thread=single", args)
        plain = qemu.machine_args("code.fd", "vars.fd", 8)
        self.assertIn("8", plain)
        self.assertNotIn(qemu.RELAXED_GLOBALS[0], plain)


class FakeQmp(threading.Thread):
    """A QMP server on a unix socket that answers from a script:
    {command: reply} where a reply is a list of objects to send."""

    def __init__(self, path, script):
        super().__init__(daemon=True)
        self.script = script
        self.received = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)

    def run(self):
        conn, _ = self.srv.accept()
        self.srv.close()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}}, "capabilities": []}}\r\n')
        f.flush()
        for line in f:
            msg = json.loads(line)
            self.received.append(msg)
            for obj in self.script.get(msg["execute"], [{"return": {}}]):
                f.write(json.dumps(obj).encode() + b"\r\n")
            f.flush()
        conn.close()


class QmpDriver(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "qmp.sock")

    def tearDown(self):
        self.dir.cleanup()

    def test_commands_events_errors(self):
        cpus = [
            {"type": "qemu64-x86_64-cpu", "vcpus-count": 1, "props": {"socket-id": 0, "core-id": 3, "thread-id": 0}},
            {"type": "qemu64-x86_64-cpu", "vcpus-count": 1, "props": {"socket-id": 0, "core-id": 2, "thread-id": 0}},
            {"type": "qemu64-x86_64-cpu", "vcpus-count": 1, "qom-path": "/machine/unattached/device[1]",
             "props": {"socket-id": 0, "core-id": 1, "thread-id": 0}},
        ]
        fake = FakeQmp(self.path, {
            "query-hotpluggable-cpus": [{"return": cpus}],
            "device_add": [{"event": "ACPI_DEVICE_OST", "data": {"info": {"device": "hp0"}}}, {"return": {}}],
            "device_del": [{"return": {}}, {"event": "DEVICE_DELETED", "data": {"device": "other"}},
                           {"event": "DEVICE_DELETED", "data": {"device": "hp0", "path": "/machine/peripheral/hp0"}}],
            "bad": [{"error": {"class": "GenericError", "desc": "no such thing"}}],
        })
        fake.start()
        q = qmp.Qmp(self.path, connect_timeout=10)
        self.assertEqual(q.version["major"], 10)
        plugged, free = qmp.hotpluggable_slots(q.command("query-hotpluggable-cpus"))
        self.assertEqual([p["core-id"] for _, p in plugged], [1])
        self.assertEqual([p["core-id"] for _, p in free], [2, 3])
        driver, props = free[0]
        q.command("device_add", driver=driver, id="hp0", **props)
        self.assertEqual(fake.received[-1]["arguments"],
                         {"driver": "qemu64-x86_64-cpu", "id": "hp0", "socket-id": 0, "core-id": 2, "thread-id": 0})
        self.assertEqual(q.events[0]["event"], "ACPI_DEVICE_OST")
        q.command("device_del", id="hp0")
        ev = q.wait_event("DEVICE_DELETED", 10, match={"device": "hp0"})
        self.assertEqual(ev["data"]["path"], "/machine/peripheral/hp0")
        self.assertIsNone(q.wait_event("DEVICE_DELETED", 0.2, match={"device": "hp0"}), "consumed once")
        self.assertIsNotNone(q.wait_event("DEVICE_DELETED", 1, match={"device": "other"}))
        with self.assertRaises(qmp.QmpError):
            q.command("bad")
        self.assertEqual(fake.received[0]["execute"], "qmp_capabilities")
        q.close()

    def test_no_server(self):
        with self.assertRaises(qmp.QmpError):
            qmp.Qmp(self.path, connect_timeout=0.2)


DSC = """[Defines]
  DEFINE SMM_REQUIRE = FALSE

[LibraryClasses.common.DXE_SMM_DRIVER]
  BaseCryptLib|CryptoPkg/Library/BaseCryptLib/SmmCryptLib.inf

[Components]
!if $(SMM_REQUIRE) == TRUE
  UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf {
     <LibraryClasses>
       SmmCpuFeaturesLib|OvmfPkg/Library/SmmCpuFeaturesLib/SmmCpuFeaturesLib.inf
       SmmCpuSyncLib|UefiCpuPkg/Library/SmmCpuSyncLib/SmmCpuSyncLib.inf
   }
  OvmfPkg/Other/Other.inf
!endif
"""

FDF = """[FV.DXEFV]
!if $(SMM_REQUIRE) == TRUE
INF  OvmfPkg/CpuHotplugSmm/CpuHotplugSmm.inf
INF  UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf
!endif
"""

INF = """[Defines]
  BASE_NAME = PiSmmCpuDxeSmm

[Sources]
  MpService.c
  SmmMp.c
  CpuService.c
  PiSmmCpuCommon.c

[Packages]
  MdePkg/MdePkg.dec

[LibraryClasses]
  SmmCpuSyncLib
  BaseLib
"""


def write(path, text, newline="\r\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text.replace("\n", newline))


def read(path):
    with open(path, newline="") as f:
        return f.read()


class TreeEdits(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.tree = self.dir.name
        write(os.path.join(self.tree, workspace.PLATFORM_DSC), DSC)
        write(os.path.join(self.tree, workspace.PLATFORM_FDF), FDF)
        write(os.path.join(self.tree, workspace.DRIVER_INF["traditional"]), INF)
        write(os.path.join(self.tree, "MmMpPkg/PiSmmCpuDxeSmm/MmMpService.c"), "/* */\n", "\n")
        os.makedirs(os.path.join(self.tree, "OvmfPkg/Include/Dsc"))
        self.lines = []
        self.log = workspace.EditLog(self.lines.append)

    def tearDown(self):
        self.dir.cleanup()

    def test_swap_edits_and_idempotence(self):
        workspace.apply_variant_edits(self.tree, "swap", "traditional", self.log)
        dsc = read(os.path.join(self.tree, workspace.PLATFORM_DSC))
        self.assertNotIn("\n", dsc.replace("\r\n", ""), "CRLF kept")
        lines = dsc.split("\r\n")
        block = lines.index("  UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf {")
        self.assertEqual(lines[block + 2].strip(), "MmMpLib|MmMpPkg/Library/MmMpLib/MmMpLib.inf")
        end = lines.index("   }")
        self.assertEqual(lines[end + 1], "  MmMpPkg/MmMpSelfTest/MmMpSelfTest.inf")
        fdf = read(os.path.join(self.tree, workspace.PLATFORM_FDF)).split("\r\n")
        self.assertEqual(fdf[fdf.index("INF  UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf") + 1],
                         "INF  MmMpPkg/MmMpSelfTest/MmMpSelfTest.inf")
        inf = read(os.path.join(self.tree, workspace.DRIVER_INF["traditional"]))
        self.assertIn("../../MmMpPkg/PiSmmCpuDxeSmm/MmMpService.c", inf)
        self.assertNotIn("MpService.c\r\n  SmmMp.c", inf)
        self.assertTrue(all(l.startswith("edit: ") for l in self.lines), self.lines)
        # Again on the edited tree: nothing changes, every edit is "kept".
        before = [read(os.path.join(self.tree, p)) for p in (workspace.PLATFORM_DSC, workspace.PLATFORM_FDF)]
        self.lines.clear()
        workspace.apply_variant_edits(self.tree, "swap", "traditional", self.log)
        after = [read(os.path.join(self.tree, p)) for p in (workspace.PLATFORM_DSC, workspace.PLATFORM_FDF)]
        self.assertEqual(before, after)
        self.assertTrue(self.lines and all(l.startswith("kept: ") for l in self.lines), self.lines)

    def test_dropin_replaces_the_mapping(self):
        workspace.apply_variant_edits(self.tree, "dropin", "traditional", self.log)
        dsc = read(os.path.join(self.tree, workspace.PLATFORM_DSC))
        self.assertIn("SmmCpuSyncLib|MmMpPkg/Library/SmmCpuSyncLibMmMp/SmmCpuSyncLibMmMp.inf", dsc)
        self.assertNotIn("UefiCpuPkg/Library/SmmCpuSyncLib/SmmCpuSyncLib.inf", dsc)
        self.assertNotIn("MmMpLib|", dsc)

    def test_stock_adds_only_the_self_test(self):
        workspace.apply_variant_edits(self.tree, "stock", "traditional", self.log)
        self.assertEqual(len(self.lines), 2)
        self.assertIn("UefiCpuPkg/Library/SmmCpuSyncLib/SmmCpuSyncLib.inf", read(os.path.join(self.tree, workspace.PLATFORM_DSC)))

    def test_missing_anchor_is_an_error(self):
        write(os.path.join(self.tree, workspace.PLATFORM_FDF), "[FV.DXEFV]\n")
        with self.assertRaises(workspace.PrepareError):
            workspace.apply_variant_edits(self.tree, "stock", "traditional", self.log)

    def test_null_crypto(self):
        workspace.null_crypto(self.tree, self.log)
        dsc = read(os.path.join(self.tree, workspace.PLATFORM_DSC))
        self.assertIn("BaseCryptLib|" + workspace.NULL_CRYPT_INF, dsc)
        self.assertEqual(len(self.lines), 1)
        # With OpenSSL present nothing is touched.
        write(os.path.join(self.tree, workspace.PLATFORM_DSC), DSC)
        os.makedirs(os.path.join(self.tree, workspace.OPENSSL_MARKER))
        workspace.null_crypto(self.tree, self.log)
        self.assertIn("SmmCryptLib.inf", read(os.path.join(self.tree, workspace.PLATFORM_DSC)))

    def test_placeholder_include_dirs(self):
        write(os.path.join(self.tree, ".gitmodules"),
              '[submodule "a"]\n\tpath = CryptoPkg/Library/OpensslLib/openssl\n'
              '[submodule "b"]\n\tpath = MdePkg/Library/Present/sub\n', "\n")
        write(os.path.join(self.tree, "MdePkg/Library/Present/sub/file.h"), "x", "\n")
        write(os.path.join(self.tree, "CryptoPkg/CryptoPkg.dec"),
              "[Includes]\n  Include\n[Includes.Common.Private]\n  Library/OpensslLib/openssl/include  # x\n")
        write(os.path.join(self.tree, "MdePkg/MdePkg.dec"), "[Includes]\n  Library/Present/sub/inc\n")
        workspace.placeholder_include_dirs(self.tree, self.log)
        self.assertTrue(os.path.isdir(os.path.join(self.tree, "CryptoPkg/Library/OpensslLib/openssl/include")))
        self.assertFalse(os.path.isdir(os.path.join(self.tree, "CryptoPkg/Include")), "not inside a submodule")
        self.assertFalse(os.path.isdir(os.path.join(self.tree, "MdePkg/Library/Present/sub/inc")), "submodule present")
        self.assertEqual(len(self.lines), 1)

    def test_coff_toolchains_take_the_coff_instances(self):
        workspace.apply_variant_edits(self.tree, "swap", "traditional", self.log, coff=True)
        dsc = read(os.path.join(self.tree, workspace.PLATFORM_DSC))
        self.assertIn("MmMpLib|MmMpPkg/Library/MmMpLib/MmMpLibCoff.inf", dsc)
        write(os.path.join(self.tree, workspace.PLATFORM_DSC), DSC)
        workspace.apply_variant_edits(self.tree, "dropin", "traditional", self.log, coff=True)
        self.assertIn("SmmCpuSyncLib|MmMpPkg/Library/SmmCpuSyncLibMmMp/SmmCpuSyncLibMmMpCoff.inf",
                      read(os.path.join(self.tree, workspace.PLATFORM_DSC)))

    def test_keys_and_targets(self):
        self.assertEqual(workspace.variant_key("swap"), "swap")
        self.assertEqual(workspace.variant_key("swap", "standalone", "CLANGPDB"), "swap-standalone-clangpdb")
        self.assertEqual(workspace.variant_key("stock", "traditional", "CLANGDWARF"), "stock-clangdwarf")
        self.assertTrue(workspace.is_coff_toolchain("CLANGPDB"))
        self.assertTrue(workspace.is_coff_toolchain("VS2022"))
        self.assertFalse(workspace.is_coff_toolchain("CLANGDWARF"))
        self.assertFalse(workspace.is_coff_toolchain("GCC"))
        t = suite.Target("swap", "standalone", "CLANGPDB")
        self.assertEqual(t.title, "full swap [standalone MM, CLANGPDB]")
        self.assertIn("mch.extended-tseg-mbytes=64", t.qemu_args())
        self.assertEqual(suite.Target("stock").title, "stock")
        self.assertEqual(suite.Target("stock").qemu_args(), [])
        self.assertEqual(build.toolchain_env("GCC", "/x"), {})
        self.assertEqual(build.toolchain_env("CLANGPDB", "/usr/lib/llvm-22/bin")["CLANG_BIN"], "/usr/lib/llvm-22/bin/")

    def test_build_command(self):
        cmd = build.build_command("GCC", "DEBUG", build.default_defines("standalone"), jobs=2)
        self.assertEqual(cmd[:9], ["build", "-p", "OvmfPkg/OvmfPkgX64.dsc", "-a", "X64", "-t", "GCC", "-b", "DEBUG"])
        self.assertIn("STANDALONE_MM_ENABLE=TRUE", cmd)
        self.assertIn("SMM_REQUIRE=TRUE", cmd)


class Guest(unittest.TestCase):
    def test_cpio_round_trip(self):
        data = guest.cpio_archive([
            ("bin", "dir", None),
            ("dev/console", "chr", (5, 1)),
            ("init", "file", (b"#!/bin/sh\n", 0o755)),
            ("bin/sh", "symlink", "busybox"),
            ("odd", "file", (b"12345", 0o644)),
        ])
        self.assertEqual(len(data) % 512, 0)
        self.assertEqual(guest.cpio_names(data), ["bin", "dev/console", "init", "bin/sh", "odd"])

    def test_numbers_need_their_line_end(self):
        # The console is searched while it streams in: half a line must not match.
        self.assertIsNone(re.search(guest.READY, "MMMP-GUEST-READY nproc=2 efivars=2"))
        m = re.search(guest.READY, "MMMP-GUEST-READY nproc=2 efivars=21\r\n")
        self.assertEqual(m.groups(), ("2", "21"))
        self.assertIsNone(re.search(guest.end_of("@@END 7"), "@@END 7 12"))
        self.assertEqual(re.search(guest.end_of("@@END 7"), "x\n@@END 7 127\n").group(1), "127")
        self.assertIsNone(re.search(guest.end_of("@@END 7"), "@@END 71 0\n"))

    def test_parse_vartest(self):
        summary, bad, on = guest.parse_vartest(testdata("vartest.out"))
        self.assertEqual((summary["cpu"], summary["n"], summary["ok"], summary["bad"]), (1, 3, 2, 1))
        self.assertEqual((summary["write_us"], summary["read_us"], summary["delete_us"]), (15000, 1250, 1650))
        self.assertEqual(len(bad), 1)
        self.assertTrue(bad[0].startswith("BAD cpu=1 i=1 what=readback"))
        self.assertEqual(on, [1])
        self.assertEqual(guest.parse_vartest(""), (None, [], []))


class Reporting(unittest.TestCase):
    def test_lines_and_summary(self):
        out = io.StringIO()
        r = report.Report(out)
        self.assertTrue(r.check("a", True, "fine"))
        self.assertFalse(r.check("b", False))
        r.skip("c", "no QEMU for it")
        r.known_failure("d", "stock EDK2 drops it")
        self.assertEqual(r.summary(), "1 passed, 1 failed (1 skipped, 1 known failure of stock EDK2 or QEMU)")
        self.assertEqual(r.finish(), 1)
        text = out.getvalue()
        for line in ("PASS a: fine", "FAIL b", "SKIP c: no QEMU for it", "KNOWN d: stock EDK2 drops it"):
            self.assertIn(line, text)
        self.assertTrue(text.rstrip().endswith("1 passed, 1 failed (1 skipped, 1 known failure of stock EDK2 or QEMU)"))
        clean = report.Report(io.StringIO())
        clean.check("x", True)
        self.assertEqual(clean.finish(), 0)
        self.assertEqual(clean.summary(), "1 passed, 0 failed")


if __name__ == "__main__":
    unittest.main(verbosity=1)
