//! A plugin's sandbox limits as configured ([`Limits`], the `[limits]` section and each
//! plugin's overrides), and their enforcement per store: linear memory, time per call (its own
//! code and the host calls it makes), log lines.

use crate::units::{Bytes, Invalid, Span};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;

/// Per-plugin sandbox limits. In the `[limits]` table every field is the default; in a plugin's
/// own `limits` table only the fields given override it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Linear memory.
    pub memory: Option<Bytes>,
    // The module twin spells keys in camelCase, as it reports them.
    /// CPU time per call.
    #[serde(alias = "callTimeout")]
    pub call_timeout: Option<Span>,
    /// Events per `collect`.
    #[serde(alias = "maxEventsPerCall")]
    pub max_events_per_call: Option<u32>,
    /// First restart delay.
    #[serde(alias = "restartBackoff")]
    pub restart_backoff: Option<Span>,
    /// Longest restart delay.
    #[serde(alias = "restartBackoffMax")]
    pub restart_backoff_max: Option<Span>,
    /// State a plugin may hand over and keep on disk.
    #[serde(alias = "maxState")]
    pub max_state: Option<Bytes>,
    /// What one call may hand the host.
    #[serde(alias = "maxTransfer")]
    pub max_transfer: Option<Bytes>,
}

/// A plugin's sandbox limits: the `[limits]` section, with each plugin's overrides applied.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to.
    pub memory: Bytes,
    /// Time one call may take, its host calls included; past it the call is interrupted.
    pub call_timeout: Span,
    /// Events one `collect` may return; more is a fault.
    pub max_events_per_call: u32,
    /// First delay before a faulted plugin is re-instantiated; doubles per consecutive fault.
    pub restart_backoff: Span,
    /// The longest restart delay.
    pub restart_backoff_max: Span,
    /// The largest state `save-state` may return: a larger one is neither kept on disk nor
    /// handed to a new version (it would wear the device's flash at every collection).
    pub max_state: Bytes,
    /// The most the host allocates for what a plugin hands it in one call: the events of a
    /// collection, a saved state, the arguments of one host call. Counted as the host holds it
    /// (a list of empty rows costs what each row costs the host, not its few bytes in the
    /// plugin's memory) and checked before it is allocated; more is a fault. Half the default
    /// memory: a process collector's largest honest collection (its command lines cut, its
    /// inputs bounded) stays well within it, while a list built to swell in the host cannot.
    pub max_transfer: Bytes,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Bytes(32 << 20),
            call_timeout: Span(Duration::from_secs(2)),
            max_events_per_call: 1024,
            restart_backoff: Span(Duration::from_secs(1)),
            restart_backoff_max: Span(Duration::from_secs(300)),
            max_state: Bytes(1 << 20),
            max_transfer: Bytes(16 << 20),
        }
    }
}

impl Limits {
    /// These limits with `o`'s overrides.
    pub fn with(&self, o: &LimitOverrides) -> Limits {
        Limits {
            memory: o.memory.unwrap_or(self.memory),
            call_timeout: o.call_timeout.unwrap_or(self.call_timeout),
            max_events_per_call: o.max_events_per_call.unwrap_or(self.max_events_per_call),
            restart_backoff: o.restart_backoff.unwrap_or(self.restart_backoff),
            restart_backoff_max: o.restart_backoff_max.unwrap_or(self.restart_backoff_max),
            max_state: o.max_state.unwrap_or(self.max_state),
            max_transfer: o.max_transfer.unwrap_or(self.max_transfer),
        }
    }

    /// Refuses limits no plugin can run under; `key` is where they were given (`limits`,
    /// `plugin[0].limits`, a twin path).
    pub fn check(&self, key: &str) -> Result<(), Invalid> {
        let l = self;
        if l.memory.0 < (1 << 20) || l.memory.0 > (4 << 30) {
            return Err(Invalid::new(
                format!("{key}.memory"),
                format!("{} is out of range (1MiB to 4GiB)", l.memory),
            ));
        }
        if l.call_timeout.0 < Duration::from_millis(10) {
            return Err(Invalid::new(
                format!("{key}.call_timeout"),
                format!("{} is too short (at least 10ms)", l.call_timeout),
            ));
        }
        if l.max_events_per_call == 0 {
            return Err(Invalid::new(
                format!("{key}.max_events_per_call"),
                "must be at least 1",
            ));
        }
        if l.max_state.0 > 64 << 20 {
            return Err(Invalid::new(
                format!("{key}.max_state"),
                format!("{} is too large (at most 64MiB)", l.max_state),
            ));
        }
        if l.max_transfer.0 < (64 << 10) || l.max_transfer.0 > (1 << 30) {
            return Err(Invalid::new(
                format!("{key}.max_transfer"),
                format!("{} is out of range (64KiB to 1GiB)", l.max_transfer),
            ));
        }
        if l.max_state > l.max_transfer {
            return Err(Invalid::new(
                format!("{key}.max_state"),
                format!(
                    "{} is over max_transfer ({}): a state that large could never be handed over",
                    l.max_state, l.max_transfer
                ),
            ));
        }
        if l.restart_backoff.0.is_zero() || l.restart_backoff_max < l.restart_backoff {
            return Err(Invalid::new(
                format!("{key}.restart_backoff"),
                "must be positive and not above restart_backoff_max",
            ));
        }
        Ok(())
    }
}

/// How often the engine's epoch advances. At each tick a running plugin yields to the
/// executor, so a busy plugin cannot hold a worker thread for longer than one tick, and its
/// call is interrupted once past its deadline.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// A plugin may log at most this many lines per call; the rest are counted, not printed.
pub const LOG_LINES_PER_CALL: u32 = 200;

/// Work the host did for a plugin: its calls into the host and the time they took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostWork {
    /// Host calls made.
    pub calls: u64,
    /// Time spent in them.
    pub time: Duration,
}

impl HostWork {
    /// Adds `other`'s calls and time to these.
    pub fn add(&mut self, other: HostWork) {
        self.calls += other.calls;
        self.time += other.time;
    }
}

/// A store's enforcement: its memory limit, the current call's deadline and log lines.
pub struct CallGuard {
    memory_limit: usize,
    /// Bytes held by all of the instance's linear memories and tables together: the limit holds
    /// for the sum, so a component cannot multiply it by declaring more memories.
    memory_used: usize,
    /// Set when the plugin tried to grow past its limit: the total it asked for.
    pub memory_denied: Option<usize>,
    /// The most memory (linear memories and tables) the instance has held at once.
    pub memory_peak: usize,
    call_timeout: Duration,
    call_started: Instant,
    /// When the host call under way began.
    host_entered: Option<Instant>,
    /// The current call's host work: its deadline counts the host's time as the plugin's, so
    /// a plugin cannot make the host work for it outside its budget (a hundred thousand process
    /// snapshots in one call).
    pub call_host: HostWork,
    /// Host work of the calls ended since the last [`CallGuard::take_host_work`].
    host_work: HostWork,
    log_lines: u32,
    /// Log lines dropped past the per-call cap, since the last [`CallGuard::take_logs_dropped`].
    logs_dropped: u64,
}

impl CallGuard {
    /// A guard for `memory_limit` bytes and calls of `call_timeout`.
    pub fn new(memory_limit: usize, call_timeout: Duration) -> CallGuard {
        CallGuard {
            memory_limit,
            memory_used: 0,
            memory_denied: None,
            memory_peak: 0,
            call_timeout,
            call_started: Instant::now(),
            host_entered: None,
            call_host: HostWork::default(),
            host_work: HostWork::default(),
            log_lines: 0,
            logs_dropped: 0,
        }
    }

    /// Bytes the instance's memories and tables hold now.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Called before each call into the plugin.
    pub fn start_call(&mut self) {
        self.call_started = Instant::now();
        self.host_entered = None;
        self.call_host = HostWork::default();
        self.log_lines = 0;
    }

    /// Called when a call into the plugin has ended, however it ended.
    pub fn end_call(&mut self) {
        if let Some(entered) = self.host_entered.take() {
            self.call_host.time += entered.elapsed();
        }
        self.host_work.add(self.call_host);
    }

    /// Whether the current call is within its deadline: its own code and its host calls
    /// together, from its start. Asked at each epoch tick and at each host call.
    pub fn within_deadline(&self) -> bool {
        self.call_started.elapsed() <= self.call_timeout
    }

    /// Follows the plugin into and out of host calls: counts them and their time, and
    /// interrupts the plugin as a host call begins or ends past its deadline.
    pub fn transition(&mut self, hook: wasmtime::CallHook) -> wasmtime::Result<()> {
        match hook {
            wasmtime::CallHook::CallingHost => {
                self.host_entered = Some(Instant::now());
                self.call_host.calls += 1;
            }
            wasmtime::CallHook::ReturningFromHost => {
                if let Some(entered) = self.host_entered.take() {
                    self.call_host.time += entered.elapsed();
                }
            }
            wasmtime::CallHook::CallingWasm | wasmtime::CallHook::ReturningFromWasm => {
                return Ok(());
            }
        }
        if self.within_deadline() {
            Ok(())
        } else {
            Err(wasmtime::Trap::Interrupt.into())
        }
    }

    /// How long a host capability may wait on an outside service (the Docker daemon) within
    /// one call: three quarters of the call's deadline, so that a hung service is reported as
    /// the capability's error and not as the plugin's timeout.
    pub fn host_call_deadline(&self) -> Duration {
        (self.call_timeout * 3 / 4).max(TICK)
    }

    /// Whether the current call may log one more line (else it is counted as dropped).
    pub fn allow_log_line(&mut self) -> bool {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            self.logs_dropped += 1;
            return false;
        }
        true
    }

    /// The log lines dropped since the last time this was asked, and the count reset.
    pub fn take_logs_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.logs_dropped)
    }

    /// The host work of the calls ended since the last time this was asked, and the count reset.
    pub fn take_host_work(&mut self) -> HostWork {
        std::mem::take(&mut self.host_work)
    }

    /// The memory limit in bytes.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }
}

/// Linear memories one instance may have: a plugin's core module has one, and the component
/// model's adapters share it. More is refused when the component is instantiated.
pub const MAX_MEMORIES: usize = 2;

/// Tables one instance may have (the module's function table, the adapters' few).
pub const MAX_TABLES: usize = 16;

/// What a table element costs the host: a function reference.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl CallGuard {
    /// Accounts for one memory or table growing from `current` to `desired` bytes; past the
    /// limit the instance traps, naming the cause.
    fn grow(&mut self, what: &str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_limit {
            self.memory_denied = Some(total);
            // Trap rather than return -1 from memory.grow: a Rust guest would abort anyway,
            // and a trap names the cause.
            wasmtime::bail!(
                "memory limit exceeded: growing a {what} to {desired} bytes would make {total} \
                 bytes in all, limit {}",
                self.memory_limit
            );
        }
        self.memory_used = total;
        self.memory_peak = self.memory_peak.max(total);
        Ok(true)
    }
}

impl ResourceLimiter for CallGuard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow("linear memory", current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow("table", bytes(current), bytes(desired))
    }

    fn instances(&self) -> usize {
        // A plugin component holds a handful of core instances (its module, the WASI adapter shims).
        64
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit holds for memories and tables together, not for each.
    #[test]
    fn the_memory_limit_is_for_the_sum_of_memories_and_tables() {
        let mut g = CallGuard::new(10 << 20, Duration::from_secs(1));
        assert!(g.memory_growing(0, 4 << 20, None).unwrap());
        assert!(
            g.memory_growing(0, 4 << 20, None).unwrap(),
            "a second memory"
        );
        let err = g.memory_growing(0, 4 << 20, None).unwrap_err();
        assert!(err.to_string().contains("limit 10485760"), "{err}");
        assert_eq!(g.memory_denied, Some(12 << 20));
        // Growing one memory counts what it adds, not its new size again.
        assert!(g.memory_growing(4 << 20, 5 << 20, None).unwrap());
        assert_eq!(g.memory_peak, 9 << 20);
        // A table of a million functions is 8 MB of the host's.
        assert!(g.table_growing(0, 1 << 20, None).is_err());
        assert!(g.table_growing(0, 1000, None).unwrap());
    }

    /// A host call's time is the plugin's: counted, and one that ends past the call's deadline
    /// interrupts the plugin there.
    #[test]
    fn host_calls_count_against_the_call() {
        let mut g = CallGuard::new(1 << 20, Duration::from_millis(20));
        g.start_call();
        g.transition(wasmtime::CallHook::CallingHost).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let err = g
            .transition(wasmtime::CallHook::ReturningFromHost)
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        assert!(!g.within_deadline());
        assert_eq!(g.call_host.calls, 1);
        assert!(g.call_host.time >= Duration::from_millis(30));
        g.end_call();
        let work = g.take_host_work();
        assert_eq!(work.calls, 1);
        assert_eq!(g.take_host_work(), HostWork::default(), "taken once");
        // A fresh call has a fresh deadline.
        g.start_call();
        assert!(g.within_deadline());
        g.transition(wasmtime::CallHook::CallingHost).unwrap();
    }

    #[test]
    fn a_state_must_fit_what_a_call_may_hand_over() {
        let l = |max_state: u64, max_transfer: u64| Limits {
            max_state: Bytes(max_state),
            max_transfer: Bytes(max_transfer),
            ..Limits::default()
        };
        assert!(l(1 << 20, 4 << 20).check("limits").is_ok());
        let err = l(8 << 20, 4 << 20).check("limits").unwrap_err();
        assert_eq!(err.key, "limits.max_state");
        assert!(err.reason.contains("over max_transfer (4MiB)"), "{err}");
        let err = l(1 << 10, 1 << 10).check("plugin[0].limits").unwrap_err();
        assert_eq!(err.key, "plugin[0].limits.max_transfer");
    }
}
