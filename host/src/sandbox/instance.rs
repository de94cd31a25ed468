//! A live plugin instance: one store, its limits, and calls that turn every way a plugin can
//! misbehave into a [`Fault`] instead of harm to the host.

use crate::capabilities::{HostContext, HostState};
use crate::runtime::limits::{CallGuard, HostWork, Limits};
use crate::units::Bytes;
use crate::wit::analyzer::edgeguard::collector::analysis::Observed;
use crate::wit::analyzer::exports::edgeguard::collector::analyzer::{Finding, RuleStatus};
use crate::wit::analyzer::{AnalyzerPlugin as Analyzer, AnalyzerPluginPre as AnalyzerPre};
use crate::wit::exports::edgeguard::collector::plugin::{CollectError, Event, PluginInfo};
use crate::wit::{Collector, CollectorPre};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Store, Trap, UpdateDeadline};

/// Why a plugin instance had to be thrown away. After a fault the instance is unusable (its
/// store is poisoned); the scheduler re-instantiates it from the cached pre-instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// The plugin trapped (a panic, an unreachable, a failed host call).
    #[error("trapped: {0}")]
    Trap(String),
    /// A call ran out of time: its own code and the host calls it made, together.
    #[error("ran past its deadline of {deadline:?} ({} host calls took {:?} of it)", host.calls, host.time)]
    Timeout {
        /// The deadline.
        deadline: Duration,
        /// The host work the call had made the host do.
        host: HostWork,
    },
    /// A memory grew past the limit.
    #[error("exceeded its memory limit ({limit} bytes; asked for {asked})")]
    MemoryLimit {
        /// The size asked for.
        asked: usize,
        /// The limit.
        limit: usize,
    },
    /// One call handed the host more than it may (its result, or a host call's arguments).
    #[error("handed the host more than its limit of {limit} in one call (limits.max_transfer)")]
    Transfer {
        /// The limit.
        limit: Bytes,
    },
    /// `collect` returned more events than its cap.
    #[error("returned {returned} events, more than its cap of {cap} per call")]
    Flood {
        /// Events returned.
        returned: usize,
        /// The cap.
        cap: u32,
    },
    /// `init` refused the configuration.
    #[error("refused its configuration: {0}")]
    Init(String),
}

impl Fault {
    /// A short stable name for logs and ExtraDetails.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Timeout { .. } => "timeout",
            Fault::Transfer { .. } => "transfer",
            Fault::MemoryLimit { .. } => "memory",
            Fault::Flood { .. } => "flood",
            Fault::Init(_) => "init",
        }
    }
}

/// What a plugin is, by the world its component implements: what it is handed and what it
/// hands back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Collects events at its schedule (`collector` world).
    Collector,
    /// Is handed the events it wants as they enter the pipeline and raises findings
    /// (`analyzer` world, since 0.1.3).
    Analyzer {
        /// The event names it is handed.
        wants: Vec<String>,
    },
}

/// A component's prepared instantiation, for the world it implements.
pub enum Pre {
    /// A collector.
    Collector(CollectorPre<HostState>),
    /// An analyzer.
    Analyzer(AnalyzerPre<HostState>),
}

enum Bindings {
    Collector(Collector),
    Analyzer(Analyzer),
}

/// A live plugin instance.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Bindings,
    timeout: Duration,
    max_transfer: Bytes,
    max_events: u32,
    /// An analyzer's rules as its `init` left them (none for a collector).
    rules: Vec<RuleStatus>,
    /// Its memory after its first collection: what it needs, before any burst.
    settled: Option<usize>,
}

/// An instance has outgrown its memory when it holds at least this many times what it settled
/// at, and at least [`OUTGROWN_BY`] more.
const OUTGROWN_FACTOR: usize = 2;
const OUTGROWN_BY: usize = 2 << 20;

/// What an analyzer's self-description says, in the collectors' terms where they share them:
/// it emits findings, and runs (its quiet ticks) in the high group unless configured otherwise.
fn analyzer_info(
    info: crate::wit::analyzer::edgeguard::collector::analysis::AnalyzerInfo,
) -> (PluginInfo, Role) {
    let plugin = PluginInfo {
        name: info.name,
        version: info.version,
        events: crate::events::FINDING_KINDS.map(String::from).to_vec(),
        capabilities: info.capabilities,
        default_group: crate::wit::edgeguard::collector::types::PriorityGroup::High,
        description: info.description,
    };
    (plugin, Role::Analyzer { wants: info.wants })
}

/// Slack on top of the epoch deadline for the outer timeout, which only matters when the plugin
/// is inside a host call (epochs interrupt wasm code only).
const HOST_CALL_GRACE: Duration = Duration::from_millis(500);

/// Arms a call's deadline: counted from now, checked at the next epoch, and the epoch ticker
/// running for as long as the returned token lives.
fn start_call(store: &mut Store<HostState>) -> crate::runtime::engine::Ticking {
    let ticking = crate::runtime::engine::ticking();
    store.data_mut().guard.start_call();
    store.set_epoch_deadline(1);
    ticking
}

/// Runs one call into the plugin under its CPU deadline and outer timeout, classifying failures.
macro_rules! guarded {
    ($self:ident, |$b:ident, $s:ident| $call:expr) => {{
        let _ticking = start_call(&mut $self.store);
        let $b = &$self.bindings;
        let $s = &mut $self.store;
        let outcome = tokio::time::timeout($self.timeout + HOST_CALL_GRACE, $call).await;
        $self.store.data_mut().guard.end_call();
        classify(&$self.store, $self.timeout, $self.max_transfer, outcome)
    }};
}

impl PluginInstance {
    pub(super) async fn new(
        engine: &wasmtime::Engine,
        pre: &Pre,
        name: Arc<str>,
        host: Arc<HostContext>,
        limits: &Limits,
        dirs: &[PathBuf],
    ) -> Result<PluginInstance, Fault> {
        let guard = CallGuard::new(limits.memory.0 as usize, limits.call_timeout.0);
        let state =
            HostState::new(name, host, dirs, guard).map_err(|e| Fault::Init(e.to_string()))?;
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.guard);
        // What the plugin hands over is bounded as the host will hold it, before it is
        // allocated: wasmtime's lifting of lists and strings draws on this per call.
        let max_transfer = limits.max_transfer;
        store.set_hostcall_fuel(usize::try_from(max_transfer.0).unwrap_or(usize::MAX));
        store.call_hook(|mut ctx, hook| ctx.data_mut().guard.transition(hook));
        // Each tick: yield to the executor (fairness), and interrupt once past the deadline.
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().guard.within_deadline() {
                UpdateDeadline::Yield(1)
            } else {
                UpdateDeadline::Interrupt
            })
        });
        let _ticking = start_call(&mut store);
        let timeout = limits.call_timeout.0;
        let outcome = tokio::time::timeout(timeout + HOST_CALL_GRACE, async {
            Ok(match pre {
                Pre::Collector(pre) => {
                    Bindings::Collector(pre.instantiate_async(&mut store).await?)
                }
                Pre::Analyzer(pre) => Bindings::Analyzer(pre.instantiate_async(&mut store).await?),
            })
        })
        .await;
        store.data_mut().guard.end_call();
        let bindings = classify(&store, timeout, max_transfer, outcome)?;
        Ok(PluginInstance {
            store,
            bindings,
            timeout,
            max_transfer,
            max_events: limits.max_events_per_call,
            rules: Vec::new(),
            settled: None,
        })
    }

    /// The plugin's self-description and what it is.
    pub async fn describe(&mut self) -> Result<(PluginInfo, Role), Fault> {
        guarded!(self, |b, s| async move {
            Ok(match b {
                Bindings::Collector(c) => (
                    c.edgeguard_collector_plugin().call_describe(s).await?,
                    Role::Collector,
                ),
                Bindings::Analyzer(a) => {
                    analyzer_info(a.edgeguard_collector_analyzer().call_describe(s).await?)
                }
            })
        })
    }

    pub(super) async fn init(&mut self, config_json: &str) -> Result<(), Fault> {
        let result = guarded!(self, |b, s| async move {
            Ok(match b {
                Bindings::Collector(c) => c
                    .edgeguard_collector_plugin()
                    .call_init(s, config_json)
                    .await?
                    .map(|()| Vec::new()),
                Bindings::Analyzer(a) => {
                    a.edgeguard_collector_analyzer()
                        .call_init(s, config_json)
                        .await?
                }
            })
        })?;
        self.rules = result.map_err(|e| Fault::Init(describe_error(&e)))?;
        Ok(())
    }

    /// An analyzer's rules as configured (empty for a collector).
    pub fn rules(&self) -> &[RuleStatus] {
        &self.rules
    }

    /// One collection. `Ok(Err(_))` is the plugin reporting a failure it handled; the instance
    /// stays usable. `Err(fault)` means the instance is gone. An analyzer collects nothing.
    pub async fn collect(&mut self) -> Result<Result<Vec<Event>, CollectError>, Fault> {
        let cap = self.max_events;
        let result = guarded!(self, |b, s| async move {
            match b {
                Bindings::Collector(c) => c.edgeguard_collector_plugin().call_collect(s, cap).await,
                Bindings::Analyzer(_) => Ok(Ok(Vec::new())),
            }
        })?;
        match result {
            Ok(events) if events.len() > cap as usize => Err(Fault::Flood {
                returned: events.len(),
                cap,
            }),
            other => Ok(other),
        }
    }

    /// One analysis of `events` (none: a tick). Outcomes as for [`PluginInstance::collect`];
    /// a collector finds nothing.
    pub async fn analyze(
        &mut self,
        events: &[Observed],
        now_ms: u64,
    ) -> Result<Result<Vec<Finding>, CollectError>, Fault> {
        let cap = self.max_events;
        let result = guarded!(self, |b, s| async move {
            match b {
                Bindings::Analyzer(a) => {
                    a.edgeguard_collector_analyzer()
                        .call_analyze(s, events, now_ms, cap)
                        .await
                }
                Bindings::Collector(_) => Ok(Ok(Vec::new())),
            }
        })?;
        match result {
            Ok(findings) if findings.len() > cap as usize => Err(Fault::Flood {
                returned: findings.len(),
                cap,
            }),
            other => Ok(other),
        }
    }

    /// The state to hand to the next version, if any.
    pub async fn save_state(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        guarded!(self, |b, s| async move {
            match b {
                Bindings::Collector(c) => c.edgeguard_collector_plugin().call_save_state(s).await,
                Bindings::Analyzer(a) => a.edgeguard_collector_analyzer().call_save_state(s).await,
            }
        })
    }

    /// Hands the previous version's state to this one.
    pub async fn restore_state(&mut self, state: &[u8]) -> Result<Result<(), CollectError>, Fault> {
        guarded!(self, |b, s| async move {
            match b {
                Bindings::Collector(c) => {
                    c.edgeguard_collector_plugin()
                        .call_restore_state(s, state)
                        .await
                }
                Bindings::Analyzer(a) => {
                    a.edgeguard_collector_analyzer()
                        .call_restore_state(s, state)
                        .await
                }
            }
        })
    }

    /// Log lines dropped past the per-call cap since the last time this was asked.
    pub fn take_logs_dropped(&mut self) -> u64 {
        self.store.data_mut().guard.take_logs_dropped()
    }

    /// The work the host did for this instance's calls since the last time this was asked.
    pub fn take_host_work(&mut self) -> HostWork {
        self.store.data_mut().guard.take_host_work()
    }

    /// Peak linear memory this instance has used.
    pub fn memory_peak(&self) -> usize {
        self.store.data().guard.memory_peak
    }

    /// Bytes its linear memories and tables hold now (wasm memory only grows).
    pub fn memory_used(&self) -> usize {
        self.store.data().guard.memory_used()
    }

    /// Called after each collection: the first settles the instance's size; after that, the
    /// settled and current sizes when a burst grew it far past what it settled at (a fresh
    /// instance given its state would hand that back).
    pub fn outgrown(&mut self) -> Option<(usize, usize)> {
        let now = self.memory_used();
        let settled = *self.settled.get_or_insert(now);
        (now >= settled.saturating_mul(OUTGROWN_FACTOR) && now >= settled + OUTGROWN_BY)
            .then_some((settled, now))
    }

    /// What it settled at, once it has.
    pub fn memory_settled(&self) -> Option<usize> {
        self.settled
    }
}

/// What wasmtime says when a plugin hands over more than its host-call fuel: its error type
/// is private, its text is not (wasmtime is pinned to one version; a test trips on a change).
const TRANSFER_EXHAUSTED: &str = "too much data is being copied between the host and the guest";

fn classify<T>(
    store: &Store<HostState>,
    timeout: Duration,
    max_transfer: Bytes,
    outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, Fault> {
    let guard = &store.data().guard;
    let timed_out = || Fault::Timeout {
        deadline: timeout,
        host: guard.call_host,
    };
    let error = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Err(_elapsed) => return Err(timed_out()),
        Ok(Err(error)) => error,
    };
    if let Some(asked) = guard.memory_denied {
        return Err(Fault::MemoryLimit {
            asked,
            limit: guard.memory_limit(),
        });
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Err(timed_out());
    }
    if error
        .chain()
        .any(|cause| cause.to_string().starts_with(TRANSFER_EXHAUSTED))
    {
        return Err(Fault::Transfer {
            limit: max_transfer,
        });
    }
    // The first line names the trap; the wasm backtrace that follows is for debug logs.
    let text = format!("{error:#}");
    tracing::debug!(plugin = %store.data().plugin, "trap details: {text}");
    let message = match error.downcast_ref::<Trap>() {
        Some(trap) => format!("{trap}"),
        None => text.lines().next().unwrap_or_default().to_owned(),
    };
    Err(Fault::Trap(message))
}

/// The operator-facing text of a plugin error.
pub fn describe_error(e: &CollectError) -> String {
    use crate::wit::edgeguard::collector::types::HostError as H;
    match e {
        CollectError::Host(h) => match h {
            H::NotGranted(m) => format!("host capability not granted: {m}"),
            H::Unavailable(m) => format!("source unavailable: {m}"),
            H::PermissionDenied(m) => format!("permission denied: {m}"),
            H::Io(m) => format!("I/O error: {m}"),
            H::InvalidArgument(m) => format!("invalid argument: {m}"),
        },
        CollectError::InvalidConfig(m) => format!("invalid configuration: {m}"),
        CollectError::InvalidState(m) => format!("invalid state: {m}"),
        CollectError::Internal(m) => m.clone(),
    }
}
