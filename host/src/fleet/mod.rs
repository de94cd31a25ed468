//! The running collector set and its changes while running. Given a wanted set (local file
//! overlaid by the twin), the fleet diffs it with what runs; fetches, verifies and compiles
//! the new versions in the background while the old ones keep collecting; then has each actor
//! swap between two collections, handing over the plugin's state. Any failure leaves the
//! running version in place and is kept for the reported properties.

pub mod config;
pub mod source;
pub mod spec;
pub mod trust;

use crate::events::{SecurityEvent, Severity};
use crate::pipeline::tap::Reservation;
use crate::runtime::{CacheOutcome, Runtime};
use crate::sandbox::LoadedPlugin;
use crate::scheduler::Group;
use crate::scheduler::{Handover, Order, PluginSpec, PluginStatus, Running, Scheduler, Swapped};
use crate::units::Backoff;
use config::RemoteConfig;
use futures_util::future::join_all;
use source::{Fetcher, Source};
use spec::CollectorSpec;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use trust::Trust;

/// What the fleet is asked to run, and the local trust settings to get it with.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// The collectors, by name.
    pub collectors: Vec<CollectorSpec>,
    /// The local trust settings.
    pub remote: RemoteConfig,
}

/// Why a wanted version is not running.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When it failed.
    pub at: chrono::DateTime<chrono::Utc>,
    /// `fetch`, `verify`, `load` or `start`.
    pub step: &'static str,
    /// Why.
    pub message: String,
    /// The digest (or else the source) that was wanted.
    pub wanted: String,
}

/// The last successful swap.
#[derive(Clone, Debug)]
pub struct SwapRecord {
    /// When it happened.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The digest swapped out.
    pub from: String,
    /// The digest swapped in.
    pub to: String,
    /// From the wanted set's arrival to the new version in place (fetch and compile included).
    pub total: Duration,
    /// The actor's part: start the new instance, hand over the state, switch.
    pub switch: Duration,
    /// Whether the new version was compiled or taken from the cache.
    pub cache: CacheOutcome,
    /// What became of the old version's state.
    pub state: Handover,
}

/// One collector as reports show it.
#[derive(Clone)]
pub struct CollectorView {
    /// The collector's name.
    pub name: String,
    /// What runs (None: nothing could be started).
    pub spec: Option<CollectorSpec>,
    /// The plugin as loaded, if it could be.
    pub loaded: Option<Arc<LoadedPlugin>>,
    /// Its priority group.
    pub group: Group,
    /// Its live counters.
    pub status: Arc<Mutex<PluginStatus>>,
    /// Why the wanted version is not running, if it is not.
    pub last_error: Option<Failure>,
    /// The last successful swap.
    pub last_swap: Option<SwapRecord>,
    host: Arc<crate::capabilities::HostContext>,
}

impl CollectorView {
    /// Where its data comes from now: kernel event sources followed, or polling and why.
    pub fn feeds(&self) -> Vec<crate::capabilities::FeedStatus> {
        self.host.feeds(&self.name)
    }

    /// `running`, `disabled`, `faulted` or `failed`.
    pub fn state(&self) -> &'static str {
        match (&self.spec, self.status.lock().unwrap().consecutive_faults) {
            (None, _) => "failed",
            (Some(s), _) if !s.enabled => "disabled",
            (Some(_), 0) => "running",
            (Some(_), _) => "faulted",
        }
    }
}

/// The fleet as others see it: the current views and a counter that moves on every change.
#[derive(Clone)]
pub struct FleetView {
    views: Arc<Mutex<Vec<CollectorView>>>,
    /// Moves on every change of the views.
    pub changes: watch::Receiver<u64>,
}

impl FleetView {
    /// Every collector as it is now.
    pub fn collectors(&self) -> Vec<CollectorView> {
        self.views.lock().unwrap().clone()
    }
}

struct Entry {
    spec: Option<CollectorSpec>,
    loaded: Option<Arc<LoadedPlugin>>,
    running: Option<Running>,
    status: Arc<Mutex<PluginStatus>>,
    last_error: Option<Failure>,
    last_swap: Option<SwapRecord>,
}

/// The running collector set: follows what is wanted, fetching, verifying, compiling and swapping collectors while the others run.
pub struct Fleet {
    runtime: Runtime,
    scheduler: Scheduler,
    /// Where each plugin's saved state is kept between runs.
    state_dir: PathBuf,
    /// https roots when `[remote] ca_file` is empty.
    default_ca_file: PathBuf,
    /// Collect once and end (`run --once`).
    once: bool,
    entries: BTreeMap<String, Entry>,
    views: Arc<Mutex<Vec<CollectorView>>>,
    changes: watch::Sender<u64>,
}

/// What a wanted collector needs.
enum Step {
    Nothing,
    /// Same instance: new schedule or enablement only.
    Adjust,
    /// Bytes to get, check and compile, then a new instance.
    Prepare,
}

/// A prepared new version, or why there is none.
type Prepared = Result<Arc<LoadedPlugin>, Failure>;

/// What was done with a prepared version the moment it was ready, before the others are.
enum Acted {
    /// Nothing yet (not ready, or nothing to start).
    Nothing,
    /// Started: a fresh collector, its handle and status.
    Started(Running, Arc<Mutex<PluginStatus>>),
    /// Handed to the running collector to swap in: how long to wait for its answer, and the
    /// answer (None: the collector's task had ended).
    Swapping(Duration, Option<oneshot::Receiver<Result<Swapped, String>>>),
}

/// Pace of new attempts at versions that failed, doubling up to the maximum.
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(3600);

/// How long a swap may wait for the actor: it finishes the collection under way, then makes
/// four calls of its own (instantiate, init, save and restore the state), each bounded by a
/// call deadline; beyond that the actor is stuck and the swap is reported as failed.
const SWAP_WAIT_CALLS: u32 = 6;
const SWAP_WAIT_SLACK: Duration = Duration::from_secs(10);

impl Fleet {
    /// A fleet running collectors on `scheduler`.
    pub fn new(
        runtime: Runtime,
        scheduler: Scheduler,
        state_dir: PathBuf,
        default_ca_file: PathBuf,
        once: bool,
    ) -> Fleet {
        Fleet {
            runtime,
            scheduler,
            state_dir,
            default_ca_file,
            once,
            entries: BTreeMap::new(),
            views: Arc::new(Mutex::new(Vec::new())),
            changes: watch::Sender::new(0),
        }
    }

    /// What others may see of the fleet.
    pub fn view(&self) -> FleetView {
        FleetView {
            views: Arc::clone(&self.views),
            changes: self.changes.subscribe(),
        }
    }

    /// How many collectors have a running instance.
    pub fn running(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.running.is_some())
            .count()
    }

    /// Follows the wanted set until its sender goes away, then stops every collector. Versions
    /// that could not be had (a server down, a file not there yet) are tried again, less and
    /// less often, until the set changes.
    pub async fn run(mut self, mut wanted: watch::Receiver<Arc<Wanted>>) {
        let mut current = Arc::clone(&wanted.borrow_and_update());
        let retries = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut failed_retries = 0;
        loop {
            let retry = retries.after(failed_retries + 1);
            let failing = self.entries.values().any(|e| e.last_error.is_some());
            tokio::select! {
                changed = wanted.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    current = Arc::clone(&wanted.borrow_and_update());
                    failed_retries = 0;
                }
                _ = tokio::time::sleep(retry), if failing => {
                    tracing::info!(after = ?retry, "trying the refused collector versions again");
                    failed_retries += 1;
                }
            }
            self.apply(&current).await;
        }
        for entry in self.entries.values_mut() {
            if let Some(r) = entry.running.take() {
                let _ = r.orders.send(Order::Stop).await;
                r.task.abort();
            }
        }
    }

    /// Brings the running set to `wanted`. Returns the failures of this round, by collector.
    pub async fn apply(&mut self, wanted: &Wanted) -> Vec<(String, Failure)> {
        let arrived = Instant::now();
        let names: HashSet<&str> = wanted.collectors.iter().map(|c| c.name.as_str()).collect();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let entry = self.entries.remove(&name).expect("listed");
            if let Some(r) = entry.running {
                tracing::info!(collector = %name, "collector removed");
                // The actor ends after the collection under way; its events are delivered.
                let _ = r.orders.send(Order::Stop).await;
            }
        }

        // Fetch, verify and compile every new version at once, off the actors' way.
        let fetcher = Fetcher::new(
            wanted.remote.max_plugin_size.0,
            wanted.remote.fetch_timeout.0,
            if wanted.remote.ca_file.as_os_str().is_empty() {
                self.default_ca_file.clone()
            } else {
                wanted.remote.ca_file.clone()
            },
        );
        let trust = Trust {
            remote: &wanted.remote,
        };
        let steps: Vec<(&CollectorSpec, Step)> = wanted
            .collectors
            .iter()
            .map(|spec| (spec, self.step(spec)))
            .collect();
        // A plugin new to the fleet may be an analyzer: what the others report while it
        // loads is kept for it (every plugin's queue is reserved before any starts).
        let tap = self.scheduler.tap();
        let reservations: Vec<Option<Reservation>> = steps
            .iter()
            .map(|(spec, step)| {
                let new = self
                    .entries
                    .get(&spec.name)
                    .is_none_or(|e| e.running.is_none());
                (matches!(step, Step::Prepare) && new)
                    .then(|| tap.reserve(&spec.name.as_str().into()))
            })
            .collect();
        // Each version is started, or handed to its collector, as soon as it is ready: a
        // slow fetch or compile delays only its own collector.
        let prepared: Vec<Option<(Prepared, Acted)>> = join_all(
            steps
                .iter()
                .zip(reservations)
                .map(|((spec, step), reserved)| async {
                    match step {
                        Step::Prepare => {
                            let prepared = self.prepare(spec, &fetcher, &trust).await;
                            let acted = match &prepared {
                                Ok(loaded) => self.act(spec, loaded).await,
                                Err(_) => Acted::Nothing,
                            };
                            // Started as an analyzer, it holds its queue now; else it goes.
                            drop(reserved);
                            Some((prepared, acted))
                        }
                        _ => None,
                    }
                }),
        )
        .await;

        let mut failures = Vec::new();
        let mut swaps = Vec::new();
        for ((spec, step), prepared) in steps.into_iter().zip(prepared) {
            match (step, prepared) {
                // What runs is what is wanted: an earlier refusal no longer stands.
                (Step::Nothing, _) => {
                    if let Some(entry) = self.entries.get_mut(&spec.name) {
                        entry.last_error = None;
                    }
                }
                (Step::Adjust, _) | (Step::Prepare, Some((Ok(_), Acted::Nothing))) => {
                    self.adjust(spec).await;
                }
                (Step::Prepare, Some((Ok(loaded), Acted::Started(running, status)))) => {
                    self.started(spec, loaded, running, status);
                }
                (Step::Prepare, Some((Ok(loaded), Acted::Swapping(wait, answer)))) => {
                    swaps.push((spec, loaded, wait, answer));
                }
                (Step::Prepare, Some((Err(failure), _))) => {
                    failures.push((spec.name.clone(), failure));
                }
                (Step::Prepare, None) => unreachable!("prepared above"),
            }
        }
        let answers = join_all(swaps.iter_mut().map(|(_, _, wait, answer)| {
            let (wait, answer) = (*wait, answer.take());
            async move {
                match answer {
                    None => Err("the collector's task has ended".to_owned()),
                    Some(rx) => match tokio::time::timeout(wait, rx).await {
                        Ok(Ok(outcome)) => outcome,
                        Ok(Err(_)) => Err("the collector's task ended during the swap".to_owned()),
                        Err(_) => Err(format!(
                            "the collector did not take the new version within {wait:?}"
                        )),
                    },
                }
            }
        }))
        .await;
        for ((spec, loaded, _, _), answer) in swaps.into_iter().zip(answers) {
            match answer {
                Ok(swapped) => self.swapped(spec, loaded, swapped, arrived).await,
                Err(message) => failures.push((
                    spec.name.clone(),
                    failure("start", message, spec, Some(&loaded.sha256)),
                )),
            }
        }

        for (name, failure) in &failures {
            self.failed(name, wanted, failure.clone()).await;
        }
        self.publish();
        self.collect_garbage(wanted.remote.keep_unused).await;
        failures
    }

    fn step(&self, spec: &CollectorSpec) -> Step {
        let Some(running) = self.entries.get(&spec.name).and_then(|e| e.spec.as_ref()) else {
            return Step::Prepare;
        };
        // An unpinned file may have been replaced on disk: look again (the digest tells).
        let unpinned_file = matches!(spec.source, Source::File(_)) && spec.sha256.is_none();
        if !running.same_instance(spec) || unpinned_file {
            Step::Prepare
        } else if running != spec {
            Step::Adjust
        } else {
            Step::Nothing
        }
    }

    /// The same bytes and instance settings as the running version: nothing to swap.
    fn is_running_version(&self, spec: &CollectorSpec, loaded: &LoadedPlugin) -> bool {
        let Some(entry) = self.entries.get(&spec.name) else {
            return false;
        };
        match (&entry.spec, &entry.loaded) {
            (Some(running), Some(current)) => {
                current.sha256 == loaded.sha256 && running.same_instance(spec)
            }
            _ => false,
        }
    }

    /// Gets the bytes, checks them, compiles and checks the component.
    async fn prepare(
        &self,
        spec: &CollectorSpec,
        fetcher: &Fetcher,
        trust: &Trust<'_>,
    ) -> Prepared {
        let pinned = spec.sha256.as_deref();
        let kept = match (&spec.source, pinned) {
            (Source::Url(_), Some(digest)) => self.runtime.cache.component(digest),
            _ => None,
        };
        let from_store = kept.is_some();
        let bytes = match kept {
            Some(bytes) => bytes,
            None => fetcher
                .get(&spec.source)
                .await
                .map_err(|e| failure("fetch", e.to_string(), spec, pinned))?,
        };
        let digest = crate::runtime::artifact_cache::sha256_hex(&bytes);
        trust
            .check(
                &digest,
                pinned,
                spec.signature.as_ref(),
                spec.source.is_url(),
                &bytes,
            )
            .map_err(|e| failure("verify", e.to_string(), spec, Some(&digest)))?;
        if spec.source.is_url() && !from_store {
            self.runtime.cache.keep_component(&digest, &bytes);
        }
        if let Some(current) = self.entries.get(&spec.name).and_then(|e| e.loaded.as_ref())
            && current.sha256 == digest
            && self.entries[&spec.name]
                .spec
                .as_ref()
                .is_some_and(|s| s.same_instance(spec))
        {
            return Ok(Arc::clone(current));
        }
        let loaded = LoadedPlugin::load(&self.runtime, &spec.name, bytes, &spec.grants, &spec.dirs)
            .await
            .map_err(|e| failure("load", e.to_string(), spec, Some(&digest)))?;
        Ok(Arc::new(loaded))
    }

    fn plugin_spec(&self, spec: &CollectorSpec, loaded: &Arc<LoadedPlugin>) -> PluginSpec {
        PluginSpec {
            loaded: Arc::clone(loaded),
            group: PluginSpec::group_for(loaded, spec.group),
            interval: spec.interval,
            limits: spec.limits.clone(),
            config_json: spec.config.to_string(),
            attests: spec.attests.clone(),
            state_file: Some(
                self.state_dir
                    .join("plugins")
                    .join(format!("{}.state", spec.name)),
            ),
        }
    }

    /// What to do with a version the moment it is ready: nothing when it is what runs (an
    /// adjustment at most, made after), else start it, or hand it to its collector to swap in.
    async fn act(&self, spec: &CollectorSpec, loaded: &Arc<LoadedPlugin>) -> Acted {
        if self.is_running_version(spec, loaded) {
            return Acted::Nothing;
        }
        let running = self
            .entries
            .get(&spec.name)
            .and_then(|e| Some((e.running.as_ref()?, e.spec.as_ref()?)));
        match running {
            Some((running, old)) => {
                let (reply, answer) = oneshot::channel();
                let order = Order::Swap(self.plugin_spec(spec, loaded), reply);
                let sent = running.orders.send(order).await.is_ok();
                let wait = old.limits.call_timeout.0.max(spec.limits.call_timeout.0)
                    * SWAP_WAIT_CALLS
                    + SWAP_WAIT_SLACK;
                Acted::Swapping(wait, sent.then_some(answer))
            }
            None => {
                let status = self
                    .entries
                    .get(&spec.name)
                    .map(|e| Arc::clone(&e.status))
                    .unwrap_or_default();
                let running = self.scheduler.spawn_with(
                    self.plugin_spec(spec, loaded),
                    self.once,
                    spec.enabled,
                    Arc::clone(&status),
                );
                tracing::info!(
                    collector = %spec.name,
                    version = %loaded.info.version,
                    sha256 = %short(&loaded.sha256),
                    group = PluginSpec::group_for(loaded, spec.group).name(),
                    cache = ?loaded.cache,
                    enabled = spec.enabled,
                    "collector started"
                );
                Acted::Started(running, status)
            }
        }
    }

    /// Records a collector [`Fleet::act`] started.
    fn started(
        &mut self,
        spec: &CollectorSpec,
        loaded: Arc<LoadedPlugin>,
        running: Running,
        status: Arc<Mutex<PluginStatus>>,
    ) {
        let entry = self
            .entries
            .entry(spec.name.clone())
            .or_insert_with(|| Entry {
                spec: None,
                loaded: None,
                running: None,
                status,
                last_error: None,
                last_swap: None,
            });
        entry.spec = Some(spec.clone());
        entry.loaded = Some(loaded);
        entry.running = Some(running);
        entry.last_error = None;
    }

    async fn adjust(&mut self, spec: &CollectorSpec) {
        let Some(entry) = self.entries.get_mut(&spec.name) else {
            return;
        };
        let (Some(running), Some(loaded)) = (&entry.running, &entry.loaded) else {
            return;
        };
        let group = PluginSpec::group_for(loaded, spec.group);
        let _ = running
            .orders
            .send(Order::Adjust {
                group,
                interval: spec.interval,
                enabled: spec.enabled,
            })
            .await;
        if entry
            .spec
            .as_ref()
            .is_some_and(|s| s.enabled != spec.enabled)
        {
            tracing::info!(collector = %spec.name, "collector {}", if spec.enabled { "enabled" } else { "disabled (loaded, idle)" });
        }
        entry.spec = Some(spec.clone());
        entry.last_error = None;
    }

    async fn swapped(
        &mut self,
        spec: &CollectorSpec,
        loaded: Arc<LoadedPlugin>,
        swapped: crate::scheduler::Swapped,
        arrived: Instant,
    ) {
        let entry = self
            .entries
            .get_mut(&spec.name)
            .expect("a running collector");
        let from = entry
            .loaded
            .as_ref()
            .map(|l| l.sha256.clone())
            .unwrap_or_default();
        let record = SwapRecord {
            at: chrono::Utc::now(),
            from: from.clone(),
            to: loaded.sha256.clone(),
            total: arrived.elapsed(),
            switch: swapped.took,
            cache: loaded.cache,
            state: swapped.state.clone(),
        };
        tracing::info!(
            collector = %spec.name,
            from = %short(&from),
            to = %short(&loaded.sha256),
            version = %loaded.info.version,
            switch_ms = record.switch.as_secs_f64() * 1e3,
            total_ms = record.total.as_secs_f64() * 1e3,
            cache = ?loaded.cache,
            state = ?swapped.state,
            "collector swapped"
        );
        if let Handover::Refused(why) = &swapped.state {
            let message = format!(
                "collector `{}`: the new version refused its predecessor's state ({why}) and started afresh",
                spec.name
            );
            self.scheduler
                .report(
                    &spec.name,
                    vec![SecurityEvent::diagnostic(
                        Severity::Warning,
                        &message,
                        &[("Plugin", spec.name.clone())],
                    )],
                )
                .await;
        }
        let enabled_changed = entry
            .spec
            .as_ref()
            .is_some_and(|s| s.enabled != spec.enabled);
        entry.spec = Some(spec.clone());
        entry.loaded = Some(loaded);
        entry.last_error = None;
        entry.last_swap = Some(record);
        if enabled_changed {
            self.adjust(spec).await;
        }
    }

    /// Keeps a failure for the reports and sends it as a diagnostic; what ran keeps running.
    async fn failed(&mut self, name: &str, wanted: &Wanted, failure: Failure) {
        let entry = self
            .entries
            .entry(name.to_owned())
            .or_insert_with(|| Entry {
                spec: None,
                loaded: None,
                running: None,
                status: Arc::default(),
                last_error: None,
                last_swap: None,
            });
        let keeps = match &entry.loaded {
            Some(l) if entry.running.is_some() => format!(
                "version {} ({}) keeps running",
                l.info.version,
                short(&l.sha256)
            ),
            _ => "it is not running".to_owned(),
        };
        let source = wanted
            .collectors
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.source.to_string())
            .unwrap_or_default();
        let what = if config::is_sha256(&failure.wanted) {
            format!("sha256 {} from {source}", short(&failure.wanted))
        } else {
            source
        };
        let message = format!(
            "collector `{name}`: {what} refused at {}: {}; {keeps}",
            failure.step, failure.message
        );
        tracing::error!(collector = %name, step = failure.step, "{message}");
        let details = [
            ("Plugin", name.to_owned()),
            ("Step", failure.step.to_owned()),
            ("Wanted", failure.wanted.clone()),
        ];
        self.scheduler
            .report(
                name,
                vec![SecurityEvent::diagnostic(
                    Severity::Error,
                    &message,
                    &details,
                )],
            )
            .await;
        entry.last_error = Some(failure);
    }

    fn publish(&self) {
        let views = self
            .entries
            .iter()
            .map(|(name, e)| CollectorView {
                name: name.clone(),
                spec: e.running.as_ref().and(e.spec.clone()),
                loaded: e.loaded.clone(),
                group: match (&e.loaded, &e.spec) {
                    (Some(l), Some(s)) => PluginSpec::group_for(l, s.group),
                    (_, s) => s.as_ref().and_then(|s| s.group).unwrap_or(Group::Medium),
                },
                status: Arc::clone(&e.status),
                last_error: e.last_error.clone(),
                last_swap: e.last_swap.clone(),
                host: self.scheduler.host(),
            })
            .collect();
        *self.views.lock().unwrap() = views;
        self.changes.send_modify(|n| *n += 1);
    }

    async fn collect_garbage(&self, keep_unused: usize) {
        let in_use: HashSet<String> = self
            .entries
            .values()
            .filter_map(|e| e.loaded.as_ref().map(|l| l.sha256.clone()))
            .collect();
        let cache = Arc::clone(&self.runtime.cache);
        let removed =
            tokio::task::spawn_blocking(move || cache.collect_garbage(&in_use, keep_unused))
                .await
                .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "unused compiled plugins removed from the cache");
        }
    }
}

fn failure(
    step: &'static str,
    message: String,
    spec: &CollectorSpec,
    digest: Option<&str>,
) -> Failure {
    Failure {
        at: chrono::Utc::now(),
        step,
        message,
        wanted: digest.map_or_else(|| spec.source.to_string(), str::to_owned),
    }
}

/// The first 12 hex digits of a digest, for logs.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}
