//! When plugins run. Each plugin is an actor task that owns its instance and collects at its
//! group's interval, so a slow or faulting plugin never delays another; a shared semaphore
//! bounds how many collections run at once. The group intervals can change while running, and
//! a group can be told to collect now ([`Control`]). Each actor also takes [`Order`]s: swap in
//! a new version between two collections (handing over its state), reschedule, pause, stop.
//!
//! An analyzer's actor is the same, woken instead by the events it wants as the pipeline takes
//! them in (its [`Subscription`] of the pipeline's tap), and at its group's interval with none,
//! so that its windows can close on a quiet device.

use crate::capabilities::HostContext;
use crate::events::{self, Origin, SecurityEvent, Severity};
use crate::pipeline::tap::{Subscription, Tap};
use crate::pipeline::{Batch, Routing};
use crate::runtime::limits::Limits;
use crate::sandbox::instance::Role;
use crate::sandbox::{Fault, LoadedPlugin, PluginInstance};
use crate::wit::edgeguard::collector::types::PriorityGroup;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

pub mod authority;
mod schedule;

pub use schedule::{Group, ScheduleConfig};

/// A plugin as the scheduler runs it.
#[derive(Clone)]
pub struct PluginSpec {
    /// The plugin, loaded.
    pub loaded: Arc<LoadedPlugin>,
    /// Its priority group.
    pub group: Group,
    /// The plugin's own interval; None: its group's, following changes of the group intervals.
    pub interval: Option<Duration>,
    /// Its sandbox limits.
    pub limits: Limits,
    /// The plugin's configuration as a JSON object.
    pub config_json: String,
    /// Where the plugin's `save-state` is kept between runs (cursors survive restarts); None:
    /// state lives only as long as the instance.
    pub state_file: Option<std::path::PathBuf>,
    /// Typed kinds it may emit without the capability that observes them (see
    /// [`authority::attestable`]).
    pub attests: Vec<String>,
}

impl PluginSpec {
    /// The group: the configuration's override, else the plugin's own choice.
    pub fn group_for(loaded: &LoadedPlugin, configured: Option<Group>) -> Group {
        configured.unwrap_or(match loaded.info.default_group {
            PriorityGroup::High => Group::High,
            PriorityGroup::Medium => Group::Medium,
            PriorityGroup::Low => Group::Low,
        })
    }
}

/// Live counters of one plugin, readable while it runs.
#[derive(Clone, Debug, Default)]
pub struct PluginStatus {
    /// Collections made.
    pub collections: u64,
    /// Events delivered.
    pub events: u64,
    /// Faults (each threw the instance away).
    pub faults: u64,
    /// Faults since the last good collection.
    pub consecutive_faults: u32,
    /// The last fault, described.
    pub last_fault: Option<String>,
    /// Errors the plugin returned (its instance kept).
    pub errors: u64,
    /// Collections not made while waiting to restart after a fault.
    pub skipped_while_backing_off: u64,
    /// Collections not made because every event the plugin emits is Off.
    pub skipped_all_off: u64,
    /// When the last collection ended (whatever its outcome).
    pub last_run: Option<chrono::DateTime<chrono::Utc>>,
    /// Kernel events lost for this plugin, as far as a diagnostic has said.
    pub kernel_events_lost: u64,
    /// Log lines dropped past the per-call cap, over every call.
    pub logs_dropped: u64,
    /// Calls the plugin made into the host, and the host's time in them (counted against each
    /// call's deadline).
    pub host_work: crate::runtime::limits::HostWork,
    /// States `save-state` returned over `limits.max_state` (not kept, not handed over).
    pub states_refused: u64,
    /// Events refused where they enter the pipeline: kinds the plugin may not emit, or larger
    /// than a message can carry.
    pub events_refused: u64,
    /// An analyzer: events it was handed.
    pub analysed: u64,
    /// An analyzer: events it wanted and never analysed (its queue was full, or the call they
    /// were handed to faulted).
    pub analysis_lost: u64,
    /// An analyzer: its rules as its configuration leaves them.
    pub rules: Vec<crate::wit::analyzer::edgeguard::collector::analysis::RuleStatus>,
    /// Bytes the instance's memories hold after its last collection.
    pub memory: usize,
    /// What they held after the instance's first collection.
    pub memory_settled: usize,
    /// The most any of its instances held.
    pub memory_peak: usize,
    /// Instances replaced by a fresh one taking their state, because a burst had grown their
    /// memory far past what they settled at (wasm memory never shrinks).
    pub memory_renewals: u64,
}

/// What a running plugin's actor can be told.
pub enum Order {
    /// Replace the plugin by another version between two collections: start the new one, hand
    /// it the old one's state, switch. On failure the old one keeps running.
    Swap(
        PluginSpec,
        tokio::sync::oneshot::Sender<Result<Swapped, String>>,
    ),
    /// Same plugin, another schedule, or paused (loaded and idle) / resumed.
    Adjust {
        /// The group.
        group: Group,
        /// Its own interval (None: the group's).
        interval: Option<Duration>,
        /// False: paused.
        enabled: bool,
    },
    /// End after the collection under way.
    Stop,
}

/// How a swap went.
#[derive(Clone, Debug)]
pub struct Swapped {
    /// From the order's arrival to the new version in place.
    pub took: Duration,
    /// What became of the old version's state.
    pub state: Handover,
}

/// What became of a plugin's state at a swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handover {
    /// The old version had no state to hand over.
    None,
    /// The new version took over this many bytes of state.
    Handed(usize),
    /// The new version refused the old one's state and started afresh (the reason).
    Refused(String),
}

/// Runs every plugin as its own actor on its group's schedule.
pub struct Scheduler {
    host: Arc<HostContext>,
    schedule: ScheduleConfig,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Batch>,
    routing: watch::Receiver<Arc<Routing>>,
    control: Control,
    tap: Tap,
    /// Collectors running, plus one while this scheduler may still start some: with `once`,
    /// analyzers end when it is zero and nothing is left in their queues.
    collectors: Arc<watch::Sender<usize>>,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.collectors.send_modify(|n| *n -= 1);
    }
}

/// What one collection made of a request to collect now.
#[derive(Clone, Debug)]
pub struct CollectReport {
    /// The plugin.
    pub plugin: Arc<str>,
    /// Events it delivered.
    pub events: usize,
    /// `collected`, or why not (an error, a fault, everything Off, backing off).
    pub outcome: String,
}

#[derive(Clone, Debug)]
struct Nudge {
    group: Group,
    reply: mpsc::UnboundedSender<CollectReport>,
}

/// Steers running plugins: group intervals and immediate collections. Cheap to clone; the
/// plugins keep running on their last intervals when every handle is gone.
#[derive(Clone)]
pub struct Control {
    intervals: Arc<watch::Sender<[Duration; 3]>>,
    nudges: broadcast::Sender<Nudge>,
}

impl Control {
    /// New intervals for the three groups; plugins with their own interval keep it.
    pub fn set_intervals(&self, schedule: &ScheduleConfig) {
        self.intervals
            .send_replace(Group::ALL.map(|g| schedule.interval(g)));
    }

    /// Makes every plugin of `group` collect now; each reports on the returned channel once
    /// its collection is done. The channel closes when every plugin reported (or went away).
    pub fn collect_now(&self, group: Group) -> mpsc::UnboundedReceiver<CollectReport> {
        let (reply, reports) = mpsc::unbounded_channel();
        let _ = self.nudges.send(Nudge { group, reply });
        reports
    }
}

/// A running plugin task.
pub struct Running {
    /// The plugin's name.
    pub name: Arc<str>,
    /// Its live counters.
    pub status: Arc<Mutex<PluginStatus>>,
    /// Where its actor takes orders.
    pub orders: mpsc::Sender<Order>,
    /// The actor.
    pub task: JoinHandle<()>,
}

impl Scheduler {
    /// `routing` tells which events are Off: a plugin whose events all are is not called.
    pub fn new(
        host: Arc<HostContext>,
        schedule: ScheduleConfig,
        tx: mpsc::Sender<Batch>,
        routing: watch::Receiver<Arc<Routing>>,
    ) -> Scheduler {
        let permits = Arc::new(Semaphore::new(schedule.max_concurrent));
        let control = Control {
            intervals: Arc::new(watch::Sender::new(Group::ALL.map(|g| schedule.interval(g)))),
            nudges: broadcast::channel(16).0,
        };
        Scheduler {
            host,
            schedule,
            permits,
            tx,
            routing,
            control,
            tap: Tap::new(),
            collectors: Arc::new(watch::Sender::new(1)),
        }
    }

    /// Analyzers are handed events from `tap` (the pipeline's, [`crate::pipeline::Pipeline::tap`]);
    /// without one, only what is offered to [`Scheduler::tap`].
    pub fn with_tap(mut self, tap: Tap) -> Scheduler {
        self.tap = tap;
        self
    }

    /// Where analyzers are handed events.
    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }

    /// What the plugins share.
    pub fn host(&self) -> Arc<HostContext> {
        Arc::clone(&self.host)
    }

    /// Changes the intervals or has a group collect now.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Sends events on a plugin's behalf (diagnostics about it).
    pub async fn report(&self, plugin: &str, events: Vec<SecurityEvent>) {
        // The receiver only goes away at shutdown; nothing to do then.
        let _ = self
            .tx
            .send(Batch {
                plugin: plugin.into(),
                origin: Origin::host(),
                at: Instant::now(),
                events,
                accepted: None,
            })
            .await;
    }

    /// Starts a plugin's actor. With `once`, it collects a single time, right away, and ends.
    pub fn spawn(&self, spec: PluginSpec, once: bool) -> Running {
        self.spawn_with(
            spec,
            once,
            true,
            Arc::new(Mutex::new(PluginStatus::default())),
        )
    }

    /// Starts a plugin's actor, paused unless `enabled`, counting into `status`.
    pub fn spawn_with(
        &self,
        spec: PluginSpec,
        once: bool,
        enabled: bool,
        status: Arc<Mutex<PluginStatus>>,
    ) -> Running {
        let (orders, inbox) = mpsc::channel(8);
        let role = match &spec.loaded.role {
            Role::Collector => ActorRole::Collector(Producing::new(&self.collectors)),
            Role::Analyzer { wants } => ActorRole::Analyzer {
                subscription: self.tap.subscribe(&spec.loaded.name, wants),
                collectors: self.collectors.subscribe(),
                handed: Mutex::new(Handed::default()),
            },
        };
        let actor = Actor {
            role,
            tap: self.tap.clone(),
            once,
            spec,
            host: Arc::clone(&self.host),
            permits: Arc::clone(&self.permits),
            tx: self.tx.clone(),
            status: Arc::clone(&status),
            routing: self.routing.clone(),
            intervals: self.control.intervals.subscribe(),
            nudges: self.control.nudges.subscribe(),
            orders: inbox,
            enabled,
            restore_faults: AtomicU32::new(0),
            state_over_limit: AtomicBool::new(false),
        };
        let jitter = if once {
            Duration::ZERO
        } else {
            self.schedule
                .first_collection_jitter
                .0
                .mul_f64(fastrand::f64())
        };
        let name = Arc::clone(&actor.spec.loaded.name);
        let task = tokio::spawn(actor.run(jitter, once));
        Running {
            name,
            status,
            orders,
            task,
        }
    }
}

/// A running collector, counted while it runs.
struct Producing(Arc<watch::Sender<usize>>);

impl Producing {
    fn new(count: &Arc<watch::Sender<usize>>) -> Producing {
        count.send_modify(|n| *n += 1);
        Producing(Arc::clone(count))
    }
}

impl Drop for Producing {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// What an actor runs: a collector, or an analyzer with its queue of events.
enum ActorRole {
    Collector(#[allow(dead_code)] Producing),
    Analyzer {
        subscription: Subscription,
        collectors: watch::Receiver<usize>,
        handed: Mutex<Handed>,
    },
}

/// The Ids of the events an analyzer was handed lately: the only evidence its findings may
/// cite. Bounded; what is older than that is no longer vouched for.
#[derive(Default)]
struct Handed {
    ids: std::collections::HashSet<uuid::Uuid>,
    order: std::collections::VecDeque<uuid::Uuid>,
}

/// Evidence Ids remembered per analyzer.
const HANDED_IDS: usize = 65_536;

impl Handed {
    fn note(&mut self, id: uuid::Uuid) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > HANDED_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    fn vouches(&self, id: &str) -> bool {
        uuid::Uuid::parse_str(id).is_ok_and(|id| self.ids.contains(&id))
    }
}

struct Actor {
    role: ActorRole,
    tap: Tap,
    /// Collect (or analyse) once and end.
    once: bool,
    spec: PluginSpec,
    host: Arc<HostContext>,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Batch>,
    status: Arc<Mutex<PluginStatus>>,
    routing: watch::Receiver<Arc<Routing>>,
    intervals: watch::Receiver<[Duration; 3]>,
    nudges: broadcast::Receiver<Nudge>,
    orders: mpsc::Receiver<Order>,
    /// Paused actors keep their instance and skip their collections.
    enabled: bool,
    /// Faults in `restore-state` in a row: past [`RESTORE_FAULTS_TOLERATED`] the saved state is
    /// discarded, so a state the plugin cannot take does not crash-loop it.
    restore_faults: AtomicU32,
    /// Whether the last state the plugin returned was over its limit (said once, not per call).
    state_over_limit: AtomicBool,
}

/// An analyzer is handed at most its memory limit over this much per call (1 MiB at the
/// default limit): what a call hands over is held three times while it runs (the queue's
/// events, their flattened copy, the copy in the analyzer's memory, which keeps that size),
/// and smaller calls cost next to nothing more.
const ANALYSIS_SHARE: u64 = 32;

/// The shortest time between two collections a kernel event source asked for promptly: the
/// most an event waits in its buffer once the plugin is idle (the analysis path's budget is
/// 2 s from the exec to the sink).
const PROMPT_GAP: Duration = Duration::from_millis(250);

/// What one call of a plugin returned.
enum Output {
    Events(Vec<crate::wit::edgeguard::collector::types::Event>),
    Findings(Vec<crate::wit::analyzer::edgeguard::collector::analysis::Finding>),
}

impl Output {
    fn len(&self) -> usize {
        match self {
            Output::Events(e) => e.len(),
            Output::Findings(f) => f.len(),
        }
    }
}

/// Renewals of one plugin's instance for its memory, at most one per this.
const RENEWAL_GAP: Duration = Duration::from_secs(30);

/// Faults in `restore-state` in a row after which the saved state is given up.
const RESTORE_FAULTS_TOLERATED: u32 = 2;

/// Why a collection is made.
enum Wake {
    Tick,
    Nudged(mpsc::UnboundedSender<CollectReport>),
}

impl Actor {
    fn name(&self) -> &Arc<str> {
        &self.spec.loaded.name
    }

    /// The interval in force: the plugin's own, else its group's.
    fn interval(&self) -> Duration {
        let group = Group::ALL
            .iter()
            .position(|g| *g == self.spec.group)
            .expect("a group");
        self.spec.interval.unwrap_or(self.intervals.borrow()[group])
    }

    async fn run(mut self, jitter: Duration, once: bool) {
        let mut saved = self.read_saved_state();
        let start = tokio::time::Instant::now() + jitter;
        let mut interval = self.interval();
        let mut ticker = ticker_at(start, interval);
        let mut last_tick: Option<tokio::time::Instant> = None;
        let mut instance: Option<PluginInstance> = None;
        let mut restart_at = Instant::now();
        let mut renewed_at: Option<Instant> = None;
        let (mut steered, mut nudgeable, mut orderable) = (true, true, true);
        // A kernel event source asks for a collection before its time: soon when events wait
        // (at most one such collection per PROMPT_GAP, so a burst is one collection and what
        // the kernel reports reaches the analyzers within it), at once when the buffer is
        // half full.
        let waker = self.host.waker(self.name());
        let mut prompt_at: Option<tokio::time::Instant> = None;
        let mut collected_at: Option<tokio::time::Instant> = None;
        // An analyzer runs as the events it wants come, and (with `once`) ends once every
        // collector has and nothing is left for it.
        let (arrivals, mut collectors) = match &self.role {
            ActorRole::Analyzer {
                subscription,
                collectors,
                ..
            } => (Some(subscription.waker()), Some(collectors.clone())),
            ActorRole::Collector(_) => (None, None),
        };
        loop {
            let wake = tokio::select! {
                // Changes of schedule and orders first: a tick due under the old interval must
                // not run after the new one is in force, nor a collection before a swap.
                biased;
                changed = self.intervals.changed(), if steered => {
                    if changed.is_err() {
                        steered = false;
                    }
                    self.intervals.borrow_and_update();
                    self.reschedule(&mut interval, &mut ticker, last_tick, start);
                    continue;
                }
                order = self.orders.recv(), if orderable => {
                    match order {
                        Some(Order::Stop) => return,
                        // Nobody steers it any more (`run --once` drops the handles): it runs on.
                        None => orderable = false,
                        Some(Order::Swap(spec, reply)) => {
                            let outcome = self.swap(spec, &mut instance, &mut saved).await;
                            if outcome.is_ok() {
                                restart_at = Instant::now();
                            }
                            let _ = reply.send(outcome);
                        }
                        Some(Order::Adjust { group, interval, enabled }) => {
                            self.spec.group = group;
                            self.spec.interval = interval;
                            self.enabled = enabled;
                        }
                    }
                    self.reschedule(&mut interval, &mut ticker, last_tick, start);
                    continue;
                }
                nudge = self.nudges.recv(), if nudgeable => match nudge {
                    Ok(n) if n.group == self.spec.group && !self.enabled => {
                        let _ = n.reply.send(CollectReport { plugin: Arc::clone(self.name()), events: 0, outcome: "skipped: disabled".into() });
                        continue;
                    }
                    Ok(n) if n.group == self.spec.group => Wake::Nudged(n.reply),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        nudgeable = false;
                        continue;
                    }
                },
                at = ticker.tick() => {
                    last_tick = Some(at);
                    if !self.enabled {
                        continue;
                    }
                    Wake::Tick
                }
                () = waker.pressure.notified(), if self.enabled => {
                    tracing::debug!(plugin = %self.name(), "event buffer half full: collecting early");
                    Wake::Tick
                }
                () = waker.prompt.notified(), if self.enabled && prompt_at.is_none() => {
                    let now = tokio::time::Instant::now();
                    prompt_at = Some(collected_at.map_or(now, |t| (t + PROMPT_GAP).max(now)));
                    continue;
                }
                () = tokio::time::sleep_until(prompt_at.unwrap_or_else(tokio::time::Instant::now)), if prompt_at.is_some() => {
                    prompt_at = None;
                    // Disabled since it was asked for: it stays idle.
                    if !self.enabled {
                        continue;
                    }
                    Wake::Tick
                }
                () = notified(arrivals.as_deref()), if self.enabled => Wake::Tick,
                _ = changed(collectors.as_mut()), if once => Wake::Tick,
            };
            let (events, outcome) = self
                .collect(&mut instance, &mut restart_at, &mut saved)
                .await;
            prompt_at = None;
            // Renewed only when it handed out all it had: what it holds back is not in its state.
            if outcome == "collected" && events < self.spec.limits.max_events_per_call as usize {
                self.renew_if_outgrown(&mut instance, &mut saved, &mut renewed_at)
                    .await;
            } else if outcome == "collected" && matches!(self.role, ActorRole::Collector(_)) {
                // A full collection: more waits, the next one a prompt gap later (a kernel
                // event buffer half full asks for it sooner; a plugin cannot).
                prompt_at = Some(tokio::time::Instant::now() + PROMPT_GAP);
            }
            collected_at = Some(tokio::time::Instant::now());
            if let Wake::Nudged(reply) = wake {
                let _ = reply.send(CollectReport {
                    plugin: Arc::clone(self.name()),
                    events,
                    outcome,
                });
            }
            // A faulted analyzer with `once` does not wait for a restart that would come
            // after everything else has ended.
            if once && (instance.is_none() || self.done()) {
                return;
            }
        }
    }

    /// With `once`: a collector is done after its collection, an analyzer when no collector
    /// runs and nothing is left in its queue.
    fn done(&self) -> bool {
        match &self.role {
            ActorRole::Collector(_) => true,
            ActorRole::Analyzer {
                subscription,
                collectors,
                ..
            } => *collectors.borrow() == 0 && subscription.queued() == 0,
        }
    }

    /// Follows a change of the interval in force: the next collection keeps its place relative
    /// to the last one, or the first is still due at `start`.
    fn reschedule(
        &self,
        interval: &mut Duration,
        ticker: &mut tokio::time::Interval,
        last_tick: Option<tokio::time::Instant>,
        start: tokio::time::Instant,
    ) {
        let new = self.interval();
        if new != *interval {
            tracing::info!(plugin = %self.name(), interval = ?new, "collection interval changed");
            *interval = new;
            *ticker = ticker_at(last_tick.map_or(start, |t| t + new), new);
        }
    }

    /// Replaces the plugin by `spec`'s between two collections. The new instance starts and
    /// takes over the old one's state before anything changes, so a failure leaves the old
    /// version running as it was.
    async fn swap(
        &mut self,
        spec: PluginSpec,
        instance: &mut Option<PluginInstance>,
        saved: &mut Option<Vec<u8>>,
    ) -> Result<Swapped, String> {
        let started = Instant::now();
        let wants = match (&self.role, &spec.loaded.role) {
            (ActorRole::Collector(_), Role::Collector) => None,
            (ActorRole::Analyzer { .. }, Role::Analyzer { wants }) => Some(wants.clone()),
            _ => {
                return Err(
                    "the new version is not the same kind of plugin (a collector and an analyzer); remove the plugin and add it anew"
                        .into(),
                );
            }
        };
        let mut fresh = spec
            .loaded
            .instantiate(Arc::clone(&self.host), &spec.limits, &spec.config_json)
            .await
            .map_err(|fault| format!("the new version {fault} while starting"))?;
        // The old instance's latest state; without one (not started, or faulted) the last kept.
        let state = match instance.as_mut() {
            Some(old) => match old.save_state().await {
                Ok(state) => self.within_limit(state).await,
                Err(fault) => {
                    tracing::warn!(plugin = %self.name(), "the old version {fault} while saving its state; handing over the last state kept");
                    saved.clone()
                }
            },
            None => saved.clone(),
        };
        let mut handover = Handover::None;
        if let Some(state) = &state {
            handover = match fresh.restore_state(state).await {
                Ok(Ok(())) => Handover::Handed(state.len()),
                Ok(Err(error)) => {
                    Handover::Refused(crate::sandbox::instance::describe_error(&error))
                }
                Err(fault) => {
                    return Err(format!(
                        "the new version {fault} while taking over the old one's state"
                    ));
                }
            };
        }
        *saved = if matches!(handover, Handover::Refused(_)) {
            None
        } else {
            state
        };
        if let (Some(wants), ActorRole::Analyzer { subscription, .. }) = (wants, &self.role) {
            subscription.set_wants(&wants);
        }
        {
            let mut status = self.status.lock().unwrap();
            status.consecutive_faults = 0;
            status.rules = fresh.rules().to_vec();
        }
        *instance = Some(fresh);
        self.spec = spec;
        Ok(Swapped {
            took: started.elapsed(),
            state: handover,
        })
    }

    /// Wasm memory only grows: an instance that a burst grew far past what it settled at
    /// keeps that memory for good. Between two collections (at most one renewal per
    /// [`RENEWAL_GAP`]) it is replaced by a fresh instance of the same plugin that takes its
    /// state, as a planned swap does; on failure the old one runs on.
    async fn renew_if_outgrown(
        &mut self,
        instance: &mut Option<PluginInstance>,
        saved: &mut Option<Vec<u8>>,
        renewed_at: &mut Option<Instant>,
    ) {
        let Some(live) = instance.as_mut() else {
            return;
        };
        let outgrown = live.outgrown();
        {
            let mut status = self.status.lock().unwrap();
            let now = live.memory_used();
            if now > status.memory {
                tracing::debug!(plugin = %self.name(), "memory grew to {} KiB", now >> 10);
            }
            status.memory = now;
            status.memory_settled = live.memory_settled().unwrap_or(0);
            status.memory_peak = status.memory_peak.max(live.memory_peak());
        }
        let Some((settled, grown)) = outgrown else {
            return;
        };
        if renewed_at.is_some_and(|at| at.elapsed() < RENEWAL_GAP) {
            return;
        }
        *renewed_at = Some(Instant::now());
        match self.swap(self.spec.clone(), instance, saved).await {
            Ok(swapped) => {
                let now = instance.as_ref().map_or(0, PluginInstance::memory_used);
                tracing::info!(
                    plugin = %self.name(),
                    "memory renewed: {} KiB grown from {} KiB settled, {} KiB in a fresh instance (state {:?}, {:.1} ms)",
                    grown >> 10,
                    settled >> 10,
                    now >> 10,
                    swapped.state,
                    swapped.took.as_secs_f64() * 1e3
                );
                let mut status = self.status.lock().unwrap();
                status.memory_renewals += 1;
                status.memory = now;
            }
            Err(why) => {
                tracing::warn!(plugin = %self.name(), "could not renew the plugin's memory ({} KiB grown from {} KiB): {why}", grown >> 10, settled >> 10);
            }
        }
    }

    /// One collection, instantiating first when needed: the events delivered and the outcome.
    async fn collect(
        &self,
        instance: &mut Option<PluginInstance>,
        restart_at: &mut Instant,
        saved: &mut Option<Vec<u8>>,
    ) -> (usize, String) {
        let emits = &self.spec.loaded.info.events;
        if self.routing.borrow().silences(emits) && !emits.iter().any(|e| self.tap.wants(e)) {
            self.status.lock().unwrap().skipped_all_off += 1;
            return (
                0,
                "skipped: every event it emits is Off, and no analyzer wants them".into(),
            );
        }
        if instance.is_none() {
            if Instant::now() < *restart_at {
                self.status.lock().unwrap().skipped_while_backing_off += 1;
                return (0, "skipped: restarting after a fault".into());
            }
            let fresh = match self
                .spec
                .loaded
                .instantiate(
                    Arc::clone(&self.host),
                    &self.spec.limits,
                    &self.spec.config_json,
                )
                .await
            {
                Ok(mut fresh) => self.restore(&mut fresh, saved).await.map(|()| fresh),
                Err(fault) => Err(fault),
            };
            match fresh {
                Ok(fresh) => {
                    self.status.lock().unwrap().rules = fresh.rules().to_vec();
                    *instance = Some(fresh);
                }
                Err(fault) => {
                    *restart_at = self.record_fault(&fault, "instantiating").await;
                    return (0, format!("fault: {fault}"));
                }
            }
        }
        let Some(live) = instance.as_mut() else {
            return (0, "no instance".into());
        };
        let outcome = match &self.role {
            ActorRole::Collector(_) => {
                let _permit = self.permit().await;
                live.collect().await.map(|r| r.map(Output::Events))
            }
            ActorRole::Analyzer {
                subscription,
                handed,
                ..
            } => self.analyze(live, subscription, handed).await,
        };
        let dropped = live.take_logs_dropped();
        {
            let mut status = self.status.lock().unwrap();
            status.host_work.add(live.take_host_work());
            status.logs_dropped += dropped;
        }
        if dropped > 0 {
            tracing::warn!(
                plugin = %self.name(),
                "{dropped} log lines of the plugin dropped (at most {} per call)",
                crate::runtime::limits::LOG_LINES_PER_CALL
            );
        }
        match outcome {
            Ok(Ok(output)) => {
                let count = output.len();
                let accepted = self.deliver(output).await;
                if let Err(fault) = self.persist(live, accepted, saved).await {
                    *instance = None;
                    *restart_at = self.record_fault(&fault, "saving its state").await;
                }
                (count, "collected".into())
            }
            Ok(Err(error)) => {
                let message = format!(
                    "plugin `{}` could not collect: {}",
                    self.name(),
                    crate::sandbox::instance::describe_error(&error)
                );
                tracing::warn!("{message}");
                {
                    let mut status = self.status.lock().unwrap();
                    status.errors += 1;
                    status.last_run = Some(chrono::Utc::now());
                }
                self.diagnose(Severity::Warning, &message, &[]).await;
                (
                    0,
                    format!(
                        "error: {}",
                        crate::sandbox::instance::describe_error(&error)
                    ),
                )
            }
            Err(fault) => {
                *instance = None;
                *restart_at = self.record_fault(&fault, "collecting").await;
                (0, format!("fault: {fault}"))
            }
        }
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// One call of an analyzer: what its queue holds, up to its limits (a tick when nothing).
    async fn analyze(
        &self,
        live: &mut PluginInstance,
        subscription: &Subscription,
        handed: &Mutex<Handed>,
    ) -> Result<Result<Output, crate::wit::edgeguard::collector::types::CollectError>, Fault> {
        let limits = &self.spec.limits;
        // What the call hands over is copied into the analyzer's memory: a share of it.
        let budget = usize::try_from(limits.memory.0 / ANALYSIS_SHARE)
            .unwrap_or(usize::MAX)
            .max(64 << 10);
        let taken = subscription.take(limits.max_events_per_call as usize, budget);
        let observed: Vec<_> = taken
            .events
            .iter()
            .map(|t| events::observed(&t.event, &t.origin))
            .collect();
        {
            let mut handed = handed.lock().unwrap();
            for t in &taken.events {
                handed.note(t.event.id);
            }
        }
        if taken.lost > 0 {
            let message = format!(
                "analyzer `{}`: {} events it wants were lost before it could have them (its queue was full: at most {} events or {} bytes)",
                self.name(),
                taken.lost,
                crate::pipeline::tap::QUEUE_EVENTS,
                crate::pipeline::tap::QUEUE_BYTES
            );
            tracing::warn!("{message}");
            self.status.lock().unwrap().analysis_lost += taken.lost;
            let details = [("LostEvents", taken.lost.to_string())];
            self.diagnose(Severity::Warning, &message, &details).await;
        }
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let outcome = {
            let _permit = self.permit().await;
            live.analyze(&observed, now_ms).await
        };
        let mut status = self.status.lock().unwrap();
        status.analysed += observed.len() as u64;
        if outcome.is_err() {
            status.analysis_lost += observed.len() as u64;
        }
        Ok(outcome?.map(Output::Findings))
    }

    /// A diagnostic for the kernel events lost for this plugin since the last one said so.
    fn kernel_losses(&self) -> Option<SecurityEvent> {
        let lost: u64 = self.host.feeds(self.name()).iter().map(|f| f.lost).sum();
        let new = {
            let mut status = self.status.lock().unwrap();
            let new = lost.saturating_sub(status.kernel_events_lost);
            status.kernel_events_lost = lost;
            new
        };
        if new == 0 {
            return None;
        }
        let message = format!(
            "plugin `{}`: {new} kernel events lost before it could have them (its event buffer was full, or the kernel's); it catches up from a snapshot",
            self.name()
        );
        tracing::warn!("{message}");
        Some(self.diagnostic(
            Severity::Warning,
            &message,
            &[("LostEvents", new.to_string())],
        ))
    }

    /// Hands a fresh instance the state its predecessor saved (in this run or the last). A
    /// plugin that refuses it starts afresh, with a warning.
    async fn restore(
        &self,
        instance: &mut PluginInstance,
        saved: &mut Option<Vec<u8>>,
    ) -> Result<(), Fault> {
        let Some(state) = saved.as_ref() else {
            return Ok(());
        };
        let restored = match instance.restore_state(state).await {
            Ok(restored) => restored,
            Err(fault) => {
                let faults = self.restore_faults.fetch_add(1, Ordering::Relaxed) + 1;
                if faults >= RESTORE_FAULTS_TOLERATED {
                    self.discard_state(
                        saved,
                        &format!(
                            "plugin `{}` {fault} while taking its saved state, {faults} times in a row; the state is discarded and it starts afresh",
                            self.name()
                        ),
                    )
                    .await;
                    self.restore_faults.store(0, Ordering::Relaxed);
                }
                return Err(fault);
            }
        };
        self.restore_faults.store(0, Ordering::Relaxed);
        if let Err(error) = restored {
            let message = format!(
                "plugin `{}` refused its saved state ({}); it starts afresh",
                self.name(),
                crate::sandbox::instance::describe_error(&error)
            );
            tracing::warn!("{message}");
            self.diagnose(Severity::Warning, &message, &[]).await;
            *saved = None;
        }
        Ok(())
    }

    /// The state kept on disk, unless it is larger than the plugin may have.
    fn read_saved_state(&self) -> Option<Vec<u8>> {
        let file = self.spec.state_file.as_ref()?;
        let size = std::fs::metadata(file).ok()?.len();
        let limit = self.spec.limits.max_state;
        if size > limit.0 {
            tracing::warn!(plugin = %self.name(), "the saved state in {} has {size} bytes, over the plugin's limit of {limit} (limits.max_state): not restored", file.display());
            return None;
        }
        std::fs::read(file).ok()
    }

    /// Forgets the saved state, in memory and on disk, saying why (an Error diagnostic).
    async fn discard_state(&self, saved: &mut Option<Vec<u8>>, message: &str) {
        tracing::error!(plugin = %self.name(), "{message}");
        *saved = None;
        if let Some(file) = &self.spec.state_file {
            let _ = std::fs::remove_file(file);
        }
        self.diagnose(Severity::Error, message, &[]).await;
    }

    /// `state` when it is within the plugin's limit; else None, said once until it is again.
    async fn within_limit(&self, state: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let state = state?;
        let limit = self.spec.limits.max_state;
        if state.len() as u64 <= limit.0 {
            self.state_over_limit.store(false, Ordering::Relaxed);
            return Some(state);
        }
        self.status.lock().unwrap().states_refused += 1;
        if !self.state_over_limit.swap(true, Ordering::Relaxed) {
            let message = format!(
                "plugin `{}` returned a state of {} bytes, over its limit of {limit} (limits.max_state): it is neither kept nor handed over",
                self.name(),
                state.len()
            );
            tracing::warn!("{message}");
            let details = [("StateBytes", state.len().to_string())];
            self.diagnose(Severity::Warning, &message, &details).await;
        }
        None
    }

    /// Counts `count` events refused at the door and says why: logged, and a Warning diagnostic
    /// naming this plugin, with `details` beside it.
    fn refused(&self, count: u64, message: &str, details: &[(&str, String)]) -> SecurityEvent {
        tracing::warn!("{message}");
        self.status.lock().unwrap().events_refused += count;
        self.diagnostic(Severity::Warning, message, details)
    }

    /// A Diagnostic naming this plugin, with `details` beside it.
    fn diagnostic(
        &self,
        severity: Severity,
        message: &str,
        details: &[(&str, String)],
    ) -> SecurityEvent {
        let mut all = vec![("Plugin", self.name().to_string())];
        all.extend(details.iter().cloned());
        SecurityEvent::diagnostic(severity, message, &all)
    }

    /// Sends `message` as a Diagnostic naming this plugin, with `details` beside it.
    async fn diagnose(&self, severity: Severity, message: &str, details: &[(&str, String)]) {
        self.send(vec![self.diagnostic(severity, message, details)])
            .await;
    }

    /// Keeps the plugin's state on disk once its last events are safe in the pipeline.
    async fn persist(
        &self,
        instance: &mut PluginInstance,
        accepted: bool,
        saved: &mut Option<Vec<u8>>,
    ) -> Result<(), Fault> {
        let Some(file) = &self.spec.state_file else {
            return Ok(());
        };
        let state = instance.save_state().await?;
        let Some(state) = self.within_limit(state).await else {
            return Ok(());
        };
        if !accepted || saved.as_ref() == Some(&state) {
            return Ok(());
        }
        match crate::files::write_atomic(file, &state) {
            Ok(()) => *saved = Some(state),
            Err(e) => {
                tracing::warn!(plugin = %self.name(), "cannot keep the plugin's state in {}: {e}", file.display());
            }
        }
        Ok(())
    }

    /// Converts and forwards one collection's events; malformed ones become diagnostics.
    /// True once the pipeline has them on disk.
    async fn deliver(&self, output: Output) -> bool {
        let mut out = Vec::with_capacity(output.len());
        let max_bytes = self.routing.borrow().max_event_bytes();
        let (mut too_large, mut largest) = (0u64, 0usize);
        let loaded = &self.spec.loaded;
        // Why events were refused, with how many each (a few reasons at most: one per kind).
        let mut refused: std::collections::BTreeMap<String, u64> = Default::default();
        let converted: Vec<Result<SecurityEvent, events::Rejected>> = match output {
            Output::Events(plugin_events) => plugin_events
                .into_iter()
                .filter_map(
                    |event| match authority::refusal(loaded, &self.spec.attests, &event) {
                        Some(why) => {
                            *refused.entry(why).or_default() += 1;
                            None
                        }
                        None => Some(events::from_plugin(event)),
                    },
                )
                .collect(),
            Output::Findings(findings) => findings
                .into_iter()
                .map(|finding| events::from_finding(self.vouched(finding)))
                .collect(),
        };
        for event in converted {
            match event {
                // Refused at the door: in a window or a queue it would hold memory and disk
                // for a message that can never be sent.
                Ok(mut e) => {
                    authority::mark(loaded, &mut e.payload);
                    match e.serialized_len() {
                        len if len > max_bytes => {
                            too_large += 1;
                            largest = largest.max(len);
                        }
                        _ => out.push(e),
                    }
                }
                Err(rejected) => {
                    let message = format!(
                        "plugin `{}` emitted an invalid event: {rejected}",
                        self.name()
                    );
                    tracing::warn!("{message}");
                    out.push(self.diagnostic(Severity::Warning, &message, &[]));
                }
            }
        }
        out.extend(self.kernel_losses());
        if !refused.is_empty() {
            let count: u64 = refused.values().sum();
            let mut reasons: Vec<String> = refused
                .iter()
                .take(8)
                .map(|(why, n)| format!("{why} ({n})"))
                .collect();
            if refused.len() > reasons.len() {
                reasons.push(format!("{} other reasons", refused.len() - reasons.len()));
            }
            let message = format!(
                "plugin `{}` emitted {count} events it may not, refused: {}",
                self.name(),
                reasons.join("; ")
            );
            out.push(self.refused(count, &message, &[("RefusedEvents", count.to_string())]));
        }
        if too_large > 0 {
            let message = format!(
                "plugin `{}` emitted {too_large} events larger than a message can carry (the largest {largest} bytes; at most {max_bytes} with maxMessageSizeInBytes): dropped",
                self.name()
            );
            let details = [
                ("DroppedEvents", too_large.to_string()),
                ("LargestEventBytes", largest.to_string()),
            ];
            out.push(self.refused(too_large, &message, &details));
        }
        {
            let mut status = self.status.lock().unwrap();
            status.collections += 1;
            status.events += out.len() as u64;
            status.consecutive_faults = 0;
            status.last_run = Some(chrono::Utc::now());
        }
        // Waiting for the pipeline matters only when there is state to persist after it, or
        // (with `once`) analyzers to hand the events to before this collector counts as done.
        let (accepted, on_disk) = match self.spec.state_file.is_some() || self.once {
            true => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        // The receiver only goes away at shutdown; nothing to do then.
        let batch = Batch {
            plugin: Arc::clone(self.name()),
            origin: self.spec.loaded.origin(),
            at: Instant::now(),
            events: out,
            accepted,
        };
        if self.tx.send(batch).await.is_err() {
            return false;
        }
        match on_disk {
            Some(rx) => rx.await.is_ok(),
            None => true,
        }
    }

    /// A finding whose evidence is only what this analyzer was handed; what else it cites is
    /// left out and counted in its ExtraDetails (`UnvouchedEvidence`).
    fn vouched(
        &self,
        mut finding: crate::wit::analyzer::edgeguard::collector::analysis::Finding,
    ) -> crate::wit::analyzer::edgeguard::collector::analysis::Finding {
        let ActorRole::Analyzer { handed, .. } = &self.role else {
            return finding;
        };
        let handed = handed.lock().unwrap();
        let cited = finding.evidence.len();
        finding.evidence.retain(|id| handed.vouches(id));
        let unvouched = cited - finding.evidence.len();
        if unvouched > 0 {
            finding
                .extra
                .push(("UnvouchedEvidence".into(), unvouched.to_string()));
        }
        finding
    }

    async fn send(&self, events: Vec<SecurityEvent>) {
        // The receiver only goes away at shutdown; nothing to do then.
        let _ = self
            .tx
            .send(Batch {
                plugin: Arc::clone(self.name()),
                origin: Origin::host(),
                at: Instant::now(),
                events,
                accepted: None,
            })
            .await;
    }

    /// Logs and reports a fault; returns when the plugin may be re-instantiated.
    async fn record_fault(&self, fault: &Fault, during: &str) -> Instant {
        let limits = &self.spec.limits;
        let consecutive = {
            let mut status = self.status.lock().unwrap();
            status.faults += 1;
            status.consecutive_faults += 1;
            status.last_fault = Some(fault.to_string());
            status.last_run = Some(chrono::Utc::now());
            status.consecutive_faults
        };
        let backoff =
            crate::units::Backoff::new(limits.restart_backoff.0, limits.restart_backoff_max.0)
                .after(consecutive);
        let message = format!(
            "plugin `{}` {fault} while {during}; restarting it in {:.1}s (consecutive faults: {consecutive})",
            self.name(),
            backoff.as_secs_f64()
        );
        tracing::error!(plugin = %self.name(), fault = fault.kind(), "{message}");
        let details = [
            ("Fault", fault.kind().to_string()),
            ("ConsecutiveFaults", consecutive.to_string()),
            ("RestartInMs", backoff.as_millis().to_string()),
        ];
        self.diagnose(Severity::Error, &message, &details).await;
        Instant::now() + backoff
    }
}

/// Waits for `notify`; for ever without one.
async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Waits for a change of `count`; for ever without one, or once its sender is gone.
async fn changed(count: Option<&mut watch::Receiver<usize>>) {
    if let Some(count) = count
        && count.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// A collection clock. One that overruns its interval makes the next tick late, not doubled.
fn ticker_at(start: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}
