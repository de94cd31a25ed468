//! A live plugin instance: one store, its limits, and calls that turn every way a plugin can
//! misbehave into a [`Fault`] instead of harm to the host.

use crate::capabilities::{HostContext, HostState};
use crate::runtime::limits::{CallGuard, HostWork, Limits};
use crate::units::Bytes;
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

/// A live plugin instance.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Collector,
    timeout: Duration,
    max_transfer: Bytes,
    max_events: u32,
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
        pre: &CollectorPre<HostState>,
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
        let outcome =
            tokio::time::timeout(timeout + HOST_CALL_GRACE, pre.instantiate_async(&mut store))
                .await;
        store.data_mut().guard.end_call();
        let bindings = classify(&store, timeout, max_transfer, outcome)?;
        Ok(PluginInstance {
            store,
            bindings,
            timeout,
            max_transfer,
            max_events: limits.max_events_per_call,
        })
    }

    /// The plugin's self-description.
    pub async fn describe(&mut self) -> Result<PluginInfo, Fault> {
        guarded!(self, |b, s| b.edgeguard_collector_plugin().call_describe(s))
    }

    pub(super) async fn init(&mut self, config_json: &str) -> Result<(), Fault> {
        let result = guarded!(self, |b, s| b
            .edgeguard_collector_plugin()
            .call_init(s, config_json))?;
        result.map_err(|e| Fault::Init(describe_error(&e)))
    }

    /// One collection. `Ok(Err(_))` is the plugin reporting a failure it handled; the instance
    /// stays usable. `Err(fault)` means the instance is gone.
    pub async fn collect(&mut self) -> Result<Result<Vec<Event>, CollectError>, Fault> {
        let cap = self.max_events;
        let result = guarded!(self, |b, s| b
            .edgeguard_collector_plugin()
            .call_collect(s, cap))?;
        match result {
            Ok(events) if events.len() > cap as usize => Err(Fault::Flood {
                returned: events.len(),
                cap,
            }),
            other => Ok(other),
        }
    }

    /// The state to hand to the next version, if any.
    pub async fn save_state(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        guarded!(self, |b, s| b
            .edgeguard_collector_plugin()
            .call_save_state(s))
    }

    /// Hands the previous version's state to this one.
    pub async fn restore_state(&mut self, state: &[u8]) -> Result<Result<(), CollectError>, Fault> {
        guarded!(self, |b, s| b
            .edgeguard_collector_plugin()
            .call_restore_state(s, state))
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
