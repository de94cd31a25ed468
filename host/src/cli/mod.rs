//! The commands beside `edgeguard run` that read files and print reports: what they read, how
//! they print it, and the exit code they end with.
//!
//! - [`check_manifest`]: deployment manifests in every shape, as a table, JSON or SARIF.
//!
//! Reports are written whole at the end, and a closed stdout (`| head`) ends the writing
//! quietly, as `grep` and `ripgrep` do: the exit code still says what was found.

pub mod check_manifest;
pub mod sarif;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Directory levels [`files_under`] walks, at most.
const MAX_DEPTH: usize = 32;

/// The files under `dir` whose extension is one of `extensions`, depth-first in name order,
/// [`MAX_DEPTH`] levels down, at most `max` of them; true beside them when there were more.
/// Links are not followed (a loop of them would never end).
pub fn files_under(
    dir: &Path,
    extensions: &[&str],
    max: usize,
) -> std::io::Result<(Vec<PathBuf>, bool)> {
    fn walk(
        dir: &Path,
        depth: usize,
        extensions: &[&str],
        max: usize,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<bool> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::path);
        for entry in entries {
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() && depth < MAX_DEPTH {
                if walk(&path, depth + 1, extensions, max, out)? {
                    return Ok(true);
                }
            } else if kind.is_file()
                && path
                    .extension()
                    .is_some_and(|x| extensions.iter().any(|e| x == *e))
            {
                if out.len() == max {
                    return Ok(true);
                }
                out.push(path);
            }
        }
        Ok(false)
    }
    let mut out = Vec::new();
    let more = walk(dir, 0, extensions, max, &mut out)?;
    Ok((out, more))
}

/// Writes `text` to stdout; a reader that went away is not an error.
pub fn print_quietly(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
