//! The Azure Security Center for IoT agent configuration object
//! (`ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration`): parsing with the agents'
//! semantics, the documented defaults, the semantic checks that raise ConfigurationError
//! events, and the effective configuration serialized back as the agents report it.
//!
//! An update is all or nothing: any property that does not parse refuses the whole update
//! (TypeMismatch) and the configuration in force stays.

use crate::events::{Category, EventType, SecurityEvent};
use serde_json::{Map, Value, json};
use std::fmt::{self, Write as _};
use std::time::Duration;

/// The object's name in the module twin.
pub const OBJECT_NAME: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";

pub use crate::events::Priority;

/// Every event name with an `eventPriority<Name>` key, in the order of the official default
/// twin, with its default priority.
pub const ASC_EVENTS: [(&str, Priority); 14] = [
    ("ConnectedHardware", Priority::Low),
    ("ListeningPorts", Priority::High),
    ("ProcessCreate", Priority::Low),
    ("ProcessTerminate", Priority::Low),
    ("SystemInformation", Priority::Low),
    ("LocalUsers", Priority::High),
    ("Login", Priority::High),
    ("ConnectionCreate", Priority::Low),
    ("FirewallConfiguration", Priority::Low),
    ("OSBaseline", Priority::Low),
    ("Diagnostic", Priority::Low),
    ("ConfigurationError", Priority::Low),
    ("DroppedEventsStatistics", Priority::Low),
    ("MessageStatistics", Priority::Low),
];

/// The events the ASC configuration can aggregate (`aggregationEnabled<Name>`, `aggregationInterval<Name>`).
pub const AGGREGATED_EVENTS: [&str; 3] = ["ProcessCreate", "ConnectionCreate", "ProcessTerminate"];

/// Operational events travel in the operational queue, ahead of everything else.
pub const OPERATIONAL_EVENTS: [&str; 3] = [
    "ConfigurationError",
    "DroppedEventsStatistics",
    "MessageStatistics",
];

/// The schema's bounds: IoT Hub refuses device-to-cloud messages above 256 KiB, and neither the
/// cache nor a message can usefully be smaller than 8 KiB.
pub const MIN_SIZE: u64 = 8192;
/// The largest message IoT Hub accepts (256 KiB).
pub const MAX_MESSAGE_SIZE: u64 = 262_144;
/// The cache lives on the device's storage; past 1 GiB something is misconfigured.
pub const MAX_CACHE_SIZE: u64 = 1 << 30;
/// Durations are milliseconds in a u32 in the reference agent (about 49.7 days).
pub const MAX_DURATION: Duration = Duration::from_millis(u32::MAX as u64);

/// Whether and how long an event kind aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregation {
    /// `aggregationEnabled<Name>`.
    pub enabled: bool,
    /// `aggregationInterval<Name>`.
    pub interval: Duration,
}

/// The effective configuration: every property, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfiguration {
    /// `highPriorityMessageFrequency`.
    pub high_priority_message_frequency: Duration,
    /// `lowPriorityMessageFrequency`.
    pub low_priority_message_frequency: Duration,
    /// `snapshotFrequency`.
    pub snapshot_frequency: Duration,
    /// `maxLocalCacheSizeInBytes`.
    pub max_local_cache_size: u64,
    /// `maxMessageSizeInBytes`.
    pub max_message_size: u64,
    /// Indexed like [`ASC_EVENTS`].
    pub event_priority: [Priority; 14],
    /// Indexed like [`AGGREGATED_EVENTS`].
    pub aggregation: [Aggregation; 3],
    /// The C agent's `eventPriorityOperational`; kept and reported when given, it changes
    /// nothing (operational events always use their own queue unless their own key is Off).
    pub operational_priority: Option<Priority>,
    /// OS-baseline custom checks: accepted and reported for compatibility; edgeguard has no
    /// OS-baseline collector.
    pub baseline_custom_checks_enabled: bool,
    /// `baselineCustomChecksFilePath`.
    pub baseline_custom_checks_file_path: Option<String>,
    /// `baselineCustomChecksFileHash`.
    pub baseline_custom_checks_file_hash: Option<String>,
    /// Copied into the `HubResourceId` message property by the Edge Hub sink.
    pub hub_resource_id: Option<String>,
}

impl Default for AgentConfiguration {
    fn default() -> Self {
        AgentConfiguration {
            high_priority_message_frequency: Duration::from_secs(7 * 60),
            low_priority_message_frequency: Duration::from_secs(5 * 3600),
            snapshot_frequency: Duration::from_secs(13 * 3600),
            max_local_cache_size: 2_560_000,
            max_message_size: 204_800,
            event_priority: ASC_EVENTS.map(|(_, p)| p),
            aggregation: [Aggregation {
                enabled: true,
                interval: Duration::from_secs(3600),
            }; 3],
            operational_priority: None,
            baseline_custom_checks_enabled: false,
            baseline_custom_checks_file_path: None,
            baseline_custom_checks_file_hash: None,
            hub_resource_id: None,
        }
    }
}

/// The ConfigurationError kinds of the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// A value did not parse: the update is refused.
    TypeMismatch,
    /// Applied, but wasteful.
    NotOptimal,
    /// Applied, but two values contradict each other.
    Conflict,
}

impl ErrorType {
    /// The name as the ConfigurationError event spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::TypeMismatch => "TypeMismatch",
            ErrorType::NotOptimal => "NotOptimal",
            ErrorType::Conflict => "Conflict",
        }
    }
}

/// One problem with a configuration: becomes a ConfigurationError event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The property at fault.
    pub name: String,
    /// What kind of problem.
    pub error_type: ErrorType,
    /// The value in force for that property after the update (or the refusal), as reported.
    pub used: String,
    /// What was wrong, for people.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {} (in force: {})",
            self.name,
            self.error_type.as_str(),
            self.message,
            self.used
        )
    }
}

impl ConfigIssue {
    /// The ConfigurationError event that reports it.
    pub fn to_event(&self) -> SecurityEvent {
        let message = match self.error_type {
            ErrorType::TypeMismatch => format!(
                "{}; the update was refused whole and the configuration in force stays",
                self.message
            ),
            _ => self.message.clone(),
        };
        SecurityEvent::new(
            "ConfigurationError",
            Category::Triggered,
            EventType::Operational,
            vec![json!({
                "ConfigurationName": self.name,
                "ErrorType": self.error_type.as_str(),
                "UsedConfiguration": self.used,
                "Message": message,
            })],
        )
    }
}

/// A refused update: every property that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the agent configuration was refused whole: {}", .issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Refused {
    /// Every problem found.
    pub issues: Vec<ConfigIssue>,
}

impl AgentConfiguration {
    /// The priority of an ASC event name, `None` for names the object does not configure.
    pub fn priority(&self, event: &str) -> Option<Priority> {
        ASC_EVENTS
            .iter()
            .position(|(name, _)| *name == event)
            .map(|i| self.event_priority[i])
    }

    /// Whether and how long `event` aggregates, if the object has a say.
    pub fn aggregation(&self, event: &str) -> Option<Aggregation> {
        AGGREGATED_EVENTS
            .iter()
            .position(|name| *name == event)
            .map(|i| self.aggregation[i])
    }

    /// Parses a configuration object (each property `{"value": ...}`), relative to the defaults:
    /// a missing or null object, property or value means the default, as in the agents.
    /// `current` names the configuration in force, which a refusal reports as used.
    pub fn parse(
        object: &Value,
        current: &AgentConfiguration,
    ) -> Result<AgentConfiguration, Refused> {
        let refuse = |name: &str, message: String| ConfigIssue {
            name: name.to_owned(),
            error_type: ErrorType::TypeMismatch,
            used: current
                .reported_value(name)
                .map_or_else(|| "(none)".into(), |v| display_value(&v)),
            message,
        };
        let map = match object {
            Value::Null => return Ok(AgentConfiguration::default()),
            Value::Object(map) => map,
            other => {
                return Err(Refused {
                    issues: vec![refuse(
                        OBJECT_NAME,
                        format!("must be an object, not {}", kind(other)),
                    )],
                });
            }
        };
        let mut config = AgentConfiguration::default();
        let mut issues = Vec::new();
        for (key, wrapped) in map {
            // `$`-prefixed keys are twin metadata, never configuration.
            if key.starts_with('$') {
                continue;
            }
            let value = match wrapped {
                Value::Null => continue,
                Value::Object(inner) => match inner.get("value") {
                    Some(Value::Null) | None if inner.keys().all(|k| k == "value") => continue,
                    Some(v) if inner.len() == 1 => v,
                    _ => {
                        let extra: Vec<&str> = inner
                            .keys()
                            .filter(|k| *k != "value")
                            .map(String::as_str)
                            .collect();
                        issues.push(refuse(
                            key,
                            format!("unexpected member(s) {} beside `value`", extra.join(", ")),
                        ));
                        continue;
                    }
                },
                other => {
                    issues.push(refuse(
                        key,
                        format!("must be wrapped as {{\"value\": ...}}, got {}", kind(other)),
                    ));
                    continue;
                }
            };
            if let Err(message) = config.set(key, value) {
                issues.push(refuse(key, message));
            }
        }
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(Refused { issues })
        }
    }

    /// Reads the object from a module twin: a whole twin (`properties.desired.<object>`), a
    /// desired section (`<object>` at its root), or the object itself.
    pub fn from_twin(
        twin: &Value,
        current: &AgentConfiguration,
    ) -> Result<AgentConfiguration, Refused> {
        let desired = twin.pointer("/properties/desired").unwrap_or(twin);
        Self::parse(desired.get(OBJECT_NAME).unwrap_or(&Value::Null), current)
    }

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            "highPriorityMessageFrequency" => {
                self.high_priority_message_frequency = duration(value)?;
            }
            "lowPriorityMessageFrequency" => self.low_priority_message_frequency = duration(value)?,
            "snapshotFrequency" => self.snapshot_frequency = duration(value)?,
            "maxLocalCacheSizeInBytes" => {
                self.max_local_cache_size = integer(value, MIN_SIZE, MAX_CACHE_SIZE)?;
            }
            "maxMessageSizeInBytes" => {
                self.max_message_size = integer(value, MIN_SIZE, MAX_MESSAGE_SIZE)?;
            }
            "eventPriorityOperational" => self.operational_priority = Some(priority(value)?),
            "baselineCustomChecksEnabled" => self.baseline_custom_checks_enabled = boolean(value)?,
            "baselineCustomChecksFilePath" => {
                self.baseline_custom_checks_file_path = Some(string(value)?);
            }
            "baselineCustomChecksFileHash" => {
                self.baseline_custom_checks_file_hash = Some(string(value)?);
            }
            "hubResourceId" => {
                self.hub_resource_id = Some(string(value)?).filter(|s| !s.is_empty());
            }
            _ => {
                if let Some(i) = key
                    .strip_prefix("eventPriority")
                    .and_then(|n| ASC_EVENTS.iter().position(|(e, _)| *e == n))
                {
                    self.event_priority[i] = priority(value)?;
                } else if let Some(i) = key
                    .strip_prefix("aggregationEnabled")
                    .and_then(aggregated_index)
                {
                    self.aggregation[i].enabled = boolean(value)?;
                } else if let Some(i) = key
                    .strip_prefix("aggregationInterval")
                    .and_then(aggregated_index)
                {
                    self.aggregation[i].interval = duration(value)?;
                } else {
                    return Err("unknown property".into());
                }
            }
        }
        Ok(())
    }

    /// The semantic checks of the reference agents. The configuration applies anyway; each
    /// finding becomes a ConfigurationError event.
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.max_local_cache_size < self.max_message_size {
            issues.push(ConfigIssue {
                name: "maxLocalCacheSizeInBytes".into(),
                error_type: ErrorType::Conflict,
                used: self.max_local_cache_size.to_string(),
                message: format!(
                    "maxLocalCacheSizeInBytes ({}) is smaller than maxMessageSizeInBytes ({}): messages can never be full",
                    self.max_local_cache_size, self.max_message_size
                ),
            });
        }
        if !self.max_message_size.is_multiple_of(4096) {
            issues.push(ConfigIssue {
                name: "maxMessageSizeInBytes".into(),
                error_type: ErrorType::NotOptimal,
                used: self.max_message_size.to_string(),
                message: format!(
                    "{} is not a multiple of 4096: IoT Hub meters messages in 4 KB units",
                    self.max_message_size
                ),
            });
        }
        if self.high_priority_message_frequency > self.low_priority_message_frequency {
            issues.push(ConfigIssue {
                name: "highPriorityMessageFrequency".into(),
                error_type: ErrorType::Conflict,
                used: format_duration(self.high_priority_message_frequency),
                message: format!(
                    "highPriorityMessageFrequency ({}) is longer than lowPriorityMessageFrequency ({})",
                    format_duration(self.high_priority_message_frequency),
                    format_duration(self.low_priority_message_frequency)
                ),
            });
        }
        issues
    }

    /// The effective configuration as the agents report it: every property, defaults
    /// included, each `{"value": ...}`, durations in ISO-8601, priorities as the schema spells
    /// them, null strings omitted.
    pub fn to_reported(&self) -> Value {
        let mut map = Map::new();
        for name in self.property_names() {
            if let Some(value) = self.reported_value(&name) {
                map.insert(name, json!({ "value": value }));
            }
        }
        Value::Object(map)
    }

    fn property_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "highPriorityMessageFrequency",
            "lowPriorityMessageFrequency",
            "snapshotFrequency",
            "maxLocalCacheSizeInBytes",
            "maxMessageSizeInBytes",
        ]
        .map(String::from)
        .into();
        names.extend(ASC_EVENTS.iter().map(|(e, _)| format!("eventPriority{e}")));
        names.push("eventPriorityOperational".into());
        for e in AGGREGATED_EVENTS {
            names.push(format!("aggregationEnabled{e}"));
            names.push(format!("aggregationInterval{e}"));
        }
        names.extend(
            [
                "baselineCustomChecksEnabled",
                "baselineCustomChecksFilePath",
                "baselineCustomChecksFileHash",
                "hubResourceId",
            ]
            .map(String::from),
        );
        names
    }

    /// One property's reported value; `None` when it is unset (null strings) or unknown.
    pub fn reported_value(&self, name: &str) -> Option<Value> {
        Some(match name {
            "highPriorityMessageFrequency" => {
                format_duration(self.high_priority_message_frequency).into()
            }
            "lowPriorityMessageFrequency" => {
                format_duration(self.low_priority_message_frequency).into()
            }
            "snapshotFrequency" => format_duration(self.snapshot_frequency).into(),
            "maxLocalCacheSizeInBytes" => self.max_local_cache_size.into(),
            "maxMessageSizeInBytes" => self.max_message_size.into(),
            "eventPriorityOperational" => self.operational_priority?.as_str().into(),
            "baselineCustomChecksEnabled" => self.baseline_custom_checks_enabled.into(),
            "baselineCustomChecksFilePath" => self.baseline_custom_checks_file_path.clone()?.into(),
            "baselineCustomChecksFileHash" => self.baseline_custom_checks_file_hash.clone()?.into(),
            "hubResourceId" => self.hub_resource_id.clone()?.into(),
            _ => {
                if let Some(p) = name
                    .strip_prefix("eventPriority")
                    .and_then(|e| self.priority(e))
                {
                    p.as_str().into()
                } else if let Some(a) = name
                    .strip_prefix("aggregationEnabled")
                    .and_then(|e| self.aggregation(e))
                {
                    a.enabled.into()
                } else if let Some(a) = name
                    .strip_prefix("aggregationInterval")
                    .and_then(|e| self.aggregation(e))
                {
                    format_duration(a.interval).into()
                } else {
                    return None;
                }
            }
        })
    }
}

fn aggregated_index(event: &str) -> Option<usize> {
    AGGREGATED_EVENTS.iter().position(|e| *e == event)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn duration(v: &Value) -> Result<Duration, String> {
    let text = v.as_str().ok_or_else(|| {
        format!(
            "expected an ISO-8601 duration string such as \"PT7M\", got {}",
            kind(v)
        )
    })?;
    parse_duration(text)
}

fn integer(v: &Value, min: u64, max: u64) -> Result<u64, String> {
    let n = match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("expected a non-negative integer, got {n}"))?,
        other => return Err(format!("expected an integer, got {}", kind(other))),
    };
    if n < min || n > max {
        return Err(format!("{n} is out of range ({min} to {max})"));
    }
    Ok(n)
}

fn priority(v: &Value) -> Result<Priority, String> {
    v.as_str()
        .and_then(Priority::parse)
        .ok_or_else(|| format!("expected \"Off\", \"Low\" or \"High\", got {v}"))
}

fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, got {}", kind(v)))
}

fn string(v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, got {}", kind(v)))
}

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// An ISO-8601 duration (`P[nY][nM][nW][nD][T[nH][nM][nS]]`) as the agents read it: a year is
/// 365 days and a month 30; only the last component may have a fraction; zero is refused, and
/// so is anything above [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("`{text}` is not a valid ISO-8601 duration ({why})");
    let rest = text
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with P, e.g. PT7M"))?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(bad("nothing after T")),
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(bad("no components"));
    }
    let mut total: f64 = 0.0;
    let mut fraction_seen = false;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365 * DAY),
                ('M', 30 * DAY),
                ('W', 7 * DAY),
                ('D', DAY),
            ][..],
        ),
        (
            time.unwrap_or(""),
            &[('H', HOUR), ('M', MINUTE), ('S', SECOND)][..],
        ),
    ] {
        let mut s = part;
        let mut next_unit = 0;
        while !s.is_empty() {
            let end = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| bad("a number without a unit"))?;
            let (number, tail) = s.split_at(end);
            let unit = tail.chars().next().expect("find stopped at a character");
            let at = units[next_unit..]
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(|| bad(&format!("unexpected `{unit}`")))?;
            next_unit += at + 1;
            if number.is_empty()
                || number.starts_with('.')
                || number.ends_with('.')
                || number.matches('.').count() > 1
            {
                return Err(bad(&format!("`{number}` is not a number")));
            }
            if fraction_seen {
                return Err(bad("only the last component may have a fraction"));
            }
            fraction_seen = number.contains('.');
            let n: f64 = number
                .parse()
                .map_err(|_| bad(&format!("`{number}` is not a number")))?;
            total += n * units[next_unit - 1].1 as f64;
            s = &tail[1..];
        }
    }
    if total < 1.0 {
        return Err(bad("it must be longer than zero"));
    }
    if total > MAX_DURATION.as_millis() as f64 {
        return Err(format!("`{text}` is too long (at most about 49 days)"));
    }
    Ok(Duration::from_millis(total.round() as u64))
}

/// Formats a duration as the reference agent does: `P[nM][nW][nD][T[nH][nM][nS]]`, months of
/// 30 days, seconds with a fraction when needed.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    let mut out = String::from("P");
    for (unit, size) in [('M', 30 * DAY), ('W', 7 * DAY), ('D', DAY)] {
        if ms >= size {
            let _ = write!(out, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    if ms > 0 {
        out.push('T');
        for (unit, size) in [('H', HOUR), ('M', MINUTE)] {
            if ms >= size {
                let _ = write!(out, "{}{unit}", ms / size);
                ms %= size;
            }
        }
        match (ms / SECOND, ms % SECOND) {
            (0, 0) => {}
            (s, 0) => {
                let _ = write!(out, "{s}S");
            }
            (s, frac) => {
                let _ = write!(out, "{s}.{}S", format!("{frac:03}").trim_end_matches('0'));
            }
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format_like_the_agents() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("PT7M"), Duration::from_secs(420));
        assert_eq!(d("PT5H"), Duration::from_secs(5 * 3600));
        assert_eq!(d("P1D"), Duration::from_secs(86400));
        assert_eq!(d("P1M"), Duration::from_secs(30 * 86400));
        assert_eq!(
            d("P1W2DT3H4M5S"),
            Duration::from_secs(9 * 86400 + 3 * 3600 + 4 * 60 + 5)
        );
        assert_eq!(d("PT0.5S"), Duration::from_millis(500));
        assert_eq!(d("PT1.5H"), Duration::from_secs(5400));
        for bad in [
            "", "P", "PT", "7M", "-PT1M", "PT-1M", "PT0S", "P0D", "PT1M1H", "PT1.5M3S", "PT1X",
            "PT1", "P1H", "PT1..5S", "P1000Y",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
        for (s, expect) in [
            ("PT7M", "PT7M"),
            ("PT5H", "PT5H"),
            ("PT13H", "PT13H"),
            ("PT90M", "PT1H30M"),
            ("PT168H", "P1W"),
            ("P31D", "P1M1D"),
            ("PT0.25S", "PT0.25S"),
        ] {
            assert_eq!(format_duration(d(s)), expect);
        }
    }

    #[test]
    fn priorities_are_case_insensitive() {
        assert_eq!(Priority::parse("high"), Some(Priority::High));
        assert_eq!(Priority::parse("OFF"), Some(Priority::Off));
        assert_eq!(Priority::parse("Lo"), None);
    }
}
