//! Build script: generates the C header `include/mm_mp.h` (BEHAVIOUR.md §1.1, §11).
//!
//! cbindgen 0.29 does not know the `efiapi` ABI: it skips `extern "efiapi"`
//! functions and prints `efiapi` function-pointer types without a calling
//! convention. The pipeline therefore is:
//!
//! 1. Copy the C-visible source files ([`HEADER_INPUTS`]) into `OUT_DIR`
//!    with `extern "efiapi"` turned into `extern "C"` (so cbindgen sees the
//!    items) and the parameter names of function-pointer types turned into
//!    PascalCase (cbindgen's `rename_args` only covers functions), and
//!    every `impl` block marked `cbindgen:ignore` (associated constants are
//!    Rust API). Because this erases the ABI, every `extern` in those files
//!    must be `efiapi`; anything else fails the build.
//! 2. Run cbindgen on the copies with `cbindgen.toml`.
//! 3. Post-process the declarations cbindgen produced (not the hand-written
//!    prelude of `cbindgen.toml`) into EDK2 style:
//!    * C types become EDK2 types (`uint64_t` -> `UINT64`, `uintptr_t` ->
//!      `UINTN`, `void` -> `VOID`, `const` -> `CONST`, ...);
//!    * every function-pointer declarator `(*Name)(` becomes
//!      `(EFIAPI *Name)(`;
//!    * every exported prototype is rewritten EDK2-style with `EFIAPI`
//!      between the return type and the name;
//!    * structs that refer to themselves (the protocols' `This`) get a
//!      forward typedef;
//!    * the few declarations C needs and Rust cannot say (`volatile`) are
//!      patched from [`PATCHES`];
//!    * doc comments become EDK2 doxygen blocks (`/**` ... `**/`).
//! 4. Check the result: every `#[no_mangle]` function of the inputs has an
//!    `EFIAPI` prototype, no function pointer lacks `EFIAPI`, no C type is
//!    left unmapped, every type has an EDK2-style name (`[export.rename]`),
//!    no `#[no_mangle]` hides in a file that is not an input.
//!    Any failure panics: a header that silently drifts from the library is
//!    worse than a broken build.
//! 5. Write `OUT_DIR/mm_mp.h` (tests/c_header.rs compares it with the
//!    committed file) and `include/mm_mp.h` when its content changed.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Every file that holds a C-visible item, relative to the crate root.
/// `src/sync/wait.rs` defines `PauseFn`, the type of `MM_MP_PLATFORM.CpuPause`.
const HEADER_INPUTS: &[&str] = &[
    "src/efi.rs",
    "src/platform.rs",
    "src/ffi.rs",
    "src/sync/wait.rs",
];

/// `#[no_mangle]` symbols that are not part of the C API: allowed in any
/// file and with any ABI, never in the header. `rust_eh_personality` is the
/// stub a `panic = "abort"` no_std static library has to provide because
/// the precompiled `core` refers to it from its unwind tables.
const NOT_C_API: &[&str] = &["rust_eh_personality"];

/// The committed header, relative to the crate root.
const HEADER: &str = "include/mm_mp.h";

/// cbindgen's `[fn] prefix` in cbindgen.toml: marks every exported prototype.
const EXPORT_MARKER: &str = "MM_MP_EXPORT_EFIAPI";

/// The last line of `after_includes` in cbindgen.toml: everything after it
/// is cbindgen output and gets post-processed, everything before is the
/// hand-written prelude and is kept verbatim.
const PRELUDE_END: &str = "/* Declarations generated from the Rust sources. */\n";

/// Declarations C can express and Rust cannot: (cbindgen output after type
/// mapping, replacement). Each must match exactly once.
const PATCHES: &[(&str, &str)] = &[
    // MM_MP_CONFIG.HotPlugApicId: EDK2's CPU_HOT_PLUG_DATA.ApicId, written by
    // the platform's hot-plug handler while the library reads it.
    (
        "  UINT64 *HotPlugApicId;",
        "  volatile UINT64 *HotPlugApicId;",
    ),
];

/// C type names cbindgen prints and their EDK2 names (whole words, code only).
const TYPE_MAP: &[(&str, &str)] = &[
    ("uint8_t", "UINT8"),
    ("uint16_t", "UINT16"),
    ("uint32_t", "UINT32"),
    ("uint64_t", "UINT64"),
    ("int8_t", "INT8"),
    ("int16_t", "INT16"),
    ("int32_t", "INT32"),
    ("int64_t", "INT64"),
    ("uintptr_t", "UINTN"),
    ("intptr_t", "INTN"),
    ("void", "VOID"),
    ("char", "CHAR8"),
    ("const", "CONST"),
];

/// C words that must not survive the mapping (the header has no other types).
const FORBIDDEN_WORDS: &[&str] = &[
    "bool", "int", "unsigned", "signed", "long", "short", "float", "double",
];

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=cbindgen.toml");
    // The whole tree, not only HEADER_INPUTS: an export added to another
    // file must fail the build (see check_exports_only_in_inputs).
    println!("cargo::rerun-if-changed=src");

    let header = generate(&root, &out_dir).unwrap_or_else(|e| {
        panic!("\n\nmm-mp: generating {HEADER} failed:\n{e}\n\n");
    });

    fs::write(out_dir.join("mm_mp.h"), &header).expect("write OUT_DIR/mm_mp.h");
    let committed = root.join(HEADER);
    if fs::read_to_string(&committed).ok().as_deref() != Some(header.as_str()) {
        fs::create_dir_all(committed.parent().expect("include/")).expect("create include/");
        fs::write(&committed, &header)
            .unwrap_or_else(|e| panic!("mm-mp: cannot write {}: {e}", committed.display()));
    }
}

/// Steps 1–4 of the pipeline; the header text or a message naming the problem.
fn generate(root: &Path, out_dir: &Path) -> Result<String, String> {
    check_exports_only_in_inputs(root)?;

    let copies = out_dir.join("cbindgen-src");
    fs::create_dir_all(&copies).map_err(|e| format!("create {}: {e}", copies.display()))?;
    let config_path = root.join("cbindgen.toml");
    let config = cbindgen::Config::from_file(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    if config.function.prefix.as_deref() != Some(EXPORT_MARKER) {
        return Err(format!(
            "cbindgen.toml: [fn] prefix must be {EXPORT_MARKER:?}"
        ));
    }

    let line_length = config.line_length;
    let mut builder = cbindgen::Builder::new().with_config(config);
    let mut exports = Vec::new();
    for input in HEADER_INPUTS {
        let path = root.join(input);
        let text = fs::read_to_string(&path).map_err(|e| format!("{input}: {e}"))?;
        check_abis(input, &text)?;
        exports.extend(exported_functions(input, &text)?);
        let copy = copies.join(input.replace('/', "__"));
        let text = text.replace("extern \"efiapi\"", "extern \"C\"");
        let text = skip_impl_blocks(&pascal_case_fn_pointer_params(&text));
        fs::write(&copy, text).map_err(|e| format!("{}: {e}", copy.display()))?;
        builder = builder.with_src(copy);
    }

    let bindings = builder.generate().map_err(|e| format!("cbindgen: {e}"))?;
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let raw = String::from_utf8(raw).map_err(|e| format!("cbindgen output: {e}"))?;
    postprocess(&raw, &exports, line_length)
}

// ---------------------------------------------------------------------------
// Checks on the Rust side
// ---------------------------------------------------------------------------

/// Every `extern` of an input must be `extern "efiapi"`: step 1 turns them
/// into `extern "C"` and step 3 marks every function EFIAPI, which is only
/// right if there was no other ABI to begin with.
fn check_abis(input: &str, text: &str) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        if NOT_C_API.iter().any(|name| find_word(line, name).is_some()) {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = find_word(rest, "extern") {
            let after = rest[i + "extern".len()..].trim_start();
            if !after.starts_with("\"efiapi\"") && !after.starts_with("crate") {
                return Err(format!(
                    "{input}:{}: only extern \"efiapi\" may cross the C boundary \
                     (the header marks every function EFIAPI): {}",
                    n + 1,
                    line.trim()
                ));
            }
            rest = &rest[i + "extern".len()..];
        }
    }
    Ok(())
}

/// Names of the `#[no_mangle]` functions of one input.
fn exported_functions(input: &str, text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut pending = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("#[export_name") || t.starts_with("#[unsafe(export_name") {
            return Err(format!(
                "{input}:{}: #[export_name] is not supported by the header pipeline",
                n + 1
            ));
        }
        if t == "#[no_mangle]" || t == "#[unsafe(no_mangle)]" {
            pending = true;
            continue;
        }
        if pending && !t.starts_with("#[") && !t.starts_with("//") {
            let name = find_word(t, "fn")
                .map(|i| t[i + 2..].trim_start())
                .map(|s| s.split(|c: char| !is_ident_char(c)).next().unwrap_or(""))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{input}:{}: #[no_mangle] on a non-function", n + 1))?;
            if !NOT_C_API.contains(&name) {
                names.push(name.to_string());
            }
            pending = false;
        }
    }
    Ok(names)
}

/// No `#[no_mangle]` outside [`HEADER_INPUTS`]: it would be missing from
/// the header without anyone noticing.
fn check_exports_only_in_inputs(root: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_rs_files(&root.join("src"), &mut files);
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        if HEADER_INPUTS.contains(&rel.as_str()) {
            continue;
        }
        let text = fs::read_to_string(&file).map_err(|e| format!("{rel}: {e}"))?;
        let exports = exported_functions(&rel, &text)?;
        if !exports.is_empty() {
            return Err(format!(
                "{rel} exports {exports:?}, but it is not in HEADER_INPUTS of build.rs: \
                 move the export to src/ffi.rs or add the file to HEADER_INPUTS"
            ));
        }
    }
    Ok(())
}

fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Rewrites the parameter names of every function-pointer type
/// (`fn(cpu_index: usize)` -> `fn(CpuIndex: usize)`), so the C function
/// pointers read like BEHAVIOUR.md §11. Names of real functions are untouched.
fn pascal_case_fn_pointer_params(text: &str) -> String {
    let b = text.as_bytes();
    let mut renames: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = find_word(&text[i..], "fn") {
        let fn_at = i + off;
        i = fn_at + 2;
        let open = fn_at + 2 + (text[fn_at + 2..].len() - text[fn_at + 2..].trim_start().len());
        if b.get(open) != Some(&b'(') {
            continue; // `fn name(`: a function, not a type
        }
        let Some(close) = matching(b, open, b'(', b')') else {
            continue;
        };
        let mut j = open + 1;
        while j < close {
            if is_ident_start(b[j] as char) && (j == 0 || !is_ident_char(b[j - 1] as char)) {
                let start = j;
                while j < close && is_ident_char(b[j] as char) {
                    j += 1;
                }
                let prev = text[..start].trim_end().as_bytes().last().copied();
                let next = text[j..].trim_start().as_bytes();
                let is_param = matches!(prev, Some(b'(') | Some(b','))
                    && next.first() == Some(&b':')
                    && next.get(1) != Some(&b':');
                if is_param && b[start] != b'_' {
                    renames.insert((start, j));
                }
            } else {
                j += 1;
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in renames {
        out.push_str(&text[last..start]);
        out.push_str(&pascal_case(&text[start..end]));
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// Marks every top-level `impl` block `cbindgen:ignore`: associated
/// constants (`Status::SUCCESS`, `ProcessorInformation::EMPTY`) are Rust
/// API; C has its own names for them (EFI_SUCCESS...) or no use for them.
fn skip_impl_blocks(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.split_inclusive('\n') {
        if line.starts_with("impl ") || line.starts_with("impl<") {
            out.push_str("#[doc = \"cbindgen:ignore\"]\n");
        }
        out.push_str(line);
    }
    out
}

fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase());
            first.into_iter().chain(c).collect::<String>()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Post-processing of cbindgen's C output
// ---------------------------------------------------------------------------

fn postprocess(raw: &str, exports: &[String], line_length: usize) -> Result<String, String> {
    // The prelude (header comment, include guard, after_includes) is kept
    // verbatim; only what cbindgen generated from Rust is rewritten.
    let split = raw
        .find(PRELUDE_END)
        .map(|i| i + PRELUDE_END.len())
        .ok_or_else(|| format!("after_includes in cbindgen.toml must end with {PRELUDE_END:?}"))?;
    let (prelude, body) = raw.split_at(split);

    let body = map_code(body, map_types)?;
    let body = map_code(&body, |code| Ok(add_efiapi_to_fn_pointers(code)))?;
    let body = reindent_continuations(&body);
    let body = wrap_long_fn_pointers(&body, line_length);
    let body = rewrite_prototypes(&body)?;
    let body = forward_declare_self_referential(&body);
    let body = apply_patches(&body)?;
    let body = edk2_doc_comments(&body);

    check_output(&body, exports)?;
    Ok(format!("{prelude}{body}"))
}

/// The C text split into code and comments, so rewrites never touch prose.
enum Segment<'a> {
    Code(&'a str),
    Comment(&'a str),
}

fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        if b[i] == b'/' && (b.get(i + 1) == Some(&b'*') || b.get(i + 1) == Some(&b'/')) {
            let end = if b[i + 1] == b'*' {
                text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2)
            } else {
                text[i..].find('\n').map_or(b.len(), |e| i + e)
            };
            if start < i {
                out.push(Segment::Code(&text[start..i]));
            }
            out.push(Segment::Comment(&text[i..end]));
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        out.push(Segment::Code(&text[start..]));
    }
    out
}

/// Applies `f` to the code of `text`, leaving comments as they are.
fn map_code(text: &str, f: impl Fn(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for seg in segments(text) {
        match seg {
            Segment::Code(c) => out.push_str(&f(c)?),
            Segment::Comment(c) => out.push_str(c),
        }
    }
    Ok(out)
}

/// The code of `text` with comments blanked out (same byte offsets).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for seg in segments(text) {
        match seg {
            Segment::Code(c) => out.push_str(c),
            Segment::Comment(c) => {
                out.extend(c.chars().map(|ch| if ch == '\n' { '\n' } else { ' ' }))
            }
        }
    }
    out
}

/// Replaces whole words of `code` by their EDK2 type names.
fn map_types(code: &str) -> Result<String, String> {
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let b = code.as_bytes();
    while i < b.len() {
        let c = b[i] as char;
        if is_ident_start(c) && (i == 0 || !is_ident_char(b[i - 1] as char)) {
            let start = i;
            while i < b.len() && is_ident_char(b[i] as char) {
                i += 1;
            }
            let word = &code[start..i];
            match TYPE_MAP.iter().find(|(from, _)| *from == word) {
                Some((_, to)) => out.push_str(to),
                None => out.push_str(word),
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

/// Turns every `MARKER RET NAME(ARGS);` cbindgen printed into the EDK2 form
///
/// ```c
/// RET
/// EFIAPI
/// NAME (
///   TYPE  *Arg,
///   ...
///   );
/// ```
fn rewrite_prototypes(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len() + 1024);
    let mut rest = body;
    while let Some(at) = rest.find(EXPORT_MARKER) {
        out.push_str(&rest[..at]);
        let decl_start = at + EXPORT_MARKER.len();
        let semi = rest[decl_start..]
            .find(';')
            .map(|s| decl_start + s)
            .ok_or("exported prototype without ';'")?;
        out.push_str(&edk2_prototype(&rest[decl_start..semi])?);
        out.push(';');
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn edk2_prototype(decl: &str) -> Result<String, String> {
    let decl = collapse_ws(decl);
    let open = decl
        .find('(')
        .ok_or_else(|| format!("not a prototype: {decl}"))?;
    let close = decl
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| format!("not a prototype: {decl}"))?;
    if !decl[close + 1..].trim().is_empty() {
        return Err(format!(
            "unexpected prototype shape (returns a function pointer?): {decl}"
        ));
    }
    let head = decl[..open].trim_end();
    let name_start = head.rfind(|c: char| !is_ident_char(c)).map_or(0, |i| i + 1);
    let (ret, name) = (head[..name_start].trim(), &head[name_start..]);
    if ret.is_empty() || name.is_empty() {
        return Err(format!("cannot split return type and name: {decl}"));
    }

    let args: Vec<(String, String)> = split_top_level(&decl[open + 1..close])
        .into_iter()
        .map(|a| split_declarator(&a))
        .collect();
    let mut s = format!("{ret}\nEFIAPI\n{name} (\n");
    if args.len() == 1 && args[0].1.is_empty() {
        s.push_str(&format!("  {}\n", args[0].0));
    } else {
        let width = args.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        for (k, (ty, declarator)) in args.iter().enumerate() {
            let comma = if k + 1 < args.len() { "," } else { "" };
            s.push_str(&format!("  {ty:<width$}  {declarator}{comma}\n"));
        }
    }
    s.push_str("  )");
    Ok(s)
}

/// `CONST MM_MP_CONFIG *Config` -> ("CONST MM_MP_CONFIG", "*Config").
fn split_declarator(arg: &str) -> (String, String) {
    let arg = arg.trim();
    let name_start = arg.rfind(|c: char| !is_ident_char(c)).map_or(0, |i| i + 1);
    if name_start == 0 || arg.ends_with(')') || arg.ends_with(']') {
        return (arg.to_string(), String::new()); // `VOID` or something unusual: keep
    }
    let ty_and_stars = arg[..name_start].trim_end();
    let ty = ty_and_stars.trim_end_matches(['*', ' ']);
    let stars = ty_and_stars[ty.len()..].replace(' ', "");
    (ty.to_string(), format!("{stars}{}", &arg[name_start..]))
}

fn split_top_level(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in args.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    out
}

fn collapse_ws(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.replace("( ", "(").replace(" )", ")")
}

/// `(*Name)(` -> `(EFIAPI *Name)(`; also `(*)(` and `(**Name)(`.
fn add_efiapi_to_fn_pointers(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len() + 256);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' && b.get(i + 1) == Some(&b'*') {
            let mut j = i + 1;
            while j < b.len() && b[j] == b'*' {
                j += 1;
            }
            while j < b.len() && is_ident_char(b[j] as char) {
                j += 1;
            }
            let after = code[j..].trim_start();
            if code[j..].starts_with(')') && after[1..].trim_start().starts_with('(') {
                out.push_str("(EFIAPI ");
                i += 1;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Function-pointer members that the EFIAPI and type renames pushed past
/// cbindgen's `line_length` get one parameter per line, aligned after the '('.
fn wrap_long_fn_pointers(body: &str, line_length: usize) -> String {
    let mut out = String::with_capacity(body.len() + 256);
    for line in body.split_inclusive('\n') {
        let text = line.trim_end_matches('\n');
        let args_open = text
            .find("(EFIAPI *")
            .and_then(|p| text[p..].find(")(").map(|q| p + q + 1));
        match args_open {
            Some(open)
                if text.len() > line_length
                    && text.ends_with(");")
                    && !text.trim_start().starts_with("/*") =>
            {
                let args = split_top_level(&text[open + 1..text.len() - 2]);
                let pad = " ".repeat(open + 1);
                out.push_str(&text[..open + 1]);
                out.push_str(&args.join(&format!(",\n{pad}")));
                out.push_str(");\n");
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// `typedef struct {` ... `} NAME;` whose body names NAME (a protocol's
/// `CONST NAME *This`) becomes `typedef struct NAME NAME;` + `struct NAME {`
/// ... `};`, the way EDK2 declares its protocols.
fn forward_declare_self_referential(body: &str) -> String {
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    let mut out = String::with_capacity(body.len() + 512);
    let mut k = 0;
    while k < lines.len() {
        let line = lines[k];
        let kind = match line.trim_end() {
            "typedef struct {" => Some("struct"),
            "typedef union {" => Some("union"),
            _ => None,
        };
        if let Some(kind) = kind {
            // find the closing `} NAME;` at column 0
            if let Some(end) = (k + 1..lines.len()).find(|&e| lines[e].starts_with('}')) {
                let close = lines[end].trim_end();
                let name = close
                    .trim_start_matches('}')
                    .trim()
                    .trim_end_matches(';')
                    .trim();
                let inner = code_only(&lines[k + 1..end].concat());
                if !name.is_empty() && find_word(&inner, name).is_some() {
                    out.push_str(&format!("typedef {kind} {name} {name};\n\n"));
                    out.push_str(&format!("{kind} {name} {{\n"));
                    for l in &lines[k + 1..end] {
                        out.push_str(l);
                    }
                    out.push_str("};\n");
                    k = end + 1;
                    continue;
                }
            }
        }
        out.push_str(line);
        k += 1;
    }
    out
}

fn apply_patches(body: &str) -> Result<String, String> {
    let mut body = body.to_string();
    for (from, to) in PATCHES {
        let n = body.matches(from).count();
        if n != 1 {
            return Err(format!(
                "patch {from:?} -> {to:?} matched {n} times (expected 1): \
                 update PATCHES in build.rs"
            ));
        }
        body = body.replacen(from, to, 1);
    }
    Ok(body)
}

/// Lines that continue an open parenthesis are aligned one column after it
/// (cbindgen aligned them before the types got their EDK2 names).
fn reindent_continuations(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut open: Vec<usize> = Vec::new(); // columns of unclosed '(' of the statement
    let mut in_comment = false;
    for line in body.split_inclusive('\n') {
        let content = line.trim_start();
        let line = if !in_comment && !open.is_empty() && !content.is_empty() {
            let col = open.last().copied().unwrap_or(0) + 1;
            format!("{}{}", " ".repeat(col), content)
        } else {
            line.to_string()
        };
        // track parentheses of the (possibly re-indented) line's code
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if in_comment {
                if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    in_comment = false;
                    i += 1;
                }
            } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                in_comment = true;
                i += 1;
            } else if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
                break;
            } else if b[i] == b'(' {
                open.push(i);
            } else if b[i] == b')' {
                open.pop();
            }
            i += 1;
        }
        out.push_str(&line);
    }
    out
}

/// cbindgen's doxy blocks (`/**`, ` * text`, ` */`) become EDK2 blocks
/// (`/**`, `  text`, `**/`), with the Rust doc's indentation normalised and
/// the stray `*` of Rust `/** ... **/` doc comments dropped.
fn edk2_doc_comments(body: &str) -> String {
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    let mut out = String::with_capacity(body.len());
    let mut k = 0;
    while k < lines.len() {
        let line = lines[k];
        if line.trim() == "/**" {
            let indent = &line[..line.len() - line.trim_start().len()];
            let close = format!("{indent} */");
            if let Some(end) = (k + 1..lines.len()).find(|&e| lines[e].trim_end() == close) {
                let inner: Vec<String> = lines[k + 1..end]
                    .iter()
                    .map(|l| {
                        let l = l.trim_end();
                        let l = l.strip_prefix(indent).unwrap_or(l);
                        l.strip_prefix(" *").unwrap_or(l).to_string()
                    })
                    .collect();
                let mut text: Vec<&str> = inner.iter().map(|s| s.as_str()).collect();
                while text
                    .last()
                    .is_some_and(|l| l.trim().is_empty() || l.trim() == "*")
                {
                    text.pop();
                }
                while text.first().is_some_and(|l| l.trim().is_empty()) {
                    text.remove(0);
                }
                let strip = text
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.len() - l.trim_start().len())
                    .min()
                    .unwrap_or(0);
                out.push_str(indent);
                out.push_str("/**\n");
                for l in text {
                    if l.trim().is_empty() {
                        out.push('\n');
                    } else {
                        out.push_str(&format!("{indent}  {}\n", &l[strip..]));
                    }
                }
                out.push_str(indent);
                out.push_str("**/\n");
                k = end + 1;
                continue;
            }
        }
        out.push_str(line);
        k += 1;
    }
    out
}

fn check_output(body: &str, exports: &[String]) -> Result<(), String> {
    let code = code_only(body);
    if body.contains(EXPORT_MARKER) {
        return Err(format!("{EXPORT_MARKER} left in the header"));
    }
    if let Some(i) = code.find("(*") {
        return Err(format!(
            "function pointer without EFIAPI near: {}",
            &code[i.saturating_sub(60)..(i + 60).min(code.len())]
        ));
    }
    for word in words(&code) {
        if FORBIDDEN_WORDS.contains(&word) || (word.ends_with("_t") && word.len() > 2) {
            return Err(format!(
                "C type `{word}` has no EDK2 mapping: extend TYPE_MAP in build.rs \
                 or use an EDK2-sized type in Rust"
            ));
        }
    }
    for name in defined_type_names(&code) {
        if !name
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
        {
            return Err(format!(
                "type `{name}` has no C name: add `\"{name}\" = \"<EDK2_STYLE_NAME>\"` to \
                 [export.rename] in cbindgen.toml"
            ));
        }
    }
    for name in exports {
        let proto = format!("EFIAPI\n{name} (\n");
        match body.matches(&proto).count() {
            1 => {}
            n => {
                return Err(format!(
                    "exported function {name} has {n} EFIAPI prototypes in the header \
                     (expected 1): did cbindgen skip it?"
                ))
            }
        }
    }
    let protos = body.matches("EFIAPI\n").count();
    if protos != exports.len() {
        return Err(format!(
            "{protos} prototypes in the header but {} #[no_mangle] functions",
            exports.len()
        ));
    }
    Ok(())
}

/// Names the header defines as types: `typedef ... NAME;`,
/// `typedef RET (EFIAPI *NAME)(...)` and `} NAME;`.
fn defined_type_names(code: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for line in code.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("typedef ") {
            if let Some(p) = rest.find("(EFIAPI *") {
                let after = &rest[p + "(EFIAPI *".len()..];
                let end = after.find(')').unwrap_or(after.len());
                names.push(&after[..end]);
            } else if t.ends_with(';') {
                names.extend(last_ident(t));
            }
        } else if t.starts_with('}') && t.ends_with(';') && t.len() > 2 {
            names.extend(last_ident(t));
        }
    }
    names
}

/// The identifier a declaration ends with (`} NAME;` -> `NAME`).
fn last_ident(decl: &str) -> Option<&str> {
    let s = decl.trim_end().trim_end_matches(';').trim_end();
    let start = s.rfind(|c: char| !is_ident_char(c)).map_or(0, |i| i + 1);
    Some(&s[start..]).filter(|n| !n.is_empty())
}

// ---------------------------------------------------------------------------
// Small text helpers
// ---------------------------------------------------------------------------

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Byte offset of the first whole-word occurrence of `word` in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text[from..].find(word) {
        let i = from + off;
        let end = i + word.len();
        let before_ok = i == 0 || !is_ident_char(b[i - 1] as char);
        let after_ok = end >= b.len() || !is_ident_char(b[end] as char);
        if before_ok && after_ok {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

fn words(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| !is_ident_char(c))
        .filter(|w| w.chars().next().is_some_and(is_ident_start))
}

/// Index of the bracket closing the one at `open`.
fn matching(b: &[u8], open: usize, l: u8, r: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in b.iter().enumerate().skip(open) {
        if c == l {
            depth += 1;
        } else if c == r {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}
