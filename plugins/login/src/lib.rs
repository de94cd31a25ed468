//! Login collector: Login events (Success, Fail) from wtmp (logins and logouts), btmp (failed
//! logins) and the sshd lines of the auth log, each record reported once.
//!
//! Each file has a cursor (its identity and an offset) that is saved with the plugin's state, so
//! it survives restarts. A file that was rotated (a new identity at the path) is finished from
//! its rotated copy (`<path>.1`) before the new one is read from its start; a file that shrank
//! was truncated and is read again from its start.

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{Login, LoginResult, config_bool, config_keys, fingerprint};
use logins::{RecordType, UtmpRecord};
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wtmp,
    Btmp,
    AuthLog,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Cursor {
    device: u64,
    inode: u64,
    offset: u64,
    /// Fingerprint and length of the last record or line read, which must still be found just
    /// before `offset`: a file truncated and refilled past the old size is caught by it.
    last: u64,
    last_len: u64,
}

struct LoginCollector {
    files: Vec<(Kind, String)>,
    /// Without saved state, read existing records too (else start at the end of each file).
    from_start: bool,
    /// After the first collection (or a restored state) a file that appears is new: all of it counts.
    started: bool,
    cursors: HashMap<String, Cursor>,
    /// Terminal → user of the open sessions, to name the user of a logout record.
    sessions: HashMap<String, String>,
    backlog: Vec<Event>,
}

/// Per host call: bounded reads keep the plugin's memory small whatever the log's size.
const RECORDS_PER_READ: u32 = 1024;
const BYTES_PER_READ: u32 = 1 << 20;

impl Collector for LoginCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("login", env!("CARGO_PKG_VERSION"))
            .emits(["Login"])
            .needs(["logins", "log"])
            .group(PriorityGroup::High)
            .about("logins, logouts and failed logins from wtmp, btmp and the auth log")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["wtmp", "btmp", "auth_log", "from_start"])?;
        let path = |key: &str, default: &str| -> Result<Option<String>, CollectError> {
            match config.get(key) {
                None => Ok(Some(default.to_owned()).filter(|d| !d.is_empty())),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) if s.starts_with('/') => Ok(Some(s.clone())),
                Some(other) => Err(CollectError::config(
                    key,
                    format!("expected an absolute path or \"\" (off), got {other}"),
                )),
            }
        };
        let btmp = path("btmp", "/var/log/btmp")?;
        // sshd also writes its failures to btmp: read them from the auth log only when asked,
        // or when the host keeps no btmp, so that a failure is not reported twice.
        let auth_default = match &btmp {
            Some(b) if logins::stat(b).is_ok() => "",
            _ => ["/var/log/auth.log", "/var/log/secure"]
                .into_iter()
                .find(|p| logins::stat(p).is_ok())
                .unwrap_or(""),
        };
        let mut files = Vec::new();
        for (kind, file) in [
            (Kind::Wtmp, path("wtmp", "/var/log/wtmp")?),
            (Kind::Btmp, btmp),
            (Kind::AuthLog, path("auth_log", auth_default)?),
        ] {
            files.extend(file.map(|f| (kind, f)));
        }
        Ok(LoginCollector {
            files,
            from_start: config_bool(&config, "from_start", false)?,
            cursors: HashMap::new(),
            sessions: HashMap::new(),
            backlog: Vec::new(),
            started: false,
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        // Reading stops when a collection's worth of events is in hand; the cursors then point
        // just past what is returned, so the state saved after this collection never runs ahead
        // of the events the host has accepted.
        for (kind, path) in self.files.clone() {
            self.follow(kind, &path, max_events as usize)?;
        }
        self.started = true;
        Ok(std::mem::take(&mut self.backlog))
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        let cursors: serde_json::Map<String, Value> = self
            .cursors
            .iter()
            .map(|(p, c)| {
                (
                    p.clone(),
                    json!([c.device, c.inode, c.offset, c.last, c.last_len]),
                )
            })
            .collect();
        Some(
            json!({ "cursors": cursors, "sessions": self.sessions })
                .to_string()
                .into_bytes(),
        )
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        let bad = |why: &str| CollectError::InvalidState(format!("login state: {why}"));
        let v: Value = serde_json::from_slice(&state).map_err(|e| bad(&e.to_string()))?;
        for (path, c) in v["cursors"].as_object().ok_or_else(|| bad("no cursors"))? {
            let n = |i: usize| {
                c.get(i)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("a cursor is five numbers"))
            };
            self.cursors.insert(
                path.clone(),
                Cursor {
                    device: n(0)?,
                    inode: n(1)?,
                    offset: n(2)?,
                    last: n(3)?,
                    last_len: n(4)?,
                },
            );
        }
        self.started = true;
        if let Some(sessions) = v["sessions"].as_object() {
            self.sessions = sessions
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect();
        }
        Ok(())
    }
}

impl LoginCollector {
    /// Reads what `path` gained since its cursor, following rotation and truncation.
    fn follow(&mut self, kind: Kind, path: &str, max_events: usize) -> Result<(), CollectError> {
        let now = match logins::stat(path) {
            Ok(info) => info,
            // Not every host keeps every log; an absent one is not an error.
            Err(HostError::Unavailable(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let cursor = match self.cursors.get(path).copied() {
            None => {
                let offset = if self.from_start || self.started {
                    0
                } else {
                    now.size
                };
                let (last, last_len) = if offset > 0 {
                    last_before(kind, path, offset)?
                } else {
                    (0, 0)
                };
                Cursor {
                    device: now.id.device,
                    inode: now.id.inode,
                    offset,
                    last,
                    last_len,
                }
            }
            Some(c) if (c.device, c.inode) != (now.id.device, now.id.inode) => {
                // Rotated: finish the old file where rotation put it, then start the new one.
                let rotated = format!("{path}.1");
                if let Ok(old) = logins::stat(&rotated)
                    && (old.id.device, old.id.inode) == (c.device, c.inode)
                {
                    let end = self.read(kind, &rotated, c.offset, max_events)?;
                    if end < old.size {
                        // The rotated copy is not finished: come back to it next time.
                        self.cursors
                            .insert(path.to_owned(), Cursor { offset: end, ..c });
                        return Ok(());
                    }
                }
                Cursor {
                    device: now.id.device,
                    inode: now.id.inode,
                    offset: 0,
                    last: 0,
                    last_len: 0,
                }
            }
            Some(c)
                if now.size < c.offset
                    || (c.last_len > 0
                        && last_before(kind, path, c.offset)? != (c.last, c.last_len)) =>
            {
                warn!(
                    "{path} was truncated or rewritten (now {} bytes, read up to {}); reading it again from the start",
                    now.size, c.offset
                );
                Cursor {
                    offset: 0,
                    last: 0,
                    last_len: 0,
                    ..c
                }
            }
            Some(c) => c,
        };
        let end = self.read(kind, path, cursor.offset, max_events)?;
        let (last, last_len) = if end == cursor.offset {
            (cursor.last, cursor.last_len)
        } else {
            last_before(kind, path, end)?
        };
        self.cursors.insert(
            path.to_owned(),
            Cursor {
                offset: end,
                last,
                last_len,
                ..cursor
            },
        );
        Ok(())
    }

    /// Reads `path` from `offset` towards its end, until the backlog holds `max_events`;
    /// returns the offset reached.
    fn read(
        &mut self,
        kind: Kind,
        path: &str,
        mut offset: u64,
        max_events: usize,
    ) -> Result<u64, CollectError> {
        loop {
            let room = max_events.saturating_sub(self.backlog.len());
            if room == 0 {
                return Ok(offset);
            }
            let next = if kind == Kind::AuthLog {
                // An sshd failure line is longer than 60 bytes: this many bytes yield at most `room` events.
                let bytes = (room as u64 * 60).clamp(1024, u64::from(BYTES_PER_READ)) as u32;
                let chunk = logins::read_lines(path, offset, bytes)?;
                self.backlog
                    .extend(chunk.lines.iter().filter_map(|l| sshd_failure(l)));
                chunk.next_offset
            } else {
                let chunk = logins::read_utmp(path, offset, RECORDS_PER_READ.min(room as u32))?;
                for r in &chunk.records {
                    if let Some(e) = self.utmp_event(kind, r) {
                        self.backlog.push(e);
                    }
                }
                chunk.next_offset
            };
            if next <= offset {
                return Ok(offset);
            }
            offset = next;
        }
    }

    fn utmp_event(&mut self, kind: Kind, r: &UtmpRecord) -> Option<Event> {
        let (operation, result, user) = match (kind, r.record_type) {
            (Kind::Btmp, RecordType::UserProcess | RecordType::LoginProcess) => {
                ("login", LoginResult::Fail, r.user.clone())
            }
            (Kind::Wtmp, RecordType::UserProcess) => {
                self.sessions.insert(r.line.clone(), r.user.clone());
                ("login", LoginResult::Success, r.user.clone())
            }
            (Kind::Wtmp, RecordType::DeadProcess) => {
                // Logout records carry the terminal, not always the user: the session knows it.
                let user = self
                    .sessions
                    .remove(&r.line)
                    .or_else(|| Some(r.user.clone()).filter(|u| !u.is_empty()))?;
                ("logout", LoginResult::Success, user)
            }
            _ => return None,
        };
        let remote = r
            .address
            .clone()
            .or_else(|| Some(r.host.clone()).filter(|h| !h.is_empty()));
        let mut extra = vec![
            ("Line".to_owned(), r.line.clone()),
            (
                "Source".to_owned(),
                if kind == Kind::Btmp { "btmp" } else { "wtmp" }.to_owned(),
            ),
        ];
        if !r.host.is_empty() {
            extra.push(("Host".to_owned(), r.host.clone()));
        }
        extra.push(("TimeUtcMicros".to_owned(), r.time_micros.to_string()));
        Some(Event::Login(Login {
            operation: operation.to_owned(),
            result,
            user_name: Some(user).filter(|u| !u.is_empty()),
            user_id: None,
            remote_address: remote,
            remote_port: None,
            local_port: None,
            executable: r.executable.clone().unwrap_or_default(),
            process_id: r.pid,
            extra,
        }))
    }
}

/// The fingerprint and length of the record or line that ends at `offset`.
fn last_before(kind: Kind, path: &str, offset: u64) -> Result<(u64, u64), CollectError> {
    if kind == Kind::AuthLog {
        // Lines are short; the last one is within the 4 KiB before the offset.
        let from = offset.saturating_sub(4096);
        let chunk = logins::read_lines(path, from, (offset - from) as u32)?;
        let Some(line) = chunk.lines.last().filter(|_| chunk.next_offset == offset) else {
            return Ok((0, 0));
        };
        return Ok((fingerprint(line), line.len() as u64 + 1));
    }
    let chunk = logins::read_utmp(path, offset.saturating_sub(1), 1)?;
    let Some(r) = chunk
        .records
        .first()
        .filter(|_| chunk.next_offset == offset)
    else {
        return Ok((0, 0));
    };
    // Records have a fixed size; the length only marks that there is a last record.
    Ok((
        fingerprint(&(r.time_micros, r.pid, &r.line, &r.user, &r.host)),
        1,
    ))
}

/// `... sshd[812]: Failed password for invalid user admin from 203.0.113.9 port 51234 ssh2`
fn sshd_failure(line: &str) -> Option<Event> {
    let at = line.find("sshd[")?;
    let rest = &line[at + 5..];
    let pid: u32 = rest[..rest.find(']')?].parse().ok()?;
    let message = &rest[rest.find("]: ")? + 3..];
    let after = message.strip_prefix("Failed ")?;
    let (method, after) = after.split_once(" for ")?;
    let (invalid, after) = match after.strip_prefix("invalid user ") {
        Some(a) => (true, a),
        None => (false, after),
    };
    let (user, after) = after.rsplit_once(" from ")?;
    let mut words = after.split_whitespace();
    let address = words.next()?.to_owned();
    let port = (words.next() == Some("port"))
        .then(|| words.next()?.parse().ok())
        .flatten();
    let mut extra = vec![
        ("Method".to_owned(), method.to_owned()),
        ("Source".to_owned(), "auth-log".to_owned()),
    ];
    if invalid {
        extra.push(("InvalidUser".to_owned(), "true".to_owned()));
    }
    Some(Event::Login(Login {
        operation: "ssh".to_owned(),
        result: LoginResult::Fail,
        user_name: Some(user.to_owned()),
        user_id: None,
        remote_address: Some(address),
        remote_port: port,
        local_port: None,
        executable: "/usr/sbin/sshd".to_owned(),
        process_id: pid,
        extra,
    }))
}

edgeguard_sdk::export_collector!(LoginCollector);
