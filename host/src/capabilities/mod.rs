//! Host capabilities: the privileged side of each WIT interface a plugin may import.
//!
//! A plugin's component imports only the interfaces it uses. Each of our interfaces maps to a
//! [`Capability`] that the plugin's configuration must grant; the loader refuses a component
//! with an ungranted import before instantiating it. WASI is linked for every plugin because a
//! Rust std guest imports `wasi:io` and `wasi:cli` even when it does no I/O (and a component
//! made by the preview1 adapter, as `cargo component build` does by default, also imports
//! `wasi:filesystem`), but its context carries no authority: no environment, no arguments, no
//! network, stdio discarded, and no preopened directory unless `filesystem` is granted with
//! `dirs`. `wasi:sockets` is refused outright.

use crate::kernel::feed::{self, Feed};
use crate::runtime::limits::CallGuard;
use crate::wit::edgeguard::collector as wit;
use crate::wit::edgeguard::collector::types;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

mod audit_use;
mod filesystem;

pub use audit_use::AuditUse;
pub use processes::{ExecDetails, read_processes};
pub use sockets::{Preference as SocketSource, read_sockets};

/// The host capabilities, one row each: the variant, the name a configuration grants it by,
/// the WIT interface it links (`edgeguard:collector/<interface>`, a module of [`crate::wit`]),
/// and whether the module twin may grant it by default (`[remote] twin_grants`; the local file
/// can always). A row with an interface declares the module of that name beside this file, which
/// implements the interface's `Host` trait for [`HostState`]. Adding a capability is that
/// module, its WIT file and one row here.
macro_rules! capability_table {
    ($($(#[$doc:meta])* $variant:ident: $grant:literal, $interface:tt, twin: $twin:literal;)*) => {
        $(capability_table!(@module $interface);)*

        /// A host capability a plugin's configuration may grant.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Capability {
            $($(#[$doc])* $variant,)*
        }

        impl Capability {
            /// Every capability, in the table's order.
            pub const ALL: &[Capability] = &[$(Capability::$variant),*];

            /// The name a configuration grants it by.
            pub fn name(self) -> &'static str {
                match self {
                    $(Capability::$variant => $grant,)*
                }
            }

            /// The WIT interface it links, if it has one of its own.
            pub fn interface(self) -> Option<String> {
                match self {
                    $(Capability::$variant => capability_table!(@interface $interface),)*
                }
            }

            /// Whether the module twin may grant it unless `[remote] twin_grants` says otherwise.
            fn twin_by_default(self) -> bool {
                match self {
                    $(Capability::$variant => $twin,)*
                }
            }
        }

        /// Links the capabilities in `grants` (WASI is linked separately, for everyone, by
        /// [`link_wasi`]).
        pub fn link(linker: &mut Linker<HostState>, grants: &[Capability]) -> wasmtime::Result<()> {
            wit::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
            for grant in grants {
                match grant {
                    $(Capability::$variant => capability_table!(@link linker, $interface),)*
                }
            }
            Ok(())
        }
    };
    (@module none) => {};
    // The capability's host side: `capabilities/<interface>.rs`.
    (@module $interface:ident) => { mod $interface; };
    (@interface none) => { None };
    (@interface $interface:ident) => { Some(stringify!($interface).replace('_', "-")) };
    (@link $linker:ident, none) => { {} };
    (@link $linker:ident, $interface:ident) => {
        wit::$interface::add_to_linker::<HostState, HasSelf<HostState>>($linker, |s| s)?
    };
}

capability_table! {
    /// Log lines into the host's `tracing`, tagged with the plugin and bounded.
    Log: "log", log, twin: true;
    /// Wall-clock and monotonic time.
    Clock: "clock", clock, twin: true;
    /// The host's processes, and the kernel's exec and exit events.
    Processes: "processes", processes, twin: true;
    /// The host's sockets, the connections the kernel frees, and those its audit records tell.
    Sockets: "sockets", sockets, twin: true;
    /// The host's identity, memory and local accounts.
    System: "system", system, twin: true;
    /// Login records and auth-log lines.
    Logins: "logins", logins, twin: true;
    /// The Docker Engine's containers, events and exposure.
    Containers: "containers", containers, twin: true;
    /// Read-only access, through `wasi:filesystem`, to the directories the configuration lists
    /// (WASI is linked for all; this grant only allows the preopened `dirs`). The twin should
    /// not pick which host files a plugin reads.
    Filesystem: "filesystem", none, twin: false;
}

/// Links WASI for a plugin: no authority but the read-only `dirs` of its context, opened so
/// that no open can block (see `filesystem`).
pub fn link_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    filesystem::link(linker)
}

impl Capability {
    /// The capability a configuration names, if any.
    pub fn from_name(name: &str) -> Option<Capability> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Every capability's name, for error messages.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }

    /// The capabilities the twin may grant when `[remote] twin_grants` is not given.
    pub fn twin_grantable() -> impl Iterator<Item = Capability> {
        Self::ALL.iter().copied().filter(|c| c.twin_by_default())
    }
}

/// What an imported interface needs before a plugin may have it.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportNeed {
    /// Linked for everyone, without authority (WASI io, cli, clocks, random; our shared types).
    Baseline,
    /// Linked only when the plugin is granted this capability.
    Grant(Capability),
    /// Known but never available to plugins.
    Refused(&'static str),
    /// Not an interface this host provides.
    Unknown,
}

/// Classifies a component import name such as `edgeguard:collector/processes@0.1.1`.
pub fn import_need(import: &str) -> ImportNeed {
    let unversioned = import.split('@').next().unwrap_or(import);
    match unversioned.split_once('/') {
        // Interfaces of types only: nothing to call, nothing to grant.
        Some(("edgeguard:collector", "types" | "analysis")) => ImportNeed::Baseline,
        Some(("edgeguard:collector", interface)) => Capability::ALL
            .iter()
            .find(|c| c.interface().as_deref() == Some(interface))
            .map_or(ImportNeed::Unknown, |c| ImportNeed::Grant(*c)),
        // wasi:filesystem without preopened directories reaches nothing; `dirs` needs the grant.
        Some(("wasi:io" | "wasi:cli" | "wasi:clocks" | "wasi:random" | "wasi:filesystem", _)) => {
            ImportNeed::Baseline
        }
        Some(("wasi:sockets", _)) => {
            ImportNeed::Refused("network access is not available to plugins")
        }
        _ => ImportNeed::Unknown,
    }
}

/// A failed read of a host file, as the capability error the plugin can act on.
pub(crate) fn read_error(path: &Path, e: std::io::Error) -> types::HostError {
    use types::HostError;
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            HostError::Unavailable(format!("{} does not exist", path.display()))
        }
        std::io::ErrorKind::PermissionDenied => {
            HostError::PermissionDenied(format!("cannot read {}", path.display()))
        }
        _ => HostError::Io(format!("{}: {e}", path.display())),
    }
}

/// The executable of a process under `proc_dir`, if it still runs and can be read.
pub(crate) fn executable_of(proc_dir: &Path, pid: u32) -> Option<String> {
    std::fs::read_link(proc_dir.join(format!("{pid}/exe")))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The longest command line the host hands a plugin, in bytes. Any user can start a process
/// whose arguments take 2 MB; what identifies a program and its intent comes first.
pub const MAX_COMMAND_LINE: usize = 16 << 10;

/// The command line of a process under `proc_dir`, its arguments joined by spaces, if it can be
/// read. Only `limit` bytes are read: a longer one is cut there, ending in ` …`.
pub(crate) fn command_line_of(proc_dir: &Path, pid: u32, limit: usize) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(proc_dir.join(format!("{pid}/cmdline"))).ok()?;
    let mut raw = Vec::with_capacity(256.min(limit + 1));
    file.take(limit as u64 + 1).read_to_end(&mut raw).ok()?;
    let cut = raw.len() > limit;
    raw.truncate(limit);
    let mut line = raw
        .split(|c| *c == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    if cut {
        // Invalid bytes grow into U+FFFD: cut again, on a character boundary.
        let mut end = line.len().min(limit);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str(" …");
    }
    Some(line)
}

/// Drains `plugin`'s queue of the kernel feed `pick` chooses (`what` it carries, for errors) on
/// the blocking pool: the first drain connects to the kernel and waits for its answer.
fn drain_feed<S: feed::Source>(
    state: &HostState,
    max: u32,
    what: &'static str,
    pick: fn(&HostContext) -> &Feed<S>,
) -> impl Future<Output = Result<feed::Drained<S::Event>, types::HostError>> + Send + 'static {
    let (host, plugin) = (Arc::clone(&state.host), Arc::clone(&state.plugin));
    state.blocking(what, move || {
        pick(&host)
            .drain(&plugin, max as usize)
            .map_err(|why| types::HostError::Unavailable(format!("no {what}: {why}")))
    })
}

/// State shared by every plugin: where the host is, and each capability's own state (caches of
/// the host's databases, the kernel event sources plugins follow, the Docker client).
pub struct HostContext {
    /// Where the host's `/` is visible to edgeguard.
    pub host_root: PathBuf,
    started: std::time::Instant,
    wakers: Arc<Wakers>,
    blocking: BlockingGates,
    processes: processes::Shared,
    sockets: sockets::Shared,
    containers: containers::Engine,
}

/// Why a capability polls when `agent.kernel_events` is off.
const KERNEL_EVENTS_OFF: &str = "kernel event sources are off (agent.kernel_events = false)";

/// How the host reaches what it reads.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// The Docker daemon's socket (a path of edgeguard's own filesystem).
    pub docker_socket: PathBuf,
    /// Follow the kernel's event sources where it offers them; false: plugins poll.
    pub kernel_events: bool,
    /// Events kept per plugin and event source between two of its collections.
    pub event_buffer: usize,
    /// Bytes the kernel may hold for each event source's socket before it drops events.
    pub kernel_buffer: usize,
    /// Whether execs are completed from the kernel's audit records, and how far edgeguard may
    /// go to have them.
    pub audit: AuditMode,
}

/// How far edgeguard may go with the kernel's audit subsystem for the whole command line of
/// every exec and the process of every connection (`agent.audit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// The proc connector and the socket table alone.
    Off,
    /// Read the exec and connection records the rules in force make (an auditd with `execve`,
    /// `connect` and `accept` rules, as the ASC agents set), as a reader beside the daemon;
    /// change nothing (needs `CAP_AUDIT_READ`).
    #[default]
    Follow,
    /// Also add an `execve` rule when none audits every exec (and `connect`/`accept` rules
    /// while a plugin follows connections), enable auditing when it is off, and register as
    /// the audit daemon when none is, so the kernel does not log the records; each undone on
    /// exit (needs `CAP_AUDIT_CONTROL` too).
    Manage,
}

impl AuditMode {
    /// How the kernel's audit subsystem is opened; None: not at all.
    pub(crate) fn kernel_mode(self) -> Option<crate::kernel::audit::Mode> {
        match self {
            AuditMode::Off => None,
            AuditMode::Follow => Some(crate::kernel::audit::Mode::Follow),
            AuditMode::Manage => Some(crate::kernel::audit::Mode::Manage),
        }
    }
}

impl HostOptions {
    /// The default of `agent.event_buffer`.
    pub const DEFAULT_EVENT_BUFFER: usize = 4096;
    /// A burst of thousands of processes a second fits while the reader reads `/proc`.
    pub const DEFAULT_KERNEL_BUFFER: usize = 4 << 20;

    /// The defaults for a host seen at `host_root`.
    pub fn new(host_root: &Path) -> HostOptions {
        HostOptions {
            docker_socket: host_root.join("var/run/docker.sock"),
            kernel_events: true,
            event_buffer: Self::DEFAULT_EVENT_BUFFER,
            kernel_buffer: Self::DEFAULT_KERNEL_BUFFER,
            audit: AuditMode::default(),
        }
    }
}

impl HostContext {
    /// Stops the kernel event sources before the agent exits, so that each undoes what it
    /// changed in the kernel (the audit rules, daemon and state of `agent.audit = "manage"`):
    /// threads do not outlive `main`, and what they own is not dropped with them.
    pub fn close(&self) {
        self.processes.feed.close();
        self.sockets.feed.close();
        self.sockets.opened.close();
    }

    /// A host seen at `host_root`, its Docker daemon at `<host root>/var/run/docker.sock`.
    pub fn new(host_root: &Path) -> Arc<HostContext> {
        Self::with_options(host_root, HostOptions::new(host_root))
    }

    /// The same with the Docker daemon's socket elsewhere (a path of edgeguard's own filesystem).
    pub fn with_docker_socket(host_root: &Path, docker_socket: &Path) -> Arc<HostContext> {
        Self::with_options(
            host_root,
            HostOptions {
                docker_socket: docker_socket.to_owned(),
                ..HostOptions::new(host_root)
            },
        )
    }

    /// A host seen at `host_root`, reached as `options` say.
    pub fn with_options(host_root: &Path, options: HostOptions) -> Arc<HostContext> {
        let wakers = Arc::new(Wakers::default());
        let wake: feed::Wake = {
            let wakers = Arc::clone(&wakers);
            Arc::new(move |plugin: &str, urgency| wakers.wake(plugin, urgency))
        };
        Arc::new(HostContext {
            host_root: host_root.to_owned(),
            started: std::time::Instant::now(),
            processes: processes::Shared::new(host_root, &options, Arc::clone(&wake)),
            sockets: sockets::Shared::new(host_root, &options, wake),
            containers: containers::Engine::new(options.docker_socket),
            wakers,
            blocking: BlockingGates::default(),
        })
    }

    /// Notified when a kernel event source holds events for `plugin` to collect before its
    /// time: promptly, or at once.
    pub fn waker(&self, plugin: &Arc<str>) -> Arc<Waker> {
        self.wakers.for_plugin(plugin)
    }

    /// Where `plugin`'s data comes from, per capability with an event source: what a status shows.
    pub fn feeds(&self, plugin: &str) -> Vec<FeedStatus> {
        let processes = self.processes.status(plugin);
        processes
            .into_iter()
            .chain(self.sockets.status(plugin))
            .collect()
    }
}

/// The source of one capability's data for one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedStatus {
    /// The capability whose data this is.
    pub capability: Capability,
    /// The kernel event source followed, or `polling`.
    pub source: &'static str,
    /// Why the event source could not be followed, when the plugin asked for it.
    pub unavailable: Option<String>,
    /// Events handed to the plugin.
    pub delivered: u64,
    /// Events lost before the plugin could have them (buffer full, kernel overrun).
    pub lost: u64,
    /// Source-specific counters (for processes: how much of each exec could be read).
    pub details: Vec<(&'static str, u64)>,
    /// Source-specific states in words (for processes: how audit records are read, or why not).
    pub notes: Vec<(&'static str, String)>,
}

impl FeedStatus {
    /// The status of `capability`'s feed `what` as `usage` says it is used.
    fn of(
        capability: Capability,
        what: &'static str,
        usage: feed::Usage,
        details: Vec<(&'static str, u64)>,
    ) -> FeedStatus {
        FeedStatus {
            capability,
            source: if usage.following { what } else { "polling" },
            unavailable: usage.unavailable,
            delivered: usage.delivered,
            lost: usage.lost,
            details,
            notes: Vec::new(),
        }
    }
}

/// Blocking host work one plugin may have under way at once, over all its instances.
pub const BLOCKING_PER_PLUGIN: usize = 2;

/// Per plugin name, the permits for blocking work on the blocking pool. A read of `/proc` or of
/// a file can stall in the kernel for good (a process holding its memory map's lock, a hung
/// mount); the call's deadline faults the plugin but cannot stop the thread, so each plugin
/// may hold only [`BLOCKING_PER_PLUGIN`] such threads, not a new one at every call.
#[derive(Default)]
struct BlockingGates(
    std::sync::Mutex<std::collections::HashMap<Arc<str>, Arc<tokio::sync::Semaphore>>>,
);

impl BlockingGates {
    fn for_plugin(&self, plugin: &Arc<str>) -> Arc<tokio::sync::Semaphore> {
        Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(Arc::clone(plugin))
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(BLOCKING_PER_PLUGIN))),
        )
    }
}

impl HostState {
    /// Runs `f` (`what` it does, for errors) on the blocking pool under one of the plugin's
    /// permits; with none free, the earlier work is stuck and the call fails at once.
    pub(crate) fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> Result<T, types::HostError> + Send + 'static,
    ) -> impl Future<Output = Result<T, types::HostError>> + Send + 'static {
        // Taken now: the future must not borrow the store's data across the wait.
        let permit = self
            .host
            .blocking
            .for_plugin(&self.plugin)
            .try_acquire_owned();
        async move {
            let Ok(permit) = permit else {
                return Err(types::HostError::Unavailable(format!(
                    "{what}: {BLOCKING_PER_PLUGIN} earlier host reads of this plugin are still blocked in the kernel"
                )));
            };
            tokio::task::spawn_blocking(move || {
                let _held = permit;
                f()
            })
            .await
            .map_err(|e| types::HostError::Io(format!("{what} failed: {e}")))?
        }
    }
}

/// How a kernel event source wakes one plugin's actor.
#[derive(Default)]
pub struct Waker {
    /// Events wait: collect soon (the actor coalesces a burst into one collection).
    pub prompt: tokio::sync::Notify,
    /// The plugin's queue is half full: collect now.
    pub pressure: tokio::sync::Notify,
}

/// One waker per plugin name, shared by its successive instances and its actor.
#[derive(Default)]
struct Wakers(std::sync::Mutex<std::collections::HashMap<Arc<str>, Arc<Waker>>>);

impl Wakers {
    fn for_plugin(&self, plugin: &Arc<str>) -> Arc<Waker> {
        Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(Arc::clone(plugin))
                .or_default(),
        )
    }

    fn wake(&self, plugin: &str, urgency: feed::Urgency) {
        if let Some(w) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(plugin) {
            match urgency {
                feed::Urgency::Prompt => w.prompt.notify_one(),
                feed::Urgency::Pressure => w.pressure.notify_one(),
            }
        }
    }
}

/// The data of one plugin's store.
pub struct HostState {
    /// The plugin's configured name.
    pub plugin: Arc<str>,
    /// What every plugin shares.
    pub host: Arc<HostContext>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory limit, CPU deadline and per-call counters, enforced by the runtime.
    pub guard: CallGuard,
    containers: containers::PluginContainers,
}

impl HostState {
    /// A store's data with no WASI authority beyond the read-only `dirs` (under the host root).
    pub fn new(
        plugin: Arc<str>,
        host: Arc<HostContext>,
        dirs: &[PathBuf],
        guard: CallGuard,
    ) -> anyhow::Result<HostState> {
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for dir in dirs {
            let on_host = host.host_root.join(dir.strip_prefix("/").unwrap_or(dir));
            wasi.preopened_dir(&on_host, dir.to_string_lossy(), FsPerms::ReadOnly)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open directory {} for plugin {plugin}: {e}",
                        on_host.display()
                    )
                })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(1024);
        host.processes.feed.hold(&plugin);
        host.sockets.feed.hold(&plugin);
        host.sockets.opened.hold(&plugin);
        Ok(HostState {
            plugin,
            host,
            wasi: wasi.build(),
            table,
            guard,
            containers: containers::PluginContainers::new(),
        })
    }
}

impl Drop for HostState {
    /// The plugin's event queues outlive this instance for a while, for its successor.
    fn drop(&mut self) {
        self.host.processes.feed.release(&self.plugin);
        self.host.sockets.feed.release(&self.plugin);
        self.host.sockets.opened.release(&self.plugin);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_map_to_capabilities() {
        assert_eq!(
            import_need("edgeguard:collector/processes@0.1.0"),
            ImportNeed::Grant(Capability::Processes)
        );
        assert_eq!(
            import_need("edgeguard:collector/sockets@0.1.1"),
            ImportNeed::Grant(Capability::Sockets)
        );
        assert_eq!(
            import_need("edgeguard:collector/types@0.1.3"),
            ImportNeed::Baseline
        );
        assert_eq!(
            import_need("wasi:cli/environment@0.2.6"),
            ImportNeed::Baseline
        );
        assert_eq!(
            import_need("wasi:filesystem/preopens@0.2.0"),
            ImportNeed::Baseline
        );
        assert!(matches!(
            import_need("wasi:sockets/tcp@0.2.0"),
            ImportNeed::Refused(_)
        ));
        assert_eq!(import_need("acme:evil/thing"), ImportNeed::Unknown);
    }

    /// A command line is read only as far as its limit: cut on a character boundary, marked.
    #[test]
    fn a_long_command_line_is_cut_where_it_is_read() {
        let proc_dir = tempfile::tempdir().unwrap();
        let write = |pid: u32, raw: &[u8]| {
            std::fs::create_dir_all(proc_dir.path().join(pid.to_string())).unwrap();
            std::fs::write(proc_dir.path().join(format!("{pid}/cmdline")), raw).unwrap();
        };
        write(1, b"/bin/sh\0-c\0true\0");
        assert_eq!(
            command_line_of(proc_dir.path(), 1, 64).as_deref(),
            Some("/bin/sh -c true")
        );
        let mut long = b"/bin/echo\0".to_vec();
        long.extend(std::iter::repeat_n(b'x', 2 << 20));
        write(2, &long);
        let cut = command_line_of(proc_dir.path(), 2, 100).unwrap();
        assert!(
            cut.starts_with("/bin/echo xxx") && cut.ends_with(" …"),
            "{cut}"
        );
        assert_eq!(cut.len(), 100 + " …".len());
        // A multi-byte character across the limit is not split.
        write(3, "ééééé".as_bytes());
        assert_eq!(command_line_of(proc_dir.path(), 3, 5).unwrap(), "éé …");
        assert_eq!(
            command_line_of(proc_dir.path(), 4, 5),
            None,
            "no such process"
        );
    }
}
