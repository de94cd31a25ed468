//! Execs from two kernel sources made one: the proc connector says at once that a process
//! ran a program, and `/proc` is read right then; the audit record of the same `execve`
//! comes a moment later with every argument, even of a process already gone. An exec read in
//! full goes out at once; one whose process was too quick waits (at most [`AUDIT_WAIT`]) for
//! its audit record to complete it, its exit held behind it; an audit record whose exec the
//! connector never told (it overran) becomes the exec itself.

use crate::kernel::audit;
use crate::wit::edgeguard::collector::processes::{
    Detail, ExecSources, ExitEvent, TracedEvent, TracedExec,
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

struct Parked {
    exec: TracedExec,
    exit: Option<ExitEvent>,
    until: Instant,
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

    fn waiting_for_records(&self, now: Instant) -> bool {
        self.expect_records || self.records_until.is_some_and(|t| now < t)
    }

    /// The connector's exec, as `/proc` showed it.
    pub fn exec(
        &mut self,
        mut exec: TracedExec,
        now: Instant,
        users: &HashMap<u32, String>,
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
        if self.parked.len() >= MAX_WAITING {
            self.release_oldest(out);
        }
        // A second exec of the same process before the first's record: the first goes as is.
        if let Some(earlier) = self.parked.remove(&pid) {
            self.sent_without_record(pid, now);
            release(earlier, out);
        }
        self.parked.insert(
            pid,
            Parked {
                exec,
                exit: None,
                until: now + AUDIT_WAIT,
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
        out: &mut Vec<TracedEvent>,
    ) {
        self.records_until = Some(now + Duration::from_secs(60));
        let pid = record.pid;
        if let Some(mut parked) = self.parked.remove(&pid) {
            complete(&mut parked.exec, &record, users);
            self.counts.completed += 1;
            release(parked, out);
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

    /// What is due at `now` goes out: execs whose record did not come as they are, records
    /// whose exec the connector never told as execs of their own.
    pub fn due(&mut self, now: Instant, users: &HashMap<u32, String>, out: &mut Vec<TracedEvent>) {
        let due: Vec<u32> = self
            .parked
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            if let Some(parked) = self.parked.remove(&pid) {
                release(parked, out);
            }
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

    fn release_oldest(&mut self, out: &mut Vec<TracedEvent>) {
        let oldest = self.parked.iter().min_by_key(|(_, p)| p.until).map(|(pid, _)| *pid);
        if let Some(parked) = oldest.and_then(|pid| self.parked.remove(&pid)) {
            release(parked, out);
        }
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

fn release(parked: Parked, out: &mut Vec<TracedEvent>) {
    out.push(TracedEvent::Exec(parked.exec));
    out.extend(parked.exit.map(TracedEvent::Exit));
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
        let (now, mut out) = (Instant::now(), Vec::new());
        m.exec(partial(5), now, &users, &mut out);
        m.exit(ExitEvent { pid: 5, parent_pid: 7, exit_code: 0 }, &mut out);
        m.exit(ExitEvent { pid: 6, parent_pid: 7, exit_code: 0 }, &mut out);
        assert_eq!(lines(&out), ["exit 6"], "another process's exit is not held");
        m.record(record(5, "/bin/true a b"), now, &users, &mut out);
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
        let (now, mut out) = (Instant::now(), Vec::new());
        m.exec(partial(5), now, &users, &mut out);
        assert_eq!(m.next_due(), Some(now + AUDIT_WAIT));
        m.due(now, &users, &mut out);
        assert!(out.is_empty());
        m.due(now + AUDIT_WAIT, &users, &mut out);
        assert_eq!(lines(&out), ["exec 5 PidOnly "]);
        assert_eq!(m.next_due(), None);
    }

    #[test]
    fn a_record_before_its_exec_completes_it_and_one_without_becomes_the_exec() {
        let users = HashMap::new();
        let mut m = Merge::new(false);
        let (now, mut out) = (Instant::now(), Vec::new());
        m.record(record(5, "/bin/true early"), now, &users, &mut out);
        m.exec(partial(5), now, &users, &mut out);
        m.record(record(9, "/bin/true lost"), now, &users, &mut out);
        m.due(now + EARLY_WAIT, &users, &mut out);
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
        let (now, mut out) = (Instant::now(), Vec::new());
        let mut full = partial(5);
        full.detail = Detail::Full;
        full.process.command_line = "/bin/sleep 1".into();
        m.exec(full, now, &users, &mut out);
        m.record(record(5, "/bin/sleep 1"), now, &users, &mut out);
        m.due(now + EARLY_WAIT, &users, &mut out);
        assert_eq!(lines(&out), ["exec 5 Full /bin/sleep 1"]);
    }

    #[test]
    fn before_any_record_came_partial_execs_do_not_wait_unless_records_are_expected() {
        let users = HashMap::new();
        let mut m = Merge::new(false);
        let (now, mut out) = (Instant::now(), Vec::new());
        m.exec(partial(5), now, &users, &mut out);
        assert_eq!(lines(&out), ["exec 5 PidOnly "]);
        // Its record, late, is not a second exec.
        m.record(record(5, "/bin/true"), now, &users, &mut out);
        m.due(now + EARLY_WAIT, &users, &mut out);
        assert_eq!(out.len(), 1);
        // Records flow now: the next partial exec waits for its own.
        m.exec(partial(6), now, &users, &mut out);
        assert_eq!(out.len(), 1);
    }
}
