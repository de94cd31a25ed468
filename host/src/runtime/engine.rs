//! The process-wide wasmtime engine and its epoch ticker.

use super::artifact_cache::{ArtifactCache, CacheOutcome};
use super::compiler::{self, CompileBounds, CompileError, Compiler};
use super::limits::TICK;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// One engine, its compiled-artifact cache, where its plugins compile, and the epoch ticker
/// that drives CPU deadlines.
#[derive(Clone)]
pub struct Runtime {
    /// The wasmtime engine.
    pub engine: wasmtime::Engine,
    /// Its compiled-artifact cache.
    pub cache: Arc<ArtifactCache>,
    /// Where what the cache lacks is compiled.
    pub compiler: Compiler,
}

impl Runtime {
    /// An engine with its cache in `cache_dir`, compiling in this process (the wait bounded as
    /// [`CompileBounds::DEFAULT`]), and its epoch ticker started.
    pub fn new(cache_dir: &Path) -> anyhow::Result<Runtime> {
        let time = CompileBounds::DEFAULT.time;
        Self::with_compiler(cache_dir, Compiler::InProcess { time })
    }

    /// An engine with its cache in `cache_dir`, compiling with `compiler`.
    pub fn with_compiler(cache_dir: &Path, compiler: Compiler) -> anyhow::Result<Runtime> {
        let engine = wasmtime::Engine::new(&engine_config())?;
        let cache = Arc::new(ArtifactCache::open(cache_dir, &engine)?);
        start_epoch_ticker(&engine);
        Ok(Runtime {
            engine,
            cache,
            compiler,
        })
    }

    /// The component for `bytes` (whose SHA-256 is `digest`), from the cache or compiled.
    pub async fn compile(
        &self,
        bytes: Vec<u8>,
        digest: &str,
    ) -> Result<(wasmtime::component::Component, CacheOutcome), CompileError> {
        compiler::compile(&self.compiler, &self.engine, &self.cache, bytes, digest).await
    }
}

/// The engine configuration. Compiled artifacts are only valid for the configuration that made
/// them; the cache key includes its hash.
pub fn engine_config() -> wasmtime::Config {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // Small virtual reservations: the default reserves 4 GiB of address space per memory,
    // which 32-bit and 39-bit-VA edge boards cannot give. Costs explicit bounds checks.
    c.memory_reservation(16 << 20);
    c.memory_guard_size(64 << 10);
    c.memory_reservation_for_growth(0);
    c.max_wasm_stack(512 << 10);
    c.async_stack_size(1 << 20);
    c
}

/// Calls into plugins under way, process-wide. Epochs only matter while wasm runs, so the
/// ticker sleeps while there are none: an idle agent is not woken a hundred times a second.
static CALLS: AtomicUsize = AtomicUsize::new(0);
static CALL_STARTED: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// A call into a plugin under way, for as long as it lives.
pub(crate) struct Ticking(());

/// Marks a call under way, waking the ticker if it was asleep.
pub(crate) fn ticking() -> Ticking {
    if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        let _lock = CALL_STARTED.0.lock().unwrap_or_else(|e| e.into_inner());
        CALL_STARTED.1.notify_all();
    }
    Ticking(())
}

impl Drop for Ticking {
    fn drop(&mut self) {
        CALLS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Advances the epoch every tick while the engine lives and a call is under way.
fn start_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                if CALLS.load(Ordering::SeqCst) == 0 {
                    drop(engine);
                    let lock = CALL_STARTED.0.lock().unwrap_or_else(|e| e.into_inner());
                    // Checked again under the lock: a call starting now notifies after we wait.
                    // The timeout only lets a dropped engine end its ticker.
                    if CALLS.load(Ordering::SeqCst) == 0 {
                        let _ = CALL_STARTED
                            .1
                            .wait_timeout(lock, std::time::Duration::from_secs(1));
                    }
                    continue;
                }
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
