//! Misbehaving plugins: each fault is caught, classified and reported, the host survives, and a
//! healthy plugin scheduled beside them keeps its pace.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::{Group, ScheduleConfig};
use edgeguard::pipeline::Batch;
use edgeguard::runtime::Runtime;
use edgeguard::sandbox::loader::LoadError;
use edgeguard::sandbox::{Fault, LoadedPlugin};
use edgeguard::scheduler::{PluginSpec, Scheduler};
use edgeguard::units::Span;
use edgeguard_tests::{branchy_body, component_of, plugin, runtime, test_limits};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fault plugin imports `processes` and `log` (and WASI filesystem for its `file` mode, which needs no
/// grant: without `dirs` it reaches nothing).
const FAULT_GRANTS: [Capability; 2] = [Capability::Processes, Capability::Log];

async fn fault_plugin(rt: &Runtime, name: &str) -> LoadedPlugin {
    LoadedPlugin::load_file(
        rt,
        name,
        &plugin("edgeguard-fault-plugin"),
        &FAULT_GRANTS,
        &[],
    )
    .await
    .unwrap()
}

async fn collect_once(loaded: &LoadedPlugin, mode: &str) -> Result<Result<usize, String>, Fault> {
    collect_with(loaded, &format!(r#"{{"mode": "{mode}"}}"#)).await
}

async fn collect_with(loaded: &LoadedPlugin, config: &str) -> Result<Result<usize, String>, Fault> {
    let mut instance = loaded
        .instantiate(HostContext::new(Path::new("/")), &test_limits(), config)
        .await?;
    Ok(instance
        .collect()
        .await?
        .map(|events| events.len())
        .map_err(|e| format!("{e:?}")))
}

/// The high group every `interval`, no first-collection jitter.
fn every(interval: Duration) -> ScheduleConfig {
    ScheduleConfig {
        high: Span(interval),
        first_collection_jitter: Span(Duration::ZERO),
        ..ScheduleConfig::default()
    }
}

/// A scheduler, the batches it sends, and the routing it follows.
type Scheduled = (
    Scheduler,
    tokio::sync::mpsc::Receiver<Batch>,
    tokio::sync::watch::Sender<Arc<edgeguard::pipeline::Routing>>,
);

/// A scheduler on `schedule` over the host's `/`, following the default routing.
fn scheduler_with(schedule: ScheduleConfig) -> Scheduled {
    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(1024);
    let routing =
        tokio::sync::watch::Sender::new(Arc::new(edgeguard::pipeline::Routing::default()));
    let scheduler = Scheduler::new(
        HostContext::new(Path::new("/")),
        schedule,
        tx,
        routing.subscribe(),
    );
    (scheduler, rx, routing)
}

/// [`scheduler_with`] the high group every `interval`.
fn scheduler_every(interval: Duration) -> Scheduled {
    scheduler_with(every(interval))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fault_is_classified() {
    let (rt, _cache) = runtime();
    let loaded = fault_plugin(&rt, "fault").await;

    assert_eq!(collect_once(&loaded, "healthy").await.unwrap(), Ok(1));

    let trap = collect_once(&loaded, "trap").await.unwrap_err();
    assert!(matches!(trap, Fault::Trap(_)), "{trap:?}");

    let started = Instant::now();
    let looped = collect_once(&loaded, "loop").await.unwrap_err();
    assert!(matches!(looped, Fault::Timeout { .. }), "{looped:?}");
    // Interrupted by the epoch deadline (300 ms), not left running. Generous bound: a loaded CI machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "loop ran {:?}",
        started.elapsed()
    );

    // A hundred thousand process snapshots in one call: the host's time is the plugin's, so
    // the call ends at its deadline with the host's share said.
    let started = Instant::now();
    let busy = collect_with(&loaded, r#"{"mode": "host-loop", "count": 100000}"#)
        .await
        .unwrap_err();
    let Fault::Timeout { deadline, host } = busy else {
        panic!("expected a timeout, got {busy:?}");
    };
    assert_eq!(deadline, Duration::from_millis(300));
    // The host's share is large (about half here; less when the machine is loaded), and
    // without counting it the call would have run its 300 ms of wasm on top.
    assert!(host.calls >= 1 && host.time >= deadline / 5, "{busy}");
    assert!(busy.to_string().contains("host calls took"), "{busy}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "host loop ran {:?}",
        started.elapsed()
    );

    // A million empty payload rows: 8 MB in the plugin's memory, 24 MB as the host would hold
    // them, refused before any of it is allocated.
    let rows = collect_with(&loaded, r#"{"mode": "rows", "count": 1000000}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(rows, Fault::Transfer { limit } if limit.0 == 16 << 20),
        "{rows:?}"
    );
    // The same call within the bound goes through.
    assert_eq!(
        collect_with(&loaded, r#"{"mode": "rows", "count": 1000}"#)
            .await
            .unwrap(),
        Ok(1)
    );

    let memory = collect_once(&loaded, "memory").await.unwrap_err();
    match memory {
        Fault::MemoryLimit { limit, asked } => {
            assert_eq!(limit, 32 << 20);
            assert!(asked > limit);
        }
        other => panic!("expected a memory fault, got {other:?}"),
    }

    let flood = collect_once(&loaded, "flood").await.unwrap_err();
    let cap = edgeguard::config::Limits::default().max_events_per_call;
    assert_eq!(cap, 1024, "the default per-call limit");
    assert!(
        matches!(flood, Fault::Flood { cap: c, returned } if c == cap && returned == 1025),
        "{flood:?}"
    );

    // No preopened directory: the plugin's own read fails; the instance and the host are fine.
    let file = collect_once(&loaded, "file").await.unwrap();
    let error = file.unwrap_err();
    assert!(error.contains("/etc/hostname"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_directory_is_readable_and_nothing_else() {
    let (rt, _cache) = runtime();
    let etc = [std::path::PathBuf::from("/etc")];
    let grants = [
        Capability::Processes,
        Capability::Log,
        Capability::Filesystem,
    ];
    let loaded = LoadedPlugin::load_file(
        &rt,
        "fault",
        &plugin("edgeguard-fault-plugin"),
        &grants,
        &etc,
    )
    .await
    .unwrap();
    let mut instance = loaded
        .instantiate(
            HostContext::new(Path::new("/")),
            &test_limits(),
            r#"{"mode":"file"}"#,
        )
        .await
        .unwrap();
    let events = instance.collect().await.unwrap().expect("/etc is granted");
    assert_eq!(events.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ungranted_imports_are_refused_before_instantiation() {
    let (rt, _cache) = runtime();
    let path = plugin("edgeguard-fault-plugin");
    match LoadedPlugin::load_file(&rt, "greedy", &path, &[Capability::Log], &[]).await {
        Err(LoadError::NotGranted {
            import, capability, ..
        }) => {
            assert_eq!(import, "edgeguard:collector/processes@0.1.5");
            assert_eq!(capability, "processes");
        }
        other => panic!("expected NotGranted, got {:?}", other.err()),
    }
    // The process collector is refused without `processes` too.
    let err = LoadedPlugin::load_file(
        &rt,
        "process",
        &plugin("edgeguard-plugin-process"),
        &[Capability::Log],
        &[],
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("edgeguard:collector/processes@0.1.5"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faulty_plugins_never_disturb_a_healthy_one() {
    let (rt, _cache) = runtime();
    let interval = Duration::from_millis(100);
    // Room for every plugin at once: this test is about isolation, not the concurrency bound.
    let (scheduler, mut rx, _routing) = scheduler_with(ScheduleConfig {
        max_concurrent: 8,
        ..every(interval)
    });
    let mut running = Vec::new();
    for mode in [
        "healthy",
        "trap",
        "loop",
        "memory",
        "flood",
        "error",
        "bad-event",
        "host-loop",
        "rows",
    ] {
        let loaded = Arc::new(fault_plugin(&rt, mode).await);
        let spec = PluginSpec {
            loaded,
            group: Group::High,
            interval: Some(interval),
            limits: test_limits(),
            config_json: format!(r#"{{"mode": "{mode}", "count": 1000000}}"#),
            state_file: None,
            attests: Vec::new(),
        };
        running.push(scheduler.spawn(spec, false));
    }
    drop(scheduler);

    let window = Duration::from_secs(3);
    let start = Instant::now();
    let mut healthy_at = Vec::new();
    let mut diagnostics: Vec<(String, serde_json::Value)> = Vec::new();
    while start.elapsed() < window {
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
        else {
            continue;
        };
        if &*batch.plugin == "healthy" {
            healthy_at.push(batch.at);
        }
        for e in batch.events.iter().filter(|e| e.name == "Diagnostic") {
            diagnostics.push((batch.plugin.to_string(), e.payload[0].clone()));
        }
    }
    for r in &running {
        r.task.abort();
    }

    // The healthy plugin collected at its pace the whole time: ~30 collections, no long gap.
    assert!(
        healthy_at.len() >= 20,
        "healthy plugin collected only {} times in {window:?}",
        healthy_at.len()
    );
    let worst_gap = healthy_at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        worst_gap < Duration::from_millis(400),
        "healthy plugin stalled for {worst_gap:?}"
    );

    // Each faulty plugin was reported with its fault kind, and restarted (more than one report).
    for (mode, kind) in [
        ("trap", "trap"),
        ("loop", "timeout"),
        ("memory", "memory"),
        ("flood", "flood"),
        ("host-loop", "timeout"),
        ("rows", "transfer"),
    ] {
        let reports: Vec<_> = diagnostics
            .iter()
            .filter(|(p, _)| p == mode)
            .map(|(_, d)| d)
            .collect();
        assert!(
            reports.len() >= 2,
            "{mode}: {} fault reports, expected restarts",
            reports.len()
        );
        for d in &reports {
            assert_eq!(d["Severity"], "Error");
            assert_eq!(d["ExtraDetails"]["Fault"], kind, "{d}");
        }
        let status = running
            .iter()
            .find(|r| &*r.name == mode)
            .unwrap()
            .status
            .lock()
            .unwrap()
            .clone();
        assert!(
            status.faults >= 2 && status.collections == 0,
            "{mode}: {status:?}"
        );
    }
    // A plugin error and an invalid event are warnings; the instance lives on.
    let error_status = running
        .iter()
        .find(|r| &*r.name == "error")
        .unwrap()
        .status
        .lock()
        .unwrap()
        .clone();
    assert!(
        error_status.errors >= 10 && error_status.faults == 0,
        "{error_status:?}"
    );
    assert!(diagnostics.iter().any(|(p, d)| p == "bad-event"
        && d["Severity"] == "Warning"
        && d["Message"].as_str().unwrap().contains("Broken")));
}

/// `<dir>/edgeguard.toml` with `rest` (its `[[plugin]]` tables), over a plugin directory that
/// holds the fault plugin as `fault.wasm`.
fn fault_config(dir: &Path, rest: &str) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("edgeguard-fault-plugin"), plugins.join("fault.wasm")).unwrap();
    edgeguard_tests::write_config(dir, "edgeguard.toml", &plugins, rest)
}

/// A plugin's log lines are its own: each stays one line of the host's log, escaped, with the
/// plugin named; past the per-call cap the rest are counted and the count is logged.
#[test]
fn a_plugin_cannot_forge_host_log_lines_and_its_dropped_lines_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = fault_config(
        dir.path(),
        "[[plugin]]\nname = \"chatty\"\nfile = \"fault.wasm\"\ngrants = [\"processes\", \"log\"]\n\
         config = { mode = \"log-flood\", count = 300 }\n",
    );
    let output = std::process::Command::new(edgeguard_tests::edgeguard_bin())
        .args(["run", "--once", "--log", "info", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(dir.path().join("out.jsonl"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    let plugin_lines: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("forged by the plugin"))
        .collect();
    assert_eq!(plugin_lines.len(), 200, "the per-call cap:\n{log}");
    for line in &plugin_lines {
        assert!(
            line.contains("plugin=\"chatty\"") || line.contains("plugin=chatty"),
            "{line}"
        );
        assert!(
            line.contains(
                "\\n2026-12-01T00:00:00.000000Z ERROR edgeguard: forged by the plugin\\r\\u{1b}[2J"
            ),
            "escaped: {line}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")),
        "a forged line stands alone in the host's log:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("chatty") && l.contains("100 log lines of the plugin dropped")),
        "{log}"
    );
}

/// What one call hands over is bounded as the host would hold it, before it is allocated:
/// a million empty payload rows (8 MB in the plugin's memory, 24 MB in the host's) make a
/// transfer fault named for the plugin at every try, the collector beside it
/// keeps its schedule, and the real binary stays within its bound: its own footprint (about 16
/// MiB) and the plugin's linear memory (the rows take 20 MB there), nothing of the rows in the
/// host's (without the bound: 84 MiB at once, and held).
#[test]
fn a_call_that_hands_over_too_much_is_refused_before_the_host_holds_it() {
    const BOUND: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let config = fault_config(
        dir.path(),
        "[schedule]\nhigh = \"200ms\"\nfirst_collection_jitter = \"0s\"\n\
         [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\n\
         [[plugin]]\nname = \"rows\"\nfile = \"fault.wasm\"\ngrants = [\"processes\", \"log\"]\n\
         config = { mode = \"rows\", count = 1000000 }\nlimits = { restart_backoff = \"100ms\", restart_backoff_max = \"200ms\" }\n\
         [[plugin]]\nname = \"beat\"\nfile = \"fault.wasm\"\ngrants = [\"processes\", \"log\"]\n",
    );
    let (mut edgeguard, out, log) = edgeguard_tests::run_logged(&config, dir.path());
    let refusals = |text: &str| {
        text.lines()
            .filter(|l| l.contains("rows") && l.contains("in one call (limits.max_transfer)"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while refusals(&std::fs::read_to_string(&log).unwrap_or_default()) < 5 {
        assert!(
            Instant::now() < deadline,
            "no transfer faults:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let peak = edgeguard_tests::status_bytes(edgeguard.id(), "VmHWM");
    // Heartbeats of `beat` (`rows` never gets to emit one) kept coming while `rows` faulted.
    let beats_before = heartbeats(&out);
    std::thread::sleep(Duration::from_secs(2));
    let beats = heartbeats(&out);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    edgeguard.wait().unwrap();
    assert!(
        peak < BOUND,
        "peak RSS {} MiB, bound {} MiB",
        peak >> 20,
        BOUND >> 20
    );
    assert!(beats > beats_before, "beat stalled at {beats} heartbeats");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("handed the host more than its limit of 16MiB in one call"),
        "the fault is reported in a Diagnostic"
    );
    assert!(!text.contains("\"Sequence\""), "nothing of the rows passed");
}

/// Heartbeat events in the messages of `out`.
fn heartbeats(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|m| m["Events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["Name"] == "Heartbeat")
        .count()
}

/// A saved state the plugin traps on is given up after the second fault in a row, with an Error
/// diagnostic naming the plugin, and the plugin then runs afresh; a state over `max_state` is
/// neither written nor handed over, said once however often it comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_that_crash_loops_is_discarded_and_one_over_its_limit_is_not_kept() {
    let (rt, _cache) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(100);
    let (scheduler, mut rx, _routing) = scheduler_every(interval);
    let poisoned_file = dir.path().join("poisoned.state");
    std::fs::write(&poisoned_file, b"poison").unwrap();
    let big_file = dir.path().join("big.state");
    let spec = |loaded: LoadedPlugin, config: &str, file: &Path, max_state: u64| PluginSpec {
        loaded: Arc::new(loaded),
        group: Group::High,
        interval: Some(interval),
        limits: edgeguard::config::Limits {
            max_state: edgeguard::units::Bytes(max_state),
            ..test_limits()
        },
        config_json: config.to_owned(),
        state_file: Some(file.to_owned()),
        attests: Vec::new(),
    };
    let poisoned = scheduler.spawn(
        spec(
            fault_plugin(&rt, "poisoned").await,
            r#"{"mode":"state-trap"}"#,
            &poisoned_file,
            1 << 20,
        ),
        false,
    );
    let big = scheduler.spawn(
        spec(
            fault_plugin(&rt, "big").await,
            r#"{"mode":"big-state","count":100000}"#,
            &big_file,
            4096,
        ),
        false,
    );
    drop(scheduler);
    let mut diagnostics: Vec<(String, String)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
        else {
            continue;
        };
        for e in batch.events.iter().filter(|e| e.name == "Diagnostic") {
            diagnostics.push((
                batch.plugin.to_string(),
                e.payload[0]["Message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    poisoned.task.abort();
    big.task.abort();
    let said = |plugin: &str, needle: &str| {
        diagnostics
            .iter()
            .filter(|(p, m)| p == plugin && m.contains(needle))
            .count()
    };

    let status = poisoned.status.lock().unwrap().clone();
    assert_eq!(
        said("poisoned", "2 times in a row; the state is discarded"),
        1,
        "{diagnostics:#?}"
    );
    assert_eq!(
        status.faults, 2,
        "two faults, then the state was given up: {status:?}"
    );
    assert!(status.collections >= 5, "it runs afresh: {status:?}");

    let status = big.status.lock().unwrap().clone();
    assert!(
        status.collections >= 5 && status.states_refused >= 5,
        "{status:?}"
    );
    assert_eq!(
        said("big", "over its limit of 4KiB (limits.max_state)"),
        1,
        "said once: {diagnostics:#?}"
    );
    assert!(!big_file.exists(), "a state over the limit is not written");
}

/// A component around one core module with `memories` memories of one page and one function
/// of `body` bytes (nops): never instantiated, only offered to the loader.
fn component(memories: usize, body: usize) -> Vec<u8> {
    let mut nops = vec![0; 1];
    nops.resize(body - 1, 0x01);
    nops.push(0x0b);
    component_of(memories, &[nops])
}

/// The memory limit holds for all of a plugin's memories together, and what the host would not
/// run (sixteen memories to multiply the limit by; a function whose compile would take seconds
/// to minutes) is refused from the bytes, before any compile, with the number that was wrong.
#[tokio::test(flavor = "multi_thread")]
async fn components_the_host_would_not_run_are_refused_before_compiling() {
    let (rt, _cache) = runtime();
    let load = |bytes: Vec<u8>| LoadedPlugin::load(&rt, "greedy", bytes, &FAULT_GRANTS, &[]);
    let err = load(component(16, 10)).await.err().expect("refused");
    assert!(
        matches!(&err, LoadError::Invalid { plugin, .. } if plugin == "greedy"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("defines 16 linear memories"),
        "{err}"
    );
    let huge = 4 << 20;
    let err = load(component(1, huge)).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains(&format!("has a function of {huge} bytes")),
        "{err}"
    );
    // Under the bounds, the same component gets as far as the compiler and the contract.
    let err = load(component(1, 100))
        .await
        .err()
        .expect("not a collector");
    assert!(matches!(err, LoadError::NotACollector { .. }), "{err:?}");
}

/// An event larger than a message can carry is refused where it enters, before it takes any
/// memory or disk in a window or a queue: counted in the plugin's status and said in a
/// Diagnostic naming the plugin; its other events go on.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_larger_than_a_message_is_refused_at_the_door_naming_its_plugin() {
    let (rt, _cache) = runtime();
    let interval = Duration::from_millis(100);
    let (scheduler, mut rx, routing) = scheduler_every(interval);
    let max = routing.borrow().max_event_bytes();
    let huge = scheduler.spawn(
        PluginSpec {
            loaded: Arc::new(fault_plugin(&rt, "huge").await),
            group: Group::High,
            interval: Some(interval),
            limits: test_limits(),
            config_json: format!(r#"{{"mode":"huge-event","count":{}}}"#, max + 1),
            state_file: None,
            attests: Vec::new(),
        },
        false,
    );
    drop(scheduler);
    let (mut names, mut diagnostic) = (Vec::new(), None);
    while names.iter().filter(|n| *n == "Heartbeat").count() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("collections go on")
            .unwrap();
        assert_eq!(&*batch.plugin, "huge");
        for e in batch.events {
            if e.name == "Diagnostic" {
                diagnostic.get_or_insert(e.payload[0].clone());
            }
            names.push(e.name);
        }
    }
    huge.task.abort();
    assert!(!names.contains(&"Sequence".to_owned()), "{names:?}");
    let d = diagnostic.expect("a Diagnostic");
    assert!(
        d["Message"]
            .as_str()
            .unwrap()
            .contains("plugin `huge` emitted 1 events larger than a message can carry"),
        "{d}"
    );
    assert_eq!(d["ExtraDetails"]["Plugin"], "huge");
    assert_eq!(d["ExtraDetails"]["DroppedEvents"], "1");
    let largest: usize = d["ExtraDetails"]["LargestEventBytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(largest > max, "{largest}");
    assert!(huge.status.lock().unwrap().events_refused >= 3);
}

/// Anyone who can write in a granted directory can put a FIFO there. Opening it with a plain
/// open would wait for a writer, on a thread no deadline can stop: one lost thread per call.
/// The host opens without blocking and refuses what is not a file or a directory, so each
/// call returns the plugin's error well within its deadline (a blocked open would end it as a
/// timeout fault), and the instance lives on.
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_a_granted_directory_never_pins_a_thread() {
    let (rt, _cache) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o666) }, 0);
    let grants = [
        Capability::Processes,
        Capability::Log,
        Capability::Filesystem,
    ];
    let dirs = [dir.path().to_owned()];
    let loaded = LoadedPlugin::load_file(
        &rt,
        "fifo",
        &plugin("edgeguard-fault-plugin"),
        &grants,
        &dirs,
    )
    .await
    .unwrap();
    let config = format!(r#"{{"mode":"file","path":"{}"}}"#, fifo.display());
    let mut instance = loaded
        .instantiate(HostContext::new(Path::new("/")), &test_limits(), &config)
        .await
        .unwrap();
    for _ in 0..50 {
        let error = instance
            .collect()
            .await
            .expect("no fault: the call returned")
            .expect_err("the FIFO is refused");
        assert!(error_text(&error).contains("cannot read"), "{error:?}");
    }
    // A regular file beside it reads as before.
    std::fs::write(dir.path().join("plain"), "content").unwrap();
    let config = format!(
        r#"{{"mode":"file","path":"{}"}}"#,
        dir.path().join("plain").display()
    );
    let mut instance = loaded
        .instantiate(HostContext::new(Path::new("/")), &test_limits(), &config)
        .await
        .unwrap();
    assert_eq!(instance.collect().await.unwrap().unwrap().len(), 1);
}

fn error_text(e: &edgeguard::wit::edgeguard::collector::types::CollectError) -> String {
    edgeguard::sandbox::instance::describe_error(e)
}

/// A plugin granted `processes` and `log` tries to forge evidence: a root login from sshd (it
/// has no `logins`), the host's diagnostics and statistics, custom events named as typed kinds
/// and a kind it never declared. All of it is refused and said in one Diagnostic naming the
/// plugin; what it may emit passes, marked with its origin (a name it tried to forge there is
/// replaced).
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_forge_evidence_and_every_event_names_its_origin() {
    let (rt, _cache) = runtime();
    let loaded = Arc::new(fault_plugin(&rt, "forger").await);
    let (batch, status) = first_forged_batch(Arc::clone(&loaded), Vec::new()).await;
    let names: Vec<&str> = batch.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["ProcessCreate", "Heartbeat", "Diagnostic"],
        "{names:?}"
    );
    let process = &batch.events[0].payload[0]["ExtraDetails"];
    assert_eq!(process["Plugin"], "forger", "the forged origin is replaced");
    assert_eq!(process["PluginVersion"], "0.1.0");
    assert_eq!(process["PluginDigest"], loaded.sha256[..16]);
    let d = &batch.events[2].payload[0];
    assert_eq!(d["ExtraDetails"]["Plugin"], "forger");
    assert_eq!(d["ExtraDetails"]["RefusedEvents"], "8");
    let message = d["Message"].as_str().unwrap();
    for reason in [
        "Login needs the `logins` capability",
        "Diagnostic events come only from the host",
        "MessageStatistics events come only from the host",
        "a custom event may not be named ProcessCreate",
    ] {
        assert!(message.contains(reason), "{reason}: {message}");
    }
    assert_eq!(status.events_refused, 8);
}

/// The first collection of `loaded` in `forge` mode, configured to attest `attests`, and its
/// status right after.
async fn first_forged_batch(
    loaded: Arc<LoadedPlugin>,
    attests: Vec<String>,
) -> (Batch, edgeguard::scheduler::PluginStatus) {
    let interval = Duration::from_millis(100);
    let (scheduler, mut rx, _routing) = scheduler_every(interval);
    let forger = scheduler.spawn(
        PluginSpec {
            loaded,
            group: Group::High,
            interval: Some(interval),
            limits: test_limits(),
            config_json: r#"{"mode":"forge"}"#.into(),
            state_file: None,
            attests,
        },
        false,
    );
    drop(scheduler);
    let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a collection")
        .unwrap();
    forger.task.abort();
    let status = forger.status.lock().unwrap().clone();
    (batch, status)
}

/// A custom collector may be configured to attest a typed kind it observes some other way:
/// configured to attest `Login`, the same plugin's login passes, marked with its origin, and
/// everything else it forged is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_configured_to_attest_a_kind_may_emit_it_and_nothing_more() {
    let (rt, _cache) = runtime();
    let loaded = Arc::new(fault_plugin(&rt, "auth").await);
    let (batch, status) = first_forged_batch(loaded, vec!["Login".into()]).await;
    let names: Vec<&str> = batch.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["Login", "ProcessCreate", "Heartbeat", "Diagnostic"],
        "{names:?}"
    );
    let login = &batch.events[0].payload[0];
    assert_eq!(login["UserName"], "root");
    assert_eq!(login["ExtraDetails"]["Plugin"], "auth");
    let d = &batch.events[3].payload[0];
    assert_eq!(d["ExtraDetails"]["RefusedEvents"], "7");
    assert!(!d["Message"].as_str().unwrap().contains("Login"), "{d}");
    assert_eq!(status.events_refused, 7);
}

/// A compile bomb within every bound (eight functions of 240 kB of branchy code: ten seconds
/// of compile) beside the process collector: the collector starts and reports at once, before
/// the bomb's compile is over, and the bomb is then refused by name.
#[test]
fn a_slow_compile_never_delays_the_other_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let config = compile_bomb_beside_the_process_collector(dir.path(), "");
    let (mut edgeguard, out, log) = edgeguard_tests::run_logged(&config, dir.path());
    let refused = |text: &str| text.contains("bomb") && text.contains("not an edgeguard collector");
    // A marker process every half second from the collector's start: the first ones may fall
    // before its baseline (existing processes are not reported).
    let marker = format!("marker-{}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sleepers = Vec::new();
    let mut last_spawn: Option<Instant> = None;
    let seen_at = loop {
        let started = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("collector started");
        if started && last_spawn.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
            let tag = format!("{marker}-{}", sleepers.len());
            sleepers.push(
                std::process::Command::new("sh")
                    .args(["-c", "sleep 30; :", &tag])
                    .spawn()
                    .unwrap(),
            );
            last_spawn = Some(Instant::now());
        }
        if std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(&marker)
        {
            break std::fs::read_to_string(&log).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no ProcessCreate of a marker; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !refused(&seen_at),
        "the bomb was over before the collector beside it reported: not a test of anything\n{seen_at}"
    );
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if refused(&text) {
            break text;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "the bomb was never refused:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for mut s in sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    edgeguard.wait().unwrap();
    assert!(text.contains("process"), "{text}");
}

/// A configuration of the process collector (reporting new processes only, every 200 ms) and
/// a compile bomb within every bound of shape: eight functions of 240 kB of branchy code, ten
/// seconds and a few hundred MiB of compile. `agent`: keys for `[agent]`.
fn compile_bomb_beside_the_process_collector(dir: &Path, agent: &str) -> std::path::PathBuf {
    let plugins = edgeguard_tests::builtin_plugins(dir, &["process"]);
    let bodies: Vec<Vec<u8>> = (0..8).map(|_| branchy_body(240_000)).collect();
    std::fs::write(plugins.join("bomb.wasm"), component_of(1, &bodies)).unwrap();
    edgeguard_tests::write_config_with_agent(
        dir,
        "edgeguard.toml",
        &plugins,
        agent,
        "[schedule]\nhigh = \"200ms\"\nfirst_collection_jitter = \"0s\"\n\
         [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\n\
         aggregationEnabledProcessCreate = false\n\
         [[plugin]]\nname = \"bomb\"\nfile = \"bomb.wasm\"\ngrants = [\"log\"]\n\
         [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
         [plugin.config]\nreport_existing = false\n",
    )
}

/// Waits up to two seconds for `pid` to have no child left.
fn assert_no_child_left(pid: u32, what: &str) {
    let children = || edgeguard_tests::children_of(pid);
    assert!(
        edgeguard_tests::poll_until(Duration::from_secs(2), || children().is_empty()),
        "{what}: the compiler process {:?} is still there",
        children()
    );
}

/// The same bomb under `agent.compile_memory` and under `agent.compile_time`: its compiler
/// process is killed at the bound and the bomb refused by name, saying which bound; the
/// compile's memory was never edgeguard's (it held 264 MiB when plugins compiled in-process),
/// and the collector beside it started.
#[test]
fn a_compile_past_its_bounds_is_killed_and_costs_edgeguard_nothing() {
    for (agent, refusal) in [
        (
            "compile_memory = \"64MiB\"",
            "plugin `bomb`: compiling needed more than 64MiB of memory: refused",
        ),
        (
            "compile_time = \"2s\"",
            "plugin `bomb`: compiling took longer than 2s: refused",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = compile_bomb_beside_the_process_collector(dir.path(), agent);
        let (mut edgeguard, _out, log) = edgeguard_tests::run_logged(&config, dir.path());
        let pid = edgeguard.id();
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut compiling = false;
        let refused = edgeguard_tests::poll_until(Duration::from_secs(60), || {
            compiling |= !edgeguard_tests::children_of(pid).is_empty();
            text().contains(refusal)
        });
        assert!(refused, "{agent}: no `{refusal}`:\n{}", text());
        assert!(compiling, "{agent}: no compiler process was ever seen");
        assert_no_child_left(pid, agent);
        let temporary: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .map(|e| e.file_name())
            .collect();
        assert!(temporary.is_empty(), "{agent}: left behind: {temporary:?}");
        let started = "collector started collector=process";
        assert!(
            edgeguard_tests::poll_until(Duration::from_secs(30), || text().contains(started)),
            "{agent}: no `{started}`:\n{}",
            text()
        );
        let peak = edgeguard_tests::status_bytes(pid, "VmHWM");
        assert!(
            peak < 48 << 20,
            "{agent}: edgeguard peaked at {} MiB\n{}",
            peak >> 20,
            text()
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        edgeguard.wait().unwrap();
    }
}

/// A compiler process never outlives edgeguard, even killed with SIGKILL mid-compile.
#[test]
fn a_compile_dies_with_edgeguard() {
    let dir = tempfile::tempdir().unwrap();
    let config = compile_bomb_beside_the_process_collector(dir.path(), "");
    let (mut edgeguard, _out, log) = edgeguard_tests::run_logged(&config, dir.path());
    let pid = edgeguard.id();
    let mut compilers = Vec::new();
    assert!(
        edgeguard_tests::poll_until(Duration::from_secs(30), || {
            compilers = edgeguard_tests::children_of(pid);
            !compilers.is_empty()
        }),
        "no compiler process:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    edgeguard.kill().unwrap();
    edgeguard.wait().unwrap();
    // Orphans are re-parented (to init or a subreaper), so look for the pids themselves.
    let running = || -> Vec<u32> {
        let running = compilers.iter().copied();
        running
            .filter(|&c| edgeguard_tests::is_running(c))
            .collect()
    };
    assert!(
        edgeguard_tests::poll_until(Duration::from_secs(2), || running().is_empty()),
        "compilers {:?} outlived edgeguard",
        running()
    );
}

/// A burst grows a plugin's memory for good (wasm never shrinks it): after the collection the
/// scheduler renews the instance, a fresh one taking its state as a planned swap does; the
/// status shows the memory back where it settled, and the plugin's numbered events go on
/// without a gap or a repeat.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_grown_by_a_burst_is_renewed_with_its_state_and_loses_nothing() {
    let (rt, _cache) = runtime();
    let loaded = Arc::new(fault_plugin(&rt, "balloon").await);
    let interval = Duration::from_millis(100);
    let (scheduler, mut rx, _routing) = scheduler_every(interval);
    let actor = scheduler.spawn(
        PluginSpec {
            loaded,
            group: Group::High,
            interval: Some(interval),
            limits: test_limits(),
            config_json: r#"{"mode": "balloon", "count": 8}"#.into(),
            state_file: None,
            attests: Vec::new(),
        },
        false,
    );
    drop(scheduler);
    let status = || actor.status.lock().unwrap().clone();
    let mut numbers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !(status().memory_renewals >= 1 && numbers.len() >= 20) {
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            numbers.extend(
                batch
                    .events
                    .iter()
                    .filter(|e| e.name == "Sequence")
                    .filter_map(|e| e.payload[0]["N"].as_u64()),
            );
        }
    }
    actor.task.abort();
    let s = status();
    assert_eq!(s.memory_renewals, 1, "{s:?}");
    assert!(
        s.memory_peak >= 8 << 20,
        "the burst grew it to {} KiB",
        s.memory_peak >> 10
    );
    assert!(
        s.memory < 4 << 20 && s.memory < 2 * s.memory_settled,
        "back where it settled: {} KiB, settled {} KiB",
        s.memory >> 10,
        s.memory_settled >> 10
    );
    let expected: Vec<u64> = (0..numbers.len() as u64).collect();
    assert_eq!(
        numbers, expected,
        "no event lost or repeated across the renewal"
    );
    assert_eq!(s.faults, 0, "{s:?}");
}
