//! Security events in the Azure Security Center for IoT shape: what plugins return (WIT types)
//! becomes [`SecurityEvent`], which serializes exactly as the ASC message schema wants it.

use crate::wit::edgeguard::collector::types::{self as wit, Direction, LoginResult, Protocol};
use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Periodic (a snapshot) or Triggered (something happened), as ASC says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Category {
    /// A snapshot taken at a collection.
    Periodic,
    /// Something that happened.
    Triggered,
}

/// The ASC event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Evidence: processes, connections, logins, inventories, findings.
    Security,
    /// The agent's own working: statistics, dropped events, configuration errors.
    Operational,
    /// The agent's and plugins' diagnostics.
    Diagnostic,
}

/// Which message family an event travels in: the ASC security message schema, or the
/// project's own schema for event kinds ASC does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The ASC security message schema (`MessageSchemaVersion` 1.0).
    Asc,
    /// The project's own (`edgeguard/1.0`, `schemas/edgeguard-message.json`).
    Edgeguard,
}

/// One security event, as messages carry it.
#[derive(Clone, Debug)]
pub struct SecurityEvent {
    /// Unique; the same across retries, so a receiver can drop duplicates.
    pub id: uuid::Uuid,
    /// The event kind (`ProcessCreate`, `Login`, …).
    pub name: String,
    /// Periodic or Triggered.
    pub category: Category,
    /// Security, Operational or Diagnostic.
    pub event_type: EventType,
    /// When it was observed.
    pub time: DateTime<Utc>,
    /// The payload items, each a JSON object.
    pub payload: Vec<Value>,
    /// The message family it travels in.
    pub family: Family,
}

impl SecurityEvent {
    /// An event of kind `name` now, with a fresh id.
    pub fn new(
        name: &str,
        category: Category,
        event_type: EventType,
        payload: Vec<Value>,
    ) -> SecurityEvent {
        SecurityEvent {
            id: uuid::Uuid::new_v4(),
            name: name.to_owned(),
            category,
            event_type,
            time: Utc::now(),
            payload,
            family: Family::Asc,
        }
    }

    /// The event as the ASC schema wants it, keys in the order the reference agent writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_to(&mut out).expect("an event always serializes");
        out
    }

    /// The length of [`SecurityEvent::to_bytes`], measured without holding the bytes.
    pub fn serialized_len(&self) -> usize {
        /// Counts what is written.
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        self.write_to(&mut counter)
            .expect("an event always serializes");
        counter.0
    }

    fn write_to(&self, out: impl std::io::Write) -> serde_json::Result<()> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Wire<'a> {
            category: Category,
            event_type: EventType,
            name: &'a str,
            payload_schema_version: &'static str,
            id: uuid::fmt::Hyphenated,
            timestamp_local: String,
            #[serde(rename = "TimestampUTC")]
            timestamp_utc: String,
            is_empty: bool,
            payload: &'a [Value],
        }
        let local: DateTime<Local> = self.time.with_timezone(&Local);
        let wire = Wire {
            category: self.category,
            event_type: self.event_type,
            name: &self.name,
            payload_schema_version: "1.0",
            id: self.id.hyphenated(),
            timestamp_local: local.to_rfc3339_opts(SecondsFormat::Millis, true),
            timestamp_utc: self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            is_empty: self.payload.is_empty(),
            payload: &self.payload,
        };
        serde_json::to_writer(out, &wire)
    }

    /// A Diagnostic event from the host itself (plugin faults, load failures).
    pub fn diagnostic(
        severity: Severity,
        message: &str,
        extra: &[(&str, String)],
    ) -> SecurityEvent {
        let mut item = json!({
            "Severity": severity,
            "Message": message,
            "ProcessId": std::process::id(),
            // SAFETY: gettid has no preconditions.
            "ThreadId": unsafe { libc::gettid() },
        });
        if !extra.is_empty() {
            item["ExtraDetails"] = Value::Object(
                extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect(),
            );
        }
        SecurityEvent::new(
            "Diagnostic",
            Category::Triggered,
            EventType::Diagnostic,
            vec![item],
        )
    }
}

/// A diagnostic's severity, as the ASC Diagnostic event spells it.
#[derive(Clone, Copy, Debug, Serialize)]
pub enum Severity {
    /// The agent cannot go on.
    Fatal,
    /// Something failed.
    Error,
    /// Something is off but works.
    Warning,
    /// For the record.
    Information,
    /// For debugging.
    Debug,
}

/// An event kind a plugin gave, as the host may repeat it in logs and diagnostics: at most 64
/// characters, control characters and quotes escaped (the name is the plugin's to choose).
pub fn shown_name(name: &str) -> String {
    let mut shown: String = name.chars().take(64).flat_map(char::escape_debug).collect();
    if name.chars().nth(64).is_some() {
        shown.push('…');
    }
    shown
}

/// Why a plugin's event was not accepted.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", shown_name(.name))]
pub struct Rejected {
    /// The event kind the plugin gave.
    pub name: String,
    /// What was wrong with it.
    pub reason: String,
}

/// The ExtraDetails keys that say which plugin an event came from: its configured name, the
/// version it describes, and the first 16 hex digits of its component's SHA-256. They are part
/// of every aggregation identity, so a merged event still names its source.
pub const PROVENANCE_KEYS: [&str; 3] = ["Plugin", "PluginVersion", "PluginDigest"];

/// Converts one plugin event. Custom events must carry JSON objects.
pub fn from_plugin(event: wit::Event) -> Result<SecurityEvent, Rejected> {
    use Category::*;
    let security = |name: &str, category, payload| {
        SecurityEvent::new(name, category, EventType::Security, payload)
    };
    Ok(match event {
        wit::Event::ProcessCreate(p) => security("ProcessCreate", Triggered, vec![with_extra(
            json!({
                "Executable": p.executable,
                "ProcessId": p.process_id,
                "ParentProcessId": p.parent_process_id,
                "UserId": p.user_id.to_string(),
                "UserName": p.user_name,
                "CommandLine": p.command_line,
            }),
            p.extra,
        )]),
        wit::Event::ProcessTerminate(p) => {
            let mut extra = p.extra;
            // The schema requires ExitStatus; when the host could not observe it, say so.
            if p.exit_status.is_none() {
                extra.push(("ExitStatusKnown".into(), "false".into()));
            }
            security("ProcessTerminate", Triggered, vec![with_extra(
                json!({ "Executable": p.executable, "ProcessId": p.process_id, "ExitStatus": p.exit_status.unwrap_or(-1) }),
                extra,
            )])
        }
        wit::Event::ConnectionCreate(c) => security("ConnectionCreate", Triggered, vec![with_extra(
            json!({
                "RemoteAddress": c.remote_address,
                "RemotePort": c.remote_port.to_string(),
                "LocalAddress": c.local_address,
                "LocalPort": c.local_port.to_string(),
                "Direction": direction(c.direction),
                "Protocol": protocol(c.protocol),
                "ProcessId": c.process_id,
                "UserId": c.user_id.map(|u| u.to_string()),
                "Executable": c.executable,
                "CommandLine": c.command_line,
            }),
            c.extra,
        )]),
        wit::Event::ListeningPorts(ports) => security(
            "ListeningPorts",
            Periodic,
            ports
                .into_iter()
                .map(|p| {
                    with_extra(
                        json!({
                            "Protocol": protocol(p.protocol),
                            "LocalAddress": p.local_address,
                            "LocalPort": p.local_port.to_string(),
                            "RemoteAddress": p.remote_address,
                            "RemotePort": p.remote_port,
                        }),
                        p.extra,
                    )
                })
                .collect(),
        ),
        wit::Event::Login(l) => security("Login", Triggered, vec![with_extra(
            json!({
                "ProcessId": l.process_id,
                "UserId": l.user_id.map(|u| u.to_string()),
                "UserName": l.user_name,
                "Operation": l.operation,
                "Executable": l.executable,
                "RemoteAddress": l.remote_address,
                "RemotePort": l.remote_port.map(|p| p.to_string()),
                "LocalPort": l.local_port.map(|p| p.to_string()),
                "Result": match l.result { LoginResult::Success => "Success", LoginResult::Fail => "Fail" },
            }),
            l.extra,
        )]),
        wit::Event::LocalUsers(users) => security(
            "LocalUsers",
            Periodic,
            users
                .into_iter()
                .map(|u| {
                    with_extra(
                        json!({
                            "UserName": u.user_name,
                            "UserId": u.user_id.to_string(),
                            "GroupNames": u.group_names.join(";"),
                            "GroupIds": u.group_ids.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(";"),
                        }),
                        u.extra,
                    )
                })
                .collect(),
        ),
        wit::Event::SystemInformation(s) => security("SystemInformation", Periodic, vec![with_extra(
            json!({
                "OSName": s.os_name,
                "OSVersion": s.os_version,
                "OSVendor": s.os_vendor,
                "OsArchitecture": s.os_architecture,
                "HostName": s.host_name,
                "BIOSVersion": s.bios_version,
                "BootDevice": s.boot_device,
                "TotalPhysicalMemoryInKB": s.total_physical_memory_kb,
                "FreePhysicalMemoryInKB": s.free_physical_memory_kb,
                "TotalVirtualMemoryInKB": s.total_virtual_memory_kb,
                "FreeVirtualMemoryInKB": s.free_virtual_memory_kb,
            }),
            s.extra,
        )]),
        wit::Event::Heartbeat => SecurityEvent { family: Family::Edgeguard, ..security("Heartbeat", Periodic, vec![]) },
        wit::Event::Custom(c) => {
            let reject = |reason: String| Rejected { name: c.name.clone(), reason };
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                return Err(reject("a custom event name must be non-empty ASCII letters and digits".into()));
            }
            let mut payload = Vec::with_capacity(c.payload_json.len());
            for (i, item) in c.payload_json.iter().enumerate() {
                match serde_json::from_str::<Value>(item) {
                    Ok(v @ Value::Object(_)) => payload.push(v),
                    Ok(_) => return Err(reject(format!("payload item {i} is not a JSON object"))),
                    Err(e) => return Err(reject(format!("payload item {i} is not JSON: {e}"))),
                }
            }
            if !c.periodic && payload.is_empty() {
                return Err(reject("a triggered event needs at least one payload item".into()));
            }
            let category = if c.periodic { Periodic } else { Triggered };
            SecurityEvent { family: Family::Edgeguard, ..security(&c.name, category, payload) }
        }
    })
}

/// Drops null fields (the schema marks absent optional fields by omission) and adds ExtraDetails.
fn with_extra(mut item: Value, extra: Vec<(String, String)>) -> Value {
    if let Value::Object(map) = &mut item {
        map.retain(|_, v| !v.is_null());
        if !extra.is_empty() {
            let details: Map<String, Value> = extra
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            map.insert("ExtraDetails".into(), Value::Object(details));
        }
    }
    item
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::In => "In",
        Direction::Out => "Out",
    }
}

/// Which queue an event goes to; `Off` events are never collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Never collected.
    Off,
    /// The low-priority queue.
    Low,
    /// The high-priority queue.
    High,
}

impl Priority {
    /// Case-insensitive, as the agents match it.
    pub fn parse(text: &str) -> Option<Priority> {
        [Priority::Off, Priority::Low, Priority::High]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }

    /// The name as the ASC configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Off => "Off",
            Priority::Low => "Low",
            Priority::High => "High",
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
