//! The module's side of the twin and direct methods: reads the twin on every connection, follows
//! desired patches, has the [`Controller`] apply them (pipeline settings, group intervals, the
//! collector set) without a restart, reports what is in force and how each collector does, and
//! answers `collectNow` and `status`.

use crate::config::{Config, Group, Limits};
use crate::control::wanted::{self, Wanted};
use crate::control::{Applied, Controller};
use crate::edge::hub::{HubLink, Inbound};
use crate::edge::twin::{self, Desired, Patched};
use crate::fleet::{CollectorView, FleetView};
use crate::pipeline::Command;
use crate::pipeline::asc_config::{ConfigIssue, OBJECT_NAME};
use crate::scheduler;
use crate::units::Span;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The methods this module answers.
pub const METHODS: [&str; 2] = ["collectNow", "status"];
/// How long `collectNow` waits for the group's collections (callers wait 30 s by default).
const COLLECT_NOW_WAIT: Duration = Duration::from_secs(20);
/// Wait before reading the twin again after a failed read.
const TWIN_RETRY: Duration = Duration::from_secs(10);
/// edgeHub's limit on a reported string.
const MAX_REPORTED_STRING: usize = 4096;

/// The outcome of the last desired configuration.
#[derive(Clone, Debug, Default)]
struct Outcome {
    desired_version: Option<u64>,
    refused: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
    at: Option<String>,
}

/// Everything the module's handlers share.
#[derive(Clone)]
struct Shared {
    link: HubLink,
    pipeline: mpsc::Sender<Command>,
    scheduler: scheduler::Control,
    fleet: FleetView,
    agent_id: Arc<str>,
}

/// The IoT Edge module at work: the twin, direct methods and the reported status.
pub struct EdgeModule {
    shared: Shared,
    controller: Controller,
    desired: Option<Desired>,
    outcome: Outcome,
    status_interval: Duration,
    reported: Option<Value>,
    reported_collectors: BTreeSet<String>,
}

impl EdgeModule {
    /// A module on `link`, applying what the twin wants through `controller`.
    pub fn new(
        link: HubLink,
        controller: Controller,
        scheduler: scheduler::Control,
        fleet: FleetView,
        agent_id: &str,
    ) -> EdgeModule {
        let status_interval = controller.local().edge.status_interval.0;
        let pipeline = controller.pipeline();
        EdgeModule {
            shared: Shared {
                link,
                pipeline,
                scheduler,
                fleet,
                agent_id: agent_id.into(),
            },
            controller,
            desired: None,
            outcome: Outcome::default(),
            status_interval,
            reported: None,
            reported_collectors: BTreeSet::new(),
        }
    }

    /// Serves the link's inbound traffic and the local file's reloads until the link ends.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut reloads: Option<mpsc::Receiver<Result<Config, String>>>,
    ) {
        let mut status_tick = tokio::time::interval(self.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reread: Option<tokio::time::Instant> = None;
        let mut fleet_changes = self.shared.fleet.changes.clone();
        loop {
            tokio::select! {
                reading = async { reloads.as_mut().expect("checked").recv().await }, if reloads.is_some() => match reading {
                    None => reloads = None,
                    Some(reading) => {
                        if let Some(applied) = self.controller.reload(reading).await {
                            self.record(self.outcome.desired_version, applied);
                            self.report().await;
                        }
                    }
                },
                changed = fleet_changes.changed() => {
                    if changed.is_ok() && self.desired.is_some() {
                        self.report().await;
                    }
                }
                message = inbound.recv() => match message {
                    None => return,
                    Some(Inbound::Connected) => reread = self.read_twin().await,
                    Some(Inbound::DesiredPatch { version, body }) => {
                        if let Some(again) = self.on_patch(version, &body).await {
                            reread = Some(again);
                        }
                    }
                    Some(Inbound::MethodCall { name, rid, body }) => {
                        let shared = self.shared.clone();
                        let view = (configuration_section(&self.outcome), self.controller.in_force().clone());
                        tokio::spawn(async move { answer(shared, view, name, rid, body).await });
                    }
                },
                _ = async { tokio::time::sleep_until(reread.expect("checked")).await }, if reread.is_some() => {
                    reread = self.read_twin().await;
                }
                _ = status_tick.tick() => {
                    if self.desired.is_some() {
                        self.report().await;
                    }
                }
            }
        }
    }

    /// Reads the whole twin and applies it; on failure, when to try again.
    async fn read_twin(&mut self) -> Option<tokio::time::Instant> {
        let twin = match self.shared.link.twin_get().await {
            Ok(twin) => twin,
            Err(e) => {
                tracing::warn!(retry_in = ?TWIN_RETRY, "reading the module twin: {e}");
                return Some(tokio::time::Instant::now() + TWIN_RETRY);
            }
        };
        match Desired::from_twin(&twin) {
            Ok(desired) => {
                tracing::info!(version = desired.version, "module twin read");
                self.desired = Some(desired);
                self.apply().await;
                None
            }
            Err(e) => {
                tracing::warn!(retry_in = ?TWIN_RETRY, "edgeHub sent an unusable twin: {e}");
                Some(tokio::time::Instant::now() + TWIN_RETRY)
            }
        }
    }

    /// Follows a desired patch; returns when to read the whole twin if the patch cannot be
    /// applied in order.
    async fn on_patch(
        &mut self,
        version: Option<u64>,
        body: &[u8],
    ) -> Option<tokio::time::Instant> {
        let Some(desired) = self.desired.as_mut() else {
            // The twin read in progress (or due) will include it.
            return None;
        };
        let patch: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("a desired patch is not JSON ({e}); reading the whole twin");
                return Some(tokio::time::Instant::now());
            }
        };
        match desired.patch(version, &patch) {
            Ok(Patched::Applied) => {
                tracing::info!(version = ?version, "desired properties changed");
                self.apply().await;
                None
            }
            Ok(Patched::Stale) => None,
            Ok(Patched::Gap) => {
                tracing::info!(have = desired.version, got = ?version, "desired versions were skipped; reading the whole twin");
                Some(tokio::time::Instant::now())
            }
            Err(e) => {
                tracing::warn!("{e}; reading the whole twin");
                Some(tokio::time::Instant::now())
            }
        }
    }

    /// Applies the desired document, or refuses it whole; then reports what is in force.
    async fn apply(&mut self) {
        let desired = self.desired.as_ref().expect("read before applied");
        let version = desired.version;
        self.controller.set_desired(desired.doc.clone());
        let applied = self.controller.apply(false).await;
        match &applied {
            Applied::Applied(_) => tracing::info!(version, "twin configuration applied"),
            Applied::Refused(issues) => {
                for i in issues {
                    tracing::warn!(version, "twin configuration refused: {i}");
                }
            }
        }
        self.record(Some(version), applied);
        self.report().await;
    }

    fn record(&mut self, desired_version: Option<u64>, applied: Applied) {
        self.outcome = match applied {
            // Without a new pipeline configuration, its warnings stay what they were.
            Applied::Applied(warnings) => Outcome {
                desired_version,
                refused: Vec::new(),
                warnings: warnings.unwrap_or_else(|| self.outcome.warnings.clone()),
                at: Some(now()),
            },
            Applied::Refused(issues) => Outcome {
                desired_version,
                refused: issues,
                warnings: Vec::new(),
                at: Some(now()),
            },
        };
    }

    /// Reports what is in force and how the collectors do, when anything changed.
    async fn report(&mut self) {
        let mut section = self.project_section();
        // Collectors no longer running are removed (null deletes).
        let collectors = section["collectors"].as_object_mut().expect("an object");
        let now: BTreeSet<String> = collectors.keys().cloned().collect();
        for gone in self.reported_collectors.difference(&now) {
            collectors.insert(gone.clone(), Value::Null);
        }
        let patch = json!({ OBJECT_NAME: self.controller.in_force().settings.asc.to_reported(), twin::SECTION: section });
        if self.reported.as_ref() == Some(&patch) {
            return;
        }
        match self.shared.link.twin_report(&patch).await {
            Ok(()) => {
                tracing::debug!("reported properties updated");
                self.reported = Some(patch);
                self.reported_collectors = now;
            }
            Err(e) => tracing::warn!("updating the reported properties: {e}"),
        }
    }

    fn project_section(&self) -> Value {
        let in_force = self.controller.in_force();
        json!({
            "agentVersion": crate::AGENT_VERSION,
            "configuration": configuration_section(&self.outcome),
            "schedule": wanted::reported_schedule(&in_force.schedule),
            "limits": limits(&self.controller.local().limits),
            "collectors": collectors(&self.shared.fleet.collectors(), in_force),
        })
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Keeps a reported string within edgeHub's limit.
fn bounded(text: String) -> String {
    if text.len() <= MAX_REPORTED_STRING {
        return text;
    }
    let mut end = MAX_REPORTED_STRING - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn configuration_section(outcome: &Outcome) -> Value {
    let describe = |issues: &[ConfigIssue]| {
        Value::Array(
            issues
                .iter()
                .map(|i| Value::String(bounded(i.to_string())))
                .collect(),
        )
    };
    json!({
        "status": if !outcome.refused.is_empty() { "refused" } else if outcome.desired_version.is_some() { "applied" } else { "local" },
        "desiredVersion": outcome.desired_version,
        "errors": describe(&outcome.refused),
        "warnings": describe(&outcome.warnings),
        "at": outcome.at,
    })
}

fn limits(l: &Limits) -> Value {
    json!({
        "memory": l.memory.to_string(),
        "callTimeout": l.call_timeout.to_string(),
        "maxEventsPerCall": l.max_events_per_call,
        "restartBackoff": l.restart_backoff.to_string(),
        "restartBackoffMax": l.restart_backoff_max.to_string(),
        "maxState": l.max_state.to_string(),
        "maxTransfer": l.max_transfer.to_string(),
    })
}

/// Rules reported per analyzer, at most (reported properties are bounded in size).
const MAX_RULES_REPORTED: usize = 256;

/// Where a collector's data of one capability comes from.
fn feed(f: &crate::capabilities::FeedStatus) -> Value {
    let mut v = json!({ "source": f.source, "delivered": f.delivered, "lost": f.lost });
    if let Some(why) = &f.unavailable {
        v["unavailable"] = Value::String(bounded(why.clone()));
    }
    for (name, count) in &f.details {
        v[*name] = json!(count);
    }
    for (name, note) in &f.notes {
        v[*name] = Value::String(bounded(note.clone()));
    }
    v
}

/// Each collector: what runs (version, digest, source, schedule, grants, limits), how it
/// fares, and the last swap and the last refused version.
fn collectors(list: &[CollectorView], in_force: &Wanted) -> Value {
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut map = Map::new();
    for c in list {
        let s = c.status.lock().unwrap().clone();
        let mut entry = json!({
            "state": c.state(),
            "group": c.group.name(),
            "lastRun": s.last_run.map(time),
            "collections": s.collections,
            "events": s.events,
            "errors": s.errors,
            "faults": s.faults,
            "logsDropped": s.logs_dropped,
            "hostCalls": s.host_work.calls,
            "hostTimeMs": s.host_work.time.as_millis() as u64,
            "statesRefused": s.states_refused,
            "memoryBytes": s.memory,
            "memorySettledBytes": s.memory_settled,
            "memoryPeakBytes": s.memory_peak,
            "memoryRenewals": s.memory_renewals,
            "eventsRefused": s.events_refused,
            "lastFault": s.last_fault.map(bounded),
            "lastError": c.last_error.as_ref().map(|f| json!({
                "at": time(f.at),
                "step": f.step,
                "wanted": f.wanted,
                "message": bounded(f.message.clone()),
            })),
            "lastSwap": c.last_swap.as_ref().map(|w| json!({
                "at": time(w.at),
                "from": w.from,
                "to": w.to,
                "totalMs": (w.total.as_secs_f64() * 1e3 * 10.0).round() / 10.0,
                "switchMs": (w.switch.as_secs_f64() * 1e3 * 10.0).round() / 10.0,
                "compiled": w.cache == crate::runtime::CacheOutcome::Miss,
                "state": match &w.state {
                    crate::scheduler::Handover::None => "none".to_owned(),
                    crate::scheduler::Handover::Handed(n) => format!("handed over ({n} bytes)"),
                    crate::scheduler::Handover::Refused(why) => bounded(format!("refused: {why}")),
                },
            })),
        });
        if let (Some(spec), Some(loaded)) = (&c.spec, &c.loaded) {
            let interval = spec
                .interval
                .unwrap_or_else(|| in_force.schedule.interval(c.group));
            let more = json!({
                "version": loaded.info.version,
                "sha256": loaded.sha256,
                "source": bounded(spec.source.to_string()),
                "from": if spec.from_twin { "twin" } else { "local" },
                "enabled": spec.enabled,
                "interval": Span(interval).to_string(),
                "grants": loaded.grants.iter().map(|g| g.name()).collect::<Vec<_>>(),
                "attests": spec.attests,
                "memory": spec.limits.memory.to_string(),
                "callTimeout": spec.limits.call_timeout.to_string(),
            });
            entry
                .as_object_mut()
                .expect("an object")
                .extend(more.as_object().expect("an object").clone());
            let feeds: Map<String, Value> = c
                .feeds()
                .into_iter()
                .map(|f| (f.capability.name().to_owned(), feed(&f)))
                .collect();
            if !feeds.is_empty() {
                entry["feeds"] = Value::Object(feeds);
            }
            if let crate::sandbox::instance::Role::Analyzer { wants } = &loaded.role {
                // The effective rule set: which analyzer, which version, which rules in force.
                entry["analyzer"] = json!({
                    "wants": wants,
                    "analysed": s.analysed,
                    "lost": s.analysis_lost,
                    "rules": s.rules.iter().take(MAX_RULES_REPORTED).map(|r| json!({
                        "name": bounded(r.name.clone()),
                        "enabled": r.enabled,
                        "detail": bounded(r.detail.clone()),
                    })).collect::<Vec<_>>(),
                });
            }
        }
        map.insert(c.name.clone(), entry);
    }
    Value::Object(map)
}

/// Answers one direct method call.
async fn answer(
    shared: Shared,
    view: (Value, Wanted),
    name: String,
    rid: String,
    body: bytes::Bytes,
) {
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let (status, response) = match name.as_str() {
        "collectNow" => collect_now(&shared, &payload).await,
        "status" => (200, status(&shared, view).await),
        other => (
            501,
            json!({ "error": format!("unknown method `{other}`; this module answers {}", METHODS.join(", ")) }),
        ),
    };
    tracing::info!(method = %name, status, "direct method answered");
    if let Err(e) = shared.link.respond(&rid, status, &response).await {
        tracing::warn!(method = %name, "could not answer the direct method: {e}");
    }
}

/// `collectNow {"group": "high"}`: the group's collectors collect at once (all groups when no
/// group is named); the answer lists each collector's outcome.
async fn collect_now(shared: &Shared, payload: &Value) -> (u16, Value) {
    let groups: Vec<Group> = match payload.get("group") {
        None | Some(Value::Null) => Group::ALL.to_vec(),
        Some(Value::String(name)) => match Group::ALL
            .into_iter()
            .find(|g| g.name() == name.to_ascii_lowercase())
        {
            Some(g) => vec![g],
            None => {
                return (
                    400,
                    json!({ "error": format!("unknown group `{name}`: expected high, medium or low") }),
                );
            }
        },
        Some(other) => {
            return (
                400,
                json!({ "error": format!("`group` must be a string (high, medium or low), not {other}") }),
            );
        }
    };
    let mut results = Vec::new();
    for group in groups {
        let fleet = shared.fleet.collectors();
        let expected: Vec<&CollectorView> = fleet
            .iter()
            .filter(|c| c.group == group && c.spec.is_some())
            .collect();
        let mut reports = shared.scheduler.collect_now(group);
        let deadline = tokio::time::Instant::now() + COLLECT_NOW_WAIT;
        let mut answered = BTreeSet::new();
        while answered.len() < expected.len() {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(report)) => {
                    answered.insert(report.plugin.to_string());
                    results.push(json!({ "collector": &*report.plugin, "group": group.name(), "events": report.events, "outcome": report.outcome }));
                }
                Ok(None) | Err(_) => break,
            }
        }
        for c in expected.iter().filter(|c| !answered.contains(&c.name)) {
            results.push(json!({ "collector": c.name, "group": group.name(), "events": 0, "outcome": "still collecting" }));
        }
    }
    (200, json!({ "collected": results }))
}

async fn status(shared: &Shared, (configuration, in_force): (Value, Wanted)) -> Value {
    let link = shared.link.status();
    let (tx, rx) = oneshot::channel();
    let pipeline = match shared.pipeline.send(Command::Status(tx)).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    json!({
        "agentVersion": crate::AGENT_VERSION,
        "agentId": &*shared.agent_id,
        "connection": {
            "connected": link.connected,
            "connections": link.connections,
            "lastError": link.last_error,
            "tokenExpiresAt": link.token_expires_at,
        },
        "configuration": configuration,
        "pipeline": pipeline.as_ref().map(|p| json!({
            "queuedEvents": p.queued,
            "messagesInFlight": p.in_flight,
            "sinceLastStatistics": {
                "messagesSent": p.counters.messages_sent,
                "sendFailures": p.counters.total_failed,
                "collected": p.counters.high.collected + p.counters.low.collected + p.counters.operational.collected,
                "dropped": p.counters.high.dropped + p.counters.low.dropped + p.counters.operational.dropped,
            },
        })),
        "collectors": collectors(&shared.fleet.collectors(), &in_force),
    })
}
