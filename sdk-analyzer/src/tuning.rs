//! Reading an analyzer's tuning, and what every rule needs beside its logic.
//!
//! The configuration of an analyzer is one object per rule, by the rule's name, plus a few
//! analyzer-wide settings:
//!
//! ```json
//! {"FailedBruteForce": {"failures": 8, "window": "2m", "severity": "Medium",
//!                       "except": [{"RemoteAddress": "10.0.0.*"}]},
//!  "SuccessfulLocalLogin": {"enabled": false},
//!  "suppress": "10m"}
//! ```
//!
//! Each rule's section takes `enabled`, `severity` and `except` besides its own keys; every
//! unknown key, wrong type or out-of-range value is refused with its path (`FailedBruteForce.window`),
//! so a typo in the twin never leaves a rule silently untuned.

use crate::{CollectError, Config, Fields, RuleStatus, Severity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// Keys every rule's section takes.
const RULE_KEYS: [&str; 3] = ["enabled", "severity", "except"];
/// Entries of a list setting, exceptions per rule, and fields per exception, at most.
pub const MAX_LIST: usize = 4096;
const MAX_EXCEPTIONS: usize = 1024;
const MAX_EXCEPTION_FIELDS: usize = 16;
/// The longest duration a setting takes.
const MAX_DURATION_MS: u64 = 7 * 86_400_000;

/// An analyzer's configuration, checked against the rules and settings it knows.
pub struct Tuning<'a> {
    config: &'a Config,
}

impl<'a> Tuning<'a> {
    /// Refuses a key that is neither one of `rules` nor one of `settings`.
    pub fn new(
        config: &'a Config,
        rules: &[&str],
        settings: &[&str],
    ) -> Result<Tuning<'a>, CollectError> {
        let known: Vec<&str> = rules.iter().chain(settings).copied().collect();
        crate::config_keys(config, &known)?;
        Ok(Tuning { config })
    }

    /// The section of rule `name`, which takes `keys` besides `enabled`, `severity` and `except`.
    pub fn rule(&self, name: &'a str, keys: &[&str]) -> Result<Section<'a>, CollectError> {
        let section = Section::of(self.config, name)?;
        let mut known = RULE_KEYS.to_vec();
        known.extend_from_slice(keys);
        section.keys(&known)?;
        Ok(section)
    }

    /// The analyzer-wide settings, read as a section of their own.
    pub fn settings(&self) -> Section<'a> {
        Section {
            path: "",
            map: Some(self.config),
        }
    }
}

/// One object of the configuration (absent: every setting at its default), and where it is,
/// for errors.
pub struct Section<'a> {
    path: &'a str,
    map: Option<&'a Config>,
}

impl<'a> Section<'a> {
    fn of(config: &'a Config, name: &'a str) -> Result<Section<'a>, CollectError> {
        match config.get(name) {
            None => Ok(Section {
                path: name,
                map: None,
            }),
            Some(Value::Object(map)) => Ok(Section {
                path: name,
                map: Some(map),
            }),
            Some(other) => Err(CollectError::config(
                name,
                format!("expected an object, got {other}"),
            )),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    fn error(&self, key: &str, problem: impl std::fmt::Display) -> CollectError {
        if self.path.is_empty() {
            CollectError::config(key, problem)
        } else {
            CollectError::config(&format!("{}.{key}", self.path), problem)
        }
    }

    fn keys(&self, known: &[&str]) -> Result<(), CollectError> {
        let mut keys = self.map.into_iter().flat_map(|m| m.keys());
        match keys.find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(self.error(key, format!("unknown key (known: {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    /// The rule's switch and severity: `enabled` and `severity`, else these defaults.
    pub fn switch(&self, enabled: bool, severity: Severity) -> Result<Switch, CollectError> {
        let enabled = match self.get("enabled") {
            None | Some(Value::Null) => enabled,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(self.error("enabled", format!("expected true or false, got {other}")));
            }
        };
        let severity = match self.get("severity") {
            None => severity,
            Some(v) => v.as_str().and_then(severity_named).ok_or_else(|| {
                self.error(
                    "severity",
                    format!("expected Informational, Low, Medium or High, got {v}"),
                )
            })?,
        };
        Ok(Switch {
            enabled,
            severity,
            except: self.exceptions()?,
        })
    }

    /// A whole number in `range`, else `default`.
    pub fn count(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, CollectError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
                self.error(
                    key,
                    format!(
                        "expected a whole number from {} to {}, got {v}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
        }
    }

    /// A duration in milliseconds: seconds as a number, or text with a unit (`90s`, `10m`,
    /// `1h`, `1d`), more than zero and at most 7 days.
    pub fn duration(&self, key: &str, default_ms: u64) -> Result<u64, CollectError> {
        let Some(v) = self.get(key) else {
            return Ok(default_ms);
        };
        let bad = || {
            self.error(
                key,
                format!(
                    "expected seconds or a duration such as \"90s\", \"10m\", \"1h\" (at most 7d), got {v}"
                ),
            )
        };
        let ms = match v {
            Value::Number(n) => n.as_u64().map(|s| s.saturating_mul(1000)),
            Value::String(text) => {
                let split = text
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len());
                let (n, unit) = text.split_at(split);
                let unit_ms = match unit {
                    "s" | "" => Some(1000),
                    "m" => Some(60_000),
                    "h" => Some(3_600_000),
                    "d" => Some(86_400_000),
                    _ => None,
                };
                n.parse::<u64>()
                    .ok()
                    .zip(unit_ms)
                    .map(|(n, unit)| n.saturating_mul(unit))
            }
            _ => None,
        };
        ms.filter(|ms| (1..=MAX_DURATION_MS).contains(ms))
            .ok_or_else(bad)
    }

    /// A list of whole numbers, each in `range` (absent: `None`).
    pub fn counts(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<Vec<u64>>, CollectError> {
        let bad = |v: &Value| {
            self.error(
                key,
                format!(
                    "expected a list of whole numbers from {} to {}, got {}",
                    range.start(),
                    range.end(),
                    shorten(v)
                ),
            )
        };
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Array(items)) if items.len() <= MAX_LIST => items
                .iter()
                .map(|n| {
                    n.as_u64()
                        .filter(|n| range.contains(n))
                        .ok_or_else(|| bad(v))
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(bad(v)),
        }
    }

    /// A list of strings, at most [`MAX_LIST`] (absent: `None`).
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, CollectError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() > MAX_LIST => Err(self.error(
                key,
                format!("at most {MAX_LIST} entries, got {}", items.len()),
            )),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.error(key, format!("expected text, got {item}")))
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(self.error(key, format!("expected a list of text, got {other}"))),
        }
    }

    /// `except`: a list of objects, each naming fields of an event and the value each must
    /// have (`*` matches any run of characters) for the rule to stay quiet about it.
    fn exceptions(&self) -> Result<Exceptions, CollectError> {
        let items = match self.get("except") {
            None => return Ok(Exceptions::default()),
            Some(Value::Array(items)) if items.len() <= MAX_EXCEPTIONS => items,
            Some(other) => {
                return Err(self.error(
                    "except",
                    format!(
                        "expected a list of at most {MAX_EXCEPTIONS} objects of field values, got {}",
                        shorten(other)
                    ),
                ));
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let fields = match item {
                Value::Object(map) if !map.is_empty() && map.len() <= MAX_EXCEPTION_FIELDS => map,
                other => {
                    return Err(self.error(
                        &format!("except.{i}"),
                        format!(
                            "expected an object of 1 to {MAX_EXCEPTION_FIELDS} field values, got {}",
                            shorten(other)
                        ),
                    ));
                }
            };
            let mut exception = Vec::with_capacity(fields.len());
            for (field, value) in fields {
                let Some(pattern) = value.as_str() else {
                    return Err(self.error(
                        &format!("except.{i}.{field}"),
                        format!("expected text, got {value}"),
                    ));
                };
                exception.push((field.clone(), pattern.to_owned()));
            }
            out.push(exception);
        }
        Ok(Exceptions(out))
    }
}

fn shorten(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A rule's switch, severity and exceptions, as configured.
#[derive(Clone, Debug)]
pub struct Switch {
    /// Whether the rule raises findings.
    pub enabled: bool,
    /// The severity of what it raises.
    pub severity: Severity,
    /// Events it stays quiet about.
    pub except: Exceptions,
}

impl Switch {
    /// Whether the rule raises for an event with these fields: enabled, and no exception
    /// covers it.
    pub fn applies(&self, fields: &[(String, String)]) -> bool {
        self.enabled && !self.except.covers(fields)
    }

    /// The rule's line in the reported rule set.
    pub fn status(&self, name: &str, detail: impl std::fmt::Display) -> RuleStatus {
        if !self.enabled {
            return RuleStatus::off(name);
        }
        let line = format!("{}; {detail}", severity_name(self.severity));
        match self.except.0.len() {
            0 => RuleStatus::on(name, line),
            n => RuleStatus::on(name, format!("{line}; {n} exceptions")),
        }
    }
}

/// Falco-style exceptions: tuples of field values, any one of which silences a rule.
#[derive(Clone, Debug, Default)]
pub struct Exceptions(Vec<Vec<(String, String)>>);

impl Exceptions {
    /// Whether one exception has every one of its fields matched by `fields`.
    pub fn covers(&self, fields: &[(String, String)]) -> bool {
        self.0.iter().any(|exception| {
            exception
                .iter()
                .all(|(name, pattern)| fields.field(name).is_some_and(|value| glob(pattern, value)))
        })
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Keys a [`Quiet`] keeps, at most: past it the key quiet the shortest is forgotten.
const MAX_QUIET: usize = 4096;

/// Suppression: after a rule raises for a key (a source, a user, a process), the key stays
/// quiet for a while, so one attack is one alert. Kept in the analyzer's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quiet(HashMap<String, u64>);

impl Quiet {
    /// Whether `rule` may raise for `key` at `now`; if so, the pair is quiet for `for_ms`.
    pub fn speak(&mut self, rule: &str, key: &str, now: u64, for_ms: u64) -> bool {
        let slot = format!("{rule}/{key}");
        if self.0.get(&slot).is_some_and(|until| now < *until) {
            return false;
        }
        if !self.0.contains_key(&slot) && self.0.len() >= MAX_QUIET {
            self.0.retain(|_, until| *until > now);
            if self.0.len() >= MAX_QUIET {
                let soonest = self
                    .0
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.0.remove(&k);
                }
            }
        }
        self.0.insert(slot, now.saturating_add(for_ms));
        true
    }

    /// Forgets the keys whose quiet is over.
    pub fn expire(&mut self, now: u64) {
        self.0.retain(|_, until| *until > now);
    }

    /// Keys quiet now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is quiet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Evidence a [`Tally`] keeps per window, at most.
const MAX_TALLIED: usize = 32;

/// A count of events per fixed window, with the first Ids as evidence: what "so many per
/// window, outside `min..=max`" rules keep. Kept in the analyzer's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    start: Option<u64>,
    count: u64,
    ids: Vec<String>,
}

impl Tally {
    /// Counts event `id`, seen at `at`, into the open window.
    pub fn count(&mut self, id: &str, at: u64) {
        let start = *self.start.get_or_insert(at);
        if at >= start {
            self.count += 1;
            if self.ids.len() < MAX_TALLIED {
                self.ids.push(id.to_owned());
            }
        }
    }

    /// At `now`: once the window of `window_ms` is over, a new one opens, and the one that
    /// closed is returned (its count and first Ids) when its count is outside `range`.
    pub fn close(
        &mut self,
        now: u64,
        window_ms: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<(u64, Vec<String>)> {
        let start = *self.start.get_or_insert(now);
        if now < start.saturating_add(window_ms) {
            return None;
        }
        self.start = Some(now);
        let count = std::mem::take(&mut self.count);
        let ids = std::mem::take(&mut self.ids);
        (!range.contains(&count)).then_some((count, ids))
    }
}

/// A severity by its name in the configuration.
pub fn severity_named(name: &str) -> Option<Severity> {
    Some(match name {
        "Informational" => Severity::Informational,
        "Low" => Severity::Low,
        "Medium" => Severity::Medium,
        "High" => Severity::High,
        _ => return None,
    })
}

/// A severity's name.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Informational => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
    }
}

/// A duration as the configuration writes it (`10m`, `1h`, `90s`).
pub fn shown_duration(ms: u64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms => format!("{}s", ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Config {
        v.as_object().unwrap().clone()
    }

    fn err(r: Result<impl std::fmt::Debug, CollectError>) -> String {
        match r {
            Err(CollectError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sections_are_read_and_refused_with_their_path() {
        let c = config(json!({
            "A": {"n": 3, "window": "2m", "severity": "High", "list": ["x"]},
            "suppress": 90
        }));
        let t = Tuning::new(&c, &["A", "B"], &["suppress"]).unwrap();
        let a = t.rule("A", &["n", "window", "list"]).unwrap();
        assert_eq!(a.count("n", 5, 1..=10).unwrap(), 3);
        assert_eq!(a.duration("window", 1).unwrap(), 120_000);
        assert_eq!(a.strings("list").unwrap().unwrap(), ["x"]);
        let s = a.switch(true, Severity::Low).unwrap();
        assert!(s.enabled && s.severity == Severity::High);
        let b = t.rule("B", &[]).unwrap();
        assert_eq!(b.count("n", 5, 1..=10).unwrap(), 5, "absent: the default");
        assert_eq!(t.settings().duration("suppress", 1).unwrap(), 90_000);

        assert!(err(Tuning::new(&c, &["A"], &[]).map(|_| ())).starts_with("suppress"));
        assert!(err(t.rule("A", &["n"]).map(|_| ())).starts_with("A.window"));
        assert!(err(a.count("n", 5, 4..=10)).starts_with("A.n"));
        let bad =
            config(json!({"A": {"window": "10 minutes", "severity": "Critical", "enabled": 1}}));
        let t = Tuning::new(&bad, &["A"], &[]).unwrap();
        let a = t.rule("A", &["window"]).unwrap();
        assert!(err(a.duration("window", 1)).starts_with("A.window"));
        assert!(err(a.switch(true, Severity::Low)).starts_with("A.enabled"));
        let t2 = config(json!({"A": {"window": "8d"}}));
        let t2 = Tuning::new(&t2, &["A"], &[]).unwrap();
        assert!(err(t2.rule("A", &["window"]).unwrap().duration("window", 1)).contains("7d"));
        let not_object = config(json!({"A": 3}));
        let t3 = Tuning::new(&not_object, &["A"], &[]).unwrap();
        assert!(err(t3.rule("A", &[]).map(|_| ())).starts_with("A:"));
    }

    #[test]
    fn exceptions_silence_what_they_match_field_by_field() {
        let c = config(json!({"A": {"except": [
            {"UserName": "root", "Executable": "/usr/sbin/*tables"},
            {"CommandLine": "*--dry-run*"}
        ]}}));
        let t = Tuning::new(&c, &["A"], &[]).unwrap();
        let s = t
            .rule("A", &[])
            .unwrap()
            .switch(true, Severity::Low)
            .unwrap();
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(!s.applies(&fields(&[
            ("UserName", "root"),
            ("Executable", "/usr/sbin/iptables")
        ])));
        assert!(s.applies(&fields(&[
            ("UserName", "edge"),
            ("Executable", "/usr/sbin/iptables")
        ])));
        assert!(
            s.applies(&fields(&[("Executable", "/usr/sbin/iptables")])),
            "every field of one exception"
        );
        assert!(!s.applies(&fields(&[("CommandLine", "apt --dry-run x")])));
        assert!(s.status("A", "x").detail.contains("2 exceptions"));

        let bad = config(json!({"A": {"except": [{"UserName": 0}]}}));
        let t = Tuning::new(&bad, &["A"], &[]).unwrap();
        assert!(
            err(t.rule("A", &[]).unwrap().switch(true, Severity::Low))
                .starts_with("A.except.0.UserName")
        );
        let bad = config(json!({"A": {"except": [{}]}}));
        let t = Tuning::new(&bad, &["A"], &[]).unwrap();
        assert!(
            err(t.rule("A", &[]).unwrap().switch(true, Severity::Low)).starts_with("A.except.0")
        );
    }

    #[test]
    fn globs() {
        assert!(glob("abc", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("*", ""));
        assert!(glob("a*", "abc"));
        assert!(glob("*c", "abc"));
        assert!(glob("a*b*c", "a-b-c"));
        assert!(!glob("a*b*c", "a-c-b"));
        assert!(!glob("ab*ba", "aba"), "the parts may not overlap");
        assert!(glob("/usr/*/x", "/usr/lib/x"));
    }

    #[test]
    fn quiet_keys_stay_quiet_for_their_time_and_are_bounded() {
        let mut q = Quiet::default();
        assert!(q.speak("R", "k", 0, 10));
        assert!(!q.speak("R", "k", 9, 10));
        assert!(q.speak("S", "k", 9, 10), "per rule");
        assert!(q.speak("R", "k", 10, 10));
        for i in 0..(MAX_QUIET + 10) {
            assert!(q.speak("R", &i.to_string(), 100, 1_000_000));
        }
        assert_eq!(q.len(), MAX_QUIET);
        q.expire(2_000_000);
        assert!(q.is_empty());
    }

    #[test]
    fn a_tally_closes_its_window_and_reports_counts_out_of_range() {
        let mut t = Tally::default();
        for i in 0..3 {
            t.count(&format!("e{i}"), 10);
        }
        assert_eq!(t.close(50, 60, 0..=2), None, "still open");
        assert_eq!(
            t.close(70, 60, 0..=2),
            Some((3, vec!["e0".into(), "e1".into(), "e2".into()]))
        );
        t.count("e3", 80);
        assert_eq!(t.close(130, 60, 0..=2), None, "1 is within");
        assert_eq!(
            t.close(200, 60, 1..=2),
            Some((0, vec![])),
            "an empty window is out of 1..=2"
        );
    }

    #[test]
    fn durations_are_shown_as_written() {
        assert_eq!(shown_duration(600_000), "10m");
        assert_eq!(shown_duration(3_600_000), "1h");
        assert_eq!(shown_duration(90_000), "90s");
        assert_eq!(shown_duration(86_400_000), "1d");
    }
}
