//! The process collector against the real kernel: a process we spawn is reported created with
//! the right pid, parent, user and command line, and terminated once it exits; from the
//! kernel's process events (the proc connector) by default, by polling the process table where
//! the kernel does not offer them or the configuration says so.

use edgeguard::capabilities::{AuditMode, Capability, HostContext, HostOptions};
use edgeguard::config::Limits;
use edgeguard::sandbox::{LoadedPlugin, PluginInstance};
use edgeguard::wit::edgeguard::collector::types::{Event, ProcessCreate, ProcessTerminate};
use edgeguard_tests::auditd::{self, Auditd};
use edgeguard_tests::{
    builtin_plugins, edgeguard_bin, euid, plugin, run_once_under, runtime, short_lived_processes,
    write_config,
};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

async fn process_collector(rt: &edgeguard::runtime::Runtime) -> PluginInstance {
    process_collector_with(
        rt,
        HostContext::new(Path::new("/")),
        r#"{"report_existing": false}"#,
    )
    .await
}

/// The built-in process collector, loaded with its grants.
async fn process_plugin(rt: &edgeguard::runtime::Runtime) -> LoadedPlugin {
    let grants = [Capability::Processes, Capability::Log];
    LoadedPlugin::load_file(
        rt,
        "process",
        &plugin("edgeguard-plugin-process"),
        &grants,
        &[],
    )
    .await
    .unwrap()
}

async fn process_collector_with(
    rt: &edgeguard::runtime::Runtime,
    host: std::sync::Arc<HostContext>,
    config: &str,
) -> PluginInstance {
    process_plugin(rt)
        .await
        .instantiate(host, &Limits::default(), config)
        .await
        .unwrap()
}

/// The polling collector: the kernel's process events not followed.
const POLLING: &str = r#"{"report_existing": false, "events": false}"#;

async fn collect(instance: &mut PluginInstance) -> Vec<Event> {
    instance
        .collect()
        .await
        .expect("no fault")
        .expect("no plugin error")
}

/// A `sleep` whose command line no other process has.
fn unique_sleeper() -> (Child, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let arg = format!("300.{nanos:09}");
    let child = Command::new("sleep").arg(&arg).spawn().unwrap();
    (child, format!("sleep {arg}"))
}

/// The processes in the process table now, with the program each runs (a child forked but not
/// yet past its exec runs its parent's program: reporting it once it runs another is news).
fn running_programs() -> std::collections::HashMap<u32, std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            Some((pid, std::fs::read_link(format!("/proc/{pid}/exe")).ok()?))
        })
        .collect()
}

fn created(events: &[Event], pid: u32) -> Option<&ProcessCreate> {
    creates(events, pid).next()
}

/// Every ProcessCreate of `pid`: one, unless reported twice.
fn creates(events: &[Event], pid: u32) -> impl Iterator<Item = &ProcessCreate> {
    events.iter().filter_map(move |e| match e {
        Event::ProcessCreate(p) if p.process_id == pid => Some(p),
        _ => None,
    })
}

fn terminated(events: &[Event], pid: u32) -> Option<&ProcessTerminate> {
    events.iter().find_map(|e| match e {
        Event::ProcessTerminate(p) if p.process_id == pid => Some(p),
        _ => None,
    })
}

/// Collects until `found` sees something, at most 100 times 20 ms apart (the kernel takes a
/// moment to turn a killed process into a zombie).
async fn collect_until<T>(
    instance: &mut PluginInstance,
    mut found: impl FnMut(&[Event]) -> Option<T>,
) -> (T, Vec<Event>) {
    for _ in 0..100 {
        let events = collect(instance).await;
        if let Some(t) = found(&events) {
            return (t, events);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the expected event never came");
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_create_then_terminate_with_exit_status() {
    let (rt, _cache) = runtime();
    // Processes the tests beside this one start meanwhile are real news; what was running
    // before the collector started is not.
    let running_before = running_programs();
    let mut collector = process_collector(&rt).await;
    let baseline = collect(&mut collector).await;
    let reported_existing: Vec<u32> = baseline
        .iter()
        .filter_map(|e| match e {
            Event::ProcessCreate(p)
                if running_before
                    .get(&p.process_id)
                    .is_some_and(|exe| exe.as_os_str() == p.executable.as_str()) =>
            {
                Some(p.process_id)
            }
            _ => None,
        })
        .collect();
    assert!(
        reported_existing.is_empty(),
        "report_existing=false: the first collection only records a baseline, yet reported \
         {reported_existing:?}"
    );

    let (mut child, command_line) = unique_sleeper();
    let pid = child.id();
    let (create, _) = collect_until(&mut collector, |events| created(events, pid).cloned()).await;
    assert_eq!(create.command_line, command_line);
    assert_eq!(create.parent_process_id, std::process::id());
    assert_eq!(create.user_id, euid());
    assert!(
        create.executable.ends_with("/sleep"),
        "executable: {}",
        create.executable
    );
    if create.user_id == 0 {
        assert_eq!(create.user_name.as_deref(), Some("root"));
    }

    // Killed but not yet reaped: a zombie still carries its exit status (SIGKILL → 9).
    child.kill().unwrap();
    let (end, events) =
        collect_until(&mut collector, |events| terminated(events, pid).cloned()).await;
    assert_eq!(end.exit_status, Some(9));
    assert!(created(&events, pid).is_none());
    child.wait().unwrap();
    // Reaping it is not a second termination.
    let after = collect(&mut collector).await;
    assert!(terminated(&after, pid).is_none(), "terminated twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_a_process_reaped_between_collections_ends_without_status() {
    let (rt, _cache) = runtime();
    let mut collector =
        process_collector_with(&rt, HostContext::new(Path::new("/")), POLLING).await;
    let (mut child, _) = unique_sleeper();
    let pid = child.id();
    collect(&mut collector).await; // baseline includes the sleeper
    child.kill().unwrap();
    child.wait().unwrap();
    let events = collect(&mut collector).await;
    let end = terminated(&events, pid).expect("termination reported");
    assert_eq!(end.exit_status, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_processes_are_reported_when_asked() {
    let (rt, _cache) = runtime();
    let loaded = process_plugin(&rt).await;
    let mut collector = loaded
        .instantiate(HostContext::new(Path::new("/")), &Limits::default(), "{}")
        .await
        .unwrap();
    let events = collect(&mut collector).await;
    let me = created(&events, std::process::id()).expect("this test process is reported");
    assert!(
        me.extra
            .contains(&("Existing".to_string(), "true".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_plugin_configuration_is_refused_by_name() {
    let (rt, _cache) = runtime();
    let loaded = process_plugin(&rt).await;
    let host = HostContext::new(Path::new("/"));
    let err = loaded
        .instantiate(
            host.clone(),
            &Limits::default(),
            r#"{"report_existing": "yes"}"#,
        )
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("report_existing"), "{err}");
    let err = loaded
        .instantiate(host, &Limits::default(), r#"{"reportExisting": true}"#)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("reportExisting"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_state_is_read_through_the_host_root() {
    // A host root whose /proc is the real one and whose passwd names uid 0 differently: the
    // collector must read both through the root, not through this process's own `/`.
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc", root.path().join("proc")).unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let passwd = format!("hostadmin:x:{}:0::/root:/bin/sh\n", euid());
    std::fs::write(root.path().join("etc/passwd"), passwd).unwrap();

    let (rt, _cache) = runtime();
    let loaded = process_plugin(&rt).await;
    let mut collector = loaded
        .instantiate(HostContext::new(root.path()), &Limits::default(), "{}")
        .await
        .unwrap();
    let events = collect(&mut collector).await;
    let me =
        created(&events, std::process::id()).expect("this process, through the host root's /proc");
    assert_eq!(me.user_name.as_deref(), Some("hostadmin"));

    // A host root without /proc is an error the plugin reports, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let mut blind = loaded
        .instantiate(HostContext::new(empty.path()), &Limits::default(), "{}")
        .await
        .unwrap();
    let error = blind
        .collect()
        .await
        .expect("no fault")
        .expect_err("no /proc under the root");
    assert!(
        edgeguard::sandbox::instance::describe_error(&error).contains("proc"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_it_reports_what_changed_while_it_was_down() {
    let (rt, _cache) = runtime();
    let (mut old_sleeper, _) = unique_sleeper();
    let mut before = process_collector(&rt).await;
    collect(&mut before).await;
    let state = before
        .save_state()
        .await
        .unwrap()
        .expect("the process collector keeps what it knows");
    drop(before);

    // While edgeguard is down: one process ends (and is reaped), another starts.
    old_sleeper.kill().unwrap();
    old_sleeper.wait().unwrap();
    let (mut new_sleeper, new_command) = unique_sleeper();

    // A fresh instance with the default configuration (report_existing on) takes the state over.
    let loaded = process_plugin(&rt).await;
    let mut after = loaded
        .instantiate(HostContext::new(Path::new("/")), &Limits::default(), "{}")
        .await
        .unwrap();
    after.restore_state(&state).await.unwrap().unwrap();
    let events = collect(&mut after).await;
    let created_new =
        created(&events, new_sleeper.id()).expect("the process started while down is reported");
    assert_eq!(created_new.command_line, new_command);
    assert!(
        created_new.extra.iter().all(|(k, _)| k != "Existing"),
        "it is new, not existing"
    );
    let ended = terminated(&events, old_sleeper.id())
        .expect("the process that ended while down is reported");
    assert_eq!(
        ended.exit_status, None,
        "reaped before we looked: its status is gone"
    );
    assert!(
        created(&events, std::process::id()).is_none(),
        "processes known before the restart are not reported again"
    );
    new_sleeper.kill().unwrap();
    new_sleeper.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_kernel_events_the_exit_status_survives_the_reaping() {
    let (rt, _cache) = runtime();
    let mut collector = process_collector(&rt).await;
    collect(&mut collector).await;
    let (mut child, _) = unique_sleeper();
    let pid = child.id();
    collect_until(&mut collector, |events| created(events, pid).cloned()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (end, _) = collect_until(&mut collector, |events| terminated(events, pid).cloned()).await;
    assert_eq!(
        end.exit_status,
        Some(9),
        "the kernel's exit event carries the wait status"
    );
}

fn unique_tag(what: &str) -> String {
    format!(
        "{what}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_short_lived_process_is_caught_from_the_kernel_events_and_polling_misses_them() {
    let (rt, _cache) = runtime();
    let host = HostContext::new(Path::new("/"));
    let mut collector =
        process_collector_with(&rt, host.clone(), r#"{"report_existing": false}"#).await;
    collect(&mut collector).await; // starts following
    let tag = unique_tag("short");
    let pids = short_lived_processes(&tag, 200);
    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(collect(&mut collector).await);
        if pids.iter().all(|&pid| terminated(&events, pid).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut full = 0;
    for (i, &pid) in pids.iter().enumerate() {
        let reported: Vec<&ProcessCreate> = creates(&events, pid).collect();
        assert_eq!(reported.len(), 1, "process {i} (pid {pid}) created once");
        let create = reported[0];
        // Read at the exec, or as much of it as was left (then it says so), and from which
        // sources: the connector always, `/proc` and the audit records as far as they told it.
        let detail = &create.extra.iter().find(|(k, _)| k == "Detail").unwrap().1;
        assert!(detail.starts_with("proc connector"), "{detail}");
        if detail.contains("exited before") {
            assert!(!detail.contains("audit record"), "{detail}");
        } else {
            assert_eq!(create.command_line, format!("/bin/true {tag}-{i}"));
            assert_eq!(create.executable, "/usr/bin/true");
            assert_eq!(create.parent_process_id, std::process::id());
            assert!(
                detail.contains("/proc") || detail.contains("audit record"),
                "{detail}"
            );
            full += 1;
        }
        let ends = events
            .iter()
            .filter(|e| matches!(e, Event::ProcessTerminate(t) if t.process_id == pid))
            .count();
        assert_eq!(ends, 1, "process {i} (pid {pid}) terminated once");
        assert_eq!(terminated(&events, pid).unwrap().exit_status, Some(0));
    }
    assert!(full > 0, "no exec was read in full");
    let feeds = host.feeds("process");
    assert_eq!(feeds.len(), 1);
    // Audit records join in when the kernel sends them (default `follow`); the connector leads.
    assert!(feeds[0].source.starts_with("proc connector"), "{feeds:?}");
    assert_eq!((feeds[0].lost, feeds[0].unavailable.as_deref()), (0, None));
    assert!(
        feeds[0].delivered >= 400,
        "an exec and an exit each: {feeds:?}"
    );
    let detail = |name: &str| feeds[0].details.iter().find(|(k, _)| *k == name).unwrap().1;
    assert!(
        detail("execFull") + detail("execNameOnly") + detail("execPidOnly") >= 200,
        "{feeds:?}"
    );

    // The same between two collections of a polling collector: gone before it looks.
    let host = HostContext::new(Path::new("/"));
    let mut polling = process_collector_with(&rt, host.clone(), POLLING).await;
    collect(&mut polling).await;
    let tag = unique_tag("missed");
    let pids = short_lived_processes(&tag, 50);
    let events = collect(&mut polling).await;
    assert!(
        pids.iter().all(|&pid| created(&events, pid).is_none()),
        "polling cannot see processes that are gone"
    );
    let feeds = host.feeds("process");
    assert_eq!((feeds[0].source, feeds[0].delivered), ("polling", 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_event_buffer_is_counted_and_repaired_from_the_process_table() {
    let (rt, _cache) = runtime();
    let options = HostOptions {
        event_buffer: 16,
        ..HostOptions::new(Path::new("/"))
    };
    let host = HostContext::with_options(Path::new("/"), options);
    let mut collector =
        process_collector_with(&rt, host.clone(), r#"{"report_existing": false}"#).await;
    collect(&mut collector).await;
    // More events than the buffer holds between two collections (nobody collects early here),
    // and a process that lives on through it.
    short_lived_processes(&unique_tag("flood"), 100);
    let (mut survivor, survivor_command) = unique_sleeper();
    short_lived_processes(&unique_tag("flood"), 100);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = collect(&mut collector).await;
    let feeds = host.feeds("process");
    assert!(
        feeds[0].lost >= 400 - 16,
        "200 execs and 200 exits into 16 places: {feeds:?}"
    );
    // The lost events are made up from the process table: the survivor is reported, once.
    let later = collect(&mut collector).await;
    let all: Vec<Event> = events.into_iter().chain(later).collect();
    let reported: Vec<&ProcessCreate> = creates(&all, survivor.id()).collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].command_line, survivor_command);
    survivor.kill().unwrap();
    survivor.wait().unwrap();
}

#[test]
fn without_the_hosts_network_namespace_the_collector_polls_and_says_why() {
    let (dir, out) = run_once_under(&["unshare", "--net"], "process", r#""processes", "log""#);
    assert!(
        out.contains("exists only in the host's network namespace"),
        "{out}"
    );
    assert!(out.contains("polling the process table"), "{out}");
    assert_polled_existing(&dir);
}

#[test]
fn outside_the_hosts_pid_namespace_the_collector_polls_and_says_why() {
    let (dir, out) = run_once_under(
        &["unshare", "--pid", "--fork", "--kill-child"],
        "process",
        r#""processes", "log""#,
    );
    assert!(
        out.contains("process events go only to the host's PID and user namespaces"),
        "{out}"
    );
    assert_polled_existing(&dir);
}

/// Polling worked: the processes running were reported as existing.
fn assert_polled_existing(dir: &tempfile::TempDir) {
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert!(out.contains("\"Existing\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_reports_which_source_its_process_collector_uses() {
    use edgeguard_tests::module::{bed, start_module_under, wait_collecting};
    let bed = bed(serde_json::json!({})).await;
    // In its own PID namespace the kernel ignores it: the status says polling, and why.
    let _module = start_module_under(
        &["unshare", "--pid", "--fork", "--kill-child"],
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        "",
    );
    wait_collecting(&bed.hub).await;
    let reported = bed
        .hub
        .wait_reported(
            Duration::from_secs(20),
            "the process collector polling",
            |r| {
                r["edgeguard"]["collectors"]["process"]["feeds"]["processes"]["source"] == "polling"
            },
        )
        .await;
    let feed = &reported["edgeguard"]["collectors"]["process"]["feeds"]["processes"];
    assert!(
        feed["unavailable"].as_str().unwrap().contains("PID"),
        "{feed}"
    );
    assert_eq!(feed["delivered"], 0);
}

#[test]
fn events_lost_in_the_agent_are_reported_as_a_diagnostic() {
    // A collector that takes one event per collection, behind a 16-event buffer: a burst of
    // processes overflows it however often the collector is woken.
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["process"]);
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        "[schedule]\nhigh = \"200ms\"\nfirst_collection_jitter = \"0s\"\n\
         [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\n\
         [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n[plugin.limits]\nmax_events_per_call = 1\n[plugin.config]\nreport_existing = false\n",
    )
    .to_string_lossy()
    .into_owned();
    // `event_buffer` belongs to the [agent] table that write_config opens.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[agent]\n",
        "[agent]\nevent_buffer = 16\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("out.jsonl");
    let edgeguard = Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    short_lived_processes(&unique_tag("burst"), 100);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lost = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|m| {
                m["Events"]
                    .as_array()?
                    .iter()
                    .filter(|e| e["Name"] == "Diagnostic")
                    .flat_map(|e| e["Payload"].as_array().cloned().unwrap_or_default())
                    .find(|p| p["ExtraDetails"]["LostEvents"].is_string())
            });
        if let Some(p) = found {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Diagnostic about lost events in {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    let output = edgeguard.wait_with_output().unwrap();
    assert!(
        lost["Message"]
            .as_str()
            .unwrap()
            .contains("kernel events lost"),
        "{lost}"
    );
    assert_eq!(lost["ExtraDetails"]["Plugin"], "process");
    assert!(
        lost["ExtraDetails"]["LostEvents"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("kernel events lost"));
}

/// Any local user can start processes whose arguments take a megabyte. Two hundred of them,
/// started by `nobody` within seconds, go through the real process collector at the default
/// configuration (the ASC default hour-long aggregation window) while the agent's memory stays
/// bounded: command lines are cut where the host reads them, kernel event queues and windows
/// are bounded in bytes, and what the cache cannot take is counted.
#[test]
fn a_flood_of_megabyte_command_lines_keeps_the_agent_small() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["process"]);
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        "[[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n[plugin.config]\nreport_existing = false\n",
    );
    let (mut edgeguard, out, log) = edgeguard_tests::run_logged(&config, dir.path());
    // The flood starts after the collector's first collection, its baseline (processes
    // running then are not reported with report_existing = false).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("following the kernel's proc connector")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the collector never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = edgeguard_tests::status_bytes(edgeguard.id(), "VmHWM");
    let tag = unique_tag("flood");
    let mut flood = Vec::new();
    for i in 0..200 {
        // Eight arguments of 120 kB (one may have 128 kB at most): about 1 MB each.
        let args: Vec<String> = (0..8)
            .map(|a| format!("{tag}-{i}-{a}-{}", "A".repeat(120_000)))
            .collect();
        let child = std::os::unix::process::CommandExt::uid(
            Command::new("/bin/sh")
                .args(["-c", "sleep 60; :", &format!("{tag}-{i}")])
                .args(&args),
            65534,
        )
        .spawn()
        .unwrap();
        flood.push(child);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The collector follows the kernel's events and is woken early by a half-full queue; give
    // it time to take them all in, and the pipeline to close windows and send.
    std::thread::sleep(Duration::from_secs(8));
    let peak = edgeguard_tests::status_bytes(edgeguard.id(), "VmHWM");
    for mut child in flood {
        let _ = child.kill();
        let _ = child.wait();
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    let status = edgeguard.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    eprintln!(
        "peak resident memory: {} MiB before the flood, {} MiB over it",
        before >> 20,
        peak >> 20
    );
    // Measured at 36 to 40 MiB (473 MB before command lines, queues and windows were bounded
    // in bytes and the collector stopped keeping each live process's command line).
    assert!(
        peak < 48 << 20,
        "the agent's peak resident memory reached {} MiB (from {} MiB) under the flood",
        peak >> 20,
        before >> 20
    );
    // What reached the messages: the flood's processes, command lines cut where they were read.
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let cut: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|m| m["Events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["Name"] == "ProcessCreate")
        .filter_map(|e| e["Payload"][0]["CommandLine"].as_str().map(str::to_owned))
        .filter(|c| c.contains(&tag))
        .collect();
    assert!(
        !cut.is_empty(),
        "no ProcessCreate of the flood in the messages"
    );
    for c in &cut {
        assert!(c.ends_with(" …"), "not cut: {} bytes", c.len());
        assert!(c.len() <= (16 << 10) + " …".len(), "{} bytes", c.len());
    }
}

/// A process collector on a host of its own reading the audit records as `mode` says, and
/// following the kernel's events from its first collection.
async fn audited_collector(
    rt: &edgeguard::runtime::Runtime,
    mode: AuditMode,
) -> (std::sync::Arc<HostContext>, PluginInstance) {
    let options = HostOptions {
        event_buffer: 16_384,
        audit: mode,
        ..HostOptions::new(Path::new("/"))
    };
    let host = HostContext::with_options(Path::new("/"), options);
    let mut collector =
        process_collector_with(rt, host.clone(), r#"{"report_existing": false}"#).await;
    collect(&mut collector).await; // starts following
    (host, collector)
}

/// Starts `count` short processes with unique arguments and checks that each is reported once,
/// with its whole command line, parent and exit status; what only an audit record knows is
/// there when it told the exec. The arguments' tag, and how many said an audit record told
/// them.
async fn every_short_process_reported_whole(
    collector: &mut PluginInstance,
    what: &str,
    count: usize,
) -> (String, u64) {
    let tag = unique_tag(what);
    let pids = short_lived_processes(&tag, count);
    let mut events = Vec::new();
    for _ in 0..200 {
        events.extend(collect(collector).await);
        if pids.iter().all(|&pid| terminated(&events, pid).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut audited = 0u64;
    for (i, &pid) in pids.iter().enumerate() {
        let reported: Vec<&ProcessCreate> = creates(&events, pid).collect();
        assert_eq!(reported.len(), 1, "process {i} (pid {pid}) created once");
        let create = reported[0];
        assert_eq!(
            (create.command_line.as_str(), create.parent_process_id),
            (format!("/bin/true {tag}-{i}").as_str(), std::process::id()),
            "process {i}: {create:?}"
        );
        let extra = |key: &str| {
            create
                .extra
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let detail = extra("Detail").unwrap_or_default();
        assert!(
            !detail.contains("exited before") && detail.starts_with("proc connector"),
            "process {i} in full: {create:?}"
        );
        if detail.contains("audit record") {
            audited += 1;
            let cwd = std::env::current_dir().unwrap();
            assert_eq!(
                extra("WorkingDirectory"),
                cwd.to_str(),
                "process {i}: {create:?}"
            );
        }
        assert_eq!(terminated(&events, pid).unwrap().exit_status, Some(0));
    }
    (tag, audited)
}

/// The process feed's status, and its audit note.
fn process_feed(host: &HostContext) -> (edgeguard::capabilities::FeedStatus, String) {
    let feed = host.feeds("process").remove(0);
    let note = feed
        .notes
        .iter()
        .find(|(k, _)| *k == "audit")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (feed, note)
}

fn feed_detail(feed: &edgeguard::capabilities::FeedStatus, name: &str) -> u64 {
    feed.details.iter().find(|(k, _)| *k == name).unwrap().1
}

/// Waits up to `secs` seconds for `what` to hold.
async fn eventually(secs: u64, mut what: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    what()
}

/// With the audit source managed, every process is reported with its whole command line,
/// however short it lived: what `/proc` could not show is completed from its audit record.
#[tokio::test(flavor = "multi_thread")]
async fn with_audit_records_every_short_process_has_its_whole_command_line() {
    let _audit = auditd::exclusive();
    let (rt, _cache) = runtime();
    let (host, mut collector) = audited_collector(&rt, AuditMode::Manage).await;
    let count = 2000;
    let (_, audited) = every_short_process_reported_whole(&mut collector, "audited", count).await;
    let (feed, note) = process_feed(&host);
    assert!(
        feed.source.starts_with("proc connector + audit records"),
        "{feed:?}"
    );
    assert_eq!(feed.lost, 0, "{feed:?}");
    assert!(note.starts_with("exec records"), "{note}");
    assert!(feed_detail(&feed, "execFull") >= count as u64, "{feed:?}");
    // Each exec the records completed or told alone says so (others' execs may be among them).
    let from_audit =
        feed_detail(&feed, "execCompletedFromAudit") + feed_detail(&feed, "execAuditOnly");
    assert!(audited <= from_audit, "{audited} said audit, {feed:?}");
    // As the agent does before it exits: the rules, daemon and state given back.
    host.close();
}

/// Beside the auditd an operator runs with the ASC agents' execve rules, edgeguard reads the
/// same records as a reader: both see every one of 2,000 short processes (auditd in its own
/// log), and even managing, edgeguard changes nothing (the operator's rules audit execve).
#[tokio::test(flavor = "multi_thread")]
async fn beside_an_operators_auditd_both_see_every_process() {
    let _audit = auditd::exclusive();
    let mut daemon = Auditd::start();
    auditd::add_operator_rules();
    let (status, rules) = (auditd::Status::now(), auditd::rules());
    let (rt, _cache) = runtime();
    let (host, mut collector) = audited_collector(&rt, AuditMode::Manage).await;
    let count = 2000;
    let (tag, _) = every_short_process_reported_whole(&mut collector, "beside", count).await;
    let (feed, note) = process_feed(&host);
    assert_eq!(feed.source, "proc connector + audit records", "{feed:?}");
    assert_eq!(
        note, "exec records read beside the audit daemon's; the rules in force audit execve",
        "{feed:?}"
    );
    assert_eq!(feed.lost, 0, "{feed:?}");
    assert_eq!(
        (auditd::Status::now(), auditd::rules()),
        (status, rules),
        "the operator's daemon and rules as they were"
    );
    host.close();
    assert_eq!(
        auditd::Status::now().pid,
        daemon.pid(),
        "auditd is the daemon still"
    );
    daemon.stop();
    auditd::delete_operator_rules();
    let log = daemon.log();
    let logged: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.starts_with("type=EXECVE"))
        .filter_map(|l| l.split(&format!(" a1=\"{tag}-")).nth(1)?.split('"').next())
        .collect();
    let missing: Vec<usize> = (0..count)
        .filter(|i| !logged.contains(i.to_string().as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "auditd's log misses {} of the processes, the first {:?} ({} lines)",
        missing.len(),
        &missing[..missing.len().min(5)],
        log.lines().count()
    );
}

/// Standing in as the audit daemon where none ran, edgeguard gives the place to an auditd that
/// starts and reads beside it; when auditd's rules file deletes every rule the operator's
/// rules serve; once auditd has stopped, edgeguard adds its rule again and takes the place
/// back; on exit it leaves the kernel as it found it.
#[tokio::test(flavor = "multi_thread")]
async fn standing_in_edgeguard_gives_auditd_its_place_and_takes_it_back_after_it_stops() {
    let _audit = auditd::exclusive();
    let found = auditd::Status::now();
    assert_eq!(
        found.pid, 0,
        "an audit daemon runs on this machine: stop it for this test"
    );
    let me = std::process::id();
    let ours = format!("key=edgeguard:{me}");
    let (rt, _cache) = runtime();
    let (host, mut collector) = audited_collector(&rt, AuditMode::Manage).await;
    assert_eq!(auditd::Status::now().pid, me, "edgeguard stands in");
    assert_eq!(
        process_feed(&host).0.source,
        "proc connector + audit records (as the audit daemon)"
    );

    // Under another name its exec record does not tell what it is: the kernel refuses it
    // once, tells edgeguard that it asked, and it has the place when started again (as
    // systemd does).
    let mut daemon = Auditd::start_as("opsauditd");
    assert!(daemon.attempts >= 2, "edgeguard held the place until asked");
    assert!(
        eventually(5, || process_feed(&host)
            .1
            .contains("asked for the audit daemon's place"))
        .await,
        "{:?}",
        process_feed(&host)
    );
    // As augenrules does after auditd starts: every rule deleted, the operator's loaded.
    auditd::auditctl(&["-D"]);
    auditd::add_operator_rules();
    assert!(
        eventually(10, || process_feed(&host)
            .1
            .contains("someone deleted edgeguard's audit rules"))
        .await,
        "{:?}",
        process_feed(&host)
    );
    let (feed, note) = process_feed(&host);
    assert_eq!(feed.source, "proc connector + audit records", "{feed:?}");
    assert!(
        note.starts_with(
            "exec records read beside the audit daemon's; the rules in force audit execve"
        ),
        "{note}"
    );
    let (tag, _) = every_short_process_reported_whole(&mut collector, "handed", 500).await;
    assert!(
        !auditd::rules().iter().any(|r| r.contains(&ours)),
        "the operator's rules serve"
    );

    daemon.stop();
    auditd::delete_operator_rules();
    let log = daemon.log();
    assert!(
        log.contains(&format!(" a1=\"{tag}-499\"")),
        "auditd saw them too"
    );
    assert!(
        eventually(20, || auditd::Status::now().pid == me).await,
        "edgeguard took the free place again: {:?}",
        auditd::Status::now()
    );
    assert!(
        auditd::rules().iter().any(|r| r.contains(&ours)),
        "{:?}",
        auditd::rules()
    );
    assert!(
        eventually(5, || process_feed(&host).1.contains("took it again")).await,
        "{:?}",
        process_feed(&host)
    );
    every_short_process_reported_whole(&mut collector, "retaken", 500).await;

    // auditd by its name: edgeguard steps aside when its exec record comes, or when it asks.
    let daemon = Auditd::start();
    assert!(
        daemon.attempts <= 2,
        "auditd registered at attempt {}",
        daemon.attempts
    );
    host.close();
    assert_eq!(
        auditd::Status::now().pid,
        daemon.pid(),
        "auditd keeps its place"
    );
    drop(daemon);
    let after = auditd::Status::now();
    assert_eq!(after.pid, 0, "the place left free");
    assert!(
        !auditd::rules().iter().any(|r| r.contains("edgeguard:")),
        "{:?}",
        auditd::rules()
    );
    assert_eq!(
        (after.backlog_limit, after.backlog_wait_time),
        (found.backlog_limit, found.backlog_wait_time),
        "the backlog as it was"
    );
}

/// Following, edgeguard reads and changes nothing: no rule, no daemon, no setting.
#[tokio::test(flavor = "multi_thread")]
async fn following_the_audit_records_changes_nothing() {
    let _audit = auditd::exclusive();
    let before = (auditd::Status::now(), auditd::rules());
    let (rt, _cache) = runtime();
    let (host, mut collector) = audited_collector(&rt, AuditMode::Follow).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    collect(&mut collector).await;
    assert_eq!(
        (auditd::Status::now(), auditd::rules()),
        before,
        "while it runs"
    );
    let (feed, _) = process_feed(&host);
    assert_eq!(feed.source, "proc connector + audit records", "{feed:?}");
    host.close();
    assert_eq!((auditd::Status::now(), auditd::rules()), before, "after");
}

/// Without `CAP_AUDIT_READ` the audit source is not read: the proc connector goes on alone and
/// the log says why.
#[test]
fn without_cap_audit_read_execs_come_from_the_proc_connector_alone_and_it_says_why() {
    let (dir, log) = run_once_under(
        &[
            "setpriv",
            "--inh-caps=-audit_read",
            "--bounding-set=-audit_read",
            "--",
        ],
        "process",
        r#""processes", "log""#,
    );
    assert!(
        log.contains("audit records unavailable")
            && log.contains("only holders of CAP_AUDIT_READ read audit records"),
        "{log}"
    );
    assert!(
        log.contains("following the kernel's proc connector"),
        "{log}"
    );
    assert_polled_existing(&dir);
}

/// Through a burst of 10,000 short processes the process collector's memory stays within its
/// bound (twice what it settled at; past that it would be renewed) as its status shows, and
/// every process is told once.
#[tokio::test(flavor = "multi_thread")]
async fn through_a_burst_the_collectors_memory_stays_bounded_and_no_process_is_lost() {
    use edgeguard::config::{Group, ScheduleConfig};
    use edgeguard::scheduler::{PluginSpec, Scheduler};
    use std::collections::HashMap;
    use std::sync::Arc;

    let (rt, _cache) = runtime();
    let options = HostOptions {
        event_buffer: 16_384,
        audit: AuditMode::Off,
        ..HostOptions::new(Path::new("/"))
    };
    let host = HostContext::with_options(Path::new("/"), options);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<edgeguard::pipeline::Batch>(4096);
    let routing =
        tokio::sync::watch::Sender::new(Arc::new(edgeguard::pipeline::Routing::default()));
    let schedule = ScheduleConfig {
        high: edgeguard::units::Span(Duration::from_secs(1)),
        first_collection_jitter: edgeguard::units::Span(Duration::ZERO),
        ..ScheduleConfig::default()
    };
    let scheduler = Scheduler::new(host, schedule, tx, routing.subscribe());
    let loaded = process_plugin(&rt).await;
    let actor = scheduler.spawn(
        PluginSpec {
            loaded: Arc::new(loaded),
            group: Group::High,
            interval: None,
            limits: Limits::default(),
            config_json: r#"{"report_existing": false}"#.into(),
            state_file: None,
            attests: Vec::new(),
        },
        false,
    );
    drop(scheduler);
    let status = || actor.status.lock().unwrap().clone();
    assert!(
        eventually(20, || status().collections >= 2).await,
        "{:?}",
        status()
    );
    let settled = status().memory_settled;
    assert!(settled > 0, "{:?}", status());

    let count = 10_000;
    let tag = unique_tag("burst");
    let mut spawned = Some(std::thread::spawn(move || {
        short_lived_processes(&tag, count)
    }));
    // ProcessCreate by pid, as they come.
    let mut told: HashMap<u64, usize> = HashMap::new();
    let mut pids = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            for event in batch.events.iter().filter(|e| e.name == "ProcessCreate") {
                if let Some(pid) = event.payload[0]["ProcessId"].as_u64() {
                    *told.entry(pid).or_default() += 1;
                }
            }
        }
        if let Some(done) = spawned.take_if(|s| s.is_finished()) {
            pids = Some(done.join().unwrap());
        }
        if let Some(pids) = &pids
            && pids.iter().all(|p| told.contains_key(&u64::from(*p)))
        {
            break;
        }
    }
    actor.task.abort();
    let pids = pids.expect("the burst ended");
    let missing = pids
        .iter()
        .filter(|p| !told.contains_key(&u64::from(**p)))
        .count();
    assert_eq!(
        missing,
        0,
        "every process of the burst told: {:?}",
        status()
    );
    assert!(pids.iter().all(|p| told[&u64::from(*p)] == 1), "each once");
    let s = status();
    assert!(
        s.memory_peak < 2 * settled || s.memory_renewals >= 1,
        "peak {} KiB from {} KiB settled, not renewed: {s:?}",
        s.memory_peak >> 10,
        settled >> 10
    );
    assert!(s.memory < 2 * settled.max(s.memory_settled), "{s:?}");
    assert_eq!((s.faults, s.kernel_events_lost), (0, 0), "{s:?}");
}
