//! From collected events to acknowledged messages, with the ASC agents' semantics:
//! Off events are dropped at the door; identical events aggregate over a window; the rest wait
//! in durable, bounded queues (operational, high, low); the high and low queues are sent at
//! their own frequencies, operational events first and the other queue as padding; a backlog
//! of a full message's worth is sent at once; messages are packed up to the size limit; cached
//! events are forgotten only when the sink acknowledges them.
//!
//! Each queue exists once per message family (ASC, and the project's own event kinds), since a
//! message carries one family.

pub mod aggregation;
pub mod asc_config;
pub mod config;
pub mod settings;
pub mod statistics;
pub mod store;
pub mod tap;

use crate::events::{Family, Origin, SecurityEvent, Severity};
use crate::output::{Acknowledgement, Message, Sink, SinkError, envelope};
use aggregation::Aggregator;
use asc_config::{ConfigIssue, Priority};
pub use settings::{Queue, Routing, Settings};
use statistics::Statistics;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::{QueueLog, RECORD_HEADER};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

const FAMILIES: [Family; 2] = [Family::Asc, Family::Edgeguard];

/// What one collection (or a fault) produced. Sent even when empty, so consumers see the pace.
#[derive(Debug)]
pub struct Batch {
    /// The plugin it is about (its events, or diagnostics about it).
    pub plugin: Arc<str>,
    /// Who emitted its events: the plugin, or the host speaking about it.
    pub origin: Origin,
    /// When the collection ended.
    pub at: std::time::Instant,
    /// Its events, converted.
    pub events: Vec<SecurityEvent>,
    /// Told once the pipeline has the events on disk: only then may the plugin's state (its
    /// cursors) be persisted, so a crash in between re-reports rather than loses.
    pub accepted: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The event kind that is sent as soon as it is queued (High), not at the queue's frequency:
/// an analyzer's alert.
const URGENT: &str = "Alert";

/// A burst has settled once fewer than [`QUIET_EVENTS`] came in this long after it (the
/// events of a closing window count): then the heap is trimmed and the file pages it faulted
/// in are handed back.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);
/// Events since the last settling that make a burst.
const BURST_EVENTS: usize = 1000;
/// Events in a [`TRIM_INTERVAL`] that a host at rest still makes (its own periodic processes
/// and connections): no burst goes on.
const QUIET_EVENTS: usize = 100;

/// How long a stop waits for the acknowledgements of messages in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// No serialized event is smaller: the fixed fields alone (`Category` to `Payload`) take more.
const MIN_EVENT_BYTES: u64 = 200;

/// Where the pipeline keeps its state.
pub struct StateDir {
    path: PathBuf,
    // Held for the pipeline's life: two processes on one state directory would corrupt it.
    _lock: std::fs::File,
}

impl StateDir {
    /// Opens (and locks) the state directory at `path`.
    pub fn open(path: &Path) -> anyhow::Result<StateDir> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(path).map_err(|e| {
            anyhow::anyhow!("cannot create the state directory {}: {e}", path.display())
        })?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!(
                "the state directory {} is in use by another edgeguard",
                path.display()
            );
        }
        Ok(StateDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }
}

/// Requests to a running pipeline from outside its loop (the module twin, direct methods).
pub enum Command {
    /// New settings; answered with the semantic issues found in them (applied anyway).
    Reconfigure(Box<Settings>, oneshot::Sender<Vec<ConfigIssue>>),
    /// Events from outside the plugins (e.g. a refused twin configuration).
    Accept(Vec<SecurityEvent>),
    /// Answered with the pipeline's state.
    Status(oneshot::Sender<Status>),
}

/// A running pipeline's state, for `status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// Events waiting in the queues.
    pub queued: usize,
    /// Messages sent and not yet acknowledged.
    pub in_flight: usize,
    /// Counts since the last statistics report.
    pub counters: statistics::Counters,
}

struct InFlight {
    takes: Vec<(usize, u64)>,
    bytes: usize,
    ack: Acknowledgement,
}

/// What a pipeline found on start.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Events found queued.
    pub queued_events: u64,
    /// Distinct events found in open aggregation windows.
    pub aggregating: usize,
    /// Bytes cut off as torn or corrupt.
    pub discarded_bytes: u64,
}

/// The ASC pipeline: events in, priorities and aggregation applied, kept in durable bounded queues, packed into size-capped messages and sent at each queue's frequency.
pub struct Pipeline {
    settings: Settings,
    routing: watch::Sender<Arc<Routing>>,
    prefixes: [Vec<u8>; 2],
    aggregator: Aggregator,
    /// Indexed by [`Pipeline::log_index`].
    logs: Vec<QueueLog>,
    stats: Statistics,
    in_flight: VecDeque<InFlight>,
    last_high: [Instant; 2],
    last_low: [Instant; 2],
    last_report: Instant,
    last_sync: Instant,
    /// Events taken in since the memory last settled (a closed window's count), and those of
    /// the [`TRIM_INTERVAL`] begun at `recent_since`.
    since_settled: usize,
    recent_events: usize,
    recent_since: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    drop_log: DropLog,
    commands: Option<mpsc::Receiver<Command>>,
    /// An alert waits in a family's high queue: it goes now, whatever the send frequency.
    urgent: [bool; 2],
    tap: tap::Tap,
    _state: StateDir,
}

/// Drops are logged at most every ten seconds, with the counts since the last line: a flood
/// must not turn into a flood of log lines. (Every drop is counted in the statistics anyway.)
#[derive(Default)]
struct DropLog {
    too_large: u64,
    full: u64,
    /// Aggregation windows closed before their interval (a bound reached): not a drop, but
    /// what a flood looks like.
    closed_early: u64,
    last: Option<Instant>,
}

impl DropLog {
    fn note(&mut self, too_large: u64, full: u64, max_message: usize, cache: u64) {
        self.too_large += too_large;
        self.full += full;
        if self.too_large + self.full + self.closed_early == 0
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        if self.too_large > 0 {
            tracing::warn!(
                events = self.too_large,
                max_message_size = max_message,
                "dropped events larger than a message can carry"
            );
        }
        if self.full > 0 {
            tracing::warn!(
                events = self.full,
                cache,
                "cache full: dropped the newest events"
            );
        }
        if self.closed_early > 0 {
            tracing::info!(
                windows = self.closed_early,
                "aggregation windows closed early: they held as many distinct events, or as many bytes, as they may"
            );
        }
        *self = DropLog {
            last: Some(Instant::now()),
            ..DropLog::default()
        };
    }
}

impl Pipeline {
    /// Opens the pipeline's state (queues, open aggregation windows, counters), resuming
    /// whatever a previous run left.
    pub fn open(
        state: StateDir,
        settings: Settings,
        agent_id: &str,
    ) -> anyhow::Result<(Pipeline, Resumed)> {
        let dir = state.path.clone();
        let segment = (settings.asc.max_local_cache_size / 8).clamp(64 << 10, 4 << 20);
        let mut logs = Vec::new();
        let mut resumed = Resumed::default();
        for queue in Queue::ALL {
            for family in FAMILIES {
                let path =
                    dir.join("queues")
                        .join(format!("{}-{}", queue.name(), family_name(family)));
                let (log, recovered) = QueueLog::open(&path, segment)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                resumed.queued_events += recovered.records;
                resumed.discarded_bytes += recovered.discarded_bytes;
                logs.push(log);
            }
        }
        let journal = dir.join("aggregation.journal");
        let (aggregator, orphans) = Aggregator::open(
            &journal,
            settings.aggregation_kinds(),
            settings.aggregation_bounds(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", journal.display()))?;
        resumed.aggregating = aggregator.len();
        let now = Instant::now();
        let mut pipeline = Pipeline {
            routing: watch::Sender::new(Arc::new(settings.routing())),
            prefixes: FAMILIES.map(|f| envelope::prefix(agent_id, f)),
            aggregator,
            logs,
            stats: Statistics::open(&dir.join("statistics.json")),
            in_flight: VecDeque::new(),
            last_high: [now; 2],
            last_low: [now; 2],
            last_report: now,
            last_sync: now,
            since_settled: 0,
            recent_events: 0,
            recent_since: now,
            failures: 0,
            retry_at: None,
            drop_log: DropLog::default(),
            commands: None,
            urgent: [false; 2],
            tap: tap::Tap::new(),
            settings,
            _state: state,
        };
        pipeline.queue_closed(orphans)?;
        Ok((pipeline, resumed))
    }

    /// A handle to steer the pipeline while it runs.
    pub fn commands(&mut self) -> mpsc::Sender<Command> {
        let (tx, rx) = mpsc::channel(16);
        self.commands = Some(rx);
        tx
    }

    /// Where analyzers are handed the events the pipeline takes in.
    pub fn tap(&self) -> tap::Tap {
        self.tap.clone()
    }

    /// The routing in force, kept current for the scheduler.
    pub fn routing(&self) -> watch::Receiver<Arc<Routing>> {
        self.routing.subscribe()
    }

    /// Applies new settings: routing at once, aggregation windows whose rule changed close.
    /// Events already queued keep their queue.
    pub fn reconfigure(&mut self, settings: Settings) -> io::Result<Vec<ConfigIssue>> {
        let closed = self.aggregator.reconfigure(
            settings.aggregation_kinds(),
            settings.aggregation_bounds(),
            chrono::Utc::now(),
        );
        self.settings = settings;
        self.routing.send_replace(Arc::new(self.settings.routing()));
        self.queue_closed(closed)?;
        let issues = self.settings.asc.check();
        self.accept(issues.iter().map(ConfigIssue::to_event).collect())?;
        Ok(issues)
    }

    /// Takes the host's own events in (see [`Pipeline::accept_from`]).
    pub fn accept(&mut self, events: Vec<SecurityEvent>) -> io::Result<()> {
        self.accept_from(&Origin::host(), events)
    }

    /// Takes a batch emitted by `origin` in: analyzers that want its events are handed them;
    /// once this returns, every event in it is on disk (queued or in an aggregation window) or
    /// counted as dropped.
    pub fn accept_from(&mut self, origin: &Origin, events: Vec<SecurityEvent>) -> io::Result<()> {
        if !events.is_empty() {
            self.since_settled += events.len();
            self.recent_events += events.len();
        }
        self.tap.offer(origin, &events);
        let routing = self.routing.borrow().clone();
        let events: Vec<SecurityEvent> = events
            .into_iter()
            .filter(|e| routing.queue(&e.name).is_some())
            .collect();
        let (passed, full) = self.aggregator.add(events)?;
        self.drop_log.closed_early += self.aggregator.take_closed_early();
        self.enqueue(passed)?;
        self.queue_closed(full)
    }

    /// Queues the merged events of closed aggregation windows, then drops them from the
    /// journal: in this order, so a crash in between sends them again (same Ids), never loses them.
    fn queue_closed(&mut self, closed: Vec<SecurityEvent>) -> io::Result<()> {
        if closed.is_empty() {
            return Ok(());
        }
        self.since_settled += closed.len();
        self.enqueue(closed)?;
        self.aggregator.compact()
    }

    fn log_index(queue: Queue, family: Family) -> usize {
        let q = Queue::ALL
            .iter()
            .position(|x| *x == queue)
            .expect("a queue");
        q * FAMILIES.len() + family_index(family)
    }

    fn budget(&self, queue: Queue) -> u64 {
        self.settings.queue_budget(queue)
    }

    fn used(&self, queue: Queue) -> u64 {
        let class = |q: Queue| if q == Queue::Operational { 0 } else { 1 };
        Queue::ALL
            .into_iter()
            .filter(|q| class(*q) == class(queue))
            .flat_map(|q| FAMILIES.map(|f| self.logs[Self::log_index(q, f)].bytes()))
            .sum()
    }

    /// Queues events, dropping the newest when their queue's budget is spent (tail drop: under
    /// a flood, the first events, which show how it started, are the ones kept).
    fn enqueue(&mut self, events: Vec<SecurityEvent>) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let routing = self.routing.borrow().clone();
        let max = self.settings.asc.max_message_size as usize;
        let mut batches: Vec<Vec<Box<[u8]>>> = (0..self.logs.len()).map(|_| Vec::new()).collect();
        // Bytes in use and budget per class: [operational, high and low].
        let mut used = [self.used(Queue::Operational), self.used(Queue::High)];
        let budget = [self.budget(Queue::Operational), self.budget(Queue::High)];
        let (mut too_large, mut full) = (0u64, 0u64);
        for event in events {
            let Some(queue) = routing.queue(&event.name) else {
                continue;
            };
            let class = usize::from(queue != Queue::Operational);
            // A full cache drops without serializing: a flood costs as little as possible.
            let bytes = if used[class] + RECORD_HEADER + MIN_EVENT_BYTES > budget[class] {
                Vec::new()
            } else {
                event.to_bytes()
            };
            let fi = family_index(event.family);
            let cost = RECORD_HEADER + bytes.len() as u64;
            let dropped = if bytes.is_empty() {
                full += 1;
                true
            } else if self.prefixes[fi].len() + bytes.len() + envelope::SUFFIX.len() > max {
                too_large += 1;
                true
            } else if used[class] + cost > budget[class] {
                full += 1;
                true
            } else {
                used[class] += cost;
                batches[Self::log_index(queue, event.family)].push(bytes.into_boxed_slice());
                if queue == Queue::High && event.name == URGENT {
                    self.urgent[fi] = true;
                }
                false
            };
            let counters = self.stats.touch();
            let c = match queue {
                Queue::Operational => &mut counters.operational,
                Queue::High => &mut counters.high,
                Queue::Low => &mut counters.low,
            };
            c.collected += 1;
            c.dropped += u64::from(dropped);
        }
        self.drop_log
            .note(too_large, full, max, self.settings.asc.max_local_cache_size);
        for (log, batch) in self.logs.iter_mut().zip(batches) {
            log.append(batch)?;
        }
        Ok(())
    }

    fn pending(&self, queue: Queue, family: Family) -> u64 {
        self.logs[Self::log_index(queue, family)].pending_bytes()
    }

    /// The next message due, if any, marked in flight. `drain` sends whatever is queued.
    fn next_message(&mut self, now: Instant, drain: bool) -> Option<(Message, Vec<(usize, u64)>)> {
        if self.in_flight.len() >= self.settings.max_in_flight
            || self.retry_at.is_some_and(|t| now < t)
        {
            return None;
        }
        self.retry_at = None;
        let asc = &self.settings.asc;
        for (fi, family) in FAMILIES.into_iter().enumerate() {
            let pending: u64 = Queue::ALL.iter().map(|q| self.pending(*q, family)).sum();
            if pending == 0 {
                continue;
            }
            let high = self.pending(Queue::High, family) > 0;
            let low = self.pending(Queue::Low, family) > 0
                || self.pending(Queue::Operational, family) > 0;
            let main = if pending >= asc.max_message_size || drain {
                if high || !low {
                    Priority::High
                } else {
                    Priority::Low
                }
            } else if high
                && (self.urgent[fi]
                    || now.duration_since(self.last_high[fi])
                        >= asc.high_priority_message_frequency)
            {
                Priority::High
            } else if low
                && now.duration_since(self.last_low[fi]) >= asc.low_priority_message_frequency
            {
                Priority::Low
            } else {
                continue;
            };
            let packed = self.pack(family, main);
            // A due queue is sent until empty; its clock restarts when it is.
            if main == Priority::High && self.pending(Queue::High, family) == 0 {
                self.last_high[fi] = now;
                self.urgent[fi] = false;
            }
            if main == Priority::Low && self.pending(Queue::Low, family) == 0 {
                self.last_low[fi] = now;
            }
            return packed;
        }
        None
    }

    /// Packs one message: operational events, then the main queue, then the other as padding,
    /// each in order, while the message stays within maxMessageSizeInBytes on the wire.
    fn pack(&mut self, family: Family, main: Priority) -> Option<(Message, Vec<(usize, u64)>)> {
        let max = self.settings.asc.max_message_size as usize;
        let fi = family_index(family);
        let order = match main {
            Priority::Low => [Queue::Operational, Queue::Low, Queue::High],
            _ => [Queue::Operational, Queue::High, Queue::Low],
        };
        let mut body = self.prefixes[fi].clone();
        let mut events = 0;
        let mut takes = Vec::new();
        for queue in order {
            let li = Self::log_index(queue, family);
            let mut taken = 0;
            for record in self.logs[li].pending() {
                let comma = usize::from(events > 0);
                if body.len() + comma + record.data.len() + envelope::SUFFIX.len() > max {
                    break;
                }
                if comma == 1 {
                    body.push(b',');
                }
                body.extend_from_slice(&record.data);
                events += 1;
                taken += 1;
            }
            if taken > 0 {
                takes.push((li, self.logs[li].take(taken)));
            }
        }
        if events == 0 {
            return None;
        }
        body.extend_from_slice(envelope::SUFFIX);
        Some((
            Message {
                id: uuid::Uuid::new_v4(),
                family,
                priority: main,
                body,
                events,
            },
            takes,
        ))
    }

    /// The oldest message in flight was acknowledged, or failed.
    fn settle(&mut self, result: Result<(), SinkError>) -> io::Result<()> {
        let done = self.in_flight.pop_front().expect("a message in flight");
        match result {
            Ok(()) => {
                for (li, upto) in done.takes {
                    self.logs[li].ack(upto)?;
                }
                let c = self.stats.touch();
                c.messages_sent += 1;
                c.messages_under_4kb += u64::from(done.bytes < 4096);
                self.failures = 0;
            }
            Err(e) => self.failed(&e),
        }
        Ok(())
    }

    /// Waits, up to `grace`, for the messages in flight to be acknowledged, so that a clean
    /// stop does not send them again at the next start.
    async fn settle_in_flight(&mut self, grace: Duration) -> io::Result<()> {
        let deadline = Instant::now() + grace;
        while let Some(front) = self.in_flight.front_mut() {
            match tokio::time::timeout_at(deadline, front.ack.as_mut()).await {
                Ok(result) => self.settle(result)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// A send failed: everything in flight goes back to the queues and sending pauses, with a
    /// backoff doubling up to a minute.
    fn failed(&mut self, error: &SinkError) {
        self.stats.touch().total_failed += 1;
        self.in_flight.clear();
        for log in &mut self.logs {
            log.rewind();
        }
        self.failures += 1;
        let backoff = crate::units::Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
            .after(self.failures);
        self.retry_at = Some(Instant::now() + backoff);
        tracing::warn!(retry_in = ?backoff, "sending failed: {error}; the events stay queued");
    }

    /// Timed work: closing aggregation windows, statistics, flushing to disk.
    fn tick(&mut self, now: Instant) -> io::Result<()> {
        let closed = self.aggregator.due(chrono::Utc::now(), false);
        self.queue_closed(closed)?;
        if now.duration_since(self.last_report) >= self.settings.asc.snapshot_frequency {
            self.last_report = now;
            self.report()?;
        }
        if now.duration_since(self.last_sync) >= self.settings.sync_interval {
            self.last_sync = now;
            self.sync()?;
        }
        // After a burst, what it made the agent hold goes back to the system: the heap its
        // events and windows used, and the pages of code and compiled plugins it faulted in
        // (what the quiet collections run comes back from the page cache).
        if now.duration_since(self.recent_since) >= TRIM_INTERVAL {
            let quiet = self.recent_events < QUIET_EVENTS;
            (self.recent_events, self.recent_since) = (0, now);
            if quiet && self.since_settled >= BURST_EVENTS {
                self.settle_memory();
            }
        }
        Ok(())
    }

    /// What a burst made the agent hold goes back to the system.
    fn settle_memory(&mut self) {
        self.since_settled = 0;
        crate::footprint::trim_heap();
        let advised = crate::footprint::release_loading_pages();
        tracing::debug!(
            advised_bytes = advised,
            "a burst settled: heap trimmed, file pages handed back"
        );
    }

    /// Queues DroppedEventsStatistics and MessageStatistics for what happened since the last.
    pub fn report(&mut self) -> io::Result<()> {
        let routing = self.routing.borrow().clone();
        let events = self.stats.report(
            routing.queue("DroppedEventsStatistics").is_some(),
            routing.queue("MessageStatistics").is_some(),
        );
        self.tap.offer(&Origin::host(), &events);
        self.enqueue(events)?;
        self.stats.checkpoint()
    }

    /// Flushes queued events to the device.
    pub fn sync(&mut self) -> io::Result<()> {
        for log in &mut self.logs {
            log.sync()?;
        }
        self.stats.checkpoint()
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let asc = &self.settings.asc;
        let mut at = now + Duration::from_secs(1);
        // A queue's frequency matters only while it holds something and could be sent: an
        // empty one, or one waiting for acknowledgements or for the retry after a failure,
        // would be due (and wake the loop) at every turn.
        let blocked = self.in_flight.len() >= self.settings.max_in_flight
            || self.retry_at.is_some_and(|t| now < t);
        for (fi, family) in FAMILIES.into_iter().enumerate().filter(|_| !blocked) {
            if self.pending(Queue::High, family) > 0 {
                at = at.min(self.last_high[fi] + asc.high_priority_message_frequency);
            }
            if self.pending(Queue::Low, family) > 0 || self.pending(Queue::Operational, family) > 0
            {
                at = at.min(self.last_low[fi] + asc.low_priority_message_frequency);
            }
        }
        at = at.min(self.last_report + asc.snapshot_frequency);
        if let Some(retry) = self.retry_at {
            at = at.min(retry);
        }
        if let Some(due) = self.aggregator.next_due() {
            let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
            at = at.min(now + wait);
        }
        at.max(now + Duration::from_millis(1))
    }

    /// Events queued and not yet acknowledged.
    pub fn queued(&self) -> usize {
        self.logs.iter().map(QueueLog::len).sum()
    }

    /// The counters since the last statistics report.
    pub fn statistics(&self) -> &statistics::Counters {
        &self.stats.counters
    }

    /// Runs until `shutdown` (or, with `drain`, until the batches end and everything is
    /// delivered): takes batches in, sends what is due to `sink`, settles acknowledgements.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        sink: &mut dyn Sink,
        drain: bool,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Pipeline> {
        enum Wake {
            Batch(Option<Batch>),
            Ack(Result<(), SinkError>),
            Command(Option<Command>),
            Timer,
            Shutdown,
        }
        tokio::pin!(shutdown);
        let mut open = true;
        let mut commands = self.commands.take();
        loop {
            let now = Instant::now();
            while let Some((message, takes)) = self.next_message(now, drain && !open) {
                let bytes = message.body.len();
                match sink.send(message).await {
                    Ok(ack) => self.in_flight.push_back(InFlight { takes, bytes, ack }),
                    Err(e) => {
                        self.failed(&e);
                        if drain && !open {
                            anyhow::bail!(
                                "could not deliver to {}: {e}; {} events stay queued",
                                sink.describe(),
                                self.queued()
                            );
                        }
                    }
                }
            }
            if drain && !open && self.in_flight.is_empty() && self.queued() == 0 {
                break;
            }
            let deadline = self.next_deadline(now);
            let has_in_flight = !self.in_flight.is_empty();
            let wake = tokio::select! {
                batch = batches.recv(), if open => Wake::Batch(batch),
                result = async { self.in_flight.front_mut().expect("checked").ack.as_mut().await }, if has_in_flight => Wake::Ack(result),
                command = async { commands.as_mut().expect("checked").recv().await }, if commands.is_some() => Wake::Command(command),
                _ = tokio::time::sleep_until(deadline) => Wake::Timer,
                _ = &mut shutdown, if !drain => Wake::Shutdown,
            };
            match wake {
                Wake::Batch(Some(batch)) => {
                    self.accept_from(&batch.origin, batch.events)?;
                    if let Some(accepted) = batch.accepted {
                        let _ = accepted.send(());
                    }
                }
                Wake::Batch(None) => {
                    open = false;
                    if !drain {
                        break;
                    }
                    // Everything collected is in: close the windows and report, then drain.
                    let closed = self.aggregator.due(chrono::Utc::now(), true);
                    self.queue_closed(closed)?;
                    self.report()?;
                }
                Wake::Ack(result) => {
                    let failed = result.is_err();
                    self.settle(result)?;
                    if failed && drain && !open {
                        anyhow::bail!(
                            "{} did not acknowledge a message; {} events stay queued",
                            sink.describe(),
                            self.queued()
                        );
                    }
                }
                Wake::Command(None) => commands = None,
                Wake::Command(Some(command)) => match command {
                    Command::Reconfigure(settings, reply) => {
                        let issues = self.reconfigure(*settings)?;
                        let _ = reply.send(issues);
                    }
                    Command::Accept(events) => self.accept(events)?,
                    Command::Status(reply) => {
                        let _ = reply.send(Status {
                            queued: self.queued(),
                            in_flight: self.in_flight.len(),
                            counters: self.stats.counters.clone(),
                        });
                    }
                },
                Wake::Timer => self.tick(Instant::now())?,
                Wake::Shutdown => {
                    self.settle_in_flight(SHUTDOWN_GRACE).await?;
                    break;
                }
            }
        }
        self.sync()?;
        Ok(self)
    }
}

fn family_index(f: Family) -> usize {
    FAMILIES.iter().position(|x| *x == f).expect("a family")
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Asc => "asc",
        Family::Edgeguard => "edgeguard",
    }
}

/// A Diagnostic about the pipeline itself.
pub fn diagnostic(severity: Severity, message: &str) -> SecurityEvent {
    SecurityEvent::diagnostic(severity, message, &[("Component", "pipeline".into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_high_priority_unless_configured() {
        let routing = Routing::default();
        assert_eq!(routing.queue("Alert"), Some(Queue::High));
        assert_eq!(routing.queue("Recommendation"), Some(Queue::High));
        assert_eq!(routing.queue("SomethingNew"), Some(Queue::Low));
    }

    /// An idle pipeline sleeps: a queue whose frequency has long passed does not wake it while
    /// it is empty, nor does a retry time that has passed.
    #[test]
    fn an_idle_pipeline_does_not_spin() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pipeline, _) = Pipeline::open(
            StateDir::open(dir.path()).unwrap(),
            Settings::default(),
            "agent",
        )
        .unwrap();
        let now = Instant::now() + Duration::from_secs(3600);
        assert!(
            pipeline.next_deadline(now) >= now + Duration::from_millis(500),
            "empty queues, frequencies long due"
        );
        pipeline.retry_at = Some(now - Duration::from_secs(10));
        assert!(pipeline.next_message(now, false).is_none());
        assert_eq!(pipeline.retry_at, None, "a retry time passed is forgotten");
        assert!(pipeline.next_deadline(now) >= now + Duration::from_millis(500));
    }
}
