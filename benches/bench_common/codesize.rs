//! Section [6]: the bytes a firmware module calling every export pulls in
//! from the release library built with the firmware flags of BEHAVIOUR.md §9.
//!
//! 1. `make -C firmware target/firmware/libmm_mp-plain.a`: the firmware build
//!    of BEHAVIOUR.md §9 (firmware/Makefile: the SMM code-generation flags, the
//!    release profile's panic = "abort", rustc's embedded bitcode removed);
//! 2. `cc -Os -ffunction-sections -fdata-sections firmware/all_exports.c
//!    libmm_mp-plain.a -Wl,--gc-sections -Wl,-Map=...` (the program the
//!    no-reachable-panic check links: every export and protocol member);
//! 3. sum the sizes of the input sections from the library that the map
//!    file shows kept, by kind.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Default, Debug)]
pub struct Sizes {
    pub text: u64,
    pub rodata: u64,
    pub data: u64,
    pub bss: u64,
    pub eh_frame: u64,
    pub other: u64,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

pub fn measure() -> Result<Sizes, String> {
    let root = root();
    let target = root.join("target/firmware");
    let lib = target.join("libmm_mp-plain.a");
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root.join("firmware"))
        .arg(&lib))?;
    let out_dir = target.join("codesize");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let map = out_dir.join("all_exports.map");
    run(Command::new("cc")
        .args(["-Os", "-ffunction-sections", "-fdata-sections", "-I"])
        .arg(root.join("include"))
        .arg(root.join("firmware/all_exports.c"))
        .arg(&lib)
        .arg("-Wl,--gc-sections")
        .arg(format!("-Wl,-Map={}", map.display()))
        .arg("-o")
        .arg(out_dir.join("all_exports")))?;
    parse_map(&map, "libmm_mp-plain.a(")
}

/// Sum the kept input sections of `archive` in a GNU ld map file.
pub fn parse_map(map: &Path, archive: &str) -> Result<Sizes, String> {
    let text = std::fs::read_to_string(map).map_err(|e| e.to_string())?;
    let body = text
        .split_once("Linker script and memory map")
        .ok_or("no memory map in the map file")?
        .1;
    let mut sizes = Sizes::default();
    let mut previous = "";
    for line in body.lines() {
        if line.contains(archive) {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let (name, rest) = if tokens.first().is_some_and(|t| t.starts_with('.')) {
                (tokens[0], &tokens[1..])
            } else {
                (previous.trim(), &tokens[..])
            };
            if rest.len() >= 2 && rest[0].starts_with("0x") && rest[1].starts_with("0x") {
                let size = u64::from_str_radix(rest[1].trim_start_matches("0x"), 16)
                    .map_err(|e| e.to_string())?;
                let slot = if name.starts_with(".text") {
                    &mut sizes.text
                } else if name.starts_with(".rodata") {
                    &mut sizes.rodata
                } else if name.starts_with(".data") {
                    &mut sizes.data
                } else if name.starts_with(".bss") {
                    &mut sizes.bss
                } else if name.starts_with(".eh_frame") {
                    &mut sizes.eh_frame
                } else {
                    &mut sizes.other
                };
                *slot += size;
            }
        }
        previous = line;
    }
    Ok(sizes)
}
