//! What the pipeline does with each event name: its priority (queue or Off) and whether and
//! how it aggregates. ASC event names take both from the ASC configuration object; the
//! project's own event kinds from the `[events.<Name>]` tables of the local configuration.

use super::aggregation::{Bounds, KindSettings, Rule};
use super::asc_config::{AGGREGATED_EVENTS, AgentConfiguration, OPERATIONAL_EVENTS, Priority};
use crate::units::Invalid;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The three queues, in the order a message takes from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Operational events: sent first, a tenth of the cache.
    Operational,
    /// High-priority events.
    High,
    /// Low-priority events.
    Low,
}

impl Queue {
    /// Every queue, in the order a message takes from them.
    pub const ALL: [Queue; 3] = [Queue::Operational, Queue::High, Queue::Low];

    /// The queue's name in logs and state files.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Operational => "operational",
            Queue::High => "high",
            Queue::Low => "low",
        }
    }
}

/// The local settings of one event kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSettings {
    /// Only for event kinds the ASC object does not know.
    pub priority: Option<Priority>,
    /// Whether the kind aggregates.
    pub aggregate: Option<bool>,
    /// Its aggregation window.
    pub aggregation_interval: Option<Duration>,
    /// The identity; built-in for the ASC aggregated kinds.
    pub aggregate_by: Option<Rule>,
}

/// Priority of event kinds nobody configured (the C# agent's `defaultEventPriority`).
pub const DEFAULT_PRIORITY: Priority = Priority::Low;

/// The priority of `event` when nobody configured it: High for alerts and recommendations
/// (the device's own findings are what its operator most needs), else [`DEFAULT_PRIORITY`].
pub fn default_priority(event: &str) -> Priority {
    if crate::events::FINDING_KINDS.contains(&event) {
        Priority::High
    } else {
        DEFAULT_PRIORITY
    }
}

/// Everything the pipeline needs to know about event kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The ASC configuration object.
    pub asc: AgentConfiguration,
    /// The project's own event kinds' settings, and identities of all.
    pub events: BTreeMap<String, EventSettings>,
    /// Messages handed to the sink and not yet acknowledged.
    pub max_in_flight: usize,
    /// How often queued events are flushed to the device (fsync).
    pub sync_interval: Duration,
    /// Distinct events one aggregation window may hold before it closes early.
    pub aggregation_max_entries: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            asc: AgentConfiguration::default(),
            events: BTreeMap::new(),
            max_in_flight: 8,
            sync_interval: Duration::from_secs(1),
            aggregation_max_entries: 4096,
        }
    }
}

impl Settings {
    /// Checks the local event settings against the ASC object: an ASC kind takes its priority
    /// and aggregation switch from the object, so giving them locally is an error.
    pub fn check_events(&self) -> Result<(), Invalid> {
        for (name, e) in &self.events {
            if self.asc.priority(name).is_some() && e.priority.is_some() {
                return Err(Invalid::new(
                    format!("events.{name}"),
                    format!(
                        "the priority of {name} is `eventPriority{name}` of the ASC configuration ([asc])"
                    ),
                ));
            }
            let asc_aggregated = AGGREGATED_EVENTS.contains(&name.as_str());
            if asc_aggregated && (e.aggregate.is_some() || e.aggregation_interval.is_some()) {
                return Err(Invalid::new(
                    format!("events.{name}"),
                    format!(
                        "aggregation of {name} is `aggregationEnabled{name}`/`aggregationInterval{name}` of the ASC configuration ([asc])"
                    ),
                ));
            }
            if self.asc.priority(name).is_some()
                && !asc_aggregated
                && (e.aggregate.is_some() || e.aggregate_by.is_some())
            {
                return Err(Invalid::new(
                    format!("events.{name}"),
                    format!("{name} is not an event the ASC agents aggregate"),
                ));
            }
            if e.aggregate == Some(true) && e.aggregate_by.is_none() && !asc_aggregated {
                return Err(Invalid::new(
                    format!("events.{name}"),
                    "`aggregate = true` needs `aggregate_by`, the fields that make two events identical",
                ));
            }
        }
        Ok(())
    }

    /// Which queue each event kind goes to, for the scheduler.
    pub fn routing(&self) -> Routing {
        let own = self
            .events
            .iter()
            .filter_map(|(n, e)| Some((n.clone(), e.priority?)))
            .collect();
        Routing {
            asc: self.asc.clone(),
            own,
        }
    }

    /// The bytes of the cache that events of a queue may take: operational events have a
    /// tenth of it to themselves, so the reports of drops are never crowded out by what is
    /// dropped; the high and low queues share the rest.
    pub fn queue_budget(&self, queue: Queue) -> u64 {
        let total = self.asc.max_local_cache_size;
        match queue {
            Queue::Operational => total / 10,
            _ => total - total / 10,
        }
    }

    /// What the open aggregation windows may hold: no more than the cache could take of their
    /// events once they close.
    pub fn aggregation_bounds(&self) -> Bounds {
        Bounds {
            entries: self.aggregation_max_entries,
            bytes: usize::try_from(self.queue_budget(Queue::High)).unwrap_or(usize::MAX),
        }
    }

    /// The kinds that aggregate now, with their identity and window.
    pub fn aggregation_kinds(&self) -> HashMap<String, KindSettings> {
        let mut kinds = HashMap::new();
        for name in AGGREGATED_EVENTS {
            let a = self.asc.aggregation(name).expect("an aggregated ASC event");
            if a.enabled {
                let rule = self
                    .events
                    .get(name)
                    .and_then(|e| e.aggregate_by.clone())
                    .or_else(|| Rule::builtin(name))
                    .expect("built-in rule");
                kinds.insert(
                    name.to_owned(),
                    KindSettings {
                        rule,
                        interval: a.interval,
                    },
                );
            }
        }
        for (name, e) in &self.events {
            if let (Some(true), Some(rule)) = (e.aggregate, &e.aggregate_by) {
                let interval = e.aggregation_interval.unwrap_or(Duration::from_secs(3600));
                kinds.insert(
                    name.clone(),
                    KindSettings {
                        rule: rule.clone(),
                        interval,
                    },
                );
            }
        }
        kinds
    }
}

/// Event name to queue. Shared with the scheduler, which does not call a plugin whose events
/// are all Off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    asc: AgentConfiguration,
    own: HashMap<String, Priority>,
}

impl Routing {
    /// The priority of `event`.
    pub fn priority(&self, event: &str) -> Priority {
        self.asc
            .priority(event)
            .or_else(|| self.own.get(event).copied())
            .unwrap_or_else(|| default_priority(event))
    }

    /// The queue of an event, `None` when it is Off. Operational events have their own queue
    /// whatever their priority, as in the agents; Off still turns them off.
    pub fn queue(&self, event: &str) -> Option<Queue> {
        match self.priority(event) {
            Priority::Off => None,
            _ if OPERATIONAL_EVENTS.contains(&event) => Some(Queue::Operational),
            Priority::High => Some(Queue::High),
            Priority::Low => Some(Queue::Low),
        }
    }

    /// The largest event a message can carry (`maxMessageSizeInBytes` less its envelope):
    /// larger ones are refused where they enter, naming their plugin.
    pub fn max_event_bytes(&self) -> usize {
        usize::try_from(self.asc.max_message_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(crate::output::envelope::MAX_ENVELOPE_BYTES)
    }

    /// True when a plugin that emits `events` has nothing to collect.
    pub fn silences(&self, events: &[String]) -> bool {
        !events.is_empty() && events.iter().all(|e| self.priority(e) == Priority::Off)
    }
}
