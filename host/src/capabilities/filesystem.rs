//! `filesystem`: the read-only directories a plugin is granted, reached through
//! `wasi:filesystem`, with an `open-at` that can never block.
//!
//! WASI's own `open-at` opens on the blocking pool with a plain `open`: a FIFO someone made in a
//! granted directory blocks it until a writer comes, and the thread is lost for good when the
//! call times out (one per call, until the agent stalls). This one opens with `O_NONBLOCK`,
//! which returns at once for a FIFO, then keeps only what it opened if it is a regular file or
//! a directory: FIFOs, devices and sockets are refused. Paths resolve beneath the granted
//! directory in the kernel (`openat2` with `RESOLVE_BENEATH`; before Linux 5.6, a walk of the
//! path that refuses symbolic links). Every open is read-only, like the directories.

use super::HostState;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::OpenMode;
use wasmtime_wasi::filesystem::{self as fs, Descriptor};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
};

/// The interface as wasmtime-wasi links it (guests of any 0.2 release reach it by semver).
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces WASI's `[method]descriptor.open-at`; call after WASI is linked.
pub(super) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = linker.instance(TYPES).and_then(|mut types| {
        types.func_wrap_async(
            "[method]descriptor.open-at",
            |mut store,
             (fd, path_flags, path, oflags, flags): (
                Resource<Descriptor>,
                PathFlags,
                String,
                OpenFlags,
                DescriptorFlags,
            )| {
                Box::new(async move {
                    let state = store.data_mut();
                    let opened = match open_at(state, &fd, path_flags, path, oflags, flags) {
                        Ok(opening) => opening.await,
                        Err(code) => Err(code),
                    };
                    let state = store.data_mut();
                    Ok((match opened {
                        Ok(descriptor) => Ok(state.table.push(descriptor)?),
                        Err(code) => Err(code),
                    },))
                })
            },
        )
    });
    linker.allow_shadowing(false);
    linked
}

/// Checks the request and starts the open on the blocking pool, under the plugin's permits.
fn open_at(
    state: &mut HostState,
    fd: &Resource<Descriptor>,
    path_flags: PathFlags,
    path: String,
    oflags: OpenFlags,
    flags: DescriptorFlags,
) -> Result<impl Future<Output = Result<Descriptor, ErrorCode>> + Send + 'static, ErrorCode> {
    let dir = match state.table.get(fd).map_err(|_| ErrorCode::BadDescriptor)? {
        Descriptor::Dir(dir) => dir.clone(),
        Descriptor::File(_) => return Err(ErrorCode::NotDirectory),
    };
    let writes = oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::EXCLUSIVE)
        || flags.intersects(DescriptorFlags::WRITE | DescriptorFlags::MUTATE_DIRECTORY);
    if writes {
        return Err(ErrorCode::NotPermitted);
    }
    let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
    let directory = oflags.contains(OpenFlags::DIRECTORY);
    let plugin = std::sync::Arc::clone(&state.plugin);
    let opening = state.blocking("opening a file", move || {
        Ok(open_beneath(dir.dir.as_raw_fd(), &path, follow, directory).inspect_err(|code| {
            if *code == ErrorCode::Unsupported {
                tracing::debug!(plugin = %plugin, path, "refused to open what is not a file or a directory");
            }
        }))
    });
    Ok(async move {
        let file = opening.await.map_err(|_| ErrorCode::Busy)??;
        Ok(match file {
            Opened::File(f) => Descriptor::File(fs::File::new(
                f,
                wasmtime_wasi::FsPerms::ReadOnly,
                OpenMode::READ,
                false,
            )),
            Opened::Dir(d) => Descriptor::Dir(fs::Dir::new(
                d,
                wasmtime_wasi::FsPerms::ReadOnly,
                OpenMode::READ,
                false,
            )),
        })
    })
}

/// What an open gave.
enum Opened {
    File(File),
    Dir(File),
}

/// Opens `path` beneath the directory `dir`, read-only and without blocking, keeping it only if
/// it is a regular file (then blocking again, for reads) or a directory.
fn open_beneath(
    dir: RawFd,
    path: &str,
    follow: bool,
    directory: bool,
) -> Result<Opened, ErrorCode> {
    let mut flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    let fd = match openat2_beneath(dir, path, flags) {
        Err(libc::ENOSYS) => walk_beneath(dir, path, flags)?,
        other => other.map_err(error_code)?,
    };
    let file = File::from(fd);
    let kind = file.metadata().map_err(|e| io_code(&e))?.file_type();
    if kind.is_dir() {
        return Ok(Opened::Dir(file));
    }
    if !kind.is_file() {
        // A FIFO, a device or a socket: reading one can block for ever, or have effects.
        return Err(ErrorCode::Unsupported);
    }
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
        return Err(io_code(&std::io::Error::last_os_error()));
    }
    Ok(Opened::File(file))
}

/// `openat2(dir, path, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the errno on failure.
fn openat2_beneath(dir: RawFd, path: &str, flags: i32) -> Result<OwnedFd, i32> {
    let path = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: open_how is plain data; zeroed is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid path and open_how pointers for the call's duration.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Before Linux 5.6: each component opened as a path (`O_PATH | O_NOFOLLOW`, which never
/// blocks), `..` only back to where the walk started, symbolic links refused.
fn walk_beneath(dir: RawFd, path: &str, flags: i32) -> Result<OwnedFd, ErrorCode> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if path.starts_with('/') {
        return Err(ErrorCode::NotPermitted);
    }
    let Some((last, parents)) = parts.split_last() else {
        return openat(dir, ".", flags).map_err(error_code);
    };
    let mut stack: Vec<OwnedFd> = Vec::new();
    for part in parents {
        if *part == ".." {
            stack.pop().ok_or(ErrorCode::NotPermitted)?;
            continue;
        }
        let at = stack.last().map_or(dir, AsRawFd::as_raw_fd);
        let next = openat(
            at,
            part,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
        .map_err(|e| {
            if e == libc::ENOTDIR {
                ErrorCode::Loop
            } else {
                error_code(e)
            }
        })?;
        stack.push(next);
    }
    if *last == ".." {
        stack.pop().ok_or(ErrorCode::NotPermitted)?;
        let at = stack.last().map_or(dir, AsRawFd::as_raw_fd);
        return openat(at, ".", flags).map_err(error_code);
    }
    let at = stack.last().map_or(dir, AsRawFd::as_raw_fd);
    openat(at, last, flags | libc::O_NOFOLLOW).map_err(error_code)
}

fn openat(dir: RawFd, name: &str, flags: i32) -> Result<OwnedFd, i32> {
    let name = CString::new(name).map_err(|_| libc::EINVAL)?;
    // SAFETY: a valid path for the call's duration.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn io_code(e: &std::io::Error) -> ErrorCode {
    error_code(e.raw_os_error().unwrap_or(libc::EIO))
}

/// WASI's name for an errno of an open.
fn error_code(errno: i32) -> ErrorCode {
    match errno {
        libc::ENOENT => ErrorCode::NoEntry,
        libc::EACCES => ErrorCode::Access,
        // Escaping the directory (`RESOLVE_BENEATH`) is EXDEV.
        libc::EPERM | libc::EXDEV => ErrorCode::NotPermitted,
        libc::ELOOP => ErrorCode::Loop,
        libc::ENOTDIR => ErrorCode::NotDirectory,
        libc::EISDIR => ErrorCode::IsDirectory,
        libc::ENAMETOOLONG => ErrorCode::NameTooLong,
        libc::EINVAL => ErrorCode::Invalid,
        libc::EMFILE | libc::ENFILE => ErrorCode::InsufficientMemory,
        libc::ENXIO | libc::ENODEV => ErrorCode::NoDevice,
        libc::EAGAIN => ErrorCode::WouldBlock,
        _ => ErrorCode::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, path: &str) -> Result<Opened, ErrorCode> {
        let d = File::open(dir).unwrap();
        open_beneath(d.as_raw_fd(), path, true, false)
    }

    /// A FIFO nobody writes to is refused at once (a plain open would wait for a writer), as
    /// are devices and sockets; files, directories and links beneath are fine; escapes are not.
    #[test]
    fn opens_files_and_directories_beneath_and_refuses_the_rest_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("file"), b"hello").unwrap();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::os::unix::fs::symlink("file", p.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", p.join("out")).unwrap();
        let fifo = CString::new(p.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
        let _socket = std::os::unix::net::UnixListener::bind(p.join("socket")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p.join("zero")).unwrap();

        match open(p, "file").unwrap() {
            Opened::File(mut f) => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s).unwrap();
                assert_eq!(s, "hello");
            }
            Opened::Dir(_) => panic!("a file"),
        }
        assert!(matches!(open(p, "sub").unwrap(), Opened::Dir(_)));
        assert!(matches!(open(p, "link").unwrap(), Opened::File(_)));
        assert!(matches!(open(p, "sub/../file").unwrap(), Opened::File(_)));
        assert!(matches!(open(p, "fifo"), Err(ErrorCode::Unsupported)));
        assert!(open(p, "socket").is_err());
        assert!(open(p, "zero").is_err(), "a link out, to a device");
        assert_eq!(open(p, "../etc").err(), Some(ErrorCode::NotPermitted));
        assert!(open(p, "out").is_err(), "a link out of the directory");
        assert_eq!(open(p, "missing").err(), Some(ErrorCode::NoEntry));

        // The walk of kernels before 5.6 gives the same answers (links aside: it refuses them).
        let d = File::open(p).unwrap();
        let walk =
            |path: &str| walk_beneath(d.as_raw_fd(), path, libc::O_RDONLY | libc::O_NONBLOCK);
        assert!(walk("sub/../file").is_ok());
        assert_eq!(walk("../file").err(), Some(ErrorCode::NotPermitted));
        assert!(walk("link").is_err());
        assert!(
            walk("fifo").is_ok(),
            "opened without blocking; the type check refuses it"
        );
    }
}
