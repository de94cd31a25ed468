//! Hot-swap benchmarks, on the real fleet, scheduler and runtime (no broker: batches are
//! drained in-process): the latency of swapping the process collector to another version with
//! a cold compile and with a cached artifact, and what swaps do to the schedule of the other
//! collectors (the lateness of three 50 ms collectors with and without swaps going on).
//! Plugins compile as `edgeguard run` compiles them: in children of the release binary.
//!
//! `cargo xtask bench` runs it; `cargo bench -p edgeguard-tests --bench hot_swap` alone needs
//! the plugins and the release binary built first.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::{Limits, RemoteConfig, ScheduleConfig};
use edgeguard::fleet::source::Source;
use edgeguard::fleet::spec::CollectorSpec;
use edgeguard::fleet::{Fleet, Wanted};
use edgeguard::pipeline::Batch;
use edgeguard::pipeline::Routing;
use edgeguard::runtime::{CompileBounds, Compiler, Runtime};
use edgeguard::scheduler::Scheduler;
use edgeguard::units::Span;
use edgeguard_tests::{plugin, with_custom_section};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(50);
const PHASE: Duration = Duration::from_secs(6);

fn spec(
    name: &str,
    file: &Path,
    sha256: Option<String>,
    grants: &[Capability],
    interval: Option<Duration>,
    config: serde_json::Value,
) -> CollectorSpec {
    CollectorSpec {
        name: name.into(),
        source: Source::File(file.to_owned()),
        sha256,
        signature: None,
        group: None,
        interval,
        grants: grants.to_vec(),
        dirs: Vec::new(),
        attests: Vec::new(),
        limits: Limits::default(),
        config,
        enabled: true,
        from_twin: true,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{label:<58} n={:<4} p50 {:>7.2} ms   p90 {:>7.2} ms   max {:>7.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        ms[ms.len() - 1]
    );
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let compiler = Compiler::Child {
        exe: edgeguard_tests::edgeguard_bin(),
        bounds: CompileBounds::DEFAULT,
    };
    let runtime = Runtime::with_compiler(&dir.path().join("cache"), compiler).unwrap();
    let schedule = ScheduleConfig {
        first_collection_jitter: Span(Duration::ZERO),
        ..ScheduleConfig::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(1024);
    let routing = tokio::sync::watch::Sender::new(Arc::new(Routing::default()));
    let scheduler = Scheduler::new(
        HostContext::new(Path::new("/")),
        schedule,
        tx,
        routing.subscribe(),
    );
    let mut fleet = Fleet::new(
        runtime,
        scheduler,
        dir.path().join("state"),
        dir.path().join("roots.pem"),
        false,
    );

    // Collection times of the 50 ms collectors, as their batches arrive.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let recorder = Arc::clone(&arrivals);
    tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            recorder
                .lock()
                .unwrap()
                .entry(batch.plugin.to_string())
                .or_default()
                .push(batch.at);
            if let Some(done) = batch.accepted {
                let _ = done.send(());
            }
        }
    });

    let v1 = std::fs::read(plugin("edgeguard-plugin-process")).unwrap();
    let healthy = plugin("edgeguard-fault-plugin");
    let variant = |n: usize| {
        let bytes = with_custom_section(&v1, "edgeguard-build", format!("build {n}").as_bytes());
        let path = dir.path().join(format!("process-{n}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        (path, edgeguard::runtime::artifact_cache::sha256_hex(&bytes))
    };
    let grants = [Capability::Processes, Capability::Log];
    let ticker_grants = [Capability::Processes, Capability::Log, Capability::Clock];
    let wanted = |process: CollectorSpec| Wanted {
        collectors: std::iter::once(process)
            .chain((0..3).map(|i| {
                spec(
                    &format!("tick-{i}"),
                    &healthy,
                    None,
                    &ticker_grants,
                    Some(TICK),
                    serde_json::json!({"mode": "healthy"}),
                )
            }))
            .collect(),
        remote: RemoteConfig::default(),
    };
    let process_spec = |(path, sha): &(std::path::PathBuf, String)| {
        spec(
            "process",
            path,
            Some(sha.clone()),
            &grants,
            Some(Duration::from_secs(1)),
            serde_json::json!({"report_existing": false}),
        )
    };
    let (a, b) = (variant(0), variant(1));
    for version in [&a, &b, &a] {
        let failures = fleet.apply(&wanted(process_spec(version))).await;
        assert!(failures.is_empty(), "{failures:?}");
    }
    let view = fleet.view();
    let last_swap = || {
        let c = view
            .collectors()
            .into_iter()
            .find(|c| c.name == "process")
            .unwrap();
        let s = c.last_swap.unwrap();
        (
            s.total.as_secs_f64() * 1e3,
            s.switch.as_secs_f64() * 1e3,
            s.cache,
        )
    };

    // Schedule lateness with nothing else going on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    arrivals.lock().unwrap().clear();
    tokio::time::sleep(PHASE).await;
    let quiet = lateness(&arrivals.lock().unwrap());

    // Cached swaps: between two versions compiled before, 10 per second for a phase.
    arrivals.lock().unwrap().clear();
    let (mut warm_total, mut warm_switch) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut flip = false;
    while started.elapsed() < PHASE {
        flip = !flip;
        fleet
            .apply(&wanted(process_spec(if flip { &b } else { &a })))
            .await;
        let (total, switch, cache) = last_swap();
        assert_eq!(cache, edgeguard::runtime::CacheOutcome::Hit);
        warm_total.push(total);
        warm_switch.push(switch);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during_warm = lateness(&arrivals.lock().unwrap());

    // Cold swaps, back to back for a phase: every version is new bytes, so compiled now (and
    // the garbage collector keeps only the most recent few).
    arrivals.lock().unwrap().clear();
    let (mut cold_total, mut cold_switch) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut n = 2;
    while started.elapsed() < PHASE {
        let next = variant(n);
        n += 1;
        fleet.apply(&wanted(process_spec(&next))).await;
        let (total, switch, cache) = last_swap();
        assert_eq!(cache, edgeguard::runtime::CacheOutcome::Miss);
        cold_total.push(total);
        cold_switch.push(switch);
    }
    let during_cold = lateness(&arrivals.lock().unwrap());

    println!(
        "\nhot swap of the process collector ({} bytes), 2-core machine:",
        v1.len()
    );
    summary(
        "swap, cold compile: wanted set to new version in place",
        cold_total,
    );
    summary(
        "swap, cold compile: the actor's switch (start, hand over)",
        cold_switch,
    );
    summary(
        "swap, cached artifact: wanted set to new version in place",
        warm_total,
    );
    summary("swap, cached artifact: the actor's switch", warm_switch);
    println!(
        "\nlateness of three other collectors every {TICK:?} (each gap between two of their collections, minus {TICK:?}):"
    );
    summary("no swaps", quiet);
    summary(
        "during back-to-back cold swaps (compiling all the time)",
        during_cold,
    );
    summary("during cached swaps, 10 per second", during_warm);
}

/// For each 50 ms collector, how much longer than 50 ms each gap between two of its collections was.
fn lateness(arrivals: &HashMap<String, Vec<Instant>>) -> Vec<f64> {
    let mut late = Vec::new();
    for (name, times) in arrivals {
        if !name.starts_with("tick-") {
            continue;
        }
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            late.push((gap.as_secs_f64() - TICK.as_secs_f64()).max(0.0) * 1e3);
        }
    }
    assert!(!late.is_empty(), "no collections recorded");
    late
}
