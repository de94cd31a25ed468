//! Whole-file writes that a crash never leaves half done: the bytes go to a temporary file
//! beside the target, which is then renamed over it, so a reader sees the old content or the
//! new, never a truncated mix.

use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` (creating its directory if needed). On failure the temporary
/// file is removed and `path` is as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_beside(path);
    let written = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
    .and_then(|()| std::fs::write(&tmp, bytes))
    .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `<name>.<pid>.<n>.tmp` in the same directory: the same filesystem, so the rename is
/// atomic, and a name no other writer of the same target uses, in this process or another.
pub(crate) fn temporary_beside(path: &Path) -> PathBuf {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"old").unwrap();
        // A directory in the way of the rename: the write fails, the old file stays whole.
        std::fs::create_dir(dir.path().join("blocker")).unwrap();
        std::fs::write(dir.path().join("blocker/x"), b"").unwrap();
        assert!(write_atomic(&dir.path().join("blocker"), b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(
            !dir.path()
                .join(format!("blocker.{}.tmp", std::process::id()))
                .exists()
        );
    }
}
