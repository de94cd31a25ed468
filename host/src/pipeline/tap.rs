//! Events as they enter the pipeline, handed to the analyzers that want them.
//!
//! Each analyzer has a queue here, by its name, that outlives its instances: a restarted or
//! swapped analyzer takes up where its predecessor stopped. The pipeline offers every event it
//! takes in, before priorities and aggregation (so an event that is Off, or merged into a
//! window, is still analysed), and each queue keeps those of the kinds its analyzer wants,
//! bounded in count and in bytes; what does not fit is counted as lost and reported by the
//! analyzer's actor. An analyzer is never handed its own findings.
//!
//! A plugin still loading may turn out to be an analyzer: its queue is reserved when its load
//! begins ([`Tap::reserve`]) and keeps every event meanwhile (bounded alike), so that what the
//! collectors started before it report is not missed; once it is loaded the queue keeps what it
//! wants, or goes if it is a collector.

use crate::events::{Origin, SecurityEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Room a drained queue keeps.
const RETAINED: usize = 256;

/// Events one analyzer's queue may hold, whatever their size.
pub const QUEUE_EVENTS: usize = 65_536;
/// Bytes one analyzer's queue may hold (by [`SecurityEvent::heap_bytes`]).
pub const QUEUE_BYTES: usize = 4 << 20;

/// One event in a queue: shared between every analyzer that wants it.
#[derive(Clone, Debug)]
pub struct Tapped {
    /// The event.
    pub event: Arc<SecurityEvent>,
    /// Who emitted it.
    pub origin: Origin,
    bytes: usize,
}

/// What one take from a queue gives.
#[derive(Debug, Default)]
pub struct Taken {
    /// Events in the order they entered.
    pub events: Vec<Tapped>,
    /// Events lost since the last take: the queue was full.
    pub lost: u64,
    /// Events still queued after this take.
    pub left: usize,
}

struct Queue {
    /// None while reserved: every kind is kept until the plugin says what it wants.
    wants: Option<Vec<String>>,
    events: VecDeque<Tapped>,
    bytes: usize,
    lost: u64,
    wake: Arc<Notify>,
    /// The subscription that holds it: an older one dropped late must not close it.
    owner: u64,
}

impl Queue {
    fn reserved(owner: u64) -> Queue {
        Queue {
            wants: None,
            events: VecDeque::new(),
            bytes: 0,
            lost: 0,
            wake: Arc::new(Notify::new()),
            owner,
        }
    }
}

/// The pipeline's side: offers events. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tap {
    queues: Arc<Mutex<HashMap<Arc<str>, Queue>>>,
    subscriptions: Arc<std::sync::atomic::AtomicU64>,
}

impl Tap {
    /// A tap with no analyzer yet.
    pub fn new() -> Tap {
        Tap::default()
    }

    fn owner(&self) -> u64 {
        self.subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps every event for `plugin` from now on, until it is loaded: it may be an analyzer.
    /// A queue it already has (a running version) is left as it is.
    pub fn reserve(&self, plugin: &Arc<str>) -> Reservation {
        let owner = self.owner();
        let mut queues = self.queues.lock().unwrap();
        queues
            .entry(Arc::clone(plugin))
            .or_insert_with(|| Queue::reserved(owner));
        Reservation {
            tap: self.clone(),
            plugin: Arc::clone(plugin),
            owner,
        }
    }

    /// Opens (or takes over) `analyzer`'s queue, handed the kinds in `wants` from now on; of
    /// what a reservation kept, the kinds it wants stay.
    pub fn subscribe(&self, analyzer: &Arc<str>, wants: &[String]) -> Subscription {
        let owner = self.owner();
        let mut queues = self.queues.lock().unwrap();
        let queue = queues
            .entry(Arc::clone(analyzer))
            .or_insert_with(|| Queue::reserved(owner));
        queue.wants = Some(wants.to_vec());
        queue.owner = owner;
        queue.events.retain(|t| wants.contains(&t.event.name));
        queue.bytes = queue.events.iter().map(|t| t.bytes).sum();
        if !queue.events.is_empty() {
            queue.wake.notify_one();
        }
        Subscription {
            tap: self.clone(),
            analyzer: Arc::clone(analyzer),
            wake: Arc::clone(&queue.wake),
            owner,
        }
    }

    /// Whether some analyzer wants events of kind `name`.
    pub fn wants(&self, name: &str) -> bool {
        let queues = self.queues.lock().unwrap();
        queues.values().any(|q| {
            q.wants
                .as_ref()
                .is_some_and(|w| w.iter().any(|w| w == name))
        })
    }

    /// Closes `plugin`'s queue if `owner` still holds it (not a later reservation or subscription).
    fn close(&self, plugin: &str, owner: u64) {
        let mut queues = self.queues.lock().unwrap();
        if queues.get(plugin).is_some_and(|q| q.owner == owner) {
            queues.remove(plugin);
        }
    }

    /// Hands `events`, emitted by `origin`, to the analyzers that want them.
    pub fn offer(&self, origin: &Origin, events: &[SecurityEvent]) {
        let mut queues = self.queues.lock().unwrap();
        if queues.is_empty() {
            return;
        }
        for event in events {
            let (mut shared, mut cost): (Option<Arc<SecurityEvent>>, Option<usize>) = (None, None);
            for (analyzer, queue) in queues.iter_mut() {
                let wanted = match &queue.wants {
                    Some(wants) => wants.contains(&event.name),
                    None => true,
                };
                if **analyzer == *origin.plugin || !wanted {
                    continue;
                }
                let bytes = *cost.get_or_insert_with(|| event.heap_bytes());
                if queue.events.len() >= QUEUE_EVENTS || queue.bytes + bytes > QUEUE_BYTES {
                    queue.lost += 1;
                    continue;
                }
                let event = shared.get_or_insert_with(|| Arc::new(event.clone()));
                queue.events.push_back(Tapped {
                    event: Arc::clone(event),
                    origin: origin.clone(),
                    bytes,
                });
                queue.bytes += bytes;
                queue.wake.notify_one();
            }
        }
    }
}

/// An analyzer's side: takes what was offered. Dropping it closes the queue.
pub struct Subscription {
    tap: Tap,
    analyzer: Arc<str>,
    wake: Arc<Notify>,
    owner: u64,
}

impl Subscription {
    /// Waits until events are queued (at once if some already are).
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// What [`Subscription::ready`] waits on, for a caller that selects over it.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Events queued now.
    pub fn queued(&self) -> usize {
        let queues = self.tap.queues.lock().unwrap();
        queues.get(&self.analyzer).map_or(0, |q| q.events.len())
    }

    /// Changes the kinds handed over (a new version wants others).
    pub fn set_wants(&self, wants: &[String]) {
        let mut queues = self.tap.queues.lock().unwrap();
        if let Some(queue) = queues.get_mut(&self.analyzer) {
            queue.wants = Some(wants.to_vec());
        }
    }

    /// Takes up to `max` events holding up to `max_bytes` (at least one event, whatever its
    /// size), the oldest first, and the count lost since the last take.
    pub fn take(&self, max: usize, max_bytes: usize) -> Taken {
        let mut queues = self.tap.queues.lock().unwrap();
        let Some(queue) = queues.get_mut(&self.analyzer) else {
            return Taken::default();
        };
        let (mut n, mut bytes) = (0, 0);
        for t in queue.events.iter().take(max) {
            if n > 0 && bytes + t.bytes > max_bytes {
                break;
            }
            n += 1;
            bytes += t.bytes;
        }
        let events: Vec<Tapped> = queue.events.drain(..n).collect();
        queue.bytes -= bytes;
        let left = queue.events.len();
        if left == 0 && queue.events.capacity() > RETAINED {
            // A burst grew it: the room goes back once it is drained.
            queue.events.shrink_to(RETAINED);
        }
        if left > 0 {
            // Still more: the actor comes back for them without waiting for a new event.
            queue.wake.notify_one();
        }
        Taken {
            events,
            lost: std::mem::take(&mut queue.lost),
            left,
        }
    }
}

/// A queue kept for a plugin being loaded; dropping it closes the queue unless an analyzer
/// took it over meanwhile.
pub struct Reservation {
    tap: Tap,
    plugin: Arc<str>,
    owner: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.tap.close(&self.plugin, self.owner);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.tap.close(&self.analyzer, self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Category, EventType};

    fn event(name: &str, text: &str) -> SecurityEvent {
        SecurityEvent::new(
            name,
            Category::Triggered,
            EventType::Security,
            vec![serde_json::json!({ "CommandLine": text })],
        )
    }

    fn plugin(name: &str) -> Origin {
        Origin {
            plugin: name.into(),
            version: "1.0.0".into(),
            digest: "ab".into(),
        }
    }

    #[test]
    fn each_analyzer_gets_what_it_wants_and_never_its_own() {
        let tap = Tap::new();
        let logins = tap.subscribe(&"logins".into(), &["Login".into()]);
        let all = tap.subscribe(&"all".into(), &["Login".into(), "Alert".into()]);
        tap.offer(
            &plugin("login"),
            &[event("Login", "a"), event("ProcessCreate", "b")],
        );
        tap.offer(&plugin("all"), &[event("Alert", "mine")]);
        tap.offer(&plugin("logins"), &[event("Alert", "theirs")]);
        let names = |t: Taken| -> Vec<String> {
            t.events
                .iter()
                .map(|e| {
                    e.event.payload[0]["CommandLine"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(names(logins.take(10, usize::MAX)), ["a"]);
        assert_eq!(names(all.take(10, usize::MAX)), ["a", "theirs"]);
        assert!(tap.wants("Alert") && !tap.wants("ProcessCreate"));
        drop(all);
        assert!(
            !tap.wants("Alert"),
            "a dropped subscription closes its queue"
        );
    }

    #[test]
    fn what_passes_while_an_analyzer_loads_is_kept_for_it() {
        let tap = Tap::new();
        let (alerts, collector) = (Arc::from("alerts"), Arc::from("login"));
        let reserved = (tap.reserve(&alerts), tap.reserve(&collector));
        tap.offer(
            &plugin("process"),
            &[event("Login", "early"), event("ProcessCreate", "p")],
        );
        assert!(!tap.wants("Login"), "a reservation wants nothing yet");
        // Loaded: one is an analyzer, the other a collector.
        let sub = tap.subscribe(&alerts, &["Login".into()]);
        drop(reserved);
        tap.offer(&plugin("process"), &[event("Login", "late")]);
        let taken = sub.take(10, usize::MAX);
        let texts: Vec<&str> = taken
            .events
            .iter()
            .map(|t| t.event.payload[0]["CommandLine"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["early", "late"]);
        assert_eq!(
            tap.queues.lock().unwrap().len(),
            1,
            "the collector's reservation is gone"
        );
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_and_counts_what_it_lost() {
        let tap = Tap::new();
        let sub = tap.subscribe(&"a".into(), &["ProcessCreate".into()]);
        let long = "x".repeat(64 << 10);
        let burst: Vec<SecurityEvent> = (0..200).map(|_| event("ProcessCreate", &long)).collect();
        tap.offer(&plugin("process"), &burst);
        let taken = sub.take(usize::MAX, usize::MAX);
        let kept = taken.events.len();
        assert!(
            (QUEUE_BYTES / (80 << 10)..200).contains(&kept),
            "kept {kept}"
        );
        assert_eq!(taken.lost, 200 - kept as u64);
        assert_eq!(sub.take(10, usize::MAX).lost, 0, "a loss is told once");
        // Taken out, the bytes are free again.
        tap.offer(&plugin("process"), &burst[..10]);
        assert_eq!(sub.take(100, usize::MAX).events.len(), 10);
    }

    #[test]
    fn a_take_leaves_the_rest_and_wakes_for_it() {
        let tap = Tap::new();
        let sub = tap.subscribe(&"a".into(), &["Login".into()]);
        let burst: Vec<SecurityEvent> = (0..5).map(|i| event("Login", &i.to_string())).collect();
        tap.offer(&plugin("login"), &burst);
        let first = sub.take(3, usize::MAX);
        assert_eq!((first.events.len(), first.left), (3, 2));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), sub.ready())
                .await
                .expect("woken for what was left");
        });
        assert_eq!(sub.take(3, usize::MAX).events.len(), 2);
    }

    #[test]
    fn a_take_is_bounded_in_bytes_but_always_moves() {
        let tap = Tap::new();
        let sub = tap.subscribe(&"a".into(), &["ProcessCreate".into()]);
        let long = "x".repeat(10_000);
        let burst: Vec<SecurityEvent> = (0..10).map(|_| event("ProcessCreate", &long)).collect();
        tap.offer(&plugin("process"), &burst);
        assert_eq!(sub.take(100, 25_000).events.len(), 2);
        assert_eq!(
            sub.take(100, 1).events.len(),
            1,
            "one event over the budget still goes"
        );
        assert_eq!(sub.queued(), 7);
    }
}
