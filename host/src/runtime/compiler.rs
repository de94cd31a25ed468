//! Compiling a plugin, bounded.
//!
//! Cranelift's time and memory grow with what a component holds, and a component is the
//! plugin author's to shape: [`crate::sandbox`] refuses the shapes that cost most before any
//! compile, and what remains compiles here, in a child process of edgeguard's own binary
//! (`edgeguard compile-plugin`, [`serve`]) under `RLIMIT_DATA` and `RLIMIT_CPU`, at a lower
//! priority than the collectors, killed at its deadline and with edgeguard. The child writes
//! the artifact to its stdout; it goes to the cache file and is mapped from there, so none of
//! the compile's memory is ever edgeguard's.
//!
//! Library users (tests, benches) may compile in-process instead, where only the wait is
//! bounded: a compile past its deadline is refused but runs on.

use super::artifact_cache::{ArtifactCache, CacheOutcome};
use super::engine::engine_config;
use crate::units::Bytes;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Component;

/// The hidden subcommand of the edgeguard binary that compiles one component.
pub const SUBCOMMAND: &str = "compile-plugin";

/// What one compile may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileBounds {
    /// The compiler's heap and other private writable memory (`RLIMIT_DATA`).
    pub memory: Bytes,
    /// Wall time until the compile is killed; also its CPU time (`RLIMIT_CPU`).
    pub time: Duration,
}

impl CompileBounds {
    /// The built-in plugins compile in under a second and 40 MiB here; a slow board takes ten
    /// times the time.
    pub const DEFAULT: CompileBounds = CompileBounds {
        memory: Bytes(512 << 20),
        time: Duration::from_secs(120),
    };
}

/// Where plugins compile.
#[derive(Clone, Debug)]
pub enum Compiler {
    /// On a blocking thread of this process: only the wait is bounded (by `time`).
    InProcess {
        /// How long a load waits for it.
        time: Duration,
    },
    /// In a child process running `exe compile-plugin`, bounded in time and memory.
    Child {
        /// An edgeguard binary (normally `/proc/self/exe`).
        exe: PathBuf,
        /// Its bounds.
        bounds: CompileBounds,
    },
}

impl Compiler {
    /// Compiles in children of this very binary, which must be edgeguard's (its `main`
    /// answers [`SUBCOMMAND`] with [`serve`]).
    pub fn this_binary(bounds: CompileBounds) -> Compiler {
        // /proc/self/exe still runs after the file was replaced by an upgrade.
        Compiler::Child {
            exe: PathBuf::from("/proc/self/exe"),
            bounds,
        }
    }
}

/// Why a component did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Cranelift refused it: not valid WebAssembly, or not a component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// It took longer than the bound.
    #[error("compiling took longer than {0:?}: refused")]
    Time(Duration),
    /// It needed more memory than the bound.
    #[error("compiling needed more than {0} of memory: refused")]
    Memory(Bytes),
    /// The compiler itself failed.
    #[error("the compiler failed: {0}")]
    Failed(String),
}

/// The component for `bytes` (whose SHA-256 is `digest`): from the cache, or compiled by
/// `compiler` and cached.
pub async fn compile(
    compiler: &Compiler,
    engine: &wasmtime::Engine,
    cache: &std::sync::Arc<ArtifactCache>,
    bytes: Vec<u8>,
    digest: &str,
) -> Result<(Component, CacheOutcome), CompileError> {
    if let Some(component) = cache.cached(engine, digest) {
        return Ok((component, CacheOutcome::Hit));
    }
    let component = match compiler {
        Compiler::InProcess { time } => {
            let (engine, cache, digest) = (engine.clone(), cache.clone(), digest.to_owned());
            let compiling =
                tokio::task::spawn_blocking(move || cache.compile_here(&engine, &bytes, &digest));
            tokio::time::timeout(*time, compiling)
                .await
                .map_err(|_| CompileError::Time(*time))?
                .map_err(|e| CompileError::Failed(format!("compilation aborted: {e}")))?
                .map_err(|e| CompileError::Invalid(format!("{e:#}")))?
        }
        Compiler::Child { exe, bounds } => {
            let path = cache.artifact_path(digest);
            let artifact = in_child(exe, *bounds, &bytes, &path).await?;
            let loaded = match &artifact {
                // SAFETY: written by `precompile_component` of this engine's configuration (a
                // mismatch is refused by wasmtime's header check) in a directory only we write.
                Artifact::File(path) => unsafe { Component::deserialize_file(engine, path) },
                // SAFETY: as above, from memory.
                Artifact::Memory(bytes) => unsafe { Component::deserialize(engine, bytes) },
            };
            loaded.map_err(|e| CompileError::Failed(format!("unusable artifact: {e:#}")))?
        }
    };
    Ok((component, CacheOutcome::Miss))
}

/// Where a child's artifact is.
enum Artifact {
    /// In a file: the cache file, or the temporary one it is received in.
    File(PathBuf),
    /// In memory: the cache could not take it.
    Memory(Vec<u8>),
}

/// The child's lower priority: collectors keep their pace beside a long compile.
const NICENESS: libc::c_int = 10;
/// What the child's stderr may hand back (its error message).
const STDERR_KEPT: usize = 8 << 10;
/// Exit code of [`serve`] for a component Cranelift refused.
const EXIT_INVALID: u8 = 3;

async fn in_child(
    exe: &Path,
    bounds: CompileBounds,
    bytes: &[u8],
    path: &Path,
) -> Result<Artifact, CompileError> {
    let failed = |what: &str, e: std::io::Error| CompileError::Failed(format!("{what}: {e}"));
    let mut command = tokio::process::Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .kill_on_drop(true);
    let memory = bounds.memory.0;
    let cpu_seconds = bounds.time.as_secs().max(1);
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid,
    // setrlimit, setpriority), on values copied in.
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            // Gone with edgeguard (the spawning thread is a runtime worker, which lives as
            // long as the runtime), and never a core file of edgeguard's memory.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                return Err(std::io::Error::other("edgeguard is gone"));
            }
            limit(libc::RLIMIT_DATA, memory, memory)?;
            limit(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)?;
            limit(libc::RLIMIT_CORE, 0, 0)?;
            libc::setpriority(libc::PRIO_PROCESS, 0, NICENESS);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed(&format!("cannot start {}", exe.display()), e))?;
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    // Named here, so that a compile given up on leaves no temporary file behind.
    let temporary = crate::files::temporary_beside(path);
    let discard = || {
        let _ = std::fs::remove_file(&temporary);
    };
    let run = async {
        let feed = async {
            // A child that dies early closes the pipe: its status says why, not this write.
            let _ = stdin.write_all(bytes).await;
            drop(stdin);
        };
        let collect = receive(&mut stdout, path, &temporary, memory);
        let complaints = async {
            let mut kept = Vec::new();
            let _ = (&mut stderr)
                .take(STDERR_KEPT as u64)
                .read_to_end(&mut kept)
                .await;
            // Past what is kept, read on so the child never blocks on a full pipe.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            kept
        };
        let ((), artifact, complaints, status) =
            tokio::join!(feed, collect, complaints, child.wait());
        (
            artifact,
            String::from_utf8_lossy(&complaints).trim().to_owned(),
            status,
        )
    };
    // Dropping the child on a timeout kills it (kill_on_drop); the runtime reaps it.
    let Ok((received, complaints, status)) = tokio::time::timeout(bounds.time, run).await else {
        discard();
        return Err(CompileError::Time(bounds.time));
    };
    let status = status.map_err(|e| {
        discard();
        failed("waiting for the compiler", e)
    })?;
    if !status.success() {
        discard();
        return Err(refusal(status, complaints, bounds));
    }
    received
        .map(|artifact| artifact.keep(path))
        .map_err(|e| failed("reading the artifact", e))
}

/// What a compiler that did not succeed says of the component.
fn refusal(
    status: std::process::ExitStatus,
    complaints: String,
    bounds: CompileBounds,
) -> CompileError {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) if code == i32::from(EXIT_INVALID) => CompileError::Invalid(complaints),
        (_, Some(libc::SIGXCPU)) => CompileError::Time(bounds.time),
        // Rust's allocator reports its failure so, then aborts.
        _ if complaints.contains("memory allocation of") => CompileError::Memory(bounds.memory),
        _ if complaints.is_empty() => CompileError::Failed(status.to_string()),
        _ => CompileError::Failed(format!("{status}: {complaints}")),
    }
}

impl Artifact {
    /// Stores a good artifact, still in its temporary file, under the cache file `path` (a
    /// rename: a crash never leaves a torn artifact under that name).
    fn keep(self, path: &Path) -> Artifact {
        let Artifact::File(temporary) = self else {
            return self;
        };
        match std::fs::rename(&temporary, path) {
            Ok(()) => Artifact::File(path.to_owned()),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot store compiled artifact: {e}");
                match std::fs::read(&temporary) {
                    Ok(bytes) => {
                        let _ = std::fs::remove_file(&temporary);
                        Artifact::Memory(bytes)
                    }
                    // Mapped from where it is, and left there.
                    Err(_) => Artifact::File(temporary),
                }
            }
        }
    }
}

/// Takes the child's output, at most `limit` bytes, into `temporary` beside the cache file
/// `path` (mapped from the cache afterwards, never held), or into memory when the cache cannot
/// take it.
async fn receive(
    stdout: &mut tokio::process::ChildStdout,
    path: &Path,
    temporary: &Path,
    limit: u64,
) -> std::io::Result<Artifact> {
    let mut bounded = stdout.take(limit + 1);
    let too_large = || std::io::Error::other(format!("larger than {}", Bytes(limit)));
    let into_file = async {
        let mut file = tokio::fs::File::create(temporary).await?;
        let n = tokio::io::copy(&mut bounded, &mut file).await?;
        file.flush().await?;
        Ok::<_, std::io::Error>(n)
    };
    match into_file.await {
        Ok(n) if n <= limit => Ok(Artifact::File(temporary.to_owned())),
        Ok(_) => {
            let _ = std::fs::remove_file(temporary);
            Err(too_large())
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot store compiled artifact: {e}");
            // What was read before the failure is in the temporary file, if there is one.
            let mut bytes = std::fs::read(temporary).unwrap_or_default();
            let _ = std::fs::remove_file(temporary);
            bounded.read_to_end(&mut bytes).await?;
            if bytes.len() as u64 > limit {
                return Err(too_large());
            }
            Ok(Artifact::Memory(bytes))
        }
    }
}

/// The type glibc gives the RLIMIT_ constants; musl's are plain ints.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn limit(resource: Resource, soft: u64, hard: u64) -> std::io::Result<()> {
    let value = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit of our own process with a valid rlimit.
    if unsafe { libc::setrlimit(resource, &raw const value) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child's side: reads a component on stdin, compiles it for this binary's engine
/// configuration, writes the artifact on stdout. Exit 0, or [`EXIT_INVALID`] with Cranelift's
/// words on stderr, or 1 when it could not even read or write.
pub fn serve() -> ExitCode {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("reading the component: {e}");
        return ExitCode::FAILURE;
    }
    let compiled = wasmtime::Engine::new(&engine_config())
        .and_then(|engine| engine.precompile_component(&bytes));
    drop(bytes);
    match compiled {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writing the artifact: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
