//! Process collector: ProcessCreate and ProcessTerminate, from the kernel's process events
//! where the host follows them, else from successive snapshots of the process table.
//!
//! Both feed the same table of live processes. With events, every exec is a ProcessCreate and
//! every exit of a known process a ProcessTerminate (with its exit status), however short the
//! process lived; a snapshot starts the watch and repairs it after events were lost. Polling
//! diffs snapshots: a process is a (pid, start time), so a recycled pid is a new process, and
//! only processes alive at a collection are seen. A process that forks without exec runs its
//! parent's program: polling reports it when it sees it, events do not (as execve auditing).

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{Availability, config_bool, config_keys};
use processes::{Detail, ExecSources, Process, State, TracedEvent, TracedExec};
use std::collections::HashMap;

type Pid = u32;

struct ProcessCollector {
    /// Live processes as last known, each with a fingerprint of its command line in place of
    /// the line ([`remembered`]); None before the first collection.
    known: Option<HashMap<Pid, Process>>,
    /// Report the processes already running at the first collection (marked `Existing`).
    report_existing: bool,
    /// Follow the host's process events when it has them (configuration `events`).
    follow: bool,
    /// Whether the host has process events for us.
    events: Availability,
    /// Events computed but not yet handed out because of the per-call cap.
    backlog: Vec<Event>,
}

impl Collector for ProcessCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("process", env!("CARGO_PKG_VERSION"))
            .emits(["ProcessCreate", "ProcessTerminate"])
            .needs(["processes", "log"])
            .group(PriorityGroup::High)
            .about("process creation and termination from the kernel's process events, or the process table")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["report_existing", "events"])?;
        Ok(ProcessCollector {
            known: None,
            report_existing: config_bool(&config, "report_existing", true)?,
            follow: config_bool(&config, "events", true)?,
            events: Availability::default(),
            backlog: Vec::new(),
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        // Each process event makes at most one of ours: take no more than there is room for,
        // the host keeps the rest.
        let room = (max_events as usize).saturating_sub(self.backlog.len());
        if room > 0 && !(self.follow && self.follow_events(room as u32)?) {
            self.poll()?;
        }
        let take = self.backlog.len().min(max_events as usize);
        if take < self.backlog.len() {
            debug!(
                "{} process events held for the next collection",
                self.backlog.len() - take
            );
        }
        Ok(self.backlog.drain(..take).collect())
    }

    /// The processes known at the last collection, so that after a restart the processes that
    /// started meanwhile are reported as created (not as existing) and those that ended as
    /// terminated.
    fn save_state(&self) -> Option<Vec<u8>> {
        let known = self.known.as_ref()?;
        let list: Vec<serde_json::Value> = known
            .values()
            .map(|p| {
                serde_json::json!([
                    p.pid,
                    p.start_time,
                    p.name,
                    p.executable,
                    p.state == State::Zombie
                ])
            })
            .collect();
        Some(serde_json::Value::Array(list).to_string().into_bytes())
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        let bad = |why: &str| CollectError::InvalidState(format!("process state: {why}"));
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&state).map_err(|e| bad(&e.to_string()))?;
        let mut known = HashMap::with_capacity(list.len());
        for item in list {
            let field = |i: usize| {
                item.get(i)
                    .ok_or_else(|| bad("an entry is [pid, start, name, executable, zombie]"))
            };
            let pid = field(0)?.as_u64().ok_or_else(|| bad("pid"))? as u32;
            let start_time = field(1)?.as_u64().ok_or_else(|| bad("start time"))?;
            let p = Process {
                pid,
                parent_pid: 0,
                user_id: 0,
                user_name: None,
                name: field(2)?.as_str().unwrap_or_default().to_owned(),
                executable: field(3)?.as_str().unwrap_or_default().to_owned(),
                command_line: String::new(),
                start_time,
                state: if field(4)?.as_bool() == Some(true) {
                    State::Zombie
                } else {
                    State::Sleeping
                },
                exit_code: None,
            };
            known.insert(pid, p);
        }
        self.known = Some(known);
        Ok(())
    }
}

impl ProcessCollector {
    /// Drains the host's process events into the table; false when the host has none (poll).
    fn follow_events(&mut self, max: u32) -> Result<bool, CollectError> {
        let Some(batch) = self.events.check(
            processes::traced_events(max),
            "polling the process table",
            "following the kernel's process events again",
        )?
        else {
            return Ok(false);
        };
        // Without a table yet, the snapshot comes first: events older than it that it already
        // shows are recognised by `exec`.
        if self.known.is_none() {
            self.poll()?;
        }
        for event in batch.events {
            match event {
                TracedEvent::Exec(e) => self.exec(e),
                TracedEvent::Exit(e) => {
                    if let Some(p) = self.known.as_mut().and_then(|k| k.remove(&e.pid)) {
                        self.backlog.push(terminated(&p, Some(e.exit_code)));
                    }
                }
            }
        }
        // The watch just started (what came before was not seen), or events were lost: the
        // process table tells what changed meanwhile.
        if batch.lost > 0 {
            warn!(
                "{} process events were lost: catching up from the process table",
                batch.lost
            );
        }
        if batch.fresh || batch.lost > 0 {
            self.poll()?;
        }
        Ok(true)
    }

    /// A program started: a new process, or a known one that ran another program.
    fn exec(&mut self, exec: TracedExec) {
        let p = &exec.process;
        let known = self.known.get_or_insert_with(HashMap::new);
        // A snapshot taken after this exec has shown it already.
        let seen = known.get(&p.pid).is_some_and(|k| {
            k.start_time == p.start_time
                && k.executable == p.executable
                && k.command_line == fingerprint(&p.command_line)
        });
        if !seen {
            self.backlog.push(created(p, Origin::Exec(&exec)));
            known.insert(p.pid, remembered(exec.process));
        }
    }

    /// Diffs a snapshot of the process table against the table.
    fn poll(&mut self) -> Result<(), CollectError> {
        let now: HashMap<Pid, Process> = processes::snapshot()?
            .into_iter()
            .map(|p| (p.pid, p))
            .collect();
        match self.known.take() {
            None => {
                if self.report_existing {
                    let mut existing: Vec<&Process> = now.values().collect();
                    existing.sort_by_key(|p| p.pid);
                    self.backlog
                        .extend(existing.into_iter().map(|p| created(p, Origin::Existing)));
                }
            }
            Some(before) => {
                let same = |a: &Process, b: &Process| a.start_time == b.start_time;
                let mut new: Vec<&Process> = now
                    .values()
                    .filter(|p| before.get(&p.pid).is_none_or(|b| !same(b, p)))
                    .collect();
                new.sort_by_key(|p| p.pid);
                // A process ends when it becomes a zombie (its exit code is readable then) or, if no
                // collection saw it as one, when it is gone. Each end is reported once.
                let mut ended: Vec<&Process> = before
                    .values()
                    .filter(|was| was.state != State::Zombie)
                    .filter_map(|was| match now.get(&was.pid) {
                        Some(is) if same(is, was) => (is.state == State::Zombie).then_some(is),
                        _ => Some(was),
                    })
                    .chain(new.iter().copied().filter(|p| p.state == State::Zombie))
                    .collect();
                ended.sort_by_key(|p| p.pid);
                self.backlog
                    .extend(new.into_iter().map(|p| created(p, Origin::Seen)));
                // Only a zombie still has its exit code; a process reaped between two
                // collections took it along.
                self.backlog.extend(ended.into_iter().map(|p| {
                    terminated(
                        p,
                        if p.state == State::Zombie {
                            p.exit_code
                        } else {
                            None
                        },
                    )
                }));
            }
        }
        self.known = Some(
            now.into_iter()
                .map(|(pid, p)| (pid, remembered(p)))
                .collect(),
        );
        Ok(())
    }
}

/// A process as the table keeps it: its command line only as a fingerprint, which is all the
/// table needs (to tell an exec of the same program with other arguments apart). A thousand
/// processes of long arguments would otherwise hold 16 MB here for as long as they live.
fn remembered(mut p: Process) -> Process {
    p.command_line = fingerprint(&p.command_line);
    p
}

fn fingerprint(command_line: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    command_line.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// How a ProcessCreate was learnt.
enum Origin<'a> {
    /// Running at the first collection.
    Existing,
    /// New in a snapshot.
    Seen,
    /// A kernel exec event, as the host traced it.
    Exec(&'a TracedExec),
}

/// Which sources told an exec, and what they could not tell: the `Detail` of its event.
fn detail(exec: &TracedExec) -> String {
    let told = [
        (ExecSources::PROC_CONNECTOR, "proc connector"),
        (ExecSources::PROC_READ, "/proc"),
        (ExecSources::AUDIT_RECORD, "audit record"),
    ];
    let mut text = told
        .iter()
        .filter(|(source, _)| exec.sources.contains(*source))
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    match exec.detail {
        Detail::Full => {}
        Detail::NameOnly => {
            text.push_str("; exited before its executable and arguments could be read");
        }
        Detail::PidOnly => text.push_str("; exited before it could be read, user of its parent"),
    }
    text
}

fn created(p: &Process, origin: Origin) -> Event {
    let mut extra = vec![("Name".to_owned(), p.name.clone())];
    let mut add = |key: &str, value: String| extra.push((key.to_owned(), value));
    match origin {
        Origin::Existing => {
            add("Existing", "true".to_owned());
            add("Detail", "process table".to_owned());
        }
        Origin::Seen => add("Detail", "process table".to_owned()),
        Origin::Exec(exec) => {
            add("Detail", detail(exec));
            if let Some(cwd) = &exec.cwd {
                add("WorkingDirectory", cwd.clone());
            }
            if let Some(auid) = exec.login_user_id {
                add("LoginUserId", auid.to_string());
            }
            if let Some(session) = exec.session {
                add("SessionId", session.to_string());
            }
        }
    }
    let command_line = match (p.command_line.is_empty(), p.name.is_empty()) {
        (false, _) => p.command_line.clone(),
        (true, false) => format!("[{}]", p.name),
        (true, true) => String::new(),
    };
    Event::ProcessCreate(ProcessCreate {
        executable: executable(p),
        process_id: p.pid,
        parent_process_id: p.parent_pid,
        user_id: p.user_id,
        user_name: p.user_name.clone(),
        command_line,
        extra,
    })
}

fn terminated(p: &Process, exit_status: Option<i32>) -> Event {
    Event::ProcessTerminate(ProcessTerminate {
        executable: executable(p),
        process_id: p.pid,
        exit_status,
        extra: vec![("Name".to_owned(), p.name.clone())],
    })
}

fn executable(p: &Process) -> String {
    if p.executable.is_empty() {
        p.name.clone()
    } else {
        p.executable.clone()
    }
}

edgeguard_sdk::export_collector!(ProcessCollector);
