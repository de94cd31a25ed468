//! `processes`: the host's process table, read from `<host root>/proc`.

use super::{HostContext, HostState};
use crate::runtime::bindings::edgeguard::collector::processes::{Host, Process, State};
use crate::runtime::bindings::edgeguard::collector::types::HostError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// `PF_KTHREAD` in /proc/<pid>/stat flags: kernel threads are not processes anyone started.
const PF_KTHREAD: u32 = 0x0020_0000;

impl Host for HostState {
    async fn snapshot(&mut self) -> Result<Vec<Process>, HostError> {
        // /proc reads are fast but can block (a process stuck in the kernel holds its mm lock),
        // and a blocking host call cannot be interrupted by the epoch deadline: read on the
        // blocking pool so the call's outer timeout still applies.
        let host = Arc::clone(&self.host);
        tokio::task::spawn_blocking(move || read_processes(&host))
            .await
            .map_err(|e| HostError::Io(format!("process scan failed: {e}")))?
    }
}

/// Every process under the host root, kernel threads excluded. Processes that exit during the
/// scan are skipped, not errors.
pub fn read_processes(host: &HostContext) -> Result<Vec<Process>, HostError> {
    let proc_dir = host.host_root.join("proc");
    let all = procfs::process::all_processes_with_root(&proc_dir).map_err(|e| match e {
        procfs::ProcError::NotFound(_) => HostError::Unavailable(format!("{} does not exist", proc_dir.display())),
        procfs::ProcError::PermissionDenied(_) => HostError::PermissionDenied(format!("cannot read {}", proc_dir.display())),
        other => HostError::Io(format!("{}: {other}", proc_dir.display())),
    })?;
    let users = host.users.current(&host.host_root);
    let mut out = Vec::with_capacity(512);
    for entry in all {
        let Ok(p) = entry else { continue };
        let Ok(stat) = p.stat() else { continue };
        if stat.flags & PF_KTHREAD != 0 {
            continue;
        }
        let Ok(user_id) = p.uid() else { continue };
        let executable = p.exe().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let command_line = p.cmdline().map(|args| args.join(" ")).unwrap_or_default();
        let state = match stat.state {
            'R' => State::Running,
            'S' => State::Sleeping,
            'D' => State::DiskSleep,
            'T' | 't' => State::Stopped,
            'Z' => State::Zombie,
            'X' | 'x' => State::Dead,
            _ => State::Other,
        };
        out.push(Process {
            pid: stat.pid as u32,
            parent_pid: stat.ppid as u32,
            user_id,
            user_name: users.get(&user_id).cloned(),
            name: stat.comm,
            executable,
            command_line,
            start_time: stat.starttime,
            state,
            exit_code: if state == State::Zombie { stat.exit_code } else { None },
        });
    }
    Ok(out)
}

/// uid → name from the host's passwd file, re-read when the file changes.
#[derive(Default)]
pub(super) struct UserNames {
    cached: Mutex<Option<(SystemTime, Arc<HashMap<u32, String>>)>>,
}

impl UserNames {
    fn current(&self, host_root: &Path) -> Arc<HashMap<u32, String>> {
        let path = host_root.join("etc/passwd");
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            return Arc::default();
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, names)) = cached.as_ref()
            && *at == modified
        {
            return Arc::clone(names);
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
        *cached = Some((modified, Arc::clone(&names)));
        names
    }
}
