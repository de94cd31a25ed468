//! A kernel event source shared by the plugins that follow it.
//!
//! One reader thread per source blocks on the kernel socket and appends each event to a
//! bounded queue per following plugin, which the plugin drains at its collections. Nothing is
//! dropped silently: a full queue and a kernel overrun both count into the plugin's `lost`,
//! handed to it at its next drain (so it can resynchronise from a snapshot) and reported in its
//! status. The first event after a drain wakes the plugin for a prompt collection (the actor
//! coalesces these, so a burst is one collection), and a queue half full wakes it at once.
//!
//! Queues belong to the plugin *name*, not to an instance: a restarted or hot-swapped instance
//! drains where its predecessor stopped, so no event falls between two versions. A queue whose
//! plugin has no instance left is dropped after [`ORPHAN_GRACE`]; with no queue left the reader
//! ends and the kernel socket is closed.
//!
//! A drain is current: what the kernel had queued for the feed when the drain began is in it
//! (waited for up to [`CATCH_UP`]), so a collection asked for right after an event sees it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a queue outlives its plugin's last instance, waiting for a successor.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(120);
/// After a failed open, how long plugins are answered with that failure before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long a read blocks: the reader looks after orphans and shutdown that often.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Room a drained queue keeps: what a quiet second brings.
const RETAINED: usize = 256;
/// How long a drain waits for the reader to take in what the kernel holds: under a flood the
/// socket is never empty, so the wait is bounded in time and in rounds of the reader.
pub const CATCH_UP: Duration = Duration::from_millis(100);
const CATCH_UP_ROUNDS: u64 = 64;

/// The kernel side of a feed.
pub trait Source: Send + 'static {
    /// What the source delivers.
    type Event: Clone + Send + 'static;
    /// Waits up to about [`READ_TIMEOUT`] and appends what came to `out`; returns how many
    /// events the kernel dropped since the last call. An error ends the feed.
    fn next(&mut self, out: &mut Vec<Self::Event>) -> io::Result<u64>;

    /// A descriptor that polls readable while the kernel holds events not yet read: the
    /// reader waits on it, and a drain waits until it is read. None: drains take what the
    /// reader has.
    fn readiness(&self) -> Option<RawFd> {
        None
    }

    /// How long the reader waits for the kernel before [`tick`](Self::tick): shorter when the
    /// source holds events due sooner.
    fn wait(&self) -> Duration {
        READ_TIMEOUT
    }

    /// A wait ended with nothing to read: events the source held back (for a second source to
    /// complete them) that are due now go to `out`.
    fn tick(&mut self, _out: &mut Vec<Self::Event>) {}

    /// After a round that read the kernel, how long the reader lets it gather more before
    /// waiting again, so that a burst is read in fewer, fuller rounds (each wait and wake-up
    /// costs more than a message). Zero where an event must be acted on at once.
    fn gather(&self) -> Duration {
        Duration::ZERO
    }

    /// The memory an event holds, its heap parts included: queues are bounded by it.
    fn bytes(event: &Self::Event) -> usize {
        std::mem::size_of_val(event)
    }
}

/// Bytes one plugin's queue of a feed may hold, whatever its count: a burst of processes with
/// long command lines is counted as lost (and caught up from a snapshot) past it.
pub const QUEUE_BYTES: usize = 4 << 20;

/// Why a plugin's actor is woken before its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Events wait: collect soon, so they reach the analyzers in real time.
    Prompt,
    /// The queue is half full: collect now, before it overflows.
    Pressure,
}

/// Wakes a plugin's actor for an early collection.
pub type Wake = Arc<dyn Fn(&str, Urgency) + Send + Sync>;

/// One kernel event source shared by every plugin that follows it: a reader thread fills one bounded queue per plugin name, which outlives the plugin's instances.
pub struct Feed<S: Source> {
    /// "proc connector", "sock_diag destroy": for logs and status.
    pub what: &'static str,
    shared: Arc<Shared<S::Event>>,
    open: Box<dyn Fn() -> Result<S, String> + Send + Sync>,
}

struct Shared<E> {
    capacity: usize,
    max_bytes: usize,
    wake: Wake,
    state: Mutex<State<E>>,
    /// Notified after each round of the reader.
    round_done: Condvar,
}

struct State<E> {
    reading: bool,
    /// The agent is stopping: the reader drops its source (which undoes what it changed in
    /// the kernel) and opens no other.
    closing: bool,
    /// The source's [`Source::readiness`] while it is read; cleared before it closes.
    readiness: Option<RawFd>,
    /// The reader has taken a datagram in and not yet queued its events.
    busy: bool,
    /// Rounds of the reader so far.
    rounds: u64,
    refused: Option<(Instant, String)>,
    queues: HashMap<Arc<str>, Queue<E>>,
    instances: HashMap<Arc<str>, usize>,
    usage: HashMap<Arc<str>, Usage>,
}

struct Queue<E> {
    events: VecDeque<E>,
    /// What `events` hold, by [`Source::bytes`].
    bytes: usize,
    lost: u64,
    fresh: bool,
    /// Woken since the last drain: for the first event, and for half the room used.
    prompted: bool,
    woken: bool,
    /// The feed broke; the next drain says so and the queue goes.
    broken: Option<String>,
    orphaned_since: Option<Instant>,
}

/// How a plugin uses a feed, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// It drains a queue of this feed now.
    pub following: bool,
    /// Why it could not follow, when it asked and could not.
    pub unavailable: Option<String>,
    /// It read the polled snapshot of the same data.
    pub polled: bool,
    /// Events handed to the plugin.
    pub delivered: u64,
    /// Events lost before the plugin could have them.
    pub lost: u64,
}

/// One drain of a plugin's queue.
pub struct Drained<E> {
    /// The events, oldest first.
    pub events: Vec<E>,
    /// Events that could not be kept since the previous drain.
    pub lost: u64,
    /// This drain started the queue: what happened before it was not seen.
    pub fresh: bool,
}

impl<S: Source> Feed<S> {
    /// A feed whose queues hold at most `capacity` events (and [`QUEUE_BYTES`]) each; `open` connects to the kernel
    /// (or says why it cannot), when the first plugin follows.
    pub fn new(
        what: &'static str,
        capacity: usize,
        wake: Wake,
        open: impl Fn() -> Result<S, String> + Send + Sync + 'static,
    ) -> Feed<S> {
        Self::bounded(what, capacity, QUEUE_BYTES, wake, open)
    }

    /// A feed whose queues hold at most `capacity` events and `max_bytes` each.
    fn bounded(
        what: &'static str,
        capacity: usize,
        max_bytes: usize,
        wake: Wake,
        open: impl Fn() -> Result<S, String> + Send + Sync + 'static,
    ) -> Feed<S> {
        let state = State {
            reading: false,
            closing: false,
            readiness: None,
            busy: false,
            rounds: 0,
            refused: None,
            queues: HashMap::new(),
            instances: HashMap::new(),
            usage: HashMap::new(),
        };
        Feed {
            what,
            shared: Arc::new(Shared {
                capacity: capacity.max(2),
                max_bytes,
                wake,
                state: Mutex::new(state),
                round_done: Condvar::new(),
            }),
            open: Box::new(open),
        }
    }

    /// An instance of `plugin` exists (its queue is kept while one does).
    pub fn hold(&self, plugin: &Arc<str>) {
        let mut state = self.shared.lock();
        *state.instances.entry(Arc::clone(plugin)).or_default() += 1;
        if let Some(q) = state.queues.get_mut(plugin) {
            q.orphaned_since = None;
        }
    }

    /// An instance of `plugin` is gone.
    pub fn release(&self, plugin: &Arc<str>) {
        let mut state = self.shared.lock();
        let left = state.instances.get_mut(plugin).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            state.instances.remove(plugin);
            if let Some(q) = state.queues.get_mut(plugin) {
                q.orphaned_since = Some(Instant::now());
            }
        }
    }

    /// Up to `max` of `plugin`'s events, following the feed from now on if it did not yet.
    /// Blocks while connecting to the kernel (well under a second): call it off the executor.
    pub fn drain(&self, plugin: &Arc<str>, max: usize) -> Result<Drained<S::Event>, String> {
        let mut state = self.shared.lock();
        if state.queues.contains_key(plugin) {
            state = self.shared.catch_up(state);
        }
        if !state.queues.contains_key(plugin) {
            self.start(&mut state, plugin)?;
        }
        let queue = state.queues.get_mut(plugin).expect("started above");
        if let Some(why) = queue.broken.take() {
            state.queues.remove(plugin);
            Self::unavailable(&mut state, plugin, why.clone());
            return Err(why);
        }
        let take = queue.events.len().min(max);
        let events: Vec<S::Event> = queue.events.drain(..take).collect();
        queue.bytes -= events.iter().map(S::bytes).sum::<usize>();
        if queue.events.is_empty() && queue.events.capacity() > RETAINED {
            // A burst grew it: the room goes back once it is drained.
            queue.events.shrink_to(RETAINED);
        }
        let drained = Drained {
            events,
            lost: std::mem::take(&mut queue.lost),
            fresh: std::mem::take(&mut queue.fresh),
        };
        queue.woken = self.shared.half_full(queue);
        queue.prompted = false;
        let usage = state.usage.entry(Arc::clone(plugin)).or_default();
        usage.following = true;
        usage.unavailable = None;
        usage.delivered += drained.events.len() as u64;
        Ok(drained)
    }

    /// `plugin` read the polled snapshot instead of (or besides) the feed.
    pub fn note_polled(&self, plugin: &Arc<str>) {
        self.shared
            .lock()
            .usage
            .entry(Arc::clone(plugin))
            .or_default()
            .polled = true;
    }

    /// How `plugin` uses the feed, if it asked for it.
    pub fn usage(&self, plugin: &str) -> Option<Usage> {
        let state = self.shared.lock();
        let mut usage = state.usage.get(plugin)?.clone();
        usage.following = state.queues.contains_key(plugin);
        Some(usage)
    }

    /// Stops reading before the agent exits: the source is dropped on the reader thread within
    /// a round ([`READ_TIMEOUT`]), which this waits for (twice that at most).
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closing = true;
        let deadline = Instant::now() + 2 * READ_TIMEOUT;
        while state.reading {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("the {} reader did not stop in time", self.what);
                return;
            }
            state = self
                .shared
                .round_done
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Opens a queue for `plugin`, connecting to the kernel first if no reader runs.
    fn start(&self, state: &mut State<S::Event>, plugin: &Arc<str>) -> Result<(), String> {
        if state.closing {
            return Err(format!(
                "the agent is stopping: the {} is closed",
                self.what
            ));
        }
        if !state.reading {
            if let Some((at, why)) = &state.refused
                && at.elapsed() < RETRY_AFTER
            {
                let why = why.clone();
                Self::unavailable(state, plugin, why.clone());
                return Err(why);
            }
            let source = match (self.open)() {
                Ok(source) => source,
                Err(why) => {
                    tracing::warn!(plugin = %plugin, "{} unavailable: {why}; the plugin polls instead", self.what);
                    state.refused = Some((Instant::now(), why.clone()));
                    Self::unavailable(state, plugin, why.clone());
                    return Err(why);
                }
            };
            state.refused = None;
            state.reading = true;
            state.readiness = source.readiness();
            let shared = Arc::clone(&self.shared);
            let what = self.what;
            std::thread::Builder::new()
                .name(format!("edgeguard {what}"))
                .spawn(move || read(what, source, shared))
                .map_err(|e| format!("cannot start the {what} reader: {e}"))?;
            tracing::info!(plugin = %plugin, "following the kernel's {}", self.what);
        }
        let orphaned_since = (!state.instances.contains_key(plugin)).then(Instant::now);
        let queue = Queue {
            events: VecDeque::new(),
            bytes: 0,
            lost: 0,
            fresh: true,
            prompted: false,
            woken: false,
            broken: None,
            orphaned_since,
        };
        state.queues.insert(Arc::clone(plugin), queue);
        Ok(())
    }

    fn unavailable(state: &mut State<S::Event>, plugin: &Arc<str>, why: String) {
        let usage = state.usage.entry(Arc::clone(plugin)).or_default();
        usage.following = false;
        usage.unavailable = Some(why);
    }
}

impl<E> Shared<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the reader has queued what the kernel holds now, up to [`CATCH_UP`].
    fn catch_up<'a>(&self, mut state: MutexGuard<'a, State<E>>) -> MutexGuard<'a, State<E>> {
        let deadline = Instant::now() + CATCH_UP;
        let first = state.rounds;
        while let Some(fd) = state.readiness
            && (state.busy || readable(fd, Duration::ZERO))
            && state.rounds < first + CATCH_UP_ROUNDS
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .round_done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state
    }

    /// Half of a queue's room in count or in bytes is used: time its plugin collected.
    fn half_full(&self, queue: &Queue<E>) -> bool {
        queue.events.len() >= self.capacity / 2 || queue.bytes >= self.max_bytes / 2
    }
}

/// The reader thread: from the kernel into the queues, until no queue is left.
fn read<S: Source>(what: &'static str, mut source: S, shared: Arc<Shared<S::Event>>) {
    let mut batch = Vec::with_capacity(64);
    let mut to_wake = Vec::new();
    let readiness = source.readiness();
    loop {
        batch.clear();
        let mut read_kernel = true;
        let outcome = match readiness {
            // Nothing came: the round only looks after orphans and what the source held back.
            Some(fd) if !readable(fd, source.wait()) => {
                read_kernel = false;
                source.tick(&mut batch);
                Ok(0)
            }
            Some(_) => {
                shared.lock().busy = true;
                source.next(&mut batch)
            }
            None => source.next(&mut batch),
        };
        let mut state = shared.lock();
        state.busy = false;
        state.rounds += 1;
        if state.closing {
            // Dropped before `close` hears of it: the agent exits only after it.
            drop(state);
            drop(source);
            let mut state = shared.lock();
            state.reading = false;
            state.readiness = None;
            shared.round_done.notify_all();
            return;
        }
        shared.round_done.notify_all();
        match outcome {
            Ok(dropped) => {
                let State { queues, usage, .. } = &mut *state;
                for (plugin, queue) in queues.iter_mut() {
                    let mut lost = dropped;
                    for event in &batch {
                        let bytes = S::bytes(event);
                        if queue.events.len() < shared.capacity
                            && queue.bytes + bytes <= shared.max_bytes
                        {
                            queue.bytes += bytes;
                            queue.events.push_back(event.clone());
                        } else {
                            lost += 1;
                        }
                    }
                    if lost > 0 {
                        queue.lost += lost;
                        usage.entry(Arc::clone(plugin)).or_default().lost += lost;
                    }
                    if !queue.woken && shared.half_full(queue) {
                        // A collection at once is one soon too.
                        queue.woken = true;
                        queue.prompted = true;
                        to_wake.push((Arc::clone(plugin), Urgency::Pressure));
                    } else if !queue.prompted && !queue.events.is_empty() {
                        queue.prompted = true;
                        to_wake.push((Arc::clone(plugin), Urgency::Prompt));
                    }
                }
            }
            Err(e) => {
                let why = format!("the {what} failed: {e}");
                tracing::warn!("{why}; its plugins poll until it reopens");
                for queue in state.queues.values_mut() {
                    queue.broken = Some(why.clone());
                }
                state.reading = false;
                state.readiness = None;
                state.refused = Some((Instant::now(), why));
                return;
            }
        }
        state.queues.retain(|plugin, q| {
            let keep = q.orphaned_since.is_none_or(|t| t.elapsed() < ORPHAN_GRACE);
            if !keep {
                tracing::debug!(plugin = %plugin, "{what}: queue of a plugin without instances dropped");
            }
            keep
        });
        if state.queues.is_empty() {
            state.reading = false;
            state.readiness = None;
            tracing::info!("no plugin follows the kernel's {what} any more: closed");
            return;
        }
        drop(state);
        for (plugin, urgency) in to_wake.drain(..) {
            (shared.wake)(&plugin, urgency);
        }
        let gather = source.gather();
        if read_kernel && !gather.is_zero() {
            std::thread::sleep(gather);
        }
    }
}

/// Whether `fd` polls readable (or in error: the read will tell) within `timeout`.
fn readable(fd: RawFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd we own; the descriptor stays open while it is the readiness in force.
    unsafe { libc::poll(&raw mut poll, 1, millis) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Events from a channel; a closed channel is a broken feed.
    struct Scripted(mpsc::Receiver<(Vec<u32>, u64)>);

    impl Source for Scripted {
        type Event = u32;
        fn next(&mut self, out: &mut Vec<u32>) -> io::Result<u64> {
            match self.0.recv_timeout(Duration::from_millis(20)) {
                Ok((events, dropped)) => {
                    out.extend(events);
                    Ok(dropped)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(0),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other("gone")),
            }
        }
    }

    /// A feed, the script its source plays (events, kernel drops), and the log of what the
    /// source was asked.
    type Fixture = (
        Feed<Scripted>,
        mpsc::Sender<(Vec<u32>, u64)>,
        Arc<Mutex<Vec<(String, Urgency)>>>,
    );

    fn feed(capacity: usize) -> Fixture {
        feed_of(capacity, QUEUE_BYTES)
    }

    fn feed_of(capacity: usize, max_bytes: usize) -> Fixture {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(Some(rx));
        let woken: Arc<Mutex<Vec<(String, Urgency)>>> = Arc::default();
        let w = Arc::clone(&woken);
        let wake: Wake = Arc::new(move |p: &str, u| w.lock().unwrap().push((p.to_owned(), u)));
        let feed = Feed::bounded("test feed", capacity, max_bytes, wake, move || {
            rx.lock()
                .unwrap()
                .take()
                .map(Scripted)
                .ok_or_else(|| "opened twice".to_owned())
        });
        (feed, tx, woken)
    }

    fn settle() {
        std::thread::sleep(Duration::from_millis(100));
    }

    #[test]
    fn overflow_and_kernel_drops_are_counted_and_a_half_full_queue_wakes_its_plugin() {
        let (feed, tx, woken) = feed(4);
        let p: Arc<str> = "p".into();
        feed.hold(&p);
        let first = feed.drain(&p, 10).unwrap();
        assert!(first.fresh && first.events.is_empty());
        tx.send((vec![1, 2, 3, 4, 5, 6], 3)).unwrap();
        settle();
        assert_eq!(*woken.lock().unwrap(), [("p".into(), Urgency::Pressure)]);
        let d = feed.drain(&p, 3).unwrap();
        assert_eq!(
            (d.events, d.lost, d.fresh),
            (vec![1, 2, 3], 5, false),
            "2 past capacity + 3 dropped by the kernel"
        );
        let d = feed.drain(&p, 3).unwrap();
        assert_eq!((d.events, d.lost), (vec![4], 0));
        assert_eq!(
            feed.usage("p").unwrap(),
            Usage {
                following: true,
                unavailable: None,
                polled: false,
                delivered: 4,
                lost: 5
            }
        );
    }

    /// The first event after a drain wakes the plugin promptly, once until the next drain.
    #[test]
    fn the_first_event_after_a_drain_asks_for_a_prompt_collection() {
        let (feed, tx, woken) = feed(100);
        let p: Arc<str> = "p".into();
        feed.hold(&p);
        feed.drain(&p, 10).unwrap();
        tx.send((vec![1], 0)).unwrap();
        tx.send((vec![2], 0)).unwrap();
        settle();
        assert_eq!(*woken.lock().unwrap(), [("p".into(), Urgency::Prompt)]);
        assert_eq!(feed.drain(&p, 10).unwrap().events, vec![1, 2]);
        tx.send((vec![3], 0)).unwrap();
        settle();
        assert_eq!(
            woken.lock().unwrap().len(),
            2,
            "woken again after the drain"
        );
    }

    /// Bytes bound a queue as counts do: what does not fit is lost, counted, and frees the
    /// room it took once drained.
    #[test]
    fn a_queue_is_bounded_in_bytes_too() {
        let (feed, tx, woken) = feed_of(100, 3 * std::mem::size_of::<u32>());
        let p: Arc<str> = "p".into();
        feed.hold(&p);
        feed.drain(&p, 10).unwrap();
        tx.send((vec![1, 2, 3, 4, 5], 0)).unwrap();
        settle();
        assert_eq!(
            *woken.lock().unwrap(),
            [("p".into(), Urgency::Pressure)],
            "half the bytes used"
        );
        let d = feed.drain(&p, 10).unwrap();
        assert_eq!((d.events, d.lost), (vec![1, 2, 3], 2));
        tx.send((vec![6, 7, 8], 0)).unwrap();
        settle();
        assert_eq!(feed.drain(&p, 10).unwrap().events, vec![6, 7, 8]);
    }

    /// Events on a datagram socket, each taking the reader a while (as reading a process's
    /// command line does).
    struct Slow(std::os::unix::net::UnixDatagram);

    impl Source for Slow {
        type Event = u8;
        fn next(&mut self, out: &mut Vec<u8>) -> io::Result<u64> {
            let mut buf = [0; 16];
            let n = self.0.recv(&mut buf)?;
            std::thread::sleep(Duration::from_millis(30));
            out.extend_from_slice(&buf[..n]);
            Ok(0)
        }
        fn readiness(&self) -> Option<RawFd> {
            Some(std::os::fd::AsRawFd::as_raw_fd(&self.0))
        }
    }

    #[test]
    fn a_drain_holds_what_the_kernel_had_when_it_began() {
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
        theirs.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let theirs = Mutex::new(Some(theirs));
        let wake: Wake = Arc::new(|_: &str, _| {});
        let feed = Feed::new("test feed", 100, wake, move || {
            Ok(Slow(theirs.lock().unwrap().take().unwrap()))
        });
        let p: Arc<str> = "p".into();
        feed.hold(&p);
        assert!(feed.drain(&p, 10).unwrap().events.is_empty());
        for round in 0..5u8 {
            ours.send(&[round, round]).unwrap();
            ours.send(&[round]).unwrap();
            let started = Instant::now();
            let d = feed.drain(&p, 10).unwrap();
            assert_eq!(d.events, [round, round, round], "round {round}");
            assert!(started.elapsed() < CATCH_UP, "{:?}", started.elapsed());
        }
        let started = Instant::now();
        assert!(feed.drain(&p, 10).unwrap().events.is_empty());
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "nothing pending: no wait ({:?})",
            started.elapsed()
        );
    }

    #[test]
    fn a_successor_instance_drains_where_the_last_one_stopped() {
        let (feed, tx, _) = feed(100);
        let p: Arc<str> = "p".into();
        feed.hold(&p);
        feed.drain(&p, 10).unwrap();
        feed.hold(&p); // the new version starts before the old one goes
        feed.release(&p);
        tx.send((vec![7, 8], 0)).unwrap();
        settle();
        let d = feed.drain(&p, 10).unwrap();
        assert_eq!((d.events, d.fresh), (vec![7, 8], false));
    }

    #[test]
    fn a_broken_feed_is_reported_once_then_refused_until_retry() {
        let (feed, tx, _) = feed(100);
        let p: Arc<str> = "p".into();
        feed.hold(&p);
        feed.drain(&p, 10).unwrap();
        drop(tx);
        settle();
        let err = feed.drain(&p, 10).err().unwrap();
        assert!(err.contains("test feed failed: gone"), "{err}");
        let again = feed.drain(&p, 10).err().unwrap();
        assert_eq!(again, err, "not reopened before the retry delay");
        assert_eq!(
            feed.usage("p").unwrap().unavailable.as_deref(),
            Some(err.as_str())
        );
    }

    #[test]
    fn an_open_failure_is_the_plugins_reason_to_poll() {
        let wake: Wake = Arc::new(|_: &str, _| {});
        let feed: Feed<Scripted> = Feed::new("test feed", 10, wake, || Err("not here".to_owned()));
        let p: Arc<str> = "p".into();
        assert_eq!(feed.drain(&p, 1).err().unwrap(), "not here");
        feed.note_polled(&p);
        let usage = feed.usage("p").unwrap();
        assert!(!usage.following && usage.polled);
        assert_eq!(usage.unavailable.as_deref(), Some("not here"));
    }
}
