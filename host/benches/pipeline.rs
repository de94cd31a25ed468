//! Pipeline costs on one core: events per second through aggregation (ProcessCreate, the goal
//! is at least 1,000,000/s), through serialization, the durable queue, packing and a sink;
//! disk bytes written per event; RSS under a sustained flood.

use criterion::{BatchSize, Criterion, Throughput};
use edgeguard::events::{Category, EventType, SecurityEvent};
use edgeguard::output::{Message, Sending, Sink, acknowledged};
use edgeguard::pipeline::Batch;
use edgeguard::pipeline::asc_config::AgentConfiguration;
use edgeguard::pipeline::{Pipeline, Settings, StateDir};
use serde_json::json;
use std::path::Path;

const AGENT: &str = "9c647395-b913-4997-a732-a7fe7303b649";

/// A sink that takes and acknowledges everything: what is measured is the pipeline.
struct Discard;

impl Sink for Discard {
    fn describe(&self) -> String {
        "discard".into()
    }
    fn send(&mut self, message: Message) -> Sending<'_> {
        std::hint::black_box(message);
        Box::pin(async { Ok(acknowledged()) })
    }
}

/// A realistic ProcessCreate; `distinct` command lines across a batch.
fn batch(n: u32, distinct: u32) -> Vec<SecurityEvent> {
    (0..n)
        .map(|i| {
            SecurityEvent::new(
                "ProcessCreate",
                Category::Triggered,
                EventType::Security,
                vec![json!({
                    "Executable": "/usr/bin/python3.11",
                    "ProcessId": 4000 + i,
                    "ParentProcessId": 1,
                    "UserId": "1000",
                    "UserName": "edge",
                    "CommandLine": format!("/usr/bin/python3 /opt/app/worker.py --queue telemetry --shard {}", i % distinct),
                    "ExtraDetails": {"Name": "python3"},
                })],
            )
        })
        .collect()
}

fn settings(aggregate: bool) -> Settings {
    let asc = json!({
        "aggregationEnabledProcessCreate": {"value": aggregate},
        "maxLocalCacheSizeInBytes": {"value": 64 << 20},
        "maxMessageSizeInBytes": {"value": 262144},
    });
    Settings {
        asc: AgentConfiguration::parse(&asc, &AgentConfiguration::default()).unwrap(),
        ..Settings::default()
    }
}

fn open(dir: &Path, settings: Settings) -> Pipeline {
    Pipeline::open(StateDir::open(dir).unwrap(), settings, AGENT)
        .unwrap()
        .0
}

fn drain(tokio: &tokio::runtime::Runtime, pipeline: Pipeline) -> Pipeline {
    let (_, rx) = tokio::sync::mpsc::channel::<Batch>(1);
    tokio
        .block_on(pipeline.run(rx, &mut Discard, true, std::future::pending()))
        .unwrap()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(std::result::Result::ok)
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                dir_bytes(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

/// Disk bytes per event, and RSS under a flood into the default (2.5 MB) cache.
fn report(tokio: &tokio::runtime::Runtime) {
    let events = 100_000u32;
    let dir = tempfile::tempdir().unwrap();
    let mut p = open(dir.path(), settings(false));
    let before = dir_bytes(dir.path());
    for _ in 0..events / 1000 {
        p.accept(batch(1000, 1000)).unwrap();
    }
    let queued = dir_bytes(dir.path()) - before;
    let one = batch(1, 1)[0].to_bytes().len();
    println!(
        "disk bytes per queued ProcessCreate: {:.0} (event JSON {one} B + 16 B record header)",
        queued as f64 / f64::from(events)
    );
    drop(p);

    let dir = tempfile::tempdir().unwrap();
    let mut p = open(dir.path(), settings(true));
    let before = dir_bytes(dir.path());
    for _ in 0..events / 1000 {
        p.accept(batch(1000, 50)).unwrap();
    }
    println!(
        "disk bytes per aggregated ProcessCreate (journal): {:.2}",
        (dir_bytes(dir.path()) - before) as f64 / f64::from(events)
    );
    drop(p);

    let dir = tempfile::tempdir().unwrap();
    let mut p = open(dir.path(), Settings::default());
    let rss_before = status_kib("VmRSS:");
    let flood = 5_000_000u32;
    let started = std::time::Instant::now();
    let template = batch(5000, 5000);
    for i in 0..flood / 5000 {
        p.accept(template.clone()).unwrap();
        if i % 100 == 99 {
            p = drain(tokio, p);
        }
    }
    println!(
        "sustained flood: {flood} distinct ProcessCreate in {:.1} s into the default cache, drained every 500,000: RSS {} KiB before, {} KiB after, peak {} KiB",
        started.elapsed().as_secs_f64(),
        rss_before,
        status_kib("VmRSS:"),
        status_kib("VmHWM:")
    );
}

fn benches(c: &mut Criterion, tokio: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1000));

    let dir = tempfile::tempdir().unwrap();
    let mut p = open(dir.path(), settings(true));
    let events = batch(1000, 50);
    group.bench_function("aggregate 1000 ProcessCreate (50 distinct)", |b| {
        b.iter_batched(
            || events.clone(),
            |e| p.accept(e).unwrap(),
            BatchSize::SmallInput,
        );
    });
    drop(p);

    let dir = tempfile::tempdir().unwrap();
    let mut p = Some(open(dir.path(), settings(false)));
    let events = batch(1000, 1000);
    group.bench_function(
        "serialize, queue on disk, pack, send, acknowledge 1000 ProcessCreate",
        |b| {
            b.iter_batched(
                || events.clone(),
                |e| {
                    let mut pipeline = p.take().unwrap();
                    pipeline.accept(e).unwrap();
                    p = Some(drain(tokio, pipeline));
                },
                BatchSize::SmallInput,
            );
        },
    );
    group.finish();
}

fn main() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The flood takes a minute or two; EDGEGUARD_BENCH_NO_REPORT=1 leaves it out (profiling).
    if std::env::var_os("EDGEGUARD_BENCH_NO_REPORT").is_none() {
        report(&tokio);
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &tokio);
    c.final_summary();
}
