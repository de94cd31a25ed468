//! Process collector: diffs successive snapshots of the host's process table into
//! ProcessCreate and ProcessTerminate events.
//!
//! A process is identified by (pid, start time), so a recycled pid is a new process. Polling sees
//! only processes alive at a collection; kernel event sources catch the short-lived ones.

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{config_bool, config_keys};
use processes::{Process, State};
use std::collections::HashMap;

type Key = (u32, u64);

struct ProcessCollector {
    /// Processes seen at the previous collection; None before the first one.
    known: Option<HashMap<Key, Process>>,
    /// Report the processes already running at the first collection (marked `Existing`).
    report_existing: bool,
    /// Events computed but not yet handed out because of the per-call cap.
    backlog: Vec<Event>,
}

impl Collector for ProcessCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("process", env!("CARGO_PKG_VERSION"))
            .emits(["ProcessCreate", "ProcessTerminate"])
            .needs(["processes", "log"])
            .group(PriorityGroup::High)
            .about("process creation and termination from the host's process table")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["report_existing"])?;
        Ok(ProcessCollector {
            known: None,
            report_existing: config_bool(&config, "report_existing", true)?,
            backlog: Vec::new(),
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        let now: HashMap<Key, Process> =
            processes::snapshot()?.into_iter().map(|p| ((p.pid, p.start_time), p)).collect();

        match self.known.take() {
            None => {
                if self.report_existing {
                    let mut existing: Vec<&Process> = now.values().collect();
                    existing.sort_by_key(|p| p.pid);
                    self.backlog.extend(existing.into_iter().map(|p| created(p, true)));
                }
            }
            Some(before) => {
                let mut new: Vec<&Process> = now.iter().filter(|(k, _)| !before.contains_key(k)).map(|(_, p)| p).collect();
                new.sort_by_key(|p| p.pid);
                // A process ends when it becomes a zombie (its exit code is readable then) or, if no
                // collection saw it as one, when it is gone. Each end is reported once.
                let mut ended: Vec<&Process> = before
                    .iter()
                    .filter(|(_, was)| was.state != State::Zombie)
                    .filter_map(|(k, was)| match now.get(k) {
                        None => Some(was),
                        Some(is) if is.state == State::Zombie => Some(is),
                        Some(_) => None,
                    })
                    .chain(new.iter().copied().filter(|p| p.state == State::Zombie))
                    .collect();
                ended.sort_by_key(|p| p.pid);
                self.backlog.extend(new.into_iter().map(|p| created(p, false)));
                self.backlog.extend(ended.into_iter().map(terminated));
            }
        }
        self.known = Some(now);

        let take = self.backlog.len().min(max_events as usize);
        if take < self.backlog.len() {
            debug!("{} process events held for the next collection", self.backlog.len() - take);
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
            .map(|p| serde_json::json!([p.pid, p.start_time, p.name, p.executable, p.state == State::Zombie]))
            .collect();
        Some(serde_json::Value::Array(list).to_string().into_bytes())
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        let bad = |why: &str| CollectError::InvalidState(format!("process state: {why}"));
        let list: Vec<serde_json::Value> = serde_json::from_slice(&state).map_err(|e| bad(&e.to_string()))?;
        let mut known = HashMap::with_capacity(list.len());
        for item in list {
            let field = |i: usize| item.get(i).ok_or_else(|| bad("an entry is [pid, start, name, executable, zombie]"));
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
                state: if field(4)?.as_bool() == Some(true) { State::Zombie } else { State::Sleeping },
                exit_code: None,
            };
            known.insert((pid, start_time), p);
        }
        self.known = Some(known);
        Ok(())
    }
}

fn created(p: &Process, existing: bool) -> Event {
    let mut extra = vec![("Name".to_owned(), p.name.clone())];
    if existing {
        extra.push(("Existing".to_owned(), "true".to_owned()));
    }
    Event::ProcessCreate(ProcessCreate {
        executable: executable(p),
        process_id: p.pid,
        parent_process_id: p.parent_pid,
        user_id: p.user_id,
        user_name: p.user_name.clone(),
        command_line: if p.command_line.is_empty() { format!("[{}]", p.name) } else { p.command_line.clone() },
        extra,
    })
}

fn terminated(p: &Process) -> Event {
    // Only a zombie still has its exit code; a process reaped between two collections took it along.
    let exit_status = if p.state == State::Zombie { p.exit_code } else { None };
    Event::ProcessTerminate(ProcessTerminate {
        executable: executable(p),
        process_id: p.pid,
        exit_status,
        extra: vec![("Name".to_owned(), p.name.clone())],
    })
}

fn executable(p: &Process) -> String {
    if p.executable.is_empty() { p.name.clone() } else { p.executable.clone() }
}

edgeguard_sdk::export_collector!(ProcessCollector);
