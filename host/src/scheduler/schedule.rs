//! The `[schedule]` section: the priority groups, their intervals, the first collection's
//! jitter and how many collections may run at once.

use crate::units::{Invalid, Span};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `[schedule]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The high group's interval.
    #[serde(default = "ScheduleConfig::default_high")]
    pub high: Span,
    /// The medium group's interval.
    #[serde(default = "ScheduleConfig::default_medium")]
    pub medium: Span,
    /// The low group's interval.
    #[serde(default = "ScheduleConfig::default_low")]
    pub low: Span,
    /// Each plugin's first collection is delayed by a random fraction of this, so that a fleet
    /// of devices started together does not collect (and send) in lockstep.
    #[serde(default = "ScheduleConfig::default_jitter")]
    pub first_collection_jitter: Span,
    /// Collections running at once, across all plugins.
    #[serde(default = "ScheduleConfig::default_concurrency")]
    pub max_concurrent: usize,
}

impl ScheduleConfig {
    fn default_high() -> Span {
        Span(Duration::from_secs(10))
    }
    fn default_medium() -> Span {
        Span(Duration::from_secs(60))
    }
    fn default_low() -> Span {
        Span(Duration::from_secs(15 * 60))
    }
    fn default_jitter() -> Span {
        Span(Duration::from_secs(5))
    }
    fn default_concurrency() -> usize {
        4
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            high: Self::default_high(),
            medium: Self::default_medium(),
            low: Self::default_low(),
            first_collection_jitter: Self::default_jitter(),
            max_concurrent: Self::default_concurrency(),
        }
    }
}

/// A priority group: plugins that share an interval.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Activity gone if not caught soon (10 s).
    High,
    /// State that changes at human pace (1 min).
    Medium,
    /// Inventory that rarely changes (15 min).
    Low,
}

impl Group {
    /// Every group.
    pub const ALL: [Group; 3] = [Group::High, Group::Medium, Group::Low];
    /// The name in the file and the twin.
    pub fn name(self) -> &'static str {
        match self {
            Group::High => "high",
            Group::Medium => "medium",
            Group::Low => "low",
        }
    }
}

impl ScheduleConfig {
    /// The interval of `group`.
    pub fn interval(&self, group: Group) -> Duration {
        match group {
            Group::High => self.high.0,
            Group::Medium => self.medium.0,
            Group::Low => self.low.0,
        }
    }
}

impl ScheduleConfig {
    /// Refuses intervals too short to schedule and a zero concurrency.
    pub fn check(&self) -> Result<(), Invalid> {
        for (key, span) in [
            ("schedule.high", self.high),
            ("schedule.medium", self.medium),
            ("schedule.low", self.low),
        ] {
            if span.0 < Duration::from_millis(10) {
                return Err(Invalid::new(
                    key,
                    format!("interval {span} is too short (at least 10ms)"),
                ));
            }
        }
        if self.max_concurrent == 0 {
            return Err(Invalid::new(
                "schedule.max_concurrent",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
