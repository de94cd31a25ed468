//! The operational counters behind DroppedEventsStatistics and MessageStatistics. Each report
//! carries the counts since the previous one; the counters are checkpointed to disk so a restart
//! does not forget them.

use crate::events::{Category, EventType, SecurityEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

/// One queue's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Events offered to the queue (accepted or dropped).
    pub collected: u64,
    /// Events the queue dropped (cache full, message too large).
    pub dropped: u64,
}

/// What MessageStatistics and DroppedEventsStatistics report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The high-priority queue.
    pub high: QueueCounters,
    /// The low-priority queue.
    pub low: QueueCounters,
    /// The operational queue.
    pub operational: QueueCounters,
    /// Messages the sink took.
    pub messages_sent: u64,
    /// Of those, messages under 4 KB (IoT Hub's billing unit).
    pub messages_under_4kb: u64,
    /// Sends that failed.
    pub total_failed: u64,
}

/// The counters, kept across restarts.
pub struct Statistics {
    /// Counts since the last report.
    pub counters: Counters,
    path: Option<PathBuf>,
    dirty: bool,
}

impl Statistics {
    /// Counters kept only in memory.
    pub fn in_memory() -> Statistics {
        Statistics {
            counters: Counters::default(),
            path: None,
            dirty: false,
        }
    }

    /// Counters kept in the file at `path` (started afresh if it is unreadable).
    pub fn open(path: &Path) -> Statistics {
        let counters = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Statistics {
            counters,
            path: Some(path.to_owned()),
            dirty: false,
        }
    }

    /// The counters, to change: they are written at the next checkpoint.
    pub fn touch(&mut self) -> &mut Counters {
        self.dirty = true;
        &mut self.counters
    }

    /// Writes the counters if they changed.
    pub fn checkpoint(&mut self) -> std::io::Result<()> {
        if let (true, Some(path)) = (self.dirty, &self.path) {
            let bytes = serde_json::to_vec(&self.counters).map_err(std::io::Error::other)?;
            crate::files::write_atomic(path, &bytes)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// The report of everything counted since the last one (nothing when nothing happened),
    /// and the counters reset. `drops` and `messages` say whether each event is wanted (not Off).
    pub fn report(&mut self, drops: bool, messages: bool) -> Vec<SecurityEvent> {
        let c = std::mem::take(&mut self.counters);
        self.dirty = true;
        let mut out = Vec::new();
        let queued = c.high.collected + c.low.collected + c.operational.collected;
        if drops && queued > 0 {
            let item = |queue: &str, q: QueueCounters| json!({ "Queue": queue, "CollectedEvents": q.collected, "DroppedEvents": q.dropped });
            let mut low = item("Low", c.low);
            // The schema's Queue is High or Low; the operational queue's counts ride along.
            low["ExtraDetails"] = json!({
                "OperationalCollectedEvents": c.operational.collected.to_string(),
                "OperationalDroppedEvents": c.operational.dropped.to_string(),
            });
            out.push(SecurityEvent::new(
                "DroppedEventsStatistics",
                Category::Periodic,
                EventType::Operational,
                vec![item("High", c.high), low],
            ));
        }
        if messages && c.messages_sent + c.total_failed > 0 {
            out.push(SecurityEvent::new(
                "MessageStatistics",
                Category::Periodic,
                EventType::Operational,
                vec![json!({ "MessagesSent": c.messages_sent, "MessagesUnder4KB": c.messages_under_4kb, "TotalFailed": c.total_failed })],
            ));
        }
        out
    }
}
