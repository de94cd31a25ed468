//! `cargo xtask layers`: the module graph of `host/src` points down. Each top-level module
//! imports only from the modules below it in `LAYERS`, the order `host/src/lib.rs` documents; a
//! new upward import (a cycle in the making) fails the check, naming the file, the line and the
//! two modules. `cargo xtask test` runs it before the suite.

use anyhow::{Result, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top, as `host/src/lib.rs` documents them. A module may use those before it, never
/// one after it.
const LAYERS: &[&str] = &[
    "units",
    "files",
    "net",
    "footprint",
    "kernel",
    "wit",
    "events",
    "runtime",
    "capabilities",
    "sandbox",
    "output",
    "pipeline",
    "scheduler",
    "fleet",
    "edge",
    "config",
    "control",
    "app",
    "cli",
];

/// Fewer references than this means the scan no longer reads the code.
#[cfg(not(test))]
const MIN_REFERENCES: usize = 50;
#[cfg(test)]
const MIN_REFERENCES: usize = 1;

/// One reference from a file to a top-level module.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

/// Checks `host/src` under `repo`; the error lists every upward import.
pub fn check(repo: &Path) -> Result<()> {
    check_src(&repo.join("host/src"))
}

fn check_src(src: &Path) -> Result<()> {
    let declared = top_level_modules(&src.join("lib.rs"));
    let listed: BTreeSet<String> = LAYERS
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    if declared != listed {
        bail!(
            "host/src/lib.rs declares {declared:?} but the layers are {listed:?}: keep both in step"
        );
    }
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let all = edges(src);
    if all.len() < MIN_REFERENCES {
        bail!(
            "the scan found only {} references: it no longer reads the code",
            all.len()
        );
    }
    let upward: Vec<String> = all
        .iter()
        .filter(|e| matches!((rank(&e.from), rank(&e.to)), (Some(from), Some(to)) if to >= from))
        .map(|e| {
            format!(
                "  host/src/{}:{}: `{}` uses `{}`, which is not below it",
                e.file, e.line, e.from, e.to
            )
        })
        .collect();
    if !upward.is_empty() {
        bail!(
            "imports that point up (layers, bottom to top: {}):\n{}",
            LAYERS.join(" < "),
            upward.join("\n")
        );
    }
    Ok(())
}

fn top_level_modules(lib: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(lib).expect("lib.rs");
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")
        })
        .map(|l| l.trim_end_matches(';').trim().to_owned())
        .collect()
}

fn edges(src: &Path) -> Vec<Edge> {
    let known: Vec<&str> = LAYERS.to_vec();
    let mut out = Vec::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let parts: Vec<String> = relative
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        // `lib.rs` and `main.rs` are the crate's top; `x/mod.rs` is module `x`.
        let Some(from) = parts
            .first()
            .filter(|p| *p != "lib" && *p != "main")
            .cloned()
        else {
            continue;
        };
        let depth = parts.iter().filter(|p| *p != "mod").count();
        let text = std::fs::read_to_string(&file).unwrap();
        for (to, line) in references(&text, depth, &known) {
            if to != from {
                out.push(Edge {
                    from: from.clone(),
                    to,
                    file: relative.display().to_string(),
                    line,
                });
            }
        }
    }
    out.sort();
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level modules among `known` that `code` (a file `depth` modules below the crate
/// root) names through `crate::` or enough `super::`s, with the line of each.
fn references(code: &str, depth: usize, known: &[&str]) -> Vec<(String, usize)> {
    let tokens = tokenize(code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let start = i;
        let mut at_root = false;
        if tokens[i].0 == "crate" {
            at_root = true;
            i += 1;
        } else if tokens[i].0 == "super" {
            let mut supers = 0;
            while i < tokens.len() && tokens[i].0 == "super" {
                supers += 1;
                i += 1;
                if tokens.get(i).is_some_and(|t| t.0 == "::") {
                    i += 1;
                }
            }
            at_root = supers >= depth;
            i -= 1;
        }
        if !at_root || tokens.get(i).is_none_or(|t| t.0 != "::") {
            i = start + 1;
            continue;
        }
        i += 1;
        let mut heads = Vec::new();
        collect_heads(&tokens, &mut i, &mut heads);
        for (head, line) in heads {
            if known.contains(&head.as_str()) {
                found.push((head, line));
            }
        }
        i = i.max(start + 1);
    }
    found
}

/// The first segment of each path at `tokens[*i]`: an identifier, or a `{…}` group of paths.
fn collect_heads(tokens: &[(String, usize)], i: &mut usize, heads: &mut Vec<(String, usize)>) {
    let Some((token, line)) = tokens.get(*i) else {
        return;
    };
    if token != "{" {
        heads.push((token.clone(), *line));
        *i += 1;
        return;
    }
    *i += 1;
    let mut expect_head = true;
    let mut depth = 0;
    while let Some((token, line)) = tokens.get(*i) {
        match token.as_str() {
            "{" => depth += 1,
            "}" if depth == 0 => {
                *i += 1;
                return;
            }
            "}" => depth -= 1,
            "," if depth == 0 => {
                expect_head = true;
                *i += 1;
                continue;
            }
            _ if expect_head && depth == 0 => heads.push((token.clone(), *line)),
            _ => {}
        }
        expect_head = false;
        *i += 1;
    }
}

/// Identifiers, `::` and single punctuation, with their line; comments, strings and character
/// literals left out.
fn tokenize(code: &str) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    line += usize::from(bytes[i] == b'\n');
                    i += 1;
                }
                i += 2;
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'"' | b'#')) => {
                // A raw string: r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while bytes.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if bytes.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                j += 1;
                let closing: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while j < bytes.len() && !bytes[j..].starts_with(&closing) {
                    line += usize::from(bytes[j] == b'\n');
                    j += 1;
                }
                i = j + closing.len();
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    line += usize::from(bytes[i] == b'\n');
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'\'' => {
                // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
                if bytes.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < bytes.len() && bytes[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            b':' if bytes.get(i + 1) == Some(&b':') => {
                tokens.push(("::".to_owned(), line));
                i += 2;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                tokens.push((code[start..i].to_owned(), line));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                tokens.push(((c as char).to_string(), line));
                i += 1;
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_sees_grouped_nested_and_relative_paths() {
        let code = "use crate::{a::X, b::{c, d}};\nfn f() { crate::e::g(); super::super::h::i(); }\n// crate::comment\nlet s = \"crate::string\";";
        let found: Vec<(String, usize)> =
            references(code, 2, &["a", "b", "e", "h", "comment", "string"]);
        assert_eq!(
            found,
            [
                ("a".into(), 1),
                ("b".into(), 1),
                ("e".into(), 2),
                ("h".into(), 2)
            ],
            "comments and strings are not code"
        );
    }

    #[test]
    fn an_upward_import_fails_the_check_and_a_downward_one_passes() {
        let dir = std::env::temp_dir().join(format!("edgeguard-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pipeline")).unwrap();
        let lib: String = LAYERS.iter().map(|m| format!("pub mod {m};\n")).collect();
        std::fs::write(dir.join("lib.rs"), lib).unwrap();
        std::fs::write(dir.join("pipeline/mod.rs"), "use crate::events::Event;\n").unwrap();
        check_src(&dir).expect("pipeline may use events");
        std::fs::write(
            dir.join("events.rs"),
            "//! x\nuse crate::{units::Bytes, pipeline::Priority};\n",
        )
        .unwrap();
        let error = check_src(&dir).unwrap_err().to_string();
        assert!(
            error.contains("events.rs:2: `events` uses `pipeline`"),
            "{error}"
        );
        assert!(!error.contains("`units`"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
