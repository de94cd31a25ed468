//! Execs from two kernel sources made one: the proc connector says at once that a process
//! ran a program, and `/proc` is read right then; the audit record of the same `execve`
//! comes a moment later with every argument, even of a process already gone. An exec read in
//! full goes out at once; one whose process was too quick waits (at most [`AUDIT_WAIT`]) for
//! its audit record to complete it, its exit held behind it; an audit record whose exec the
//! connector never told (it overran) becomes the exec itself.
//!
//! While a rule of edgeguard's audits every exec, the record is certain to come: the exec is
//! not read at all but waits for it ([`Merge::unread`]), and only a process still running
//! when its record comes is looked at, for when it started. `/proc` is read in full only for
//! an exec whose record did not come in time.

use crate::kernel::audit;
use crate::wit::edgeguard::collector::processes::{
    Detail, ExecSources, ExitEvent, State, TracedEvent, TracedExec,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a partly read exec waits for its audit record. The kernel's audit thread is
/// behind the connector by milliseconds, seconds only when it is flooded.
pub const AUDIT_WAIT: Duration = Duration::from_millis(750);
/// How long an audit record waits for the connector's exec (read a round later).
const EARLY_WAIT: Duration = Duration::from_secs(2);
/// How long an exec sent without its audit record remembers that it was sent.
const SENT_MEMORY: Duration = Duration::from_secs(5);
/// Entries per table, at most: past it the oldest goes out as it is.
const MAX_WAITING: usize = 4096;

/// How the audit records completed the execs, for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completed {
    /// Execs the connector told and `/proc` only partly showed, completed from the audit record.
    pub completed: u64,
    /// Execs only the audit records told (the connector lost them).
    pub audit_only: u64,
}

/// What the merge may read of a process in `/proc`, when it needs to.
pub trait Look {
    /// The exec of `pid` as `/proc` shows it now (partial, or by pid only, once it is gone).
    fn exec(&mut self, pid: u32) -> TracedExec;
    /// When `pid` started (clock ticks since boot, as `/proc/<pid>/stat` says) and its state;
    /// None once it is gone.
    fn started(&mut self, pid: u32) -> Option<(u64, State)>;
}

struct Parked {
    exec: TracedExec,
    exit: Option<ExitEvent>,
    until: Instant,
    /// Parked without reading `/proc`: the record completes it, or `/proc` is read when due.
    unread: bool,
}

/// The execs and audit records waiting for each other, by pid.
#[derive(Default)]
pub struct Merge {
    parked: HashMap<u32, Parked>,
    early: HashMap<u32, (Instant, audit::Exec)>,
    /// Execs sent without their audit record (read in full, or before audit was seen to
    /// deliver): the record, when it comes, is not news.
    sent: HashMap<u32, (Instant, u32)>,
    /// Audit records are known to come for execs: partial ones wait for theirs.
    expect_records: bool,
    /// Until when records are taken to come, after the last one seen.
    records_until: Option<Instant>,
    pub counts: Completed,
}

impl Merge {
    /// `expect_records`: a rule of edgeguard's audits every exec, so records come from the
    /// first one; otherwise they are waited for once some came in the last minute.
    pub fn new(expect_records: bool) -> Merge {
        Merge {
            expect_records,
            ..Merge::default()
        }
    }

    /// Whether a rule of edgeguard's audits every exec now (it may be deleted and added again).
    pub fn expect_records(&mut self, expect: bool) {
        self.expect_records = expect;
    }

    /// Whether every exec's record is certain to come (a rule of edgeguard's is in force).
    pub fn expects_records(&self) -> bool {
        self.expect_records
    }

    fn waiting_for_records(&self, now: Instant) -> bool {
        self.expect_records || self.records_until.is_some_and(|t| now < t)
    }

    /// The connector's exec, as `/proc` showed it.
    pub fn exec(
        &mut self,
        mut exec: TracedExec,
        now: Instant,
        users: &HashMap<u32, String>,
        look: &mut dyn Look,
        out: &mut Vec<TracedEvent>,
    ) {
        let pid = exec.process.pid;
        if let Some((_, record)) = self.early.remove(&pid) {
            if exec.detail != Detail::Full {
                complete(&mut exec, &record, users);
                self.counts.completed += 1;
            }
            out.push(TracedEvent::Exec(exec));
            return;
        }
        if exec.detail == Detail::Full || !self.waiting_for_records(now) {
            self.sent_without_record(pid, now);
            out.push(TracedEvent::Exec(exec));
            return;
        }
        self.park(exec, false, now, look, out);
    }

    /// The connector's exec, not read (records are expected): `exec` knows the pid and the
    /// parent that forked it. Its record completes it; `look` tells when a process still
    /// running started.
    pub fn unread(
        &mut self,
        mut exec: TracedExec,
        now: Instant,
        users: &HashMap<u32, String>,
        look: &mut dyn Look,
        out: &mut Vec<TracedEvent>,
    ) {
        let pid = exec.process.pid;
        if let Some((_, record)) = self.early.remove(&pid) {
            complete(&mut exec, &record, users);
            started(&mut exec, look);
            self.counts.completed += 1;
            out.push(TracedEvent::Exec(exec));
            return;
        }
        self.park(exec, true, now, look, out);
    }

    fn park(
        &mut self,
        exec: TracedExec,
        unread: bool,
        now: Instant,
        look: &mut dyn Look,
        out: &mut Vec<TracedEvent>,
    ) {
        let pid = exec.process.pid;
        if self.parked.len() >= MAX_WAITING {
            let oldest = self.parked.iter().min_by_key(|(_, p)| p.until).map(|(pid, _)| *pid);
            if let Some(oldest) = oldest {
                self.release(oldest, now, look, out);
            }
        }
        // A second exec of the same process before the first's record: the first goes as is.
        self.release(pid, now, look, out);
        self.parked.insert(
            pid,
            Parked {
                exec,
                exit: None,
                until: now + AUDIT_WAIT,
                unread,
            },
        );
    }

    /// The connector's exit: behind its exec, if that waits.
    pub fn exit(&mut self, exit: ExitEvent, out: &mut Vec<TracedEvent>) {
        match self.parked.get_mut(&exit.pid) {
            Some(parked) => parked.exit = Some(exit),
            None => out.push(TracedEvent::Exit(exit)),
        }
    }

    /// An audit record of an exec.
    pub fn record(
        &mut self,
        record: audit::Exec,
        now: Instant,
        users: &HashMap<u32, String>,
        look: &mut dyn Look,
        out: &mut Vec<TracedEvent>,
    ) {
        self.records_until = Some(now + Duration::from_secs(60));
        let pid = record.pid;
        if let Some(mut parked) = self.parked.remove(&pid) {
            complete(&mut parked.exec, &record, users);
            // Exited already: when it started no longer matters (its exit follows it).
            if parked.unread && parked.exit.is_none() {
                started(&mut parked.exec, look);
            }
            self.counts.completed += 1;
            push(parked, out);
            return;
        }
        if let Some((_, n)) = self.sent.get_mut(&pid) {
            *n -= 1;
            if *n == 0 {
                self.sent.remove(&pid);
            }
            return;
        }
        if self.early.len() >= MAX_WAITING {
            self.early_out(|_| true, users, out);
        }
        // Two execs of one process before the connector's: the first is its own exec.
        if let Some((_, earlier)) = self.early.insert(pid, (now, record)) {
            self.counts.audit_only += 1;
            out.push(TracedEvent::Exec(alone(&earlier, users)));
        }
    }

    /// What is due at `now` goes out: execs whose record did not come as they are (read now
    /// if they were not), records whose exec the connector never told as execs of their own.
    pub fn due(
        &mut self,
        now: Instant,
        users: &HashMap<u32, String>,
        look: &mut dyn Look,
        out: &mut Vec<TracedEvent>,
    ) {
        let due: Vec<u32> = self
            .parked
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.release(pid, now, look, out);
        }
        self.early_out(|at| now.duration_since(at) >= EARLY_WAIT, users, out);
        self.sent
            .retain(|_, (at, _)| now.duration_since(*at) < SENT_MEMORY);
    }

    /// When the next held event is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        let parked = self.parked.values().map(|p| p.until);
        let early = self.early.values().map(|(at, _)| *at + EARLY_WAIT);
        parked.chain(early).min()
    }

    fn sent_without_record(&mut self, pid: u32, now: Instant) {
        if self.sent.len() >= MAX_WAITING {
            self.sent.clear();
        }
        let entry = self.sent.entry(pid).or_insert((now, 0));
        *entry = (now, entry.1 + 1);
    }

    /// `pid`'s parked exec goes out without its record (read first if it was not), its exit
    /// behind it; its record, if it comes later, is not news.
    fn release(
        &mut self,
        pid: u32,
        now: Instant,
        look: &mut dyn Look,
        out: &mut Vec<TracedEvent>,
    ) {
        let Some(mut parked) = self.parked.remove(&pid) else {
            return;
        };
        if parked.unread {
            let parent = parked.exec.process.parent_pid;
            parked.exec = look.exec(pid);
            if parked.exec.process.parent_pid == 0 {
                parked.exec.process.parent_pid = parent;
            }
        }
        self.sent_without_record(pid, now);
        push(parked, out);
    }

    fn early_out(
        &mut self,
        due: impl Fn(Instant) -> bool,
        users: &HashMap<u32, String>,
        out: &mut Vec<TracedEvent>,
    ) {
        let pids: Vec<u32> = self
            .early
            .iter()
            .filter(|(_, (at, _))| due(*at))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            if let Some((_, record)) = self.early.remove(&pid) {
                self.counts.audit_only += 1;
                out.push(TracedEvent::Exec(alone(&record, users)));
            }
        }
    }
}

fn push(parked: Parked, out: &mut Vec<TracedEvent>) {
    out.push(TracedEvent::Exec(parked.exec));
    out.extend(parked.exit.map(TracedEvent::Exit));
}

/// When a process completed from its record started, and its state, while it runs.
fn started(exec: &mut TracedExec, look: &mut dyn Look) {
    let p = &mut exec.process;
    if let Some((start_time, state)) = look.started(p.pid) {
        p.start_time = start_time;
        p.state = state;
        exec.sources |= ExecSources::PROC_READ;
    }
}

/// What `/proc` could not show, from the record; the record's ids are the kernel's own at
/// the exec, where a gone process's user was only its parent's.
fn complete(exec: &mut TracedExec, record: &audit::Exec, users: &HashMap<u32, String>) {
    let p = &mut exec.process;
    if !record.command_line.is_empty() {
        p.command_line = record.command_line.clone();
    }
    if p.executable.is_empty() {
        p.executable = record.executable.clone();
    }
    if p.name.is_empty() {
        p.name = record.comm.clone();
    }
    if record.ppid != u32::MAX {
        p.parent_pid = record.ppid;
    }
    if record.uid != u32::MAX {
        p.user_id = record.uid;
        p.user_name = users.get(&record.uid).cloned();
    }
    exec.detail = Detail::Full;
    exec.sources |= ExecSources::AUDIT_RECORD;
    exec.cwd = (!record.cwd.is_empty()).then(|| record.cwd.clone());
    exec.login_user_id = known(record.auid);
    exec.session = known(record.session);
}

/// An id of the audit records, where 4294967295 (and a parse failure) means none.
fn known(id: u32) -> Option<u32> {
    (id != u32::MAX).then_some(id)
}

/// An exec only the audit record told.
fn alone(record: &audit::Exec, users: &HashMap<u32, String>) -> TracedExec {
    let mut exec = TracedExec {
        process: super::unread(record.pid, record.ppid, record.uid, users),
        detail: Detail::PidOnly,
        sources: ExecSources::empty(),
        cwd: None,
        login_user_id: None,
        session: None,
    };
    complete(&mut exec, record, users);
    exec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc` as the tests make it: the processes running, and what was read.
    #[derive(Default)]
    struct Proc {
        running: HashMap<u32, u64>,
        read: Vec<u32>,
    }

    impl Look for Proc {
        fn exec(&mut self, pid: u32) -> TracedExec {
            self.read.push(pid);
            let mut exec = partial(pid);
            if let Some(start) = self.running.get(&pid) {
                exec.process.start_time = *start;
                exec.process.command_line = format!("/bin/read {pid}");
                exec.detail = Detail::Full;
                exec.sources |= ExecSources::PROC_READ;
            }
            exec
        }

        fn started(&mut self, pid: u32) -> Option<(u64, State)> {
            self.read.push(pid);
            self.running.get(&pid).map(|start| (*start, State::Sleeping))
        }
    }

    fn partial(pid: u32) -> TracedExec {
        TracedExec {
            process: super::super::unread(pid, 1, 1000, &HashMap::new()),
            detail: Detail::PidOnly,
            sources: ExecSources::PROC_CONNECTOR,
            cwd: None,
            login_user_id: None,
            session: None,
        }
    }

    fn record(pid: u32, line: &str) -> audit::Exec {
        audit::Exec {
            pid,
            ppid: 7,
            uid: 0,
            auid: 1000,
            session: u32::MAX,
            comm: "true".into(),
            executable: "/usr/bin/true".into(),
            cwd: "/tmp".into(),
            command_line: line.into(),
            ..audit::Exec::default()
        }
    }

    fn lines(out: &[TracedEvent]) -> Vec<String> {
        out.iter()
            .map(|e| match e {
                TracedEvent::Exec(e) => {
                    let detail = match e.detail {
                        Detail::Full => "Full",
                        Detail::NameOnly => "NameOnly",
                        Detail::PidOnly => "PidOnly",
                    };
                    format!("exec {} {detail} {}", e.process.pid, e.process.command_line)
                }
                TracedEvent::Exit(x) => format!("exit {}", x.pid),
            })
            .collect()
    }

    #[test]
    fn a_partial_exec_waits_for_its_record_with_its_exit_behind_it() {
        let users = HashMap::from([(0, "root".to_owned())]);
        let mut m = Merge::new(true);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        m.exec(partial(5), now, &users, &mut look, &mut out);
        m.exit(ExitEvent { pid: 5, parent_pid: 7, exit_code: 0 }, &mut out);
        m.exit(ExitEvent { pid: 6, parent_pid: 7, exit_code: 0 }, &mut out);
        assert_eq!(lines(&out), ["exit 6"], "another process's exit is not held");
        m.record(record(5, "/bin/true a b"), now, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exit 6", "exec 5 Full /bin/true a b", "exit 5"]);
        let TracedEvent::Exec(e) = &out[1] else { panic!() };
        assert_eq!((e.process.user_id, e.process.user_name.as_deref(), e.process.parent_pid), (0, Some("root"), 7));
        assert_eq!(e.sources, ExecSources::PROC_CONNECTOR | ExecSources::AUDIT_RECORD);
        assert_eq!((e.cwd.as_deref(), e.login_user_id, e.session), (Some("/tmp"), Some(1000), None));
        assert_eq!(m.counts, Completed { completed: 1, audit_only: 0 });
    }

    #[test]
    fn without_its_record_an_exec_goes_as_it_is_when_due() {
        let users = HashMap::new();
        let mut m = Merge::new(true);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        m.exec(partial(5), now, &users, &mut look, &mut out);
        assert_eq!(m.next_due(), Some(now + AUDIT_WAIT));
        m.due(now, &users, &mut look, &mut out);
        assert!(out.is_empty());
        m.due(now + AUDIT_WAIT, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exec 5 PidOnly "]);
        assert_eq!(m.next_due(), None);
    }

    #[test]
    fn a_record_before_its_exec_completes_it_and_one_without_becomes_the_exec() {
        let users = HashMap::new();
        let mut m = Merge::new(false);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        m.record(record(5, "/bin/true early"), now, &users, &mut look, &mut out);
        m.exec(partial(5), now, &users, &mut look, &mut out);
        m.record(record(9, "/bin/true lost"), now, &users, &mut look, &mut out);
        m.due(now + EARLY_WAIT, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exec 5 Full /bin/true early", "exec 9 Full /bin/true lost"]);
        let TracedEvent::Exec(lost) = &out[1] else { panic!() };
        assert_eq!(lost.sources, ExecSources::AUDIT_RECORD, "only the record told it");
        assert_eq!((lost.process.name.as_str(), lost.process.executable.as_str()), ("true", "/usr/bin/true"));
        assert_eq!(m.counts, Completed { completed: 1, audit_only: 1 });
    }

    #[test]
    fn the_record_of_an_exec_read_in_full_is_no_news() {
        let users = HashMap::new();
        let mut m = Merge::new(true);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        let mut full = partial(5);
        full.detail = Detail::Full;
        full.process.command_line = "/bin/sleep 1".into();
        m.exec(full, now, &users, &mut look, &mut out);
        m.record(record(5, "/bin/sleep 1"), now, &users, &mut look, &mut out);
        m.due(now + EARLY_WAIT, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exec 5 Full /bin/sleep 1"]);
    }

    #[test]
    fn before_any_record_came_partial_execs_do_not_wait_unless_records_are_expected() {
        let users = HashMap::new();
        let mut m = Merge::new(false);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        m.exec(partial(5), now, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exec 5 PidOnly "]);
        // Its record, late, is not a second exec.
        m.record(record(5, "/bin/true"), now, &users, &mut look, &mut out);
        m.due(now + EARLY_WAIT, &users, &mut look, &mut out);
        assert_eq!(out.len(), 1);
        // Records flow now: the next partial exec waits for its own.
        m.exec(partial(6), now, &users, &mut look, &mut out);
        assert_eq!(out.len(), 1);
    }

    fn bare(pid: u32) -> TracedExec {
        let mut exec = partial(pid);
        exec.process.user_id = u32::MAX;
        exec
    }

    #[test]
    fn an_unread_exec_is_made_whole_by_its_record_and_only_a_running_process_is_looked_at() {
        let users = HashMap::from([(0, "root".to_owned())]);
        let mut m = Merge::new(true);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        look.running.insert(6, 4242);
        m.unread(bare(5), now, &users, &mut look, &mut out);
        m.unread(bare(6), now, &users, &mut look, &mut out);
        m.exit(ExitEvent { pid: 5, parent_pid: 7, exit_code: 0 }, &mut out);
        assert!(out.is_empty(), "both wait for their records");
        m.record(record(5, "/bin/true gone"), now, &users, &mut look, &mut out);
        m.record(record(6, "/bin/sleep on"), now, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exec 5 Full /bin/true gone", "exit 5", "exec 6 Full /bin/sleep on"]);
        assert_eq!(look.read, [6], "the exited process is not looked for");
        let TracedEvent::Exec(gone) = &out[0] else { panic!() };
        assert_eq!((gone.process.user_id, gone.process.start_time), (0, 0));
        assert_eq!(gone.sources, ExecSources::PROC_CONNECTOR | ExecSources::AUDIT_RECORD);
        let TracedEvent::Exec(running) = &out[2] else { panic!() };
        assert_eq!((running.process.start_time, running.process.state), (4242, State::Sleeping));
        assert_eq!(
            running.sources,
            ExecSources::PROC_CONNECTOR | ExecSources::PROC_READ | ExecSources::AUDIT_RECORD
        );
        assert_eq!(m.counts, Completed { completed: 2, audit_only: 0 });
    }

    #[test]
    fn an_unread_exec_whose_record_did_not_come_is_read_when_due_and_its_late_record_is_no_news() {
        let users = HashMap::new();
        let mut m = Merge::new(true);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        look.running.insert(5, 99);
        m.unread(bare(5), now, &users, &mut look, &mut out);
        m.unread(bare(6), now, &users, &mut look, &mut out);
        m.due(now + AUDIT_WAIT, &users, &mut look, &mut out);
        let mut told = lines(&out);
        told.sort();
        assert_eq!(told, ["exec 5 Full /bin/read 5", "exec 6 PidOnly "]);
        assert!(out.iter().all(|e| matches!(e, TracedEvent::Exec(e) if e.process.parent_pid == 1)));
        m.record(record(5, "/bin/true late"), now + AUDIT_WAIT, &users, &mut look, &mut out);
        m.due(now + AUDIT_WAIT + EARLY_WAIT, &users, &mut look, &mut out);
        assert_eq!(out.len(), 2, "a late record is not a second exec");
        assert_eq!(m.counts, Completed { completed: 0, audit_only: 0 });
    }

    #[test]
    fn a_record_before_its_unread_exec_completes_it_at_once() {
        let users = HashMap::new();
        let mut m = Merge::new(true);
        let (now, mut out, mut look) = (Instant::now(), Vec::new(), Proc::default());
        m.record(record(5, "/bin/true early"), now, &users, &mut look, &mut out);
        m.unread(bare(5), now, &users, &mut look, &mut out);
        assert_eq!(lines(&out), ["exec 5 Full /bin/true early"]);
        assert_eq!(m.next_due(), None);
    }
}
