//! The pipeline's sections of the file: `[pipeline]` (state directory, sync pace, in-flight
//! messages, window size), `[events.<Name>]` (priority and aggregation of the project's own
//! kinds, identities of all) and `[asc]` (the ASC agent configuration object, as the twin
//! carries it), validated together into the pipeline's [`Settings`].

use super::aggregation::Rule;
use super::asc_config::{AgentConfiguration, Priority};
use super::settings::{EventSettings, Settings};
use crate::units::{Invalid, Span};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The `[pipeline]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Queued events, open aggregation windows, counters. Empty: /var/lib/edgeguard for root,
    /// else $XDG_STATE_HOME/edgeguard or ~/.local/state/edgeguard.
    pub state_dir: PathBuf,
    /// How often queued events are flushed to the device (fsync); a crash of the process loses
    /// nothing in between, a power cut may.
    pub sync_interval: Span,
    /// Messages handed to the sink and not yet acknowledged.
    pub max_in_flight: usize,
    /// Distinct events an aggregation window may hold before it closes early.
    pub aggregation_max_entries: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let d = Settings::default();
        PipelineConfig {
            state_dir: PathBuf::new(),
            sync_interval: Span(d.sync_interval),
            max_in_flight: d.max_in_flight,
            aggregation_max_entries: d.aggregation_max_entries,
        }
    }
}

/// One `[events.<Name>]` table.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// "High", "Low" or "Off" (any case); not for ASC event kinds (their priority is in [asc]).
    pub priority: Option<String>,
    /// Whether the kind aggregates.
    pub aggregate: Option<bool>,
    /// Its aggregation window.
    pub aggregation_interval: Option<Span>,
    /// The fields that make two events identical: `Field`, `ExtraDetails.Key`, `Field when Other=Value`.
    pub aggregate_by: Option<Vec<String>>,
}

/// The `[asc]` table as the twin carries the ASC object: every value `{"value": ...}` (a value
/// may be written bare or wrapped in the file).
pub fn asc_object(asc: &toml::Table) -> Value {
    let wrapped = asc
        .iter()
        .map(|(k, v)| {
            let v = serde_json::to_value(v).expect("TOML is JSON-compatible");
            let is_wrapped = v
                .as_object()
                .is_some_and(|o| o.len() == 1 && o.contains_key("value"));
            (
                k.clone(),
                if is_wrapped {
                    v
                } else {
                    serde_json::json!({ "value": v })
                },
            )
        })
        .collect();
    Value::Object(wrapped)
}

impl PipelineConfig {
    /// The pipeline's settings from this section, the `[events]` tables and an ASC
    /// configuration (the file's, or the module twin's); errors name the key.
    pub fn settings(
        &self,
        events: &BTreeMap<String, EventConfig>,
        asc: AgentConfiguration,
    ) -> Result<Settings, Invalid> {
        if self.sync_interval.0 < Duration::from_millis(10) {
            return Err(Invalid::new(
                "pipeline.sync_interval",
                format!("{} is too short (at least 10ms)", self.sync_interval),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Invalid::new("pipeline.max_in_flight", "must be at least 1"));
        }
        if self.aggregation_max_entries == 0 {
            return Err(Invalid::new(
                "pipeline.aggregation_max_entries",
                "must be at least 1",
            ));
        }
        let mut kinds = BTreeMap::new();
        for (name, e) in events {
            let at = |field: &str| format!("events.{name}.{field}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Invalid::new(
                    format!("events.{name}"),
                    "an event name is ASCII letters and digits",
                ));
            }
            let priority = match &e.priority {
                None => None,
                Some(text) => Some(Priority::parse(text).ok_or_else(|| {
                    Invalid::new(
                        at("priority"),
                        format!("`{text}`: expected High, Low or Off"),
                    )
                })?),
            };
            // An alert merged into another is an alert lost: de-duplication and suppression
            // are the analyzer's to decide, with its evidence in hand.
            if crate::events::FINDING_KINDS.contains(&name.as_str()) && e.aggregate == Some(true) {
                return Err(Invalid::new(
                    at("aggregate"),
                    "alerts and recommendations are never aggregated (each analyzer rule has its own suppression time)",
                ));
            }
            if let Some(span) = e.aggregation_interval
                && span.0.is_zero()
            {
                return Err(Invalid::new(
                    at("aggregation_interval"),
                    "must be longer than zero",
                ));
            }
            let aggregate_by = match &e.aggregate_by {
                None => None,
                Some(specs) => {
                    Some(Rule::parse(specs).map_err(|m| Invalid::new(at("aggregate_by"), m))?)
                }
            };
            kinds.insert(
                name.clone(),
                EventSettings {
                    priority,
                    aggregate: e.aggregate,
                    aggregation_interval: e.aggregation_interval.map(|s| s.0),
                    aggregate_by,
                },
            );
        }
        let settings = Settings {
            asc,
            events: kinds,
            max_in_flight: self.max_in_flight,
            sync_interval: self.sync_interval.0,
            aggregation_max_entries: self.aggregation_max_entries,
        };
        settings.check_events()?;
        Ok(settings)
    }
}
