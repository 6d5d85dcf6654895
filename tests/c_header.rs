//! The C header `include/mm_mp.h` and the C API as C sees it (BEHAVIOUR.md §1.1,
//! §11). Every check compiles real C with the system C compiler (`$CC`, else
//! `cc`) and, where it runs code, links the static library this `cargo test`
//! built:
//!
//! * the committed header is what build.rs generates (drift check);
//! * the hand-written part of the header agrees with the Rust constants;
//! * the header compiles on its own as C99/C11 (`-pedantic`), as C++, twice
//!   in one unit, and for IA32 (`-m32 -ffreestanding`, when available);
//! * `tests/c/efiapi_check.c`: every export, protocol member and procedure
//!   type is ms_abi (assigned to explicitly attributed pointer types under
//!   `-Werror=incompatible-pointer-types`), and the exports return the
//!   BEHAVIOUR.md §11 statuses for bad arguments;
//! * `tests/c/efiapi_negative.c`: mixing a SysV pointer with an EFIAPI one
//!   does not compile, so the positive check is meaningful;
//! * `tests/c/edk2_mode.c`: after (stub) EDK2 headers, the header reuses
//!   EDK2's types instead of redefining them.
//!
//! The static library: `$MM_MP_STATICLIB` if set, else the `libmm_mp-*.a`
//! next to this test executable (`target/<profile>/deps`) that was built
//! for the tests (it contains std; the newest such), else the newest one,
//! else `target/<profile>/libmm_mp.a`.

#![cfg(all(unix, not(loom)))]

use std::collections::HashMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mm_mp::efi::{self, Guid, Status};
use mm_mp::platform;

/// What build.rs generated for this build.
const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/mm_mp.h"));

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The warning set of BEHAVIOUR.md §1.1 (plus -Wall -Wextra).
const STRICT: &[&str] = &[
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Werror=incompatible-pointer-types",
];

/// What a host program linking the library needs besides it (the
/// `cargo test` build of the library links std).
const LINK_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

/// BEHAVIOUR.md §11 functions that not every version of the header declares yet;
/// the C checks cover each one the header has (`-DMM_MP_HAS_<name>=1`).
const OPTIONAL_EXPORTS: &[&str] = &[
    "MmMpGetStatistics",
    "MmMpGetHotPlugStatistics",
    "MmMpGetCpuServiceProtocol",
    "MmMpGetRendezvousProtocol",
    "MmMpSyncGetRequiredSize",
    "MmMpSyncContextInit",
    "MmMpSyncContextReset",
    "MmMpSyncGetArrivedCpuCount",
    "MmMpSyncCheckInCpu",
    "MmMpSyncCheckOutCpu",
    "MmMpSyncLockDoor",
    "MmMpSyncWaitForAPs",
    "MmMpSyncReleaseOneAp",
    "MmMpSyncWaitForBsp",
    "MmMpSyncReleaseBsp",
];

/// Every function of BEHAVIOUR.md §11.
const DOCUMENTED_EXPORTS: &[&str] = &[
    "MmMpGetRequiredSize",
    "MmMpInitialize",
    "MmMpSmiRendezvous",
    "MmMpGetMmMpProtocol",
    "MmMpGetCpuServiceProtocol",
    "MmMpGetRendezvousProtocol",
    "MmMpStartupThisAp",
    "MmMpBlockingStartupThisAp",
    "MmMpGetCurrentBsp",
    "MmMpGetTokenResult",
    "MmMpSyncGetRequiredSize",
    "MmMpSyncContextInit",
    "MmMpSyncContextReset",
    "MmMpSyncGetArrivedCpuCount",
    "MmMpSyncCheckInCpu",
    "MmMpSyncCheckOutCpu",
    "MmMpSyncLockDoor",
    "MmMpSyncWaitForAPs",
    "MmMpSyncReleaseOneAp",
    "MmMpSyncWaitForBsp",
    "MmMpSyncReleaseBsp",
];

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(MANIFEST_DIR)
}

fn committed_header() -> String {
    let path = root().join("include/mm_mp.h");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cc() -> String {
    env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

/// A scratch directory of one test of this process, removed when dropped:
/// two runs of the suite at once (CI beside a developer, a stress run)
/// must not compile into, or run from, each other's files.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_header")
        .join(format!("{name}-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

fn staticlib() -> PathBuf {
    if let Some(p) = env::var_os("MM_MP_STATICLIB") {
        return PathBuf::from(p);
    }
    let exe = env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    // `cargo build` and `cargo test` build the library twice (panic=abort
    // without std, panic=unwind with std) and both land in deps/. Prefer
    // the one built for this test (it contains std), newest first.
    let mut candidates: Vec<(bool, std::time::SystemTime, PathBuf)> = fs::read_dir(deps)
        .expect("read deps dir")
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("libmm_mp-") && name.ends_with(".a")
        })
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((archive_has_std(&e.path()), modified, e.path()))
        })
        .collect();
    candidates.sort();
    if let Some((_, _, path)) = candidates.pop() {
        return path;
    }
    let uplifted = deps.parent().expect("profile dir").join("libmm_mp.a");
    assert!(
        uplifted.exists(),
        "no libmm_mp static library next to {} (set MM_MP_STATICLIB)",
        exe.display()
    );
    uplifted
}

/// Whether a static library archive has std's objects as members (their
/// names look like `std-<16 hex digits>.std.<...>.rcgu.o`).
fn archive_has_std(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    bytes.windows(4).enumerate().any(|(i, w)| {
        w == b"std-"
            && bytes
                .get(i + 4..i + 20)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            && bytes.get(i + 20..i + 25) == Some(b".std.")
    })
}

fn show(cmd: &Command, out: &Output) -> String {
    format!(
        "$ {:?}\nstatus: {}\n--- stdout\n{}--- stderr\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(mut cmd: Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(show(&cmd, &out))
    }
}

/// `cc <args>`; Ok(stderr) on success, Err(report) on failure.
fn compile(compiler: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(compiler);
    cmd.args(args);
    run(cmd).map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
}

fn include_dir() -> String {
    root().join("include").display().to_string()
}

fn c_file(name: &str) -> String {
    root().join("tests/c").join(name).display().to_string()
}

/// `-DMM_MP_HAS_<name>=1` for every optional BEHAVIOUR.md §11 function the header declares.
fn has_flags(header: &str) -> Vec<String> {
    OPTIONAL_EXPORTS
        .iter()
        .filter(|n| declares(header, n))
        .map(|n| format!("-DMM_MP_HAS_{n}=1"))
        .collect()
}

fn declares(header: &str, function: &str) -> bool {
    header.contains(&format!("\nEFIAPI\n{function} (\n"))
}

/// `#define NAME VALUE` of the header (continuation lines joined).
fn defines(header: &str) -> HashMap<String, String> {
    let joined = header.replace("\\\n", " ");
    let mut map = HashMap::new();
    for line in joined.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define ") else {
            continue;
        };
        let rest = rest.trim();
        let (name, value) = match rest.find(|c: char| c.is_whitespace()) {
            Some(i) if !rest[..i].contains('(') => (&rest[..i], rest[i..].trim()),
            _ => continue,
        };
        map.entry(name.to_string()).or_insert(value.to_string());
    }
    map
}

fn parse_int(text: &str) -> u64 {
    let t = text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim_end_matches(['u', 'U', 'l', 'L']);
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    }
    .unwrap_or_else(|e| panic!("not an integer: {text:?}: {e}"))
}

fn parse_guid(text: &str) -> Guid {
    let n: Vec<u64> = text
        .split(['{', '}', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_int)
        .collect();
    assert_eq!(n.len(), 11, "GUID {text:?}");
    let mut data4 = [0u8; 8];
    for (d, v) in data4.iter_mut().zip(&n[3..]) {
        *d = *v as u8;
    }
    Guid {
        data1: n[0] as u32,
        data2: n[1] as u16,
        data3: n[2] as u16,
        data4,
    }
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// The committed header is byte for byte what build.rs generates. build.rs
/// rewrites include/mm_mp.h when it differs, so in CI the decisive check is
/// `scripts/check-header-drift.sh` (build, then `git diff --exit-code`);
/// this test catches a header edited by hand after the last build.
#[test]
fn committed_header_is_the_generated_one() {
    let committed = committed_header();
    if committed != GENERATED {
        let line = committed
            .lines()
            .zip(GENERATED.lines())
            .position(|(a, b)| a != b)
            .map_or(
                committed.lines().count().min(GENERATED.lines().count()),
                |l| l,
            );
        panic!(
            "include/mm_mp.h differs from the header build.rs generates (first difference at \
             line {}).\nDo not edit the header: change the Rust sources or cbindgen.toml and run \
             `cargo build`, then commit include/mm_mp.h.",
            line + 1
        );
    }
}

/// The hand-written prelude (GUIDs, protocol revision and bits, statuses)
/// and the generated constants agree with the Rust definitions.
#[test]
fn header_constants_match_rust() {
    let d = defines(GENERATED);
    let get = |name: &str| {
        d.get(name)
            .unwrap_or_else(|| panic!("#define {name} missing from the header"))
            .clone()
    };

    assert_eq!(
        parse_guid(&get("EFI_MM_MP_PROTOCOL_GUID")),
        efi::MM_MP_PROTOCOL_GUID
    );
    assert_eq!(
        parse_guid(&get("EFI_SMM_CPU_SERVICE_PROTOCOL_GUID")),
        efi::SMM_CPU_SERVICE_PROTOCOL_GUID
    );
    assert_eq!(
        parse_guid(&get("EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL_GUID")),
        efi::SMM_CPU_RENDEZVOUS_PROTOCOL_GUID
    );

    let numbers: &[(&str, u64)] = &[
        (
            "EFI_MM_MP_PROTOCOL_REVISION",
            efi::MM_MP_PROTOCOL_REVISION.into(),
        ),
        (
            "EFI_MM_MP_TIMEOUT_SUPPORTED",
            efi::MM_MP_TIMEOUT_SUPPORTED.into(),
        ),
        ("PROCESSOR_AS_BSP_BIT", efi::PROCESSOR_AS_BSP_BIT.into()),
        ("PROCESSOR_ENABLED_BIT", efi::PROCESSOR_ENABLED_BIT.into()),
        (
            "PROCESSOR_HEALTH_STATUS_BIT",
            efi::PROCESSOR_HEALTH_STATUS_BIT.into(),
        ),
        ("INVALID_APIC_ID", efi::INVALID_APIC_ID),
        (
            "MM_MP_CONFIG_REVISION",
            platform::MM_MP_CONFIG_REVISION.into(),
        ),
        (
            "MM_MP_PLATFORM_REVISION",
            platform::MM_MP_PLATFORM_REVISION.into(),
        ),
        (
            "MM_MP_SYNC_MODE_TRADITIONAL",
            platform::MM_MP_SYNC_MODE_TRADITIONAL.into(),
        ),
        (
            "MM_MP_SYNC_MODE_RELAXED",
            platform::MM_MP_SYNC_MODE_RELAXED.into(),
        ),
        ("MM_MP_LOG_INFO", platform::LOG_INFO as u64),
        ("MM_MP_LOG_WARN", platform::LOG_WARN as u64),
        ("MM_MP_LOG_ERROR", platform::LOG_ERROR as u64),
    ];
    for (name, value) in numbers {
        assert_eq!(parse_int(&get(name)), *value, "#define {name}");
    }

    assert_eq!(
        parse_int(&get("EFI_SUCCESS").replace("(EFI_STATUS)", "")),
        0
    );
    let top = 1u64 << (usize::BITS - 1);
    let statuses: &[(&str, Status)] = &[
        ("EFI_INVALID_PARAMETER", Status::INVALID_PARAMETER),
        ("EFI_UNSUPPORTED", Status::UNSUPPORTED),
        ("EFI_BUFFER_TOO_SMALL", Status::BUFFER_TOO_SMALL),
        ("EFI_NOT_READY", Status::NOT_READY),
        ("EFI_DEVICE_ERROR", Status::DEVICE_ERROR),
        ("EFI_OUT_OF_RESOURCES", Status::OUT_OF_RESOURCES),
        ("EFI_NOT_FOUND", Status::NOT_FOUND),
        ("EFI_TIMEOUT", Status::TIMEOUT),
        ("EFI_NOT_STARTED", Status::NOT_STARTED),
        ("EFI_ALREADY_STARTED", Status::ALREADY_STARTED),
        ("EFI_ABORTED", Status::ABORTED),
    ];
    for (name, status) in statuses {
        let value = get(name);
        let code = value
            .strip_prefix("ENCODE_ERROR")
            .unwrap_or_else(|| panic!("#define {name} {value}: expected ENCODE_ERROR (n)"));
        assert_eq!(top | parse_int(code), status.0 as u64, "#define {name}");
        // Test failures and logs print a status by its header name.
        assert_eq!(format!("{status:?}"), *name, "Debug of {name}");
    }
    assert_eq!(format!("{:?}", Status::SUCCESS), "EFI_SUCCESS");
    let top = top as usize;
    assert_eq!(
        format!("{:?}", Status(top | 1)),
        format!("Status({:#x})", top | 1)
    );
    // EFI_ERROR: the top bit alone decides; warnings are not errors.
    assert!(Status(top).is_error() && Status(top | 5).is_error());
    assert!(!Status::SUCCESS.is_error() && !Status(1).is_error() && !Status(top - 1).is_error());
}

/// The header is self-contained and clean in every language mode a host
/// integrator may use, and idempotent.
#[test]
fn header_compiles_standalone() {
    let dir = scratch("standalone");
    let src = dir.join("only_header.c");
    fs::write(
        &src,
        "#include \"mm_mp.h\"\n#include \"mm_mp.h\"\nint main(void) { return 0; }\n",
    )
    .unwrap();
    let src = src.display().to_string();
    let inc = format!("-I{}", include_dir());
    let obj = dir.join("only_header.o").display().to_string();

    for std in ["-std=c99", "-std=c11", "-std=gnu11"] {
        let mut args = vec![
            std,
            "-pedantic",
            inc.as_str(),
            "-c",
            src.as_str(),
            "-o",
            obj.as_str(),
        ];
        args.extend_from_slice(STRICT);
        compile(&cc(), &args).unwrap_or_else(|e| panic!("header alone, {std}:\n{e}"));
    }

    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    if Command::new(&cxx).arg("--version").output().is_ok() {
        let args = [
            "-x",
            "c++",
            "-std=c++11",
            "-pedantic",
            "-Wall",
            "-Wextra",
            "-Werror",
            &inc,
            "-c",
            &src,
            "-o",
            &obj,
        ];
        compile(&cxx, &args).unwrap_or_else(|e| panic!("header alone, C++:\n{e}"));
    } else {
        eprintln!("note: no C++ compiler ({cxx}); C++ check skipped");
    }

    // IA32 (BEHAVIOUR.md §1.2: UINTN is 32 bits there, errors use bit 31). Freestanding,
    // so only the compiler's own <stdint.h> is needed.
    let ia32 = dir.join("ia32.c");
    fs::write(
        &ia32,
        "#include \"mm_mp.h\"\n\
         _Static_assert (sizeof (UINTN) == 4, \"UINTN\");\n\
         _Static_assert (EFI_INVALID_PARAMETER == 0x80000002u, \"status\");\n\
         _Static_assert (EFI_ABORTED == 0x80000015u, \"status\");\n\
         _Static_assert (sizeof (EFI_MM_MP_PROTOCOL) == 4 * 8, \"protocol\");\n\
         _Static_assert (sizeof (MM_MP_CONFIG) == 56, \"config\");\n\
         int f (void);\n",
    )
    .unwrap();
    let ia32 = ia32.display().to_string();
    let probe = compile(
        &cc(),
        &[
            "-m32",
            "-ffreestanding",
            "-x",
            "c",
            "-c",
            "/dev/null",
            "-o",
            &obj,
        ],
    );
    if probe.is_ok() {
        let mut args = vec![
            "-m32",
            "-ffreestanding",
            "-std=c11",
            "-pedantic",
            inc.as_str(),
            "-c",
            ia32.as_str(),
            "-o",
            obj.as_str(),
        ];
        args.extend_from_slice(STRICT);
        compile(&cc(), &args).unwrap_or_else(|e| panic!("header alone, IA32:\n{e}"));
    } else {
        eprintln!("note: {} cannot build -m32; IA32 check skipped", cc());
    }
}

/// BEHAVIOUR.md §1.1: the EFIAPI proof, compile time and run time.
#[test]
#[cfg(target_arch = "x86_64")]
fn efiapi_check_compiles_links_and_passes() {
    let dir = scratch("efiapi_check");
    let exe = dir.join("efiapi_check").display().to_string();
    let lib = staticlib().display().to_string();
    let inc = format!("-I{}", include_dir());
    let src = c_file("efiapi_check.c");
    let flags = has_flags(GENERATED);

    let mut args: Vec<&str> = vec!["-std=c11", "-g"];
    args.extend_from_slice(STRICT);
    args.extend(flags.iter().map(String::as_str));
    args.extend([inc.as_str(), src.as_str(), lib.as_str(), "-o", exe.as_str()]);
    args.extend_from_slice(LINK_LIBS);
    compile(&cc(), &args).unwrap_or_else(|e| panic!("efiapi_check.c:\n{e}"));

    let out = run(Command::new(&exe)).unwrap_or_else(|e| panic!("efiapi_check failed:\n{e}"));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The EFIAPI table of efiapi_check.c covers every function the header
/// declares: a new export must be added there (BEHAVIOUR.md §1.1 asks for all).
#[test]
fn efiapi_check_covers_every_export() {
    let check = fs::read_to_string(c_file("efiapi_check.c")).expect("efiapi_check.c");
    let check = check.split_whitespace().collect::<Vec<_>>().join(" ");
    let declared: Vec<&str> = GENERATED
        .split("\nEFIAPI\n")
        .skip(1)
        .filter_map(|rest| rest.split(" (").next())
        .collect();
    assert!(declared.len() >= 8, "prototypes not found in the header");
    let unchecked: Vec<&&str> = declared
        .iter()
        .filter(|f| !check.contains(&format!(", {f}, {f});")))
        .collect();
    assert!(
        unchecked.is_empty(),
        "exported functions without a CHECK_ASSIGN line in tests/c/efiapi_check.c \
         (CheckExportTypes; guard it with MM_MP_HAS_<name> and list it in OPTIONAL_EXPORTS \
         of tests/c_header.rs if older headers lack it): {unchecked:?}"
    );
}

/// BEHAVIOUR.md §1.1: the attribute is really there — a SysV pointer type does not
/// accept the header's EFIAPI functions (and the other way round).
#[test]
#[cfg(target_arch = "x86_64")]
fn efiapi_negative_cases_do_not_compile() {
    let dir = scratch("efiapi_negative");
    let obj = dir.join("negative.o").display().to_string();
    let inc = format!("-I{}", include_dir());
    let src = c_file("efiapi_negative.c");
    let compile_case = |case: u32| {
        let define = format!("-DCASE={case}");
        let mut args = vec!["-std=c11", define.as_str()];
        args.extend_from_slice(STRICT);
        args.extend([inc.as_str(), "-c", src.as_str(), "-o", obj.as_str()]);
        compile(&cc(), &args)
    };

    compile_case(0).unwrap_or_else(|e| panic!("control case 0 must compile:\n{e}"));
    for case in 1..=5 {
        match compile_case(case) {
            Ok(_) => panic!(
                "efiapi_negative.c CASE={case} compiled: a SysV function pointer is accepted \
                 where the header says EFIAPI, so EFIAPI is not ms_abi"
            ),
            Err(report) => assert!(
                report.contains("incompatible pointer type"),
                "CASE={case} failed for another reason than the calling convention:\n{report}"
            ),
        }
    }
}

/// BEHAVIOUR.md §11: inside EDK2 the header reuses EDK2's types (stub headers of
/// our own in tests/c/edk2-stub), detected from MDE_CPU_X64 or from
/// MM_MP_USE_EDK2_TYPES; and a call through those declarations works.
#[test]
#[cfg(target_arch = "x86_64")]
fn edk2_mode_reuses_edk2_types() {
    let dir = scratch("edk2_mode");
    let exe = dir.join("edk2_mode").display().to_string();
    let obj = dir.join("edk2_mode.o").display().to_string();
    let lib = staticlib().display().to_string();
    let inc = format!("-I{}", include_dir());
    let stub = format!("-I{}", root().join("tests/c/edk2-stub").display());
    let src = c_file("edk2_mode.c");

    for std in ["-std=c99", "-std=c11"] {
        let mut args = vec![std, "-pedantic"];
        args.extend_from_slice(STRICT);
        args.extend([
            stub.as_str(),
            inc.as_str(),
            "-c",
            src.as_str(),
            "-o",
            obj.as_str(),
        ]);
        compile(&cc(), &args).unwrap_or_else(|e| panic!("edk2_mode.c, {std}:\n{e}"));
    }

    // explicit switch instead of MDE_CPU_*
    let mut args = vec![
        "-std=c99",
        "-pedantic",
        "-DSTUB_NO_MDE_CPU",
        "-DMM_MP_USE_EDK2_TYPES",
    ];
    args.extend_from_slice(STRICT);
    args.extend([
        stub.as_str(),
        inc.as_str(),
        "-c",
        src.as_str(),
        "-o",
        obj.as_str(),
    ]);
    compile(&cc(), &args).unwrap_or_else(|e| panic!("edk2_mode.c, MM_MP_USE_EDK2_TYPES:\n{e}"));

    // Control: with neither, the header defines its own basic types and
    // C99 must reject even the identical ones (UINT8 is unsigned char in
    // both), which is what makes the checks above prove "no redefinition".
    let mut args = vec!["-std=c99", "-pedantic", "-DSTUB_NO_MDE_CPU"];
    args.extend_from_slice(STRICT);
    args.extend([
        stub.as_str(),
        inc.as_str(),
        "-c",
        src.as_str(),
        "-o",
        obj.as_str(),
    ]);
    match compile(&cc(), &args) {
        Ok(_) => panic!("edk2_mode.c compiled although nothing selected the EDK2 mode"),
        Err(report) => assert!(
            report.contains("redefinition of typedef"),
            "C99 did not report the redefined typedefs, so this test cannot see one:\n{report}"
        ),
    }

    let mut args = vec!["-std=c11"];
    args.extend_from_slice(STRICT);
    args.extend([
        stub.as_str(),
        inc.as_str(),
        src.as_str(),
        lib.as_str(),
        "-o",
        exe.as_str(),
    ]);
    args.extend_from_slice(LINK_LIBS);
    compile(&cc(), &args).unwrap_or_else(|e| panic!("edk2_mode.c, link:\n{e}"));
    run(Command::new(&exe)).unwrap_or_else(|e| panic!("edk2_mode failed:\n{e}"));
}

/// Every function of BEHAVIOUR.md §11 has an EFIAPI prototype in the header.
#[test]
fn header_declares_every_spec_function() {
    let missing: Vec<&str> = DOCUMENTED_EXPORTS
        .iter()
        .copied()
        .filter(|f| !declares(GENERATED, f))
        .collect();
    assert!(
        missing.is_empty(),
        "BEHAVIOUR.md §11 functions missing from include/mm_mp.h: {missing:?}"
    );
}
