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

/// Writes `text` to stdout; a reader that went away is not an error.
pub fn print_quietly(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
