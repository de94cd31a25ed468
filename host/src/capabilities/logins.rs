//! `logins`: utmp-format login logs and text authentication logs, read under the host root.
//!
//! The plugin keeps the cursors (file identity and offset) and decides what a record means; the
//! host only reads, and only files whose names say they are login logs, so this capability
//! cannot be used to read anything else on the host.

use super::{HostState, executable_of, read_error};
use crate::wit::edgeguard::collector::logins::{
    FileId, FileInfo, Host, LinesChunk, RecordType, UtmpChunk, UtmpRecord,
};
use crate::wit::edgeguard::collector::types::HostError;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// File names this capability reads (rotated copies such as `wtmp.1` included).
const LOGIN_LOGS: [&str; 5] = ["wtmp", "btmp", "utmp", "auth.log", "secure"];
/// A call returns at most this much, whatever it is asked.
const MAX_CHUNK_BYTES: usize = 4 << 20;
const RECORD: usize = std::mem::size_of::<libc::utmpx>();

impl Host for HostState {
    async fn stat(&mut self, path: String) -> Result<FileInfo, HostError> {
        let file = resolve(&self.host.host_root, &path)?;
        self.blocking("login log read", move || {
            std::fs::metadata(&file)
                .map(|m| info(&m))
                .map_err(|e| read_error(&file, e))
        })
        .await
    }

    async fn read_utmp(
        &mut self,
        path: String,
        offset: u64,
        max: u32,
    ) -> Result<UtmpChunk, HostError> {
        let file = resolve(&self.host.host_root, &path)?;
        let proc_dir = self.host.host_root.join("proc");
        self.blocking("login log read", move || read_utmp(&file, &proc_dir, offset, max)).await
    }

    async fn read_lines(
        &mut self,
        path: String,
        offset: u64,
        max_bytes: u32,
    ) -> Result<LinesChunk, HostError> {
        let file = resolve(&self.host.host_root, &path)?;
        self.blocking("login log read", move || read_lines(&file, offset, max_bytes)).await
    }
}

/// An absolute path naming a login log, under the host root.
fn resolve(host_root: &Path, path: &str) -> Result<PathBuf, HostError> {
    let p = Path::new(path);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(HostError::InvalidArgument(format!(
            "`{path}` must be an absolute path without `..`"
        )));
    }
    if !LOGIN_LOGS.iter().any(|log| name.starts_with(log)) {
        return Err(HostError::NotGranted(format!(
            "`{path}` is not a login log (names start with {})",
            LOGIN_LOGS.join(", ")
        )));
    }
    Ok(host_root.join(p.strip_prefix("/").unwrap_or(p)))
}

fn info(m: &std::fs::Metadata) -> FileInfo {
    FileInfo {
        id: FileId {
            device: m.dev(),
            inode: m.ino(),
        },
        size: m.len(),
    }
}

/// Opens `path` and reads up to `len` bytes from `offset`, with the file's identity.
fn read_at(path: &Path, offset: u64, len: usize) -> Result<(FileInfo, Vec<u8>), HostError> {
    let mut file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    let mut buf = Vec::new();
    if offset < meta.len() {
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| read_error(path, e))?;
        file.take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|e| read_error(path, e))?;
    }
    Ok((info(&meta), buf))
}

fn read_utmp(path: &Path, proc_dir: &Path, offset: u64, max: u32) -> Result<UtmpChunk, HostError> {
    let start = offset - offset % RECORD as u64;
    let want = (max as usize)
        .saturating_mul(RECORD)
        .min(MAX_CHUNK_BYTES / RECORD * RECORD);
    let (file, bytes) = read_at(path, start, want)?;
    let records: Vec<UtmpRecord> = bytes
        .chunks_exact(RECORD)
        .map(|raw| {
            // SAFETY: `raw` is exactly one utmpx in the layout of this platform's C library, which
            // wrote it; read_unaligned copies it out whatever the buffer's alignment.
            let u: libc::utmpx = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
            record(&u, proc_dir)
        })
        .collect();
    let next_offset = start + (records.len() * RECORD) as u64;
    Ok(UtmpChunk {
        file,
        records,
        next_offset,
    })
}

fn text(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn record(u: &libc::utmpx, proc_dir: &Path) -> UtmpRecord {
    let record_type = match u.ut_type {
        libc::EMPTY => RecordType::Empty,
        libc::RUN_LVL => RecordType::RunLevel,
        libc::BOOT_TIME => RecordType::BootTime,
        libc::NEW_TIME => RecordType::NewTime,
        libc::OLD_TIME => RecordType::OldTime,
        libc::INIT_PROCESS => RecordType::InitProcess,
        libc::LOGIN_PROCESS => RecordType::LoginProcess,
        libc::USER_PROCESS => RecordType::UserProcess,
        libc::DEAD_PROCESS => RecordType::DeadProcess,
        libc::ACCOUNTING => RecordType::Accounting,
        _ => RecordType::Other,
    };
    let a = u.ut_addr_v6;
    let address = if a.iter().all(|w| *w == 0) {
        None
    } else if a[1..].iter().all(|w| *w == 0) {
        Some(std::net::Ipv4Addr::from((a[0] as u32).to_ne_bytes()).to_string())
    } else {
        let mut bytes = [0u8; 16];
        for (i, w) in a.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&(*w as u32).to_ne_bytes());
        }
        Some(std::net::Ipv6Addr::from(bytes).to_string())
    };
    let pid = u.ut_pid.max(0) as u32;
    UtmpRecord {
        record_type,
        pid,
        line: text(&u.ut_line),
        user: text(&u.ut_user),
        host: text(&u.ut_host),
        address,
        time_micros: i64::from(u.ut_tv.tv_sec).max(0) as u64 * 1_000_000
            + i64::from(u.ut_tv.tv_usec).max(0) as u64,
        executable: (pid > 0).then(|| executable_of(proc_dir, pid)).flatten(),
    }
}

fn read_lines(path: &Path, offset: u64, max_bytes: u32) -> Result<LinesChunk, HostError> {
    let (file, bytes) = read_at(path, offset, (max_bytes as usize).clamp(1, MAX_CHUNK_BYTES))?;
    // Whole lines only: a line still being written is read next time.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = bytes[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    Ok(LinesChunk {
        file,
        lines,
        next_offset: offset + whole as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_login_logs_can_be_read() {
        let root = Path::new("/host");
        assert_eq!(
            resolve(root, "/var/log/wtmp").unwrap(),
            Path::new("/host/var/log/wtmp")
        );
        assert!(resolve(root, "/var/log/btmp.1").is_ok());
        assert!(matches!(
            resolve(root, "/etc/shadow"),
            Err(HostError::NotGranted(_))
        ));
        assert!(matches!(
            resolve(root, "/var/log/../../etc/wtmp"),
            Err(HostError::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve(root, "var/log/wtmp"),
            Err(HostError::InvalidArgument(_))
        ));
    }
}
