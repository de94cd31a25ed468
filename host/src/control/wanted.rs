//! What is wanted: the local file, overlaid by the module twin's desired properties when there
//! is a twin, checked whole before anything changes.
//!
//! Two sections of the twin are read: the ASC agent configuration object (its keys override the
//! local `[asc]` table's) and the project's own `edgeguard` section (group intervals, and the
//! collector set overlaying the local one). A section that does not parse is refused whole,
//! with ConfigurationError events, and the configuration in force stays.

use crate::config::Config;
use crate::edge::twin::SECTION;
use crate::fleet::{self, spec};
use crate::pipeline::Settings;
use crate::pipeline::asc_config::{AgentConfiguration, ConfigIssue, ErrorType, OBJECT_NAME};
use crate::scheduler::{Group, ScheduleConfig};
use crate::units::{Invalid, Span};
use serde_json::{Map, Value};
use std::time::Duration;

/// What is wanted (the local file, overlaid by the twin when there is one), once checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// The pipeline's settings.
    pub settings: Settings,
    /// The priority groups' intervals.
    pub schedule: ScheduleConfig,
    /// The collector set and the trust to get it with.
    pub fleet: fleet::Wanted,
}

impl Wanted {
    /// The local file's alone.
    pub fn local(config: &Config) -> Result<Wanted, Invalid> {
        Ok(Wanted {
            settings: config.pipeline_settings()?,
            schedule: config.schedule.clone(),
            fleet: fleet::Wanted {
                collectors: config.collectors(),
                remote: config.remote.clone(),
            },
        })
    }
}

/// Resolves the desired document against the local configuration. `current` is what is in
/// force, which a refusal names as used.
pub fn resolve(
    local: &Config,
    desired: &Map<String, Value>,
    current: &Wanted,
) -> Result<Wanted, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let asc = match desired.get(OBJECT_NAME) {
        None | Some(Value::Null) => {
            AgentConfiguration::parse(&local.asc_object(), &current.settings.asc)
        }
        Some(Value::Object(remote)) => {
            let mut object = local.asc_object().as_object().cloned().unwrap_or_default();
            object.extend(
                remote
                    .iter()
                    .filter(|(k, _)| !k.starts_with('$'))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            AgentConfiguration::parse(&Value::Object(object), &current.settings.asc)
        }
        Some(other) => AgentConfiguration::parse(other, &current.settings.asc),
    };
    let settings = match asc.map(|asc| local.pipeline_settings_with(asc)) {
        Ok(Ok(settings)) => Some(settings),
        Ok(Err(Invalid { key, reason })) => {
            issues.push(issue(
                OBJECT_NAME,
                ErrorType::TypeMismatch,
                "(in force)".into(),
                format!("with the local `{key}`: {reason}"),
            ));
            None
        }
        Err(refused) => {
            issues.extend(refused.issues);
            None
        }
    };
    let project = project_section(desired.get(SECTION), local, current, &mut issues);
    match (settings, project) {
        (Some(settings), Some((schedule, collectors))) if issues.is_empty() => Ok(Wanted {
            settings,
            schedule,
            fleet: fleet::Wanted {
                collectors,
                remote: local.remote.clone(),
            },
        }),
        _ => Err(issues),
    }
}

fn issue(name: &str, error_type: ErrorType, used: String, message: String) -> ConfigIssue {
    ConfigIssue {
        name: name.to_owned(),
        error_type,
        used,
        message,
    }
}

/// The project's section: `{"schedule": {"high": "10s", "medium": "1m", "low": "15m"},
/// "collectors": {"process": {...}}}`; an interval left out is the local configuration's, and
/// the collectors overlay the local set by name.
fn project_section(
    section: Option<&Value>,
    local: &Config,
    current: &Wanted,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(ScheduleConfig, Vec<spec::CollectorSpec>)> {
    let mut schedule = local.schedule.clone();
    let mut collectors = local.collectors();
    let map = match section {
        None | Some(Value::Null) => return Some((schedule, collectors)),
        Some(Value::Object(map)) => map,
        Some(other) => {
            issues.push(issue(
                SECTION,
                ErrorType::TypeMismatch,
                "(in force)".into(),
                format!("must be an object, not {other}"),
            ));
            return None;
        }
    };
    let before = issues.len();
    for (key, value) in map
        .iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
    {
        if key == "collectors" {
            match spec::overlay(
                collectors.clone(),
                value,
                &local.collectors_base(),
                &format!("{SECTION}.collectors"),
            ) {
                Ok(set) => collectors = set,
                Err(refused) => issues.extend(refused),
            }
            continue;
        }
        if key != "schedule" {
            issues.push(issue(
                &format!("{SECTION}.{key}"),
                ErrorType::TypeMismatch,
                "(none)".into(),
                "unknown property (known: schedule, collectors)".into(),
            ));
            continue;
        }
        let Some(groups) = value.as_object() else {
            issues.push(issue(
                &format!("{SECTION}.schedule"),
                ErrorType::TypeMismatch,
                "(in force)".into(),
                format!("must be an object, not {value}"),
            ));
            continue;
        };
        for (name, interval) in groups
            .iter()
            .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        {
            let at = format!("{SECTION}.schedule.{name}");
            let Some(group) = Group::ALL.into_iter().find(|g| g.name() == name) else {
                issues.push(issue(
                    &at,
                    ErrorType::TypeMismatch,
                    "(none)".into(),
                    "unknown group (known: high, medium, low)".into(),
                ));
                continue;
            };
            let used = Span(current.schedule.interval(group)).to_string();
            let parsed = interval
                .as_str()
                .ok_or_else(|| format!("must be a duration such as \"30s\", not {interval}"))
                .and_then(Span::parse);
            match parsed {
                Ok(span) if span.0 >= Duration::from_millis(10) => match group {
                    Group::High => schedule.high = span,
                    Group::Medium => schedule.medium = span,
                    Group::Low => schedule.low = span,
                },
                Ok(span) => issues.push(issue(
                    &at,
                    ErrorType::TypeMismatch,
                    used,
                    format!("interval {span} is too short (at least 10ms)"),
                )),
                Err(message) => issues.push(issue(&at, ErrorType::TypeMismatch, used, message)),
            }
        }
    }
    (issues.len() == before).then_some((schedule, collectors))
}

/// The project's schedule as reported: `{"high": "10s", ...}`.
pub fn reported_schedule(schedule: &ScheduleConfig) -> Value {
    Value::Object(
        Group::ALL
            .iter()
            .map(|g| {
                (
                    g.name().to_owned(),
                    Value::String(Span(schedule.interval(*g)).to_string()),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn local() -> Config {
        Config::parse(
            "[asc]\nmaxLocalCacheSizeInBytes = 1048576\nhighPriorityMessageFrequency = \"PT5S\"\n",
            "test",
        )
        .unwrap()
    }

    fn in_force(local: &Config) -> Wanted {
        Wanted::local(local).unwrap()
    }

    #[test]
    fn the_twin_overrides_local_asc_keys_and_local_keys_remain() {
        let local = local();
        let desired = json!({OBJECT_NAME: {"highPriorityMessageFrequency": {"value": "PT1M"}}, "edgeguard": {"schedule": {"high": "2s"}}});
        let wanted = resolve(&local, desired.as_object().unwrap(), &in_force(&local)).unwrap();
        assert_eq!(
            wanted.settings.asc.high_priority_message_frequency,
            Duration::from_secs(60)
        );
        assert_eq!(
            wanted.settings.asc.max_local_cache_size, 1048576,
            "the local key stays"
        );
        assert_eq!(wanted.schedule.high.0, Duration::from_secs(2));
        assert_eq!(wanted.schedule.low, local.schedule.low);
        assert_eq!(
            reported_schedule(&wanted.schedule),
            json!({"high": "2s", "medium": "1m", "low": "15m"})
        );
    }

    #[test]
    fn a_bad_section_is_refused_whole_with_every_reason_named() {
        let local = local();
        let current = in_force(&local);
        let desired = json!({
            OBJECT_NAME: {"highPriorityMessageFrequency": {"value": "soon"}, "eventPriorityLogin": {"value": "High"}},
            "edgeguard": {"schedule": {"high": 5, "weekly": "7d"}, "colour": "red"}
        });
        let issues = resolve(&local, desired.as_object().unwrap(), &current).unwrap_err();
        let names: Vec<&str> = issues.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "highPriorityMessageFrequency",
                "edgeguard.schedule.high",
                "edgeguard.schedule.weekly",
                "edgeguard.colour"
            ]
        );
        assert!(
            issues
                .iter()
                .all(|i| i.error_type == ErrorType::TypeMismatch)
        );
        assert_eq!(issues[0].used, "PT5S", "the value in force is named");
        assert_eq!(issues[1].used, "10s");
        let not_object = json!({OBJECT_NAME: "everything high"});
        let issues = resolve(&local, not_object.as_object().unwrap(), &current).unwrap_err();
        assert_eq!(issues[0].name, OBJECT_NAME);
    }
}
