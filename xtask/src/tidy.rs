//! `cargo xtask tidy`: the project rules that compiler lints do not check.
//!
//! 1. Every `.rs` file opens with a `//!` doc comment (build scripts and `target/` excepted).
//! 2. No private futex flag anywhere: it silently fails between processes.
//! 3. No ignored tests: a test that cannot run cannot fail.
//! 4. Every unsafe block has a `// SAFETY:` comment within the three lines above it.
//! 5. ipc-pool and ipc-manager contain no `unsafe` at all.
//!
//! The checks read code, not comments: a line's `//` comment is cut off before matching rules 2,
//! 3 and 5, so documentation may name what it forbids. The patterns are assembled with `concat!`
//! so that this file does not trip over its own rules.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::util;

const PRIVATE_FLAGS: [&str; 2] = [concat!("Flags::", "PRIVATE"), concat!("FUTEX_", "PRIVATE")];
const IGNORE_ATTR: &str = concat!("#[", "ignore");
const UNSAFE: &str = concat!("un", "safe");
const SAFETY: &str = concat!("SAFETY", ":");
/// Crates that must contain no unsafe code at all.
const SAFE_CRATES: [&str; 2] = ["ipc-pool", "ipc-manager"];

/// The code part of a line: everything before a `//` comment (approximate: a `//` inside a string
/// literal also ends the code, which only makes the checks more lenient on that line).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Whether `word` occurs in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Whether `word` occurs in `text` not preceded by an identifier character.
fn starts_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        !text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Whether `code` opens an unsafe block (`unsafe {`, not `unsafe fn`/`impl`/`trait`/`extern`).
fn opens_unsafe_block(code: &str) -> bool {
    code.match_indices(UNSAFE).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return false;
        }
        code[i + UNSAFE.len()..].trim_start().starts_with('{')
    })
}

/// The violations in one file, as `path:line: message`. `rel` is the path from the root.
pub(crate) fn check_file(rel: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let is_build_script = rel == "build.rs" || rel.ends_with("/build.rs");
    if !is_build_script && !text.starts_with("//!") {
        out.push(format!(
            "{rel}:1: the file must open with a `//!` comment saying what it is for"
        ));
    }
    let safe_crate = SAFE_CRATES
        .iter()
        .any(|c| rel.starts_with(&format!("{c}/")));
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let code = code(line);
        for flag in PRIVATE_FLAGS {
            // A word start: `MapFlags::PRIVATE` (a private mapping) is not a futex flag.
            if starts_word(code, flag) {
                out.push(format!(
                    "{rel}:{n}: `{flag}`: private futexes never wake another process; \
                     use ipc_core::futex (shared)"
                ));
            }
        }
        if code.contains(IGNORE_ATTR) {
            out.push(format!(
                "{rel}:{n}: ignored test: make it robust and let it run, or delete it"
            ));
        }
        if safe_crate && has_word(code, UNSAFE) {
            out.push(format!(
                "{rel}:{n}: `{UNSAFE}` in a crate that must have none (ipc-pool, ipc-manager \
                 build on the layers below)"
            ));
        } else if opens_unsafe_block(code) {
            let above = &lines[i.saturating_sub(3)..i];
            if !above
                .iter()
                .any(|l| l.trim_start().starts_with("//") && l.contains(SAFETY))
            {
                out.push(format!(
                    "{rel}:{n}: `{UNSAFE} {{` without a `// {SAFETY}` comment in the 3 lines \
                     above it arguing why it is sound"
                ));
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, skipping `target` directories and hidden ones.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks every Rust file of the workspace.
pub(crate) fn run() -> anyhow::Result<()> {
    let root = util::root();
    let mut files = Vec::new();
    rust_files(&root, &mut files)?;
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let rel = f.strip_prefix(&root).unwrap_or(f).to_string_lossy();
        bad.extend(check_file(&rel, &text));
    }
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("tidy: {b}");
        }
        bail!("{} tidy violation(s) in {} files", bad.len(), files.len());
    }
    println!("tidy: ok ({} Rust files)", files.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rel: &str, text: &str) -> Vec<String> {
        check_file(rel, text)
    }

    #[test]
    fn files_must_open_with_an_inner_doc_comment() {
        assert!(check("a/src/x.rs", "//! Does x.\nfn f() {}\n").is_empty());
        let v = check("a/src/x.rs", "// Does x.\nfn f() {}\n");
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("a/src/x.rs:1:"), "{v:?}");
        assert!(check("a/build.rs", "fn main() {}\n").is_empty());
        assert_eq!(check("a/src/rebuild.rs", "fn main() {}\n").len(), 1);
    }

    #[test]
    fn the_private_futex_flag_is_refused_in_code_only() {
        let code = format!("//! x\nlet f = futex::{};\n", PRIVATE_FLAGS[0]);
        let v = check("a/x.rs", &code);
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("a/x.rs:2:"), "{v:?}");
        let doc = format!("//! never {}_FLAG\n", PRIVATE_FLAGS[1]);
        assert!(check("a/x.rs", &doc).is_empty());
        let mapping = format!("//! x\nlet m = Map{};\n", PRIVATE_FLAGS[0]);
        assert!(check("a/x.rs", &mapping).is_empty());
    }

    #[test]
    fn ignored_tests_are_refused() {
        let text = format!("//! t\n{}]\n#[test]\nfn t() {{}}\n", IGNORE_ATTR);
        assert_eq!(check("a/tests/t.rs", &text).len(), 1);
        let text = format!("//! t\n{} = \"slow\"]\nfn t() {{}}\n", IGNORE_ATTR);
        assert_eq!(check("a/tests/t.rs", &text).len(), 1);
    }

    #[test]
    fn unsafe_blocks_need_a_safety_comment_close_above() {
        let ok = format!("//! x\n// {SAFETY} p is valid.\nlet v = {UNSAFE} {{ *p }};\n");
        assert!(check("ipc-core/src/x.rs", &ok).is_empty());
        let ok = format!("//! x\n// {SAFETY} ok.\n// more words\n\nlet v = {UNSAFE} {{ *p }};\n");
        assert!(check("ipc-core/src/x.rs", &ok).is_empty());
        let far = format!("//! x\n// {SAFETY} ok.\n\n\n\nlet v = {UNSAFE} {{ *p }};\n");
        let v = check("ipc-core/src/x.rs", &far);
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("ipc-core/src/x.rs:6:"), "{v:?}");
        let bare = format!("//! x\nlet v = {UNSAFE}{{ *p }};\n");
        assert_eq!(check("ipc-core/src/x.rs", &bare).len(), 1);
        // Unsafe functions and impls are not blocks; identifiers containing the word are not it.
        let other = format!("//! x\n{UNSAFE} fn f() {{}}\nlet not_{UNSAFE} = {{ 1 }};\n");
        assert!(check("ipc-core/src/x.rs", &other).is_empty());
    }

    #[test]
    fn pool_and_manager_have_no_unsafe_at_all() {
        let text = format!("//! x\n{UNSAFE} impl Send for X {{}}\n");
        assert!(check("ipc-core/src/x.rs", &text).is_empty());
        assert_eq!(check("ipc-pool/src/x.rs", &text).len(), 1);
        assert_eq!(check("ipc-manager/src/lib.rs", &text).len(), 1);
        let forbid = format!("//! x\n#![forbid({UNSAFE}_code)]\n// no {UNSAFE} here\n");
        assert!(check("ipc-pool/src/lib.rs", &forbid).is_empty());
    }
}
