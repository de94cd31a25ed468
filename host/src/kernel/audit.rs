//! The kernel's audit subsystem (`linux/audit.h`) as a source of execs with their whole
//! command line: the `EXECVE` record carries every argument as the kernel copied it, however
//! short the process lived, where `/proc/<pid>/cmdline` is gone with the process. Read for
//! [`Purpose::Connections`], it tells the TCP and UDP connections processes make (`connect`)
//! and take (`accept`), with the process, even of one opened and closed in a moment.
//!
//! edgeguard reads beside an auditd the operator runs, never instead of it: it joins the
//! readers' multicast group (kernel 3.16 and later, `CAP_AUDIT_READ`), which the kernel feeds
//! whatever the registered daemon does with the same records. With [`Manage`] it may also
//! change the kernel's audit state, and undoes each change when dropped:
//!
//! - it **appends** one rule to the exit list, `-a always,exit -S execve,execveat` per
//!   architecture with the key `edgeguard:<pid>`, unless a rule of someone else's already
//!   audits every execve. An operator's rules are never touched, and being appended, theirs
//!   (a `never` rule among them) decide first. Rules a killed edgeguard left are removed.
//!   For connections the rules are `-a always,exit -S connect,accept,accept4 -F
//!   saddr_fam=<inet|inet6>` (the key `edgeguard:<pid>:connections`): an address family
//!   filter keeps the host's many local (`AF_UNIX`) connects out, where the kernel has it
//!   (5.9 and later; before, one rule per architecture and the family is judged here).
//! - it enables auditing when it is off, and turns it off again on exit unless another
//!   edgeguard still has a rule in.
//! - where no audit daemon is registered, it registers itself as the daemon: the kernel would
//!   otherwise print every record to its own log. It leaves the place free on exit.
//!
//! The operator's daemon comes first. Standing in, edgeguard gives the place up as soon as an
//! audit daemon starts (its exec record names it) or asks for the place (the kernel's
//! `AUDIT_REPLACE`; auditd exits when refused, and systemd restarts it), and reads beside it
//! from then on. Every two seconds it looks after what it set up: its rule back when someone
//! deleted every rule (`auditctl -D`, as auditd's rules files begin), auditing back on (auditd
//! turns it off when it stops), and the daemon's place taken again when it has been free for
//! ten seconds (a restarting daemon takes it back first).
//!
//! [`Manage`]: Mode::Manage

use super::netlink::{self, Netlink, u32_at};
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_ADD_RULE: u16 = 1011;
const AUDIT_DEL_RULE: u16 = 1012;
const AUDIT_LIST_RULES: u16 = 1013;
const AUDIT_SYSCALL: u16 = 1300;
const AUDIT_SOCKADDR: u16 = 1306;
const AUDIT_CWD: u16 = 1307;
const AUDIT_EXECVE: u16 = 1309;
const AUDIT_EOE: u16 = 1320;
const AUDIT_PROCTITLE: u16 = 1327;
/// The kernel tells the daemon that another process asks for its place (payload: its pid).
const AUDIT_REPLACE: u16 = 1329;

const AUDIT_STATUS_ENABLED: u32 = 0x1;
const AUDIT_STATUS_PID: u32 = 0x4;
const AUDIT_STATUS_BACKLOG_LIMIT: u32 = 0x10;
const AUDIT_STATUS_BACKLOG_WAIT_TIME: u32 = 0x20;
/// The backlog edgeguard asks for as the daemon, as the ASC agents' audit rules did (`-b 8192`).
const DAEMON_BACKLOG: u32 = 8192;
/// The readers' multicast group.
const AUDIT_NLGRP_READLOG: u32 = 1;

const AUDIT_FILTER_EXIT: u32 = 0x04;
const AUDIT_FILTER_MASK: u32 = 0x07;
const AUDIT_ALWAYS: u32 = 2;
const AUDIT_ARCH: u32 = 11;
const AUDIT_FILTERKEY: u32 = 210;
/// The address family of the call's socket address (kernel 5.9 and later).
const AUDIT_SADDR_FAM: u32 = 113;
const AUDIT_EQUAL: u32 = 0x4000_0000;
const AUDIT_MAX_FIELDS: usize = 64;
const AUDIT_BITMASK_SIZE: usize = 64;
/// `flags`, `action`, `field_count`, `mask`, `fields`, `values`, `fieldflags`, `buflen`.
const RULE_DATA: usize = 4 * (3 + AUDIT_BITMASK_SIZE + 3 * AUDIT_MAX_FIELDS + 1);

/// The key of edgeguard's rules, before the pid of the edgeguard that added them.
pub const KEY_PREFIX: &str = "edgeguard:";
/// How long the kernel has to answer a request.
const ANSWER_WAIT: Duration = Duration::from_millis(500);
/// Events whose records are being gathered, at most: the kernel ends each with `EOE` right
/// after its others, so only records of other rules' events (never ended by ours) pile up.
const MAX_OPEN_EVENTS: usize = 256;
/// How often [`Mode::Manage`] looks after what it set up.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How long the daemon's place stays free before edgeguard takes it again: a daemon that
/// restarts (systemd's `Restart=on-failure` waits 100 ms) is back well within it.
const DAEMON_GRACE: Duration = Duration::from_secs(10);
/// Programs that register as the audit daemon: edgeguard steps aside when one starts.
const AUDIT_DAEMONS: &[&str] = &["auditd", "auditbeat", "go-audit", "osqueryd"];

/// Readers open in this process (one per purpose): auditing this process turned on is turned
/// off again by the last.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static ENABLED_BY_US: AtomicBool = AtomicBool::new(false);

/// How far edgeguard may go with the audit subsystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read the records others' rules make; change nothing.
    Follow,
    /// Also see that execs are audited, and keep them out of the kernel's log: see the module.
    Manage,
}

/// How the records reach us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A member of the readers' group, beside the registered daemon (or none).
    Reader,
    /// The registered audit daemon: no other was, and [`Mode::Manage`] allowed it.
    Daemon,
}

/// What the records are read for: each [`Audit`] assembles only its own, and in
/// [`Mode::Manage`] keeps only its own rules in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Programs started, with their whole command line.
    Execs,
    /// IPv4 and IPv6 connections made (`connect`) and taken (`accept`, `accept4`).
    Connections,
}

/// One program started, as the audit records of its `execve` tell it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exec {
    /// The event's serial number, unique since boot.
    pub serial: u64,
    /// When, in milliseconds since the epoch.
    pub time_ms: u64,
    /// The process (thread group) id.
    pub pid: u32,
    /// Its parent's.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// The login user id (4294967295: none).
    pub auid: u32,
    /// The login session (4294967295: none).
    pub session: u32,
    /// The kernel's short name of the program.
    pub comm: String,
    /// The executable.
    pub executable: String,
    /// The working directory.
    pub cwd: String,
    /// The arguments joined by spaces, cut at the limit given to [`Audit::open`] (then ending
    /// in ` …`).
    pub command_line: String,
}

/// A connection a process made or took, as the audit records of its system call tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The event's serial number, unique since boot.
    pub serial: u64,
    /// When, in milliseconds since the epoch.
    pub time_ms: u64,
    /// The process (thread group) id.
    pub pid: u32,
    /// Real user id.
    pub uid: u32,
    /// The login user id (4294967295: none).
    pub auid: u32,
    /// The kernel's short name of the program.
    pub comm: String,
    /// The executable.
    pub executable: String,
    /// Taken (`accept`): the peer connected to this host; else made (`connect`).
    pub inbound: bool,
    /// The peer's address and port.
    pub remote: std::net::SocketAddr,
    /// A non-blocking `connect`: the handshake had begun, not ended, when the call returned.
    pub in_progress: bool,
    /// The socket's descriptor in the process (`connect`'s first argument, `accept`'s
    /// result); None through `socketcall`, which passes its arguments in memory.
    pub fd: Option<u32>,
    /// The process's title as the kernel kept it: its command line, at most 128 bytes.
    pub title: String,
}

/// The kernel's audit state, as `AUDIT_GET` tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// 0 off, 1 on, 2 on and locked.
    pub enabled: u32,
    /// The registered daemon's pid; 0 when none is.
    pub pid: u32,
    /// Records the kernel lost since boot.
    pub lost: u32,
    /// Records waiting for the daemon.
    pub backlog: u32,
    /// Records that may wait, at most.
    pub backlog_limit: u32,
    /// How long a process making a record waits when the backlog is full, in ticks.
    pub backlog_wait_time: u32,
}

/// The audit subsystem, read for execs or connections.
pub struct Audit {
    purpose: Purpose,
    /// Records arrive here: as a reader's multicast or the daemon's unicast.
    records: Netlink,
    /// Requests and their answers, apart from the records.
    control: Netlink,
    mode: Mode,
    role: Role,
    /// The key of the rules this edgeguard adds.
    key: String,
    /// Rules we added, as sent: deleting one takes the same bytes.
    added: Vec<Vec<u8>>,
    /// The backlog settings before we changed them as the daemon, and ours.
    backlog_before: Option<(Status, Status)>,
    /// Records from before we opened (a daemon is handed the kernel's backlog) are old news.
    since_ms: u64,
    drops_seen: u64,
    buf: Vec<u8>,
    assembler: Assembler,
    seq: u32,
    /// When [`Mode::Manage`] looks after its setup next.
    next_look: Instant,
    /// Since when the daemon's place has been free while we read beside it.
    free_since: Option<Instant>,
    /// The last change of role or rules after opening, and why: for the status.
    last_change: Option<String>,
    changes: u64,
}

impl Audit {
    /// Opens the audit subsystem for the records of `purpose`; the error says why it cannot be
    /// read here in words an operator can act on. Command lines are cut at `max_command_line`
    /// bytes.
    pub fn open(
        mode: Mode,
        purpose: Purpose,
        receive_buffer: usize,
        max_command_line: usize,
    ) -> Result<Audit, String> {
        let socket = || {
            Netlink::open(libc::NETLINK_AUDIT).map_err(|e| match e.raw_os_error() {
                Some(libc::EPROTONOSUPPORT) => {
                    "this kernel has no audit subsystem (CONFIG_AUDIT)".to_owned()
                }
                _ => format!("cannot open an audit socket: {e}"),
            })
        };
        let (records, control) = (socket()?, socket()?);
        records
            .bind(0)
            .map_err(|e| format!("cannot bind an audit socket: {e}"))?;
        records.set_receive_buffer(receive_buffer);
        let key = match purpose {
            Purpose::Execs => format!("{KEY_PREFIX}{}", std::process::id()),
            Purpose::Connections => format!("{KEY_PREFIX}{}:connections", std::process::id()),
        };
        let mut audit = Audit {
            purpose,
            records,
            control,
            mode,
            role: Role::Reader,
            key,
            added: Vec::new(),
            backlog_before: None,
            since_ms: now_ms().saturating_sub(1000),
            drops_seen: 0,
            buf: vec![0; 64 << 10],
            assembler: Assembler::new(purpose, max_command_line),
            seq: 0,
            next_look: Instant::now() + LOOK_EVERY,
            free_since: None,
            last_change: None,
            changes: 0,
        };
        // Counted from here: dropped on an error below, it undoes what it did so far.
        OPEN.fetch_add(1, Ordering::Relaxed);
        let status = audit.status().map_err(|e| match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => "the audit subsystem answers only in the host's network namespace (run with the host network)".to_owned(),
            Some(libc::EPERM) => "the kernel refuses the audit status without CAP_AUDIT_CONTROL or CAP_AUDIT_READ".to_owned(),
            _ => format!("cannot read the audit status: {e}"),
        })?;
        if mode == Mode::Manage {
            let rules = audit
                .rules()
                .map_err(|e| format!("cannot list the audit rules: {e}"))?;
            for stale in rules.iter().filter(|r| r.stale()) {
                let _ = audit.ask(AUDIT_DEL_RULE, &stale.bytes, None);
            }
            audit.cover(&rules, status, false)?;
            audit
                .enable(status)
                .map_err(|e| format!("cannot enable auditing: {e}"))?;
            if status.pid == 0 {
                audit.register(status);
            }
        }
        if audit.role == Role::Reader {
            audit.read_beside()?;
        }
        audit.records.set_nonblocking();
        audit.drops_seen = audit.records.drops().unwrap_or(0);
        Ok(audit)
    }

    /// What the records are read for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// How the records reach us.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The rules this reader added (none unless [`Mode::Manage`] found its calls unaudited).
    pub fn rules_added(&self) -> usize {
        self.added.len()
    }

    /// The last change [`Mode::Manage`] made after opening, and why.
    pub fn last_change(&self) -> Option<&str> {
        self.last_change.as_deref()
    }

    /// Events given up unfinished, their records never ended (at most [`MAX_OPEN_EVENTS`] wait).
    pub fn unfinished(&self) -> u64 {
        self.assembler.evicted
    }

    /// The socket records arrive on (it polls readable while some wait).
    pub fn socket(&self) -> &Netlink {
        &self.records
    }

    /// The kernel's audit state.
    pub fn status(&mut self) -> io::Result<Status> {
        let answer = self.ask(AUDIT_GET, &[], Some(AUDIT_GET))?;
        let field = |i: usize| u32_at(&answer, i * 4).unwrap_or(0);
        Ok(Status {
            enabled: field(1),
            pid: field(3),
            lost: field(6),
            backlog: field(7),
            backlog_limit: field(5),
            backlog_wait_time: field(9),
        })
    }

    /// Takes in what waits, without blocking: execs to `out`, the records the kernel dropped
    /// for us as the count returned.
    pub fn read(&mut self, out: &mut Vec<Exec>) -> io::Result<u64> {
        let from = out.len();
        let dropped = self.receive(&mut |event| {
            if let Assembled::Exec(exec) = event {
                out.push(exec);
            }
        })?;
        if self.role == Role::Daemon
            && let Some(daemon) = out[from..]
                .iter()
                .find(|e| AUDIT_DAEMONS.contains(&e.comm.as_str()))
        {
            // It will ask for the place in a moment: it is free by then.
            let why = format!("{} (pid {}) started", daemon.executable, daemon.pid);
            self.step_aside(&why);
        }
        Ok(dropped)
    }

    /// [`Audit::read`] for [`Purpose::Connections`]: connections to `out`.
    pub fn read_connections(&mut self, out: &mut Vec<Connection>) -> io::Result<u64> {
        self.receive(&mut |event| {
            if let Assembled::Connection(connection) = event {
                out.push(connection);
            }
        })
    }

    /// One bounded round of datagrams into `out`, and the events given up waiting for their end.
    fn receive(&mut self, out: &mut dyn FnMut(Assembled)) -> io::Result<u64> {
        let mut dropped = 0;
        // A bounded round, so a flood cannot keep the caller from its other source.
        for _ in 0..64 {
            let n = match self.records.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    let total = self.records.drops().unwrap_or(self.drops_seen + 1);
                    dropped += total.saturating_sub(self.drops_seen).max(1);
                    self.drops_seen = total.max(self.drops_seen + 1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((kind, payload)) = record_of(&self.buf[..n]) else {
                continue;
            };
            if kind == AUDIT_REPLACE {
                // Binary, not text: the pid of the process that asks for the place.
                let pid = u32_at(&self.buf[..n], netlink::NLMSG_HDR).unwrap_or(0);
                if self.role == Role::Daemon && pid != std::process::id() {
                    self.step_aside(&format!("process {pid} asked for the audit daemon's place"));
                }
                continue;
            }
            if let Some(event) = self.assembler.record(kind, payload)
                && event.time_ms() >= self.since_ms
            {
                out(event);
            }
        }
        self.assembler.stale(now_ms()).into_iter().for_each(out);
        Ok(dropped)
    }

    /// In [`Mode::Manage`], at most every [`LOOK_EVERY`]: what others changed since, mended
    /// (see the module); [`Audit::changes`] counts what it did.
    pub fn look_after(&mut self, now: Instant) {
        if self.mode != Mode::Manage || now < self.next_look {
            return;
        }
        self.next_look = now + LOOK_EVERY;
        let Ok(status) = self.status() else {
            return;
        };
        if self.role == Role::Daemon && status.pid != std::process::id() {
            // The kernel lets a daemon go when it cannot send to it.
            self.become_reader(&format!(
                "the kernel replaced edgeguard as the audit daemon (now pid {})",
                status.pid
            ));
        }
        match self.rules() {
            Ok(rules) => {
                if let Err(e) = self.cover(&rules, status, true) {
                    tracing::warn!("{} are no longer audited: {e}", self.purpose.what());
                }
            }
            Err(e) => tracing::warn!("cannot list the audit rules: {e}"),
        }
        if let Err(e) = self.enable(status) {
            tracing::warn!("cannot enable auditing again: {e}");
        }
        match (self.role, status.pid) {
            (Role::Reader, 0) => {
                let since = *self.free_since.get_or_insert(now);
                if now.duration_since(since) >= DAEMON_GRACE && self.register(status) {
                    self.free_since = None;
                    self.changed("the audit daemon's place was free: edgeguard took it again");
                }
            }
            _ => self.free_since = None,
        }
    }

    fn changed(&mut self, why: &str) {
        tracing::info!("audit source: {why}");
        self.last_change = Some(why.to_owned());
        self.changes += 1;
    }

    /// How many changes [`Mode::Manage`] made after opening.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Adds our rules unless ours are still in or (for execs) one in `rules` of someone
    /// else's audits every execve; ours are dropped from `added` when someone deleted them.
    fn cover(&mut self, rules: &[Rule], status: Status, again: bool) -> Result<(), String> {
        let arches = native_arches();
        let ours_in = rules.iter().any(|r| r.key == self.key);
        if !ours_in && !self.added.is_empty() {
            self.added.clear();
            self.changed(&format!(
                "someone deleted edgeguard's audit rules for {}",
                self.purpose.what()
            ));
        }
        let theirs = self.purpose == Purpose::Execs
            && rules
                .iter()
                .any(|r| !r.ours() && r.audits_every_exec(arches[0]));
        if ours_in || theirs {
            return Ok(());
        }
        if status.enabled == 2 {
            return Err(match self.purpose {
                Purpose::Execs => "the audit rules are locked (enabled = 2) and none audits execve: add `-a always,exit -F arch=b64 -S execve,execveat` at boot",
                Purpose::Connections => "the audit rules are locked (enabled = 2): add `-a always,exit -F arch=b64 -S connect,accept,accept4` at boot",
            }.to_owned());
        }
        match self.purpose {
            Purpose::Execs => {
                for arch in arches {
                    let rule = exec_rule(*arch, &self.key);
                    self.add(rule, arch)?;
                }
            }
            Purpose::Connections => self.cover_connections(arches)?,
        }
        if again {
            self.changed(&format!(
                "no rule audited {} any more: edgeguard added its own again",
                self.purpose.what()
            ));
        }
        Ok(())
    }

    /// One rule per architecture and address family; one per architecture where the kernel
    /// has no family filter (it refuses the field), the family then judged from the record.
    fn cover_connections(&mut self, arches: &[Arch]) -> Result<(), String> {
        let mut families: &[u32] = &[libc::AF_INET as u32, libc::AF_INET6 as u32];
        for arch in arches {
            for (i, family) in families.iter().enumerate() {
                let rule = connection_rule(*arch, Some(*family), &self.key);
                match self.ask(AUDIT_ADD_RULE, &rule, None) {
                    Ok(_) => self.added.push(rule),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) && i == 0 => {
                        tracing::info!(
                            "the kernel has no audit filter by address family: every connect is audited, local ones left out here"
                        );
                        families = &[];
                        break;
                    }
                    Err(e) => return Err(rule_error(arch, &e)),
                }
            }
            if families.is_empty() {
                self.add(connection_rule(*arch, None, &self.key), arch)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, rule: Vec<u8>, arch: &Arch) -> Result<(), String> {
        self.ask(AUDIT_ADD_RULE, &rule, None)
            .map_err(|e| rule_error(arch, &e))?;
        self.added.push(rule);
        Ok(())
    }

    /// Turns auditing on when it is off.
    fn enable(&mut self, status: Status) -> io::Result<()> {
        if status.enabled == 0 {
            self.set(
                AUDIT_STATUS_ENABLED,
                Status {
                    enabled: 1,
                    ..status
                },
            )?;
            ENABLED_BY_US.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Takes the free daemon's place: true when the kernel gave it.
    fn register(&mut self, status: Status) -> bool {
        // Registered from the records socket: the kernel sends to the port that asked (the few
        // records multicast to it meanwhile are skipped; the connector tells their execs).
        let me = Status {
            pid: std::process::id(),
            ..status
        };
        self.seq += 1;
        let payload = set(AUDIT_STATUS_PID, me);
        match converse(
            &self.records,
            &mut self.buf,
            AUDIT_SET,
            &payload,
            self.seq,
            None,
        ) {
            Ok(()) => {}
            // Another took the place meanwhile: read beside it.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return false,
            Err(e) => {
                tracing::warn!(
                    "cannot register as the audit daemon ({e}): the kernel will log audit records"
                );
                return false;
            }
        }
        self.role = Role::Daemon;
        // The daemon is the one receiver: as a reader too, each record would come twice.
        let _ = leave(&self.records, AUDIT_NLGRP_READLOG);
        // A daemon that falls behind makes every process that execs wait for it, a minute by
        // default: records past the backlog are lost instead (the connector still tells
        // those execs), and the backlog holds a burst.
        let ours = Status {
            backlog_limit: status.backlog_limit.max(DAEMON_BACKLOG),
            backlog_wait_time: 0,
            ..status
        };
        match self.set(
            AUDIT_STATUS_BACKLOG_LIMIT | AUDIT_STATUS_BACKLOG_WAIT_TIME,
            ours,
        ) {
            Ok(()) => self.backlog_before = Some((status, ours)),
            Err(e) => tracing::warn!("cannot set the audit backlog as the daemon: {e}"),
        }
        true
    }

    /// Gives the daemon's place up (undoing what taking it changed) and reads beside whoever
    /// takes it.
    fn step_aside(&mut self, why: &str) {
        self.give_up_daemon();
        self.become_reader(&format!(
            "{why}: edgeguard gave it the audit daemon's place"
        ));
    }

    fn give_up_daemon(&mut self) {
        if let Some((before, ours)) = self.backlog_before.take() {
            // Unless someone set their own meanwhile.
            if self.status().is_ok_and(|now| {
                (now.backlog_limit, now.backlog_wait_time)
                    == (ours.backlog_limit, ours.backlog_wait_time)
            }) {
                let _ = self.set(
                    AUDIT_STATUS_BACKLOG_LIMIT | AUDIT_STATUS_BACKLOG_WAIT_TIME,
                    before,
                );
            }
        }
        if self.role == Role::Daemon {
            // The kernel knows its daemon by pid here, not by port: asked on the control
            // socket, no record arriving on the other is skipped.
            let _ = self.set(AUDIT_STATUS_PID, Status::default());
        }
    }

    fn become_reader(&mut self, why: &str) {
        self.role = Role::Reader;
        self.free_since = None;
        match self.read_beside() {
            Ok(()) => self.changed(why),
            Err(e) => self.changed(&format!("{why}; {e}")),
        }
    }

    /// Joins the readers' group.
    fn read_beside(&self) -> Result<(), String> {
        join(&self.records, AUDIT_NLGRP_READLOG).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => {
                "the kernel lets only holders of CAP_AUDIT_READ read audit records".to_owned()
            }
            Some(libc::EINVAL | libc::ENOPROTOOPT) => {
                "this kernel has no audit readers' group (before 3.16)".to_owned()
            }
            _ => format!("cannot join the audit readers' group: {e}"),
        })
    }

    /// Every rule loaded, as listed by the kernel.
    fn rules(&mut self) -> io::Result<Vec<Rule>> {
        let mut rules = Vec::new();
        self.ask_control(
            AUDIT_LIST_RULES,
            &[],
            Some(&mut |kind, body| match kind {
                AUDIT_LIST_RULES => {
                    rules.extend(Rule::parse(body));
                    false
                }
                kind => kind == netlink::NLMSG_DONE,
            }),
        )?;
        Ok(rules)
    }

    fn set(&mut self, mask: u32, values: Status) -> io::Result<()> {
        self.ask(AUDIT_SET, &set(mask, values), None).map(drop)
    }

    /// Sends a request on the control socket: the answer of type `answer`, or the
    /// acknowledgement's empty payload when `answer` is None.
    fn ask(&mut self, kind: u16, payload: &[u8], answer: Option<u16>) -> io::Result<Vec<u8>> {
        let mut reply = Vec::new();
        let mut take = |got: u16, body: &[u8]| {
            let ours = Some(got) == answer;
            if ours {
                reply = body.to_vec();
            }
            ours
        };
        self.ask_control(kind, payload, answer.map(|_| &mut take as Answer))?;
        Ok(reply)
    }

    fn ask_control(&mut self, kind: u16, payload: &[u8], answer: Option<Answer>) -> io::Result<()> {
        self.seq += 1;
        let mut buf = vec![0; 64 << 10];
        converse(&self.control, &mut buf, kind, payload, self.seq, answer)
    }
}

impl Purpose {
    fn what(self) -> &'static str {
        match self {
            Purpose::Execs => "execs",
            Purpose::Connections => "connections",
        }
    }
}

fn rule_error(arch: &Arch, e: &io::Error) -> String {
    format!("cannot add an audit rule (arch {:#x}): {e}", arch.arch)
}

impl Drop for Audit {
    /// Undoes what [`Mode::Manage`] did, in reverse.
    fn drop(&mut self) {
        self.give_up_daemon();
        for rule in std::mem::take(&mut self.added) {
            let _ = self.ask(AUDIT_DEL_RULE, &rule, None);
        }
        // The last reader of this process decides: another still reads on.
        let last = OPEN.fetch_sub(1, Ordering::Relaxed) == 1;
        if last && ENABLED_BY_US.swap(false, Ordering::Relaxed) {
            // Left on for whoever relies on it now: another daemon, or anyone's rules.
            let others = self.status().map_or(true, |s| s.pid != 0)
                || self
                    .rules()
                    .map_or(true, |rules| rules.iter().any(|r| !r.stale()));
            if !others {
                let _ = self.set(AUDIT_STATUS_ENABLED, Status::default());
            }
        }
    }
}

/// The one record of a datagram from the audit subsystem. Its header's length counts the
/// text only, not the header (a quirk auditd's library compensates for too): the text is the
/// rest of the datagram, up to a terminating NUL.
fn record_of(datagram: &[u8]) -> Option<(u16, &[u8])> {
    let kind = u16::from_ne_bytes(datagram.get(4..6)?.try_into().ok()?);
    let text = datagram.get(netlink::NLMSG_HDR..)?;
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    Some((kind, &text[..end]))
}

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// What takes an answer's messages in, one by one: true when it has the whole answer.
type Answer<'a> = &'a mut dyn FnMut(u16, &[u8]) -> bool;

/// One request on `socket`: done at its acknowledgement, or with `answer`, when it has the
/// whole answer (the kernel may acknowledge before it answers). Records arriving meanwhile on
/// the records socket are skipped.
fn converse(
    socket: &Netlink,
    buf: &mut [u8],
    kind: u16,
    payload: &[u8],
    seq: u32,
    mut answer: Option<Answer>,
) -> io::Result<()> {
    socket.send(&netlink::request(
        kind,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        payload,
    ))?;
    let deadline = Instant::now() + ANSWER_WAIT;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if !poll_readable(socket, left) {
            break;
        }
        let n = match socket.recv(buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
            Err(e) => return Err(e),
        };
        for message in netlink::messages(&buf[..n]) {
            let Ok((got, body)) = message else { continue };
            // An acknowledgement quotes the request's header: its sequence number tells ours.
            if got == netlink::NLMSG_ERROR && u32_at(body, 12) == Some(seq) {
                let errno = netlink::error_of(body);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                if answer.is_none() {
                    return Ok(());
                }
            } else if let Some(take) = answer.as_mut()
                && take(got, body)
            {
                return Ok(());
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the kernel did not answer the audit request",
    ))
}

fn poll_readable(socket: &Netlink, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one pollfd we own, on a descriptor we own.
    unsafe { libc::poll(&raw mut poll, 1, millis) > 0 }
}

/// Joins a multicast group of a bound netlink socket.
fn join(socket: &Netlink, group: u32) -> io::Result<()> {
    membership(socket, libc::NETLINK_ADD_MEMBERSHIP, group)
}

/// Leaves a multicast group.
fn leave(socket: &Netlink, group: u32) -> io::Result<()> {
    membership(socket, libc::NETLINK_DROP_MEMBERSHIP, group)
}

fn membership(socket: &Netlink, option: libc::c_int, group: u32) -> io::Result<()> {
    // SAFETY: an int option on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_NETLINK,
            option,
            (&raw const group).cast(),
            std::mem::size_of::<u32>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An `audit_status` setting the fields of `mask` to `values`'.
fn set(mask: u32, values: Status) -> Vec<u8> {
    let mut s = [0u32; 10];
    s[0] = mask;
    s[1] = values.enabled;
    s[3] = values.pid;
    s[5] = values.backlog_limit;
    s[9] = values.backlog_wait_time;
    s.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// An architecture and its numbers for the system calls read.
#[derive(Clone, Copy, Debug)]
struct Arch {
    arch: u32,
    execve: u32,
    execveat: u32,
    connect: u32,
    /// i386 has `accept4` alone (and `socketcall`, as programs built before 4.3 call it).
    accept: Option<u32>,
    accept4: u32,
    socketcall: Option<u32>,
}

const X86_64: Arch = Arch {
    arch: 0xc000_003e,
    execve: 59,
    execveat: 322,
    connect: 42,
    accept: Some(43),
    accept4: 288,
    socketcall: None,
};
const I386: Arch = Arch {
    arch: 0x4000_0003,
    execve: 11,
    execveat: 358,
    connect: 362,
    accept: None,
    accept4: 364,
    socketcall: Some(102),
};
const AARCH64: Arch = Arch {
    arch: 0xc000_00b7,
    execve: 221,
    execveat: 281,
    connect: 203,
    accept: Some(202),
    accept4: 242,
    socketcall: None,
};
const ARM: Arch = Arch {
    arch: 0x4000_0028,
    execve: 11,
    execveat: 387,
    connect: 283,
    accept: Some(285),
    accept4: 366,
    socketcall: None,
};

/// `socketcall`'s first argument for the calls read (`linux/net.h`).
const SYS_CONNECT: u64 = 3;
const SYS_ACCEPT: u64 = 5;
const SYS_ACCEPT4: u64 = 18;

/// A system call the records may be about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Call {
    #[default]
    Exec,
    Connect,
    Accept,
}

impl Arch {
    /// What `nr` (with its first argument, for `socketcall`) is on this architecture.
    fn call(&self, nr: u32, a0: Option<u64>) -> Option<Call> {
        match nr {
            _ if nr == self.execve || nr == self.execveat => Some(Call::Exec),
            _ if nr == self.connect => Some(Call::Connect),
            _ if Some(nr) == self.accept || nr == self.accept4 => Some(Call::Accept),
            _ if Some(nr) == self.socketcall => match a0? {
                SYS_CONNECT => Some(Call::Connect),
                SYS_ACCEPT | SYS_ACCEPT4 => Some(Call::Accept),
                _ => None,
            },
            _ => None,
        }
    }
}

/// This machine's architectures, its native one first: a 64-bit kernel runs 32-bit programs
/// too, whose system calls are numbered apart and need a rule of their own.
fn native_arches() -> &'static [Arch] {
    if cfg!(target_arch = "x86_64") {
        &[X86_64, I386]
    } else if cfg!(target_arch = "aarch64") {
        &[AARCH64, ARM]
    } else if cfg!(target_arch = "arm") {
        &[ARM]
    } else {
        &[I386]
    }
}

/// `-a always,exit -F arch=<arch> -S execve,execveat -k <key>` as `audit_rule_data`.
fn exec_rule(arch: Arch, key: &str) -> Vec<u8> {
    exit_rule(arch, &[arch.execve, arch.execveat], None, key)
}

/// `-a always,exit -F arch=<arch> -S connect,accept,accept4 [-F saddr_fam=<family>] -k <key>`
/// (`socketcall` too on i386).
fn connection_rule(arch: Arch, family: Option<u32>, key: &str) -> Vec<u8> {
    let calls: Vec<u32> = [
        Some(arch.connect),
        arch.accept,
        Some(arch.accept4),
        arch.socketcall,
    ]
    .into_iter()
    .flatten()
    .collect();
    exit_rule(arch, &calls, family.map(|f| (AUDIT_SADDR_FAM, f)), key)
}

/// An exit-list `always` rule for `calls` of `arch`, with one more `field = value` if given.
fn exit_rule(arch: Arch, calls: &[u32], field: Option<(u32, u32)>, key: &str) -> Vec<u8> {
    let mut words = vec![0u32; RULE_DATA / 4];
    words[0] = AUDIT_FILTER_EXIT;
    words[1] = AUDIT_ALWAYS;
    let mask = 3;
    for nr in calls {
        words[mask + (nr / 32) as usize] |= 1 << (nr % 32);
    }
    let (fields, values, flags) = (
        mask + AUDIT_BITMASK_SIZE,
        mask + AUDIT_BITMASK_SIZE + AUDIT_MAX_FIELDS,
        mask + AUDIT_BITMASK_SIZE + 2 * AUDIT_MAX_FIELDS,
    );
    let mut set = |i: usize, field: u32, value: u32| {
        words[fields + i] = field;
        words[values + i] = value;
        words[flags + i] = AUDIT_EQUAL;
    };
    set(0, AUDIT_ARCH, arch.arch);
    let mut count = 1;
    if let Some((field, value)) = field {
        set(count, field, value);
        count += 1;
    }
    set(count, AUDIT_FILTERKEY, key.len() as u32);
    words[2] = count as u32 + 1;
    words[RULE_DATA / 4 - 1] = key.len() as u32;
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// A rule as the kernel lists it: what we need to judge it.
struct Rule {
    bytes: Vec<u8>,
    list: u32,
    action: u32,
    mask: Vec<u32>,
    /// Fields other than the architecture and the key: conditions narrowing the rule.
    conditions: usize,
    arch: Option<u32>,
    key: String,
}

impl Rule {
    fn parse(payload: &[u8]) -> Option<Rule> {
        let word = |i: usize| u32_at(payload, i * 4);
        let count = (word(2)? as usize).min(AUDIT_MAX_FIELDS);
        let mask: Vec<u32> = (0..AUDIT_BITMASK_SIZE)
            .map(|i| word(3 + i).unwrap_or(0))
            .collect();
        let fields = 3 + AUDIT_BITMASK_SIZE;
        let values = fields + AUDIT_MAX_FIELDS;
        let (mut conditions, mut arch, mut key) = (0, None, String::new());
        // String fields' values are their lengths, in order, in `buf`.
        let mut at = RULE_DATA;
        for i in 0..count {
            let (field, value) = (word(fields + i)?, word(values + i)?);
            match field {
                AUDIT_ARCH => arch = Some(value),
                AUDIT_FILTERKEY => {
                    let end = at.checked_add(value as usize)?;
                    key = String::from_utf8_lossy(payload.get(at..end)?).into_owned();
                    at = end;
                }
                _ => {
                    conditions += 1;
                    if is_string_field(field) {
                        at = at.checked_add(value as usize)?;
                    }
                }
            }
        }
        Some(Rule {
            bytes: payload.to_vec(),
            list: word(0)? & AUDIT_FILTER_MASK,
            action: word(1)?,
            mask,
            conditions,
            arch,
            key,
        })
    }

    /// Ours, this edgeguard's or another's.
    fn ours(&self) -> bool {
        self.key.starts_with(KEY_PREFIX)
    }

    /// An edgeguard's rule whose edgeguard is gone (killed before it could remove it).
    fn stale(&self) -> bool {
        let Some(pid) = self.key.strip_prefix(KEY_PREFIX) else {
            return false;
        };
        // `<pid>` or `<pid>:<purpose>`.
        match pid.split(':').next().unwrap_or(pid).parse::<u32>() {
            Ok(pid) if pid == std::process::id() => false,
            Ok(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        }
    }

    /// Audits every execve of `arch`, unconditionally.
    fn audits_every_exec(&self, arch: Arch) -> bool {
        let bit = |nr: u32| self.mask[(nr / 32) as usize] & (1 << (nr % 32)) != 0;
        self.list == AUDIT_FILTER_EXIT
            && self.action == AUDIT_ALWAYS
            && self.conditions == 0
            && self.arch.is_none_or(|a| a == arch.arch)
            && bit(arch.execve)
    }
}

/// The string-valued rule fields (`AUDIT_*` 13 to 19, 41, 42, 211 to 212): their values are
/// lengths into `buf`.
fn is_string_field(field: u32) -> bool {
    matches!(field, 13..=19 | 41 | 42 | 105 | 106 | 211 | 212)
}

/// What the records of one event make.
#[derive(Debug)]
enum Assembled {
    Exec(Exec),
    Connection(Connection),
}

impl Assembled {
    fn time_ms(&self) -> u64 {
        match self {
            Assembled::Exec(e) => e.time_ms,
            Assembled::Connection(c) => c.time_ms,
        }
    }
}

/// Gathers the records of each event (they share a serial) into execs or connections.
struct Assembler {
    purpose: Purpose,
    open: HashMap<u64, Partial>,
    max_command_line: usize,
    /// Events given up before their end came, to keep at most [`MAX_OPEN_EVENTS`].
    evicted: u64,
}

#[derive(Default)]
struct Partial {
    call: Call,
    exec: Exec,
    /// An `EXECVE` record came: it is an exec.
    is_exec: bool,
    /// The `SYSCALL` record said it failed: no program started, no connection made.
    failed: bool,
    /// The call's result (`-115`: EINPROGRESS).
    exit: i64,
    /// Its first argument, `connect`'s socket; none through `socketcall`, whose first
    /// argument says which call, the others in memory.
    descriptor: Option<u64>,
    /// The `SOCKADDR` record's address, as the process passed or was given it.
    sockaddr: Vec<u8>,
    /// The `PROCTITLE` record's, NULs between the arguments.
    title: Vec<u8>,
    /// `argc`, and the arguments seen so far (one may span records, in pieces).
    args: Vec<Vec<u8>>,
    args_bytes: usize,
    cut: bool,
    opened_ms: u64,
}

impl Assembler {
    fn new(purpose: Purpose, max_command_line: usize) -> Assembler {
        Assembler {
            purpose,
            open: HashMap::new(),
            max_command_line,
            evicted: 0,
        }
    }

    /// Takes one record in; the event it completes, if any.
    fn record(&mut self, kind: u16, payload: &[u8]) -> Option<Assembled> {
        let ours = match self.purpose {
            Purpose::Execs => matches!(kind, AUDIT_EXECVE | AUDIT_CWD),
            Purpose::Connections => matches!(kind, AUDIT_SOCKADDR | AUDIT_PROCTITLE),
        };
        if !ours && !matches!(kind, AUDIT_SYSCALL | AUDIT_EOE) {
            return None;
        }
        let text = std::str::from_utf8(payload).ok()?;
        let (time_ms, serial, rest) = header(text)?;
        if kind == AUDIT_EOE {
            return self.open.remove(&serial)?.finish(self.max_command_line);
        }
        if kind == AUDIT_SYSCALL {
            let fields = Fields(rest);
            let a0 = fields
                .get("a0")
                .and_then(|v| u64::from_str_radix(v, 16).ok());
            let nr = fields.number("syscall").map(|nr| nr as u32);
            let arch = fields.hex("arch").and_then(arch_of);
            let call = match (nr, arch) {
                (Some(nr), Some(arch)) => arch.call(nr, a0),
                // Without its numbers, or on an architecture not in the table, an `EXECVE`
                // record still tells an exec.
                _ => Some(Call::Exec),
            };
            let socketcall = nr.zip(arch).is_some_and(|(nr, a)| a.socketcall == Some(nr));
            let wanted = match self.purpose {
                Purpose::Execs => call == Some(Call::Exec),
                Purpose::Connections => matches!(call, Some(Call::Connect | Call::Accept)),
            };
            if !wanted {
                return None;
            }
            if self.open.len() >= MAX_OPEN_EVENTS {
                // Events never ended are others' rules' leftovers: the oldest goes.
                let oldest = self.open.keys().min().copied()?;
                self.open.remove(&oldest);
                self.evicted += 1;
            }
            let partial = self.open.entry(serial).or_default();
            partial.call = call.unwrap_or_default();
            partial.opened_ms = now_ms();
            partial.exec.serial = serial;
            partial.exec.time_ms = time_ms;
            partial.failed = fields.get("success") == Some("no");
            partial.exit = fields.get("exit").and_then(|v| v.parse().ok()).unwrap_or(0);
            partial.descriptor = a0.filter(|_| !socketcall);
            let id = |k| fields.number(k).map_or(u32::MAX, |v| v as u32);
            partial.exec.pid = id("pid");
            partial.exec.ppid = id("ppid");
            partial.exec.uid = id("uid");
            partial.exec.auid = id("auid");
            partial.exec.session = id("ses");
            partial.exec.comm = fields.text("comm").unwrap_or_default();
            partial.exec.executable = fields.text("exe").unwrap_or_default();
            return None;
        }
        let partial = self.open.get_mut(&serial)?;
        let fields = Fields(rest);
        match kind {
            AUDIT_CWD => partial.exec.cwd = fields.text("cwd").unwrap_or_default(),
            AUDIT_SOCKADDR => {
                partial.sockaddr = fields.get("saddr").map(decode).unwrap_or_default();
            }
            AUDIT_PROCTITLE => {
                let mut title = fields.get("proctitle").map(decode).unwrap_or_default();
                title.truncate(MAX_TITLE);
                partial.title = title;
            }
            _ => partial.arguments(&fields, self.max_command_line),
        }
        None
    }

    /// Events whose end never came within a second (records lost): out as far as they go.
    fn stale(&mut self, now: u64) -> Vec<Assembled> {
        if self.open.is_empty() {
            return Vec::new();
        }
        let max = self.max_command_line;
        let old: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.opened_ms) > 1000)
            .map(|(s, _)| *s)
            .collect();
        old.into_iter()
            .filter_map(|s| self.open.remove(&s)?.finish(max))
            .collect()
    }
}

/// The kernel keeps this much of a process's title (`MAX_PROCTITLE_AUDIT_LEN`).
const MAX_TITLE: usize = 128;
const EINPROGRESS: i64 = -(libc::EINPROGRESS as i64);

impl Partial {
    /// One `EXECVE` record: `argc=N a0=... a1_len=M a1[0]=... a1[1]=...`.
    fn arguments(&mut self, fields: &Fields, max: usize) {
        self.is_exec = true;
        for (key, value) in fields.pairs() {
            let Some(index) = key.strip_prefix('a') else {
                continue;
            };
            // `aN` and `aN[i]` carry text; `aN_len` only announces pieces.
            let (number, piece) = match index.split_once('[') {
                Some((n, _)) => (n, true),
                None if index.ends_with("_len") => continue,
                None => (index, false),
            };
            let Ok(n) = number.parse::<usize>() else {
                continue;
            };
            let bytes = decode(value);
            if n >= self.args.len() {
                if self.args_bytes > max {
                    self.cut = true;
                    continue;
                }
                // Arguments come in order; any gap (lost record) is left empty.
                self.args.resize(n + 1, Vec::new());
            }
            let arg = &mut self.args[n];
            if !piece {
                arg.clear();
            }
            let room = (max + 1).saturating_sub(self.args_bytes);
            let take = bytes.len().min(room);
            arg.extend_from_slice(&bytes[..take]);
            self.args_bytes += take + 1;
            if take < bytes.len() {
                self.cut = true;
            }
        }
    }

    fn finish(self, max: usize) -> Option<Assembled> {
        match self.call {
            Call::Exec => self.finish_exec(max).map(Assembled::Exec),
            Call::Connect | Call::Accept => self.finish_connection().map(Assembled::Connection),
        }
    }

    fn finish_exec(mut self, max: usize) -> Option<Exec> {
        if !self.is_exec || self.failed {
            return None;
        }
        let mut line = self
            .args
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>()
            .join(" ");
        if self.cut || line.len() > max {
            let mut end = line.len().min(max);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str(" …");
        }
        self.exec.command_line = line;
        Some(self.exec)
    }

    /// A connect that succeeded or began (non-blocking), an accept that took one; to or from
    /// an IPv4 or IPv6 peer (a local socket's is no connection of the network's).
    fn finish_connection(self) -> Option<Connection> {
        let inbound = self.call == Call::Accept;
        let in_progress = !inbound && self.failed && self.exit == EINPROGRESS;
        if self.failed && !in_progress {
            return None;
        }
        let remote = socket_address(&self.sockaddr)?;
        let fd = if inbound {
            u32::try_from(self.exit).ok()
        } else {
            self.descriptor.and_then(|d| u32::try_from(d).ok())
        };
        let mut title = self
            .title
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let e = self.exec;
        // The kernel may keep a title it read before the process ran its program (a child
        // connecting soon after its exec can show its parent's): one whose program is not the
        // process's name is not its title.
        let program = title.split(' ').next().unwrap_or("");
        let program = program.rsplit('/').next().unwrap_or(program);
        if e.comm.is_empty() || !(program.starts_with(&e.comm) || e.comm.starts_with(program)) {
            title.clear();
        }
        Some(Connection {
            serial: e.serial,
            time_ms: e.time_ms,
            pid: e.pid,
            uid: e.uid,
            auid: e.auid,
            comm: e.comm,
            executable: e.executable,
            inbound,
            remote,
            in_progress,
            fd,
            title,
        })
    }
}

/// A `struct sockaddr` of the IPv4 or IPv6 family: its address and port.
fn socket_address(bytes: &[u8]) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    }
}

/// The architecture of the records' `arch` field, if it is one of the table's.
fn arch_of(arch: u32) -> Option<&'static Arch> {
    static TABLE: [Arch; 4] = [X86_64, I386, AARCH64, ARM];
    TABLE.iter().find(|a| a.arch == arch)
}

/// `audit(1733180000.123:4567): rest` → (milliseconds, serial, rest).
fn header(text: &str) -> Option<(u64, u64, &str)> {
    let inner = text.strip_prefix("audit(")?;
    let (stamp, rest) = inner.split_once("):")?;
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.')?;
    let ms = secs.parse::<u64>().ok()? * 1000 + millis.parse::<u64>().ok()?;
    Some((ms, serial.parse().ok()?, rest))
}

/// The `key=value` fields of a record. Values never hold a space: the kernel writes text
/// with spaces, quotes or control characters in hex.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.split(' ').filter_map(|p| p.split_once('='))
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    fn hex(&self, key: &str) -> Option<u32> {
        u32::from_str_radix(self.get(key)?, 16).ok()
    }

    /// A text value: quoted, hex, or `(null)` (none).
    fn text(&self, key: &str) -> Option<String> {
        let value = self.get(key)?;
        (value != "(null)").then(|| String::from_utf8_lossy(&decode(value)).into_owned())
    }
}

/// `"text"` as it is, `2F62696E` decoded from hex; anything else as it is.
fn decode(value: &str) -> Vec<u8> {
    if let Some(quoted) = value.strip_prefix('"') {
        return quoted
            .strip_suffix('"')
            .unwrap_or(quoted)
            .as_bytes()
            .to_vec();
    }
    let hex = value.as_bytes();
    if hex.len().is_multiple_of(2) && hex.iter().all(u8::is_ascii_hexdigit) {
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        return hex
            .chunks(2)
            .map(|p| digit(p[0]) << 4 | digit(p[1]))
            .collect();
    }
    value.as_bytes().to_vec()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &mut Assembler, kind: u16, text: &str) -> Option<Exec> {
        match a.record(kind, text.as_bytes())? {
            Assembled::Exec(exec) => Some(exec),
            other @ Assembled::Connection(_) => panic!("{other:?}"),
        }
    }

    fn connection(a: &mut Assembler, kind: u16, text: &str) -> Option<Connection> {
        match a.record(kind, text.as_bytes())? {
            Assembled::Connection(c) => Some(c),
            other @ Assembled::Exec(_) => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_records_text_is_the_whole_datagram_whatever_its_length_says() {
        let mut datagram = netlink::request(AUDIT_EOE, 0, 0, b"audit(1.000:1): \0\0");
        datagram[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert_eq!(
            record_of(&datagram),
            Some((AUDIT_EOE, &b"audit(1.000:1): "[..]))
        );
        assert_eq!(record_of(&datagram[..3]), None);
    }

    #[test]
    fn an_execs_records_make_one_exec_with_every_argument() {
        let mut a = Assembler::new(Purpose::Execs, 1000);
        let t = "audit(1733180000.123:77): ";
        assert_eq!(
            feed(
                &mut a,
                AUDIT_SYSCALL,
                &format!(
                    "{t}arch=c000003e syscall=59 success=yes exit=0 a0=55 ppid=10 pid=11 auid=1000 uid=0 gid=0 ses=3 comm=\"sh\" exe=\"/usr/bin/dash\" key=\"edgeguard:1\""
                )
            ),
            None
        );
        // "echo hi" has a space: the kernel writes it in hex.
        feed(
            &mut a,
            AUDIT_EXECVE,
            &format!("{t}argc=3 a0=\"sh\" a1=\"-c\" a2=6563686F206869"),
        );
        feed(&mut a, AUDIT_CWD, &format!("{t}cwd=\"/root\""));
        feed(&mut a, 1327, &format!("{t}proctitle=7368"));
        let exec = feed(&mut a, AUDIT_EOE, t).unwrap();
        assert_eq!(
            exec,
            Exec {
                serial: 77,
                time_ms: 1_733_180_000_123,
                pid: 11,
                ppid: 10,
                uid: 0,
                auid: 1000,
                session: 3,
                comm: "sh".into(),
                executable: "/usr/bin/dash".into(),
                cwd: "/root".into(),
                command_line: "sh -c echo hi".into(),
            }
        );
        assert!(a.open.is_empty());
    }

    #[test]
    fn a_long_argument_in_pieces_over_records_is_joined_and_cut_at_the_limit() {
        let mut a = Assembler::new(Purpose::Execs, 12);
        let t = "audit(1.000:5): ";
        feed(
            &mut a,
            AUDIT_SYSCALL,
            &format!(
                "{t}arch=c000003e syscall=59 success=yes pid=2 ppid=1 uid=0 auid=0 ses=1 comm=\"x\" exe=\"/x\""
            ),
        );
        feed(
            &mut a,
            AUDIT_EXECVE,
            &format!("{t}argc=2 a0=\"x\" a1_len=16 a1[0]=\"abcdefgh\""),
        );
        feed(&mut a, AUDIT_EXECVE, &format!("{t}a1[1]=\"ijklmnop\""));
        let exec = feed(&mut a, AUDIT_EOE, t).unwrap();
        assert_eq!(exec.command_line, "x abcdefghij …");
    }

    #[test]
    fn failed_execs_and_other_system_calls_are_no_execs() {
        let mut a = Assembler::new(Purpose::Execs, 100);
        let t = "audit(1.000:6): ";
        feed(
            &mut a,
            AUDIT_SYSCALL,
            &format!("{t}arch=c000003e syscall=59 success=no exit=-2 pid=2"),
        );
        feed(&mut a, AUDIT_EXECVE, &format!("{t}argc=1 a0=\"nothere\""));
        assert_eq!(feed(&mut a, AUDIT_EOE, t), None);
        let t = "audit(1.000:7): ";
        feed(
            &mut a,
            AUDIT_SYSCALL,
            &format!("{t}arch=c000003e syscall=2 success=yes pid=2"),
        );
        assert!(a.open.is_empty(), "an open(2) is not gathered");
        assert_eq!(feed(&mut a, AUDIT_EOE, t), None);
        assert_eq!(header("garbage"), None);
    }

    #[test]
    fn open_events_are_bounded() {
        let mut a = Assembler::new(Purpose::Execs, 100);
        for serial in 0..(MAX_OPEN_EVENTS as u64 + 50) {
            feed(
                &mut a,
                AUDIT_SYSCALL,
                &format!("audit(1.000:{serial}): arch=c000003e syscall=59 success=yes pid=2"),
            );
        }
        assert_eq!(a.open.len(), MAX_OPEN_EVENTS);
        assert!(!a.open.contains_key(&0), "the oldest went first");
        assert_eq!(a.evicted, 50, "each counted");
    }

    #[test]
    fn our_rule_lists_back_as_ours_and_audits_every_exec() {
        let bytes = exec_rule(X86_64, "edgeguard:1");
        let rule = Rule::parse(&bytes).unwrap();
        assert!(rule.ours() && rule.audits_every_exec(X86_64) && !rule.audits_every_exec(AARCH64));
        assert!(!rule.stale(), "pid 1 lives");
        // pid_max is at most 4194304, so no process has that pid.
        let dead = Rule::parse(&exec_rule(X86_64, "edgeguard:4194304")).unwrap();
        assert!(dead.stale());
        let theirs = Rule::parse(&exec_rule(X86_64, "asc-exec")).unwrap();
        assert!(!theirs.ours() && !theirs.stale() && theirs.audits_every_exec(X86_64));
    }

    #[test]
    fn a_connects_records_make_a_connection_with_its_peer_and_title() {
        let mut a = Assembler::new(Purpose::Connections, 100);
        let t = "audit(1733180000.500:90): ";
        // A non-blocking connect to 192.168.0.1:80, then an IPv6 accept from [2001:db8::7]:50000.
        connection(
            &mut a,
            AUDIT_SYSCALL,
            &format!(
                "{t}arch=c000003e syscall=42 success=no exit=-115 a0=5 a1=7ffd a2=10 a3=0 items=0 ppid=1 pid=40 auid=1000 uid=33 gid=33 ses=2 comm=\"curl\" exe=\"/usr/bin/curl\" key=(null)"
            ),
        );
        connection(
            &mut a,
            AUDIT_SOCKADDR,
            &format!("{t}saddr=02000050C0A800010000000000000000"),
        );
        connection(
            &mut a,
            AUDIT_PROCTITLE,
            &format!("{t}proctitle=6375726C00687474703A2F2F78"),
        );
        let c = connection(&mut a, AUDIT_EOE, t).unwrap();
        assert_eq!(
            c,
            Connection {
                serial: 90,
                time_ms: 1_733_180_000_500,
                pid: 40,
                uid: 33,
                auid: 1000,
                comm: "curl".into(),
                executable: "/usr/bin/curl".into(),
                inbound: false,
                remote: "192.168.0.1:80".parse().unwrap(),
                in_progress: true,
                fd: Some(5),
                title: "curl http://x".into(),
            }
        );
        // A title of another program (the parent's, read before the exec) is none.
        let t = "audit(1.000:89): ";
        connection(
            &mut a,
            AUDIT_SYSCALL,
            &format!("{t}arch=c000003e syscall=42 success=yes exit=0 a0=3 pid=42 comm=\"perl\""),
        );
        connection(
            &mut a,
            AUDIT_SOCKADDR,
            &format!("{t}saddr=02000050C0A80001"),
        );
        connection(
            &mut a,
            AUDIT_PROCTITLE,
            &format!("{t}proctitle=2F746D702F7465737400782D79"),
        );
        assert_eq!(connection(&mut a, AUDIT_EOE, t).unwrap().title, "");
        let t = "audit(1.000:91): ";
        connection(
            &mut a,
            AUDIT_SYSCALL,
            &format!(
                "{t}arch=c000003e syscall=288 success=yes exit=9 a0=3 pid=41 uid=0 auid=4294967295 comm=\"sshd\" exe=\"/usr/sbin/sshd\""
            ),
        );
        connection(
            &mut a,
            AUDIT_SOCKADDR,
            &format!(
                "{t}saddr=0A00C35000000000{}00000000",
                "20010DB8000000000000000000000007"
            ),
        );
        let c = connection(&mut a, AUDIT_EOE, t).unwrap();
        assert!(c.inbound && !c.in_progress);
        assert_eq!(
            (c.remote, c.fd),
            ("[2001:db8::7]:50000".parse().unwrap(), Some(9))
        );
    }

    #[test]
    fn refused_and_local_connects_and_execs_are_no_connections() {
        let mut a = Assembler::new(Purpose::Connections, 100);
        let cases = [
            // Refused at once.
            ("syscall=42 success=no exit=-111 a0=3", "02000050C0A80001"),
            // A local (AF_UNIX) socket: "/run/x".
            ("syscall=42 success=yes exit=0 a0=3", "01002F72756E2F78"),
            // No address (accept with a null one).
            ("syscall=43 success=yes exit=4 a0=3", ""),
        ];
        for (i, (call, saddr)) in cases.iter().enumerate() {
            let t = format!("audit(1.000:{}): ", 100 + i);
            connection(
                &mut a,
                AUDIT_SYSCALL,
                &format!("{t}arch=c000003e {call} pid=2"),
            );
            if !saddr.is_empty() {
                connection(&mut a, AUDIT_SOCKADDR, &format!("{t}saddr={saddr}"));
            }
            assert_eq!(connection(&mut a, AUDIT_EOE, &t), None, "{call}");
        }
        let t = "audit(1.000:110): ";
        connection(
            &mut a,
            AUDIT_SYSCALL,
            &format!("{t}arch=c000003e syscall=59 success=yes pid=2"),
        );
        connection(&mut a, AUDIT_EXECVE, &format!("{t}argc=1 a0=\"x\""));
        assert!(a.open.is_empty(), "an exec is not gathered for connections");
        // Through i386's socketcall, a0 is the call: connect (3); the descriptor is unknown.
        let t = "audit(1.000:111): ";
        connection(
            &mut a,
            AUDIT_SYSCALL,
            &format!("{t}arch=40000003 syscall=102 success=yes exit=0 a0=3 pid=2"),
        );
        connection(
            &mut a,
            AUDIT_SOCKADDR,
            &format!("{t}saddr=0200003501020304"),
        );
        let c = connection(&mut a, AUDIT_EOE, t).unwrap();
        assert_eq!((c.remote, c.fd), ("1.2.3.4:53".parse().unwrap(), None));
        let t = "audit(1.000:112): ";
        connection(
            &mut a,
            AUDIT_SYSCALL,
            &format!("{t}arch=40000003 syscall=102 success=yes exit=0 a0=9 pid=2"),
        );
        assert!(
            a.open.is_empty(),
            "socketcall's sendmsg (9) is no connection"
        );
    }

    #[test]
    fn connection_rules_list_back_as_ours_with_their_purpose() {
        let key = format!("{KEY_PREFIX}{}:connections", std::process::id());
        let rule = Rule::parse(&connection_rule(X86_64, Some(2), &key)).unwrap();
        assert!(rule.ours() && !rule.stale() && !rule.audits_every_exec(X86_64));
        assert_eq!(
            (rule.key.as_str(), rule.conditions, rule.arch),
            (key.as_str(), 1, Some(X86_64.arch))
        );
        let bit = |nr: u32| rule.mask[(nr / 32) as usize] & (1 << (nr % 32)) != 0;
        assert!(bit(42) && bit(43) && bit(288) && !bit(59));
        let dead = Rule::parse(&connection_rule(
            X86_64,
            None,
            "edgeguard:4194304:connections",
        ))
        .unwrap();
        assert!(dead.stale() && dead.conditions == 0);
    }

    /// On the real kernel, managed: connections a child makes and takes on loopback (the
    /// kernel audits no call of the registered daemon's own process, which this one may be),
    /// each told with its peer and process, and the rules gone after.
    #[test]
    fn connections_made_and_taken_are_read_with_their_process() {
        use std::io::BufRead;
        let mut audit = Audit::open(Mode::Manage, Purpose::Connections, 4 << 20, 100)
            .expect("audit is available here");
        assert!(audit.rules_added() >= 1);
        let n = 20;
        // perl-base, in every Debian: listen, then connect and accept n times, and a UDP
        // socket connected over IPv6.
        let script = format!(
            "use IO::Socket::INET; use IO::Socket::IP; $| = 1;
             my $l = IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1', Proto => 'tcp') or die;
             print $l->sockport, \"\\n\";
             for (1..{n}) {{ my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $l->sockport) or die;
               my $s = $l->accept; print $c->sockport, \"\\n\"; close $c; close $s; }}
             IO::Socket::IP->new(PeerHost => '::1', PeerPort => 53, Proto => 'udp') or die;"
        );
        let child = std::process::Command::new("/usr/bin/perl")
            .args(["-e", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("perl runs");
        let pid = child.id();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let ports: Vec<u16> = output
            .stdout
            .lines()
            .map(|l| l.unwrap().parse().unwrap())
            .collect();
        let (port, client_ports) = (ports[0], &ports[1..]);
        let (mut out, mut theirs) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        while theirs.len() < 2 * n + 1 && Instant::now() < deadline {
            poll_readable(audit.socket(), Duration::from_millis(100));
            audit.read_connections(&mut out).unwrap();
            theirs.extend(out.drain(..).filter(|c| c.pid == pid));
        }
        let made: Vec<_> = theirs
            .iter()
            .filter(|c| !c.inbound && c.remote.port() == port)
            .collect();
        let taken: Vec<u16> = theirs
            .iter()
            .filter(|c| c.inbound && c.remote.ip().is_loopback())
            .map(|c| c.remote.port())
            .collect();
        assert_eq!(made.len(), n, "every connect: {theirs:?}");
        assert_eq!(taken, client_ports, "every accept, with its peer's port");
        assert!(
            theirs
                .iter()
                .all(|c| c.fd.is_some() && c.uid == 0 && c.executable.ends_with("perl")),
            "{theirs:?}"
        );
        assert!(
            theirs
                .iter()
                .all(|c| c.title.is_empty() || c.title.starts_with("/usr/bin/perl -e")),
            "{theirs:?}"
        );
        assert!(
            theirs
                .iter()
                .any(|c| c.remote == "[::1]:53".parse().unwrap()),
            "the UDP connect: {theirs:?}"
        );
        let ours = audit.key.clone();
        drop(audit);
        let mut after = Audit::open(Mode::Follow, Purpose::Connections, 1 << 16, 100).unwrap();
        assert!(
            !after.rules().unwrap().iter().any(|r| r.key == ours),
            "removed"
        );
    }

    /// On the real kernel: short processes with a space in an argument (written in hex) are
    /// each read whole, and the rules added are gone after.
    #[test]
    fn every_short_process_is_read_whole_and_what_was_changed_is_undone() {
        let mut audit = Audit::open(Mode::Manage, Purpose::Execs, 4 << 20, 16 << 10)
            .expect("audit is available here");
        let before = audit.status().unwrap();
        assert!(before.enabled >= 1);
        let tag = format!("audit-{}", std::process::id());
        let n = 200;
        for i in 0..n {
            std::process::Command::new("/bin/true")
                .args([format!("{tag}-{i}"), "two words".to_owned()])
                .status()
                .unwrap();
        }
        let mut seen = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while seen.len() < n && Instant::now() < deadline {
            poll_readable(audit.socket(), Duration::from_millis(100));
            out.clear();
            audit.read(&mut out).unwrap();
            for exec in out.drain(..) {
                if let Some(rest) = exec.command_line.strip_prefix(&format!("/bin/true {tag}-")) {
                    seen.insert(rest.to_owned(), exec);
                }
            }
        }
        assert_eq!(seen.len(), n, "every exec, each once");
        let exec = seen
            .get("7 two words")
            .unwrap_or_else(|| panic!("{:?}", seen.iter().take(3).collect::<Vec<_>>()));
        assert_eq!(
            (exec.executable.as_str(), exec.ppid, exec.comm.as_str()),
            ("/usr/bin/true", std::process::id(), "true")
        );
        assert!(!exec.cwd.is_empty());
        let ours = format!("{KEY_PREFIX}{}", std::process::id());
        let added = audit.rules_added();
        assert_eq!(
            audit
                .rules()
                .unwrap()
                .iter()
                .filter(|r| r.key == ours)
                .count(),
            added,
            "our rules are listed back"
        );
        drop(audit);
        let mut after = Audit::open(Mode::Follow, Purpose::Execs, 1 << 16, 100).unwrap();
        assert!(
            !after.rules().unwrap().iter().any(|r| r.key == ours),
            "the {added} rules added are removed"
        );
        assert_ne!(
            after.status().unwrap().pid,
            std::process::id(),
            "no longer the daemon"
        );
    }
}
