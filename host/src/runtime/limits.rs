//! Per-store enforcement: linear memory, CPU time per call (in epoch ticks), log lines.

use wasmtime::ResourceLimiter;

/// How often the engine's epoch advances. A call's CPU deadline is a number of these ticks,
/// and a running plugin yields to the executor at each, so a busy plugin cannot hold a
/// worker thread for longer than one tick.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// A plugin may log at most this many lines per call; the rest are counted, not printed.
const LOG_LINES_PER_CALL: u32 = 200;

pub struct CallGuard {
    memory_limit: usize,
    /// Set when the plugin tried to grow past its limit: the size it asked for.
    pub memory_denied: Option<usize>,
    pub memory_peak: usize,
    budget_ticks: u64,
    ticks: u64,
    log_lines: u32,
    pub logs_dropped: u64,
}

impl CallGuard {
    pub fn new(memory_limit: usize, call_timeout: std::time::Duration) -> CallGuard {
        CallGuard {
            memory_limit,
            memory_denied: None,
            memory_peak: 0,
            budget_ticks: (call_timeout.as_millis() / TICK.as_millis()).max(1) as u64,
            ticks: 0,
            log_lines: 0,
            logs_dropped: 0,
        }
    }

    /// Called before each call into the plugin.
    pub fn start_call(&mut self) {
        self.ticks = 0;
        self.log_lines = 0;
    }

    /// Called at each epoch tick during a call: true while the call is within its budget.
    pub fn tick(&mut self) -> bool {
        self.ticks += 1;
        self.ticks <= self.budget_ticks
    }

    /// How long a host capability may wait on an outside service (the Docker daemon) within
    /// one call: three quarters of the call's deadline, so that a hung service is reported as
    /// the capability's error and not as the plugin's timeout.
    pub fn host_call_deadline(&self) -> std::time::Duration {
        TICK * (self.budget_ticks * 3 / 4).max(1) as u32
    }

    pub fn allow_log_line(&mut self) -> bool {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            self.logs_dropped += 1;
            return false;
        }
        true
    }

    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }
}

impl ResourceLimiter for CallGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_denied = Some(desired);
            // Trap rather than return -1 from memory.grow: a Rust guest would abort anyway,
            // and a trap names the cause.
            wasmtime::bail!(
                "memory limit exceeded: {desired} bytes asked, limit {}",
                self.memory_limit
            );
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        // A plugin component holds a handful of core instances (its module, the WASI adapter shims).
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}
