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
    /// The memory the event holds, roughly (see [`heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<SecurityEvent>()
            + self.name.len()
            + self.payload.iter().map(heap_bytes).sum::<usize>()
    }
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
        wit::Event::ConnectionCreate(c) => {
            // A connection told by its audit record alone has no local end: left out.
            let local = !c.local_address.is_empty();
            security("ConnectionCreate", Triggered, vec![with_extra(
            json!({
                "RemoteAddress": c.remote_address,
                "RemotePort": c.remote_port.to_string(),
                "LocalAddress": local.then_some(c.local_address),
                "LocalPort": local.then(|| c.local_port.to_string()),
                "Direction": direction(c.direction),
                "Protocol": protocol(c.protocol),
                "ProcessId": c.process_id,
                "UserId": c.user_id.map(|u| u.to_string()),
                "Executable": c.executable,
                "CommandLine": c.command_line,
            }),
            c.extra,
        )])
        }
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

/// The kinds of analyzers' findings, in the project's message family.
pub const FINDING_KINDS: [&str; 2] = ["Alert", "Recommendation"];

/// At most this many MITRE ATT&CK techniques, and evidence Ids, per finding.
pub const MAX_TECHNIQUES: usize = 16;
/// See [`MAX_TECHNIQUES`].
pub const MAX_EVIDENCE: usize = 64;

/// Converts an analyzer's finding into an `Alert` or `Recommendation` event. Its evidence is
/// checked by the caller, which knows what the analyzer was handed.
pub fn from_finding(
    f: crate::wit::analyzer::edgeguard::collector::analysis::Finding,
) -> Result<SecurityEvent, Rejected> {
    use crate::wit::analyzer::edgeguard::collector::analysis::{FindingKind, Severity as S};
    let kind = match f.kind {
        FindingKind::Alert => "Alert",
        FindingKind::Recommendation => "Recommendation",
    };
    let reject = |reason: String| Rejected {
        name: format!("{kind} {}", f.name),
        reason,
    };
    if f.name.is_empty() || f.name.len() > 64 || !f.name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(reject(
            "a finding's name must be 1 to 64 ASCII letters and digits".into(),
        ));
    }
    if f.title.trim().is_empty() {
        return Err(reject("a finding needs a title".into()));
    }
    if f.techniques.len() > MAX_TECHNIQUES || f.evidence.len() > MAX_EVIDENCE {
        return Err(reject(format!(
            "a finding cites at most {MAX_TECHNIQUES} techniques and {MAX_EVIDENCE} evidence events"
        )));
    }
    if let Some(bad) = f.techniques.iter().find(|t| !is_technique(t)) {
        return Err(reject(format!(
            "`{}` is not a MITRE ATT&CK technique id (T1234 or T1234.001)",
            shown_name(bad)
        )));
    }
    let e = &f.entities;
    let entities = with_extra(
        json!({
            "UserName": e.user_name,
            "UserId": e.user_id.map(|u| u.to_string()),
            "ProcessId": e.process_id,
            "Executable": e.executable,
            "CommandLine": e.command_line,
            "RemoteAddress": e.remote_address,
            "RemotePort": e.remote_port.map(|p| p.to_string()),
            "LocalPort": e.local_port.map(|p| p.to_string()),
            "Container": e.container,
            "Module": e.module,
            "File": e.file,
        }),
        Vec::new(),
    );
    let severity = match f.severity {
        S::Informational => "Informational",
        S::Low => "Low",
        S::Medium => "Medium",
        S::High => "High",
    };
    let item = with_extra(
        json!({
            "Rule": f.name,
            "Severity": severity,
            "Title": f.title,
            "Description": f.description,
            "Remediation": f.remediation,
            "Techniques": f.techniques,
            "Entities": entities,
            "Evidence": f.evidence,
        }),
        f.extra,
    );
    Ok(SecurityEvent {
        family: Family::Edgeguard,
        ..SecurityEvent::new(kind, Category::Triggered, EventType::Security, vec![item])
    })
}

/// `T` and four digits, optionally `.` and three: a MITRE ATT&CK (sub-)technique id.
fn is_technique(id: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match id
        .strip_prefix('T')
        .map(|rest| rest.split_once('.').unwrap_or((rest, "")))
    {
        Some((main, "")) => digits(main, 4) && !id.ends_with('.'),
        Some((main, sub)) => digits(main, 4) && digits(sub, 3),
        None => false,
    }
}

/// Drops null fields (the schema marks absent optional fields by omission) and adds ExtraDetails.
fn with_extra(mut item: Value, extra: Vec<(String, String)>) -> Value {
    if let Value::Object(map) = &mut item {
        map.retain(|_, v| !v.is_null());
        if !extra.is_empty() {
            // Room for the provenance the scheduler adds: growing a map doubles it.
            let mut details = Map::with_capacity(extra.len() + PROVENANCE_KEYS.len());
            details.extend(extra.into_iter().map(|(k, v)| (k, Value::String(v))));
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

/// Who emitted an event, as the host knows it: a plugin as it was loaded, or the host itself.
/// Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The plugin's configured name; [`Origin::HOST`] for the host.
    pub plugin: std::sync::Arc<str>,
    /// The version it describes; the host's own for the host.
    pub version: std::sync::Arc<str>,
    /// The SHA-256 of its component, lower-case hex; empty for the host.
    pub digest: std::sync::Arc<str>,
}

impl Origin {
    /// The name the host's own events go by.
    pub const HOST: &'static str = "edgeguard";

    /// The host itself.
    pub fn host() -> Origin {
        Origin {
            plugin: Origin::HOST.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            digest: "".into(),
        }
    }
}

/// An event's payload item flattened into named fields, as analyzers are handed it: object
/// keys joined by `.`, list items by their index, strings as they are, other values as their
/// JSON text; nulls are absent. At most `max_fields` fields, so one item cannot flood a call.
pub fn flatten(item: &Value, max_fields: usize) -> Vec<(String, String)> {
    fn walk(prefix: &mut String, value: &Value, out: &mut Vec<(String, String)>, max: usize) {
        if out.len() >= max {
            return;
        }
        let nested = |prefix: &mut String, key: &str, value: &Value, out: &mut Vec<_>| {
            let len = prefix.len();
            if len > 0 {
                prefix.push('.');
            }
            prefix.push_str(key);
            walk(prefix, value, out, max);
            prefix.truncate(len);
        };
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, value) in map {
                    nested(prefix, key, value, out);
                }
            }
            Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    nested(prefix, &i.to_string(), value, out);
                }
            }
            Value::String(text) => out.push((prefix.clone(), text.clone())),
            other => out.push((prefix.clone(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk(&mut String::new(), item, &mut out, max_fields);
    out
}

/// Fields one payload item hands an analyzer, at most.
pub const MAX_FIELDS: usize = 256;

/// An event as an analyzer is handed it.
pub fn observed(
    event: &SecurityEvent,
    origin: &Origin,
) -> crate::wit::analyzer::edgeguard::collector::analysis::Observed {
    use crate::wit::analyzer::edgeguard::collector::analysis as a;
    a::Observed {
        id: event.id.hyphenated().to_string(),
        name: event.name.clone(),
        periodic: event.category == Category::Periodic,
        time_ms: u64::try_from(event.time.timestamp_millis()).unwrap_or(0),
        origin: a::Origin {
            plugin: origin.plugin.to_string(),
            version: origin.version.to_string(),
            digest: origin.digest.to_string(),
        },
        items: event
            .payload
            .iter()
            .map(|item| flatten(item, MAX_FIELDS))
            .collect(),
    }
}

/// The heap memory a JSON value holds, roughly (strings' bytes and a word or so per node):
/// what bounds queues of events by bytes without serializing them.
pub fn heap_bytes(value: &Value) -> usize {
    const NODE: usize = 32;
    NODE + match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(heap_bytes).sum(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| NODE + k.len() + heap_bytes(v))
            .sum(),
        _ => 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::analyzer::edgeguard::collector::analysis::{
        Entities, Finding, FindingKind, Severity as S,
    };

    #[test]
    fn items_flatten_into_named_fields() {
        let item = json!({
            "Executable": "/bin/sh",
            "ProcessId": 42,
            "Privileged": true,
            "Gone": null,
            "Mounts": [{"Source": "/", "Target": "/host"}],
            "ExtraDetails": {"Plugin": "process"},
        });
        assert_eq!(
            flatten(&item, MAX_FIELDS),
            [
                ("Executable", "/bin/sh"),
                ("ProcessId", "42"),
                ("Privileged", "true"),
                ("Mounts.0.Source", "/"),
                ("Mounts.0.Target", "/host"),
                ("ExtraDetails.Plugin", "process"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let wide = Value::Object((0..1000).map(|i| (i.to_string(), json!(i))).collect());
        assert_eq!(flatten(&wide, MAX_FIELDS).len(), MAX_FIELDS, "bounded");
    }

    fn finding(name: &str, techniques: &[&str]) -> Finding {
        Finding {
            kind: FindingKind::Alert,
            name: name.into(),
            severity: S::High,
            title: "Reverse shell".into(),
            description: String::new(),
            remediation: String::new(),
            techniques: techniques.iter().map(|t| t.to_string()).collect(),
            entities: Entities {
                user_name: Some("www-data".into()),
                user_id: None,
                process_id: Some(7),
                executable: None,
                command_line: None,
                remote_address: Some("192.0.2.1".into()),
                remote_port: Some(4444),
                local_port: None,
                container: None,
                module: None,
                file: None,
            },
            evidence: vec![],
            extra: vec![("Shell".into(), "bash".into())],
        }
    }

    #[test]
    fn a_finding_becomes_an_alert_event() {
        let e = from_finding(finding("ReverseShell", &["T1059", "T1059.004"])).unwrap();
        assert_eq!((e.name.as_str(), e.family), ("Alert", Family::Edgeguard));
        let item = &e.payload[0];
        assert_eq!(item["Rule"], "ReverseShell");
        assert_eq!(item["Severity"], "High");
        assert_eq!(
            item["Entities"],
            json!({"UserName": "www-data", "ProcessId": 7, "RemoteAddress": "192.0.2.1", "RemotePort": "4444"})
        );
        assert_eq!(item["ExtraDetails"]["Shell"], "bash");
    }

    #[test]
    fn a_finding_that_is_not_one_is_refused_by_name() {
        for (name, techniques, why) in [
            ("", &[][..], "name"),
            ("Reverse Shell", &[], "name"),
            ("ReverseShell", &["T10"], "technique"),
            ("ReverseShell", &["T1059."], "technique"),
            ("ReverseShell", &["t1059"], "technique"),
        ] {
            let err = from_finding(finding(name, techniques)).unwrap_err();
            assert!(
                err.to_string().contains(why),
                "{name:?} {techniques:?}: {err}"
            );
        }
        let many = vec!["T1059"; MAX_TECHNIQUES + 1];
        assert!(from_finding(finding("X", &many)).is_err());
    }

    #[test]
    fn an_event_is_handed_over_with_its_id_and_origin() {
        let e = SecurityEvent::new(
            "Login",
            Category::Triggered,
            EventType::Security,
            vec![json!({"UserName": "root", "Result": "Fail"})],
        );
        let o = observed(&e, &Origin::host());
        assert_eq!(o.id, e.id.hyphenated().to_string());
        assert_eq!((o.name.as_str(), o.periodic), ("Login", false));
        assert_eq!(o.origin.plugin, Origin::HOST);
        assert_eq!(o.items[0][1], ("Result".to_owned(), "Fail".to_owned()));
        assert!(o.time_ms > 1_700_000_000_000);
    }
}
