//! Login records as login programs write them: through the C library's own `updwtmpx`.

use std::ffi::CString;
use std::path::Path;

unsafe extern "C" {
    /// glibc: appends one record to a wtmp-format file.
    fn updwtmpx(file: *const libc::c_char, ut: *const libc::utmpx);
}

fn copy(dst: &mut [libc::c_char], text: &str) {
    for (d, b) in dst.iter_mut().zip(text.bytes()) {
        *d = b as libc::c_char;
    }
}

/// Appends a record as login programs do, through the C library.
pub fn record(
    file: &Path,
    kind: libc::c_short,
    pid: i32,
    line: &str,
    user: &str,
    host: &str,
    address: Option<[u8; 4]>,
) {
    // SAFETY: utmpx is plain data; all-zero is a valid empty record.
    let mut u: libc::utmpx = unsafe { std::mem::zeroed() };
    u.ut_type = kind;
    u.ut_pid = pid;
    copy(&mut u.ut_line, line);
    copy(&mut u.ut_user, user);
    copy(&mut u.ut_host, host);
    if let Some(a) = address {
        u.ut_addr_v6[0] = i32::from_ne_bytes(a);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u.ut_tv.tv_sec = now.as_secs() as _;
    u.ut_tv.tv_usec = now.subsec_micros() as _;
    // updwtmpx appends to an existing file only, as login programs expect the system to have made it.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    let path = CString::new(file.to_str().unwrap()).unwrap();
    let before = std::fs::metadata(file).unwrap().len();
    // SAFETY: a valid path and record.
    unsafe { updwtmpx(path.as_ptr(), &raw const u) };
    assert_eq!(
        std::fs::metadata(file).unwrap().len(),
        before + std::mem::size_of::<libc::utmpx>() as u64,
        "updwtmpx wrote one record"
    );
}
