//! `processes`: the host's process table, read from `<host root>/proc`, and process starts and
//! ends as the kernel reports them (the proc connector), read right at the exec and completed
//! from the audit subsystem's records where the process was quicker ([`audited`]).

mod audited;

use super::{AuditUse, HostContext, HostState, MAX_COMMAND_LINE};
use crate::kernel::netlink::Received;
use crate::kernel::proc_connector::{ProcConnector, ProcEvent};
use crate::kernel::{audit, feed};
use crate::wit::edgeguard::collector::processes::{
    Detail, EventBatch, ExecEvent, ExecSources, ExitEvent, Host, Process, ProcessEvent, State,
    TracedBatch, TracedEvent, TracedExec,
};
use crate::wit::edgeguard::collector::types::HostError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// `PF_KTHREAD` in /proc/<pid>/stat flags: kernel threads are not processes anyone started.
const PF_KTHREAD: u32 = 0x0020_0000;
/// How long the reader lets a burst of records gather before reading them, while nothing needs
/// reading at the exec: a few milliseconds of a 4 MiB socket buffer, far below what fills it.
const GATHER: Duration = Duration::from_millis(4);
/// Parents of processes seen forking, kept to name the parent of a process gone before its
/// exec could be read; reset past this size (processes that never exit are rare).
const MAX_PARENTS: usize = 65_536;

impl Host for HostState {
    async fn snapshot(&mut self) -> Result<Vec<Process>, HostError> {
        self.host.processes.feed.note_polled(&self.plugin);
        // /proc reads are fast but can block (a process stuck in the kernel holds its mm lock),
        // and a blocking host call cannot be interrupted by the epoch deadline: read on the
        // blocking pool so the call's outer timeout still applies.
        let host = Arc::clone(&self.host);
        self.blocking("process scan", move || read_processes(&host))
            .await
    }

    async fn events(&mut self, max: u32) -> Result<EventBatch, HostError> {
        let d = super::drain_feed(self, max, "process events", |h| &h.processes.feed).await?;
        Ok(EventBatch {
            events: d.events.into_iter().map(untraced).collect(),
            lost: d.lost,
            fresh: d.fresh,
        })
    }

    async fn traced_events(&mut self, max: u32) -> Result<TracedBatch, HostError> {
        let d = super::drain_feed(self, max, "process events", |h| &h.processes.feed).await?;
        Ok(TracedBatch {
            events: d.events,
            lost: d.lost,
            fresh: d.fresh,
        })
    }
}

/// An event as plugins built before 0.1.4 take it.
fn untraced(event: TracedEvent) -> ProcessEvent {
    match event {
        TracedEvent::Exec(e) => ProcessEvent::Exec(ExecEvent {
            process: e.process,
            detail: e.detail,
        }),
        TracedEvent::Exit(e) => ProcessEvent::Exit(e),
    }
}

/// A process known by its pid alone (its `/proc` entry was gone): what its parent, if known,
/// lends it, the rest empty.
fn unread(pid: u32, parent_pid: u32, user_id: u32, users: &HashMap<u32, String>) -> Process {
    Process {
        pid,
        parent_pid,
        user_id,
        user_name: users.get(&user_id).cloned(),
        name: String::new(),
        executable: String::new(),
        command_line: String::new(),
        start_time: 0,
        state: State::Dead,
        exit_code: None,
    }
}

/// Every process under the host root, kernel threads excluded. Processes that exit during the
/// scan are skipped, not errors.
pub fn read_processes(host: &HostContext) -> Result<Vec<Process>, HostError> {
    let proc_dir = host.host_root.join("proc");
    let all = procfs::process::all_processes_with_root(&proc_dir).map_err(|e| match e {
        procfs::ProcError::NotFound(_) => {
            HostError::Unavailable(format!("{} does not exist", proc_dir.display()))
        }
        procfs::ProcError::PermissionDenied(_) => {
            HostError::PermissionDenied(format!("cannot read {}", proc_dir.display()))
        }
        other => HostError::Io(format!("{}: {other}", proc_dir.display())),
    })?;
    let users = host.processes.users.current(&host.host_root);
    let mut out = Vec::with_capacity(512);
    // What one snapshot may carry: command lines in full up to a budget, then short ones, so
    // that thousands of long command lines neither fill the host's memory nor the plugin's.
    let mut budget = SNAPSHOT_COMMAND_LINES;
    for entry in all {
        let Ok(p) = entry else { continue };
        let limit = if budget >= MAX_COMMAND_LINE {
            MAX_COMMAND_LINE
        } else {
            SHORT_COMMAND_LINE
        };
        if let Some(process) = read_process(&p, &proc_dir, limit, &users) {
            budget = budget.saturating_sub(process.command_line.len());
            out.push(process);
        }
    }
    Ok(out)
}

/// Command-line bytes one snapshot carries in full (up to [`MAX_COMMAND_LINE`] each).
const SNAPSHOT_COMMAND_LINES: usize = 4 << 20;
/// Past that budget, each command line is cut at this many bytes.
const SHORT_COMMAND_LINE: usize = 256;

/// One process, its command line cut at `limit` bytes; None for a kernel thread or one gone
/// meanwhile.
fn read_process(
    p: &procfs::process::Process,
    proc_dir: &Path,
    limit: usize,
    users: &HashMap<u32, String>,
) -> Option<Process> {
    let stat = p.stat().ok()?;
    if stat.flags & PF_KTHREAD != 0 {
        return None;
    }
    let user_id = p.uid().ok()?;
    let executable = p
        .exe()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let command_line =
        super::command_line_of(proc_dir, stat.pid as u32, limit).unwrap_or_default();
    let state = state_of(stat.state);
    Some(Process {
        pid: stat.pid as u32,
        parent_pid: stat.ppid as u32,
        user_id,
        user_name: users.get(&user_id).cloned(),
        name: stat.comm,
        executable,
        command_line,
        start_time: stat.starttime,
        state,
        exit_code: if state == State::Zombie {
            stat.exit_code
        } else {
            None
        },
    })
}

/// What the `processes` capability keeps for every plugin: the user names of the host, the
/// proc connector's feed, and how much of each exec could be read.
pub(crate) struct Shared {
    pub(crate) users: Arc<UserNames>,
    pub(crate) feed: feed::Feed<ProcessSource>,
    details: Arc<ExecDetails>,
}

impl Shared {
    pub(crate) fn new(host_root: &Path, options: &super::HostOptions, wake: feed::Wake) -> Shared {
        let users = Arc::new(UserNames::default());
        let details = Arc::new(ExecDetails::default());
        let (root, u, d) = (host_root.to_owned(), Arc::clone(&users), Arc::clone(&details));
        let (kernel_events, kernel_buffer) = (options.kernel_events, options.kernel_buffer);
        let audit = options.audit.kernel_mode();
        let feed = feed::Feed::new("proc connector", options.event_buffer, wake, move || {
            if !kernel_events {
                return Err(super::KERNEL_EVENTS_OFF.to_owned());
            }
            ProcessSource::open(&root, kernel_buffer, audit, Arc::clone(&u), Arc::clone(&d))
        });
        Shared { users, feed, details }
    }

    /// Where `plugin`'s processes come from, if it asked for the events.
    pub(crate) fn status(&self, plugin: &str) -> Option<super::FeedStatus> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let d = &self.details;
        let details = vec![
            ("execFull", load(&d.full)),
            ("execNameOnly", load(&d.name_only)),
            ("execPidOnly", load(&d.pid_only)),
            ("execCompletedFromAudit", load(&d.completed)),
            ("execAuditOnly", load(&d.audit_only)),
            ("auditEventsUnfinished", load(&d.unfinished)),
        ];
        let usage = self.feed.usage(plugin)?;
        let audit = d.audit.get();
        let mut status =
            super::FeedStatus::of(super::Capability::Processes, self.feed.what, usage, details);
        if status.source != "polling" {
            status.notes.push(("audit", audit.describe()));
            if let AuditUse::Reading { role, .. } = audit {
                status.source = match role {
                    audit::Role::Reader => "proc connector + audit records",
                    audit::Role::Daemon => "proc connector + audit records (as the audit daemon)",
                };
            }
        }
        Some(status)
    }
}

/// How much of each exec the reader could see, over all plugins: the measure of the race
/// between a short process and the read of its `/proc` entry, and of what audit records mend.
#[derive(Default)]
pub struct ExecDetails {
    /// Execs handed on in full (executable and command line).
    pub full: AtomicU64,
    /// Execs of processes already exiting: name, parent and user only.
    pub name_only: AtomicU64,
    /// Execs of processes already reaped: pid, parent and the parent's user only.
    pub pid_only: AtomicU64,
    /// Of the full ones, completed from their audit record.
    pub completed: AtomicU64,
    /// Of the full ones, told by their audit record only (the connector lost them).
    pub audit_only: AtomicU64,
    /// Audit events given up before their records ended (too many open at once).
    pub unfinished: AtomicU64,
    /// The audit source's state.
    audit: super::audit_use::Shown,
}

/// The proc connector with each exec completed from `/proc` right away, on the reader thread,
/// before a short process is gone, and from its audit record where that was too late.
pub(crate) struct ProcessSource {
    connector: ProcConnector,
    audit: Option<(audit::Audit, audited::Merge, OwnedFd)>,
    proc: ProcReader,
    host_root: PathBuf,
    users: Arc<UserNames>,
    details: Arc<ExecDetails>,
    raw: Vec<ProcEvent>,
    records: Vec<audit::Exec>,
    /// The audit source's changes told so far.
    audit_changes: u64,
}

impl ProcessSource {
    pub(crate) fn open(
        host_root: &Path,
        kernel_buffer: usize,
        audit_mode: Option<audit::Mode>,
        users: Arc<UserNames>,
        details: Arc<ExecDetails>,
    ) -> Result<ProcessSource, String> {
        let connector = ProcConnector::open(feed::READ_TIMEOUT, kernel_buffer)?;
        let audit = match audit_mode.map(|mode| open_audit(mode, &connector, kernel_buffer)) {
            None => {
                details.audit.set(AuditUse::Off);
                None
            }
            Some(Ok((audit, merge, poller))) => {
                let state = AuditUse::of(&audit);
                tracing::info!("process execs completed from the audit subsystem: {}", state.describe());
                details.audit.set(state);
                Some((audit, merge, poller))
            }
            Some(Err(why)) => {
                tracing::warn!("audit records unavailable, execs from the proc connector alone: {why}");
                details.audit.set(AuditUse::Unavailable(why));
                None
            }
        };
        Ok(ProcessSource {
            connector,
            audit,
            proc: ProcReader {
                proc_dir: host_root.join("proc"),
                parents: HashMap::new(),
            },
            host_root: host_root.to_owned(),
            users,
            details,
            raw: Vec::new(),
            records: Vec::new(),
            audit_changes: 0,
        })
    }

    /// Counts the execs handed on in `out` by how much of each was known.
    fn count(&self, out: &[TracedEvent]) {
        for event in out {
            if let TracedEvent::Exec(e) = event {
                let counter = match e.detail {
                    Detail::Full => &self.details.full,
                    Detail::NameOnly => &self.details.name_only,
                    Detail::PidOnly => &self.details.pid_only,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The connector's events of this round, merged with the audit records where they are read.
    fn connector_events(&mut self, users: &HashMap<u32, String>, out: &mut Vec<TracedEvent>) {
        let now = Instant::now();
        for event in &self.raw {
            match *event {
                ProcEvent::Fork { parent, child } => {
                    let parents = &mut self.proc.parents;
                    if parents.len() >= MAX_PARENTS {
                        parents.clear();
                    }
                    parents.insert(child, parent);
                }
                ProcEvent::Exec { pid } => {
                    let mut look = Looking { proc: &self.proc, users };
                    match &mut self.audit {
                        // Its record is certain to come with all `/proc` would tell.
                        Some((_, merge, _)) if merge.expects_records() => {
                            merge.unread(self.proc.bare(pid, users), now, users, &mut look, out);
                        }
                        Some((_, merge, _)) => {
                            merge.exec(self.proc.exec(pid, users), now, users, &mut look, out);
                        }
                        None => out.push(TracedEvent::Exec(self.proc.exec(pid, users))),
                    }
                }
                ProcEvent::Exit { pid, parent, code } => {
                    let forked_by = self.proc.parents.remove(&pid);
                    let exit = ExitEvent {
                        pid,
                        parent_pid: if parent != 0 {
                            parent
                        } else {
                            forked_by.unwrap_or(0)
                        },
                        exit_code: code,
                    };
                    match &mut self.audit {
                        Some((_, merge, _)) => merge.exit(exit, out),
                        None => out.push(TracedEvent::Exit(exit)),
                    }
                }
            }
        }
    }

    /// The audit records waiting, and what the merge holds that is due; the records the kernel
    /// dropped for us are not lost events (the connector told those execs).
    fn audit_events(&mut self, users: &HashMap<u32, String>, out: &mut Vec<TracedEvent>) -> std::io::Result<()> {
        self.look_after_audit();
        let Some((audit, merge, _)) = &mut self.audit else {
            return Ok(());
        };
        self.records.clear();
        audit.read(&mut self.records)?;
        let now = Instant::now();
        let mut look = Looking { proc: &self.proc, users };
        for record in self.records.drain(..) {
            merge.record(record, now, users, &mut look, out);
        }
        merge.due(now, users, &mut look, out);
        let counts = merge.counts;
        self.details.completed.store(counts.completed, Ordering::Relaxed);
        self.details.audit_only.store(counts.audit_only, Ordering::Relaxed);
        self.details.unfinished.store(audit.unfinished(), Ordering::Relaxed);
        self.publish_audit();
        Ok(())
    }

    /// What others changed in the audit state, mended where edgeguard manages it.
    fn look_after_audit(&mut self) {
        if let Some((audit, _, _)) = &mut self.audit {
            audit.look_after(Instant::now());
        }
        self.publish_audit();
    }

    /// The audit source's changes (its own, or stepping aside for a daemon as it read), told
    /// to the merge and the status.
    fn publish_audit(&mut self) {
        let Some((audit, merge, _)) = &mut self.audit else {
            return;
        };
        if self.details.audit.follow(audit, &mut self.audit_changes) {
            merge.expect_records(audit.rules_added() > 0);
        }
    }
}

/// `/proc` as the reader thread reads it at an exec, and the parents the connector saw fork.
struct ProcReader {
    proc_dir: PathBuf,
    parents: HashMap<u32, u32>,
}

impl ProcReader {
    /// The exec of `pid` as `/proc` shows it now.
    fn exec(&self, pid: u32, users: &HashMap<u32, String>) -> TracedExec {
        let read = procfs::process::Process::new_with_root(self.proc_dir.join(pid.to_string()))
            .ok()
            .and_then(|p| read_process(&p, &self.proc_dir, MAX_COMMAND_LINE, users));
        let (process, detail) = match read {
            // Exiting between the reads leaves some empty (the command line goes with the
            // memory, the executable link with the files): partial, whatever the state said.
            Some(p)
                if p.state == State::Zombie
                    || p.executable.is_empty()
                    || p.command_line.is_empty() =>
            {
                (p, Detail::NameOnly)
            }
            Some(p) => (p, Detail::Full),
            None => {
                // Gone already: its parent (alive, as a rule: it has yet to reap it) lends the
                // user, which a child keeps unless it runs a set-user-id program.
                let parent_pid = self.parents.get(&pid).copied().unwrap_or(0);
                let user_id = std::fs::metadata(self.proc_dir.join(parent_pid.to_string()))
                    .map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m));
                (unread(pid, parent_pid, user_id, users), Detail::PidOnly)
            }
        };
        let sources = match detail {
            Detail::PidOnly => ExecSources::PROC_CONNECTOR,
            _ => ExecSources::PROC_CONNECTOR | ExecSources::PROC_READ,
        };
        traced(process, detail, sources)
    }

    /// The exec of `pid` as the connector alone tells it: the parent that forked it.
    fn bare(&self, pid: u32, users: &HashMap<u32, String>) -> TracedExec {
        let parent_pid = self.parents.get(&pid).copied().unwrap_or(0);
        traced(
            unread(pid, parent_pid, u32::MAX, users),
            Detail::PidOnly,
            ExecSources::PROC_CONNECTOR,
        )
    }

    /// When `pid` started and its state, from `/proc/<pid>/stat` alone; None once it is gone.
    fn started(&self, pid: u32) -> Option<(u64, State)> {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        let mut file = std::fs::File::open(self.proc_dir.join(format!("{pid}/stat"))).ok()?;
        let n = file.read(&mut buf).ok()?;
        stat_start(&buf[..n])
    }
}

/// The start time and state in a `/proc/<pid>/stat` line: the fields after the name, which
/// ends at the line's last `)` (a name may hold any byte).
fn stat_start(line: &[u8]) -> Option<(u64, State)> {
    let after = line.iter().rposition(|b| *b == b')')?;
    let text = std::str::from_utf8(&line[after + 1..]).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 of the line; the state is field 3.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((start_time, state_of(state)))
}

fn state_of(code: char) -> State {
    match code {
        'R' => State::Running,
        'S' => State::Sleeping,
        'D' => State::DiskSleep,
        'T' | 't' => State::Stopped,
        'Z' => State::Zombie,
        'X' | 'x' => State::Dead,
        _ => State::Other,
    }
}

fn traced(process: Process, detail: Detail, sources: ExecSources) -> TracedExec {
    TracedExec {
        process,
        detail,
        sources,
        cwd: None,
        login_user_id: None,
        session: None,
    }
}

/// The reader's `/proc` with the round's user names, as the merge looks at it.
struct Looking<'a> {
    proc: &'a ProcReader,
    users: &'a HashMap<u32, String>,
}

impl audited::Look for Looking<'_> {
    fn exec(&mut self, pid: u32) -> TracedExec {
        self.proc.exec(pid, self.users)
    }

    fn started(&mut self, pid: u32) -> Option<(u64, State)> {
        self.proc.started(pid)
    }
}

/// The audit source beside `connector`, and one descriptor polling readable when either is.
fn open_audit(
    mode: audit::Mode,
    connector: &ProcConnector,
    kernel_buffer: usize,
) -> Result<(audit::Audit, audited::Merge, OwnedFd), String> {
    let audit = audit::Audit::open(mode, audit::Purpose::Execs, kernel_buffer, MAX_COMMAND_LINE)?;
    // SAFETY: a new epoll descriptor, owned at once.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(format!("cannot poll two sockets: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: epoll is a fresh descriptor nobody else owns.
    let poller = unsafe { OwnedFd::from_raw_fd(epoll) };
    for fd in [connector.socket().as_raw_fd(), audit.socket().as_raw_fd()] {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: adding a descriptor we own (through `connector` and `audit`, which live as
        // long as the poller in the same source) to our epoll set.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &raw mut event) } < 0 {
            return Err(format!("cannot poll two sockets: {}", std::io::Error::last_os_error()));
        }
    }
    connector.socket().set_nonblocking();
    // Our rule audits every exec from now: partial execs wait for their records at once.
    let merge = audited::Merge::new(audit.rules_added() > 0);
    Ok((audit, merge, poller))
}

impl feed::Source for ProcessSource {
    type Event = TracedEvent;

    fn bytes(event: &TracedEvent) -> usize {
        let heap = match event {
            TracedEvent::Exec(e) => {
                let p = &e.process;
                p.name.len()
                    + p.executable.len()
                    + p.command_line.len()
                    + p.user_name.as_ref().map_or(0, String::len)
                    + e.cwd.as_ref().map_or(0, String::len)
            }
            TracedEvent::Exit(_) => 0,
        };
        std::mem::size_of::<TracedEvent>() + heap
    }

    fn readiness(&self) -> Option<std::os::fd::RawFd> {
        Some(match &self.audit {
            Some((_, _, poller)) => poller.as_raw_fd(),
            None => self.connector.socket().as_raw_fd(),
        })
    }

    fn wait(&self) -> Duration {
        let due = self.audit.as_ref().and_then(|(_, merge, _)| merge.next_due());
        due.map_or(feed::READ_TIMEOUT, |at| {
            at.saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), feed::READ_TIMEOUT)
        })
    }

    fn gather(&self) -> Duration {
        // Nothing is read at an exec while its record is certain to come (the record tells
        // what `/proc` would): the burst can wait a moment and be read in fewer rounds.
        match &self.audit {
            Some((_, merge, _)) if merge.expects_records() => GATHER,
            _ => Duration::ZERO,
        }
    }

    fn tick(&mut self, out: &mut Vec<TracedEvent>) {
        self.look_after_audit();
        if let Some((_, merge, _)) = &mut self.audit {
            let users = self.users.current(&self.host_root);
            let mut look = Looking { proc: &self.proc, users: &users };
            merge.due(Instant::now(), &users, &mut look, out);
            self.count(out);
        }
    }

    fn next(&mut self, out: &mut Vec<TracedEvent>) -> std::io::Result<u64> {
        let users = self.users.current(&self.host_root);
        let from = out.len();
        self.raw.clear();
        let mut dropped = 0;
        if self.audit.is_none() {
            dropped = self.connector.read(&mut self.raw)?.dropped();
        } else {
            // Both sockets are non-blocking here: what each holds, in bounded rounds.
            for _ in 0..64 {
                match self.connector.read(&mut self.raw)? {
                    Received::Idle => break,
                    received => dropped += received.dropped(),
                }
            }
        }
        self.connector_events(&users, out);
        if let Err(e) = self.audit_events(&users, out) {
            // The connector goes on alone; what waits for records goes out as it is.
            tracing::warn!("the audit source failed ({e}): execs from the proc connector alone");
            if let Some((_, mut merge, _)) = self.audit.take() {
                let mut look = Looking { proc: &self.proc, users: &users };
                merge.due(Instant::now() + Duration::from_secs(3600), &users, &mut look, out);
            }
            self.details
                .audit
                .set(AuditUse::Unavailable(format!("the audit source failed: {e}")));
        }
        self.count(&out[from..]);
        Ok(dropped)
    }
}

/// uid → name, as read from the host's passwd file at a modification time.
struct NamesAt {
    modified: SystemTime,
    /// When the file's time was last looked at.
    checked: Instant,
    names: Arc<HashMap<u32, String>>,
}

/// How long names are taken as current without looking at the file: the reader thread asks
/// at every round, many a second in a burst.
const NAMES_CHECKED_EVERY: Duration = Duration::from_secs(1);

/// uid → name from the host's passwd file, re-read when the file changes.
#[derive(Default)]
pub(crate) struct UserNames {
    cached: Mutex<Option<NamesAt>>,
}

impl UserNames {
    fn current(&self, host_root: &Path) -> Arc<HashMap<u32, String>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(at) = cached.as_ref()
            && now.duration_since(at.checked) < NAMES_CHECKED_EVERY
        {
            return Arc::clone(&at.names);
        }
        let path = host_root.join("etc/passwd");
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            return Arc::default();
        };
        if let Some(at) = cached.as_mut()
            && at.modified == modified
        {
            at.checked = now;
            return Arc::clone(&at.names);
        }
        let names: HashMap<u32, String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let uid = fields.nth(1)?.parse().ok()?;
                Some((uid, name.to_owned()))
            })
            .collect();
        let names = Arc::new(names);
        *cached = Some(NamesAt {
            modified,
            checked: now,
            names: Arc::clone(&names),
        });
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_after_the_last_parenthesis_of_the_name() {
        let line = b"42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(stat_start(line), Some((987_654, State::Sleeping)));
        assert_eq!(stat_start(b"42 (cut"), None);
        assert_eq!(stat_start(b"42 (short) Z 1 2"), None);
    }

    #[test]
    fn the_start_time_of_a_running_process_is_the_one_proc_reads() {
        let reader = ProcReader {
            proc_dir: PathBuf::from("/proc"),
            parents: HashMap::new(),
        };
        let me = std::process::id();
        let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
        assert_eq!(
            reader.started(me).map(|(start, _)| start),
            Some(stat.starttime)
        );
        assert_eq!(reader.started(u32::MAX), None, "no such process");
    }
}
