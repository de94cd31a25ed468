//! The process collector against the real kernel: a process we spawn is reported created with
//! the right pid, parent, user and command line, and terminated once it exits.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::Limits;
use edgeguard::runtime::bindings::edgeguard::collector::types::{Event, ProcessCreate, ProcessTerminate};
use edgeguard::runtime::{LoadedPlugin, PluginInstance};
use edgeguard_tests::{euid, plugin, runtime};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

async fn process_collector(rt: &edgeguard::runtime::Runtime) -> PluginInstance {
    let grants = [Capability::Processes, Capability::Log];
    let loaded = LoadedPlugin::load_file(rt, "process", &plugin("edgeguard-plugin-process"), &grants, &[]).await.unwrap();
    loaded.instantiate(HostContext::new(Path::new("/")), &Limits::default(), r#"{"report_existing": false}"#).await.unwrap()
}

async fn collect(instance: &mut PluginInstance) -> Vec<Event> {
    instance.collect().await.expect("no fault").expect("no plugin error")
}

/// A `sleep` whose command line no other process has.
fn unique_sleeper() -> (Child, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let arg = format!("300.{nanos:09}");
    let child = Command::new("sleep").arg(&arg).spawn().unwrap();
    (child, format!("sleep {arg}"))
}

fn created<'a>(events: &'a [Event], pid: u32) -> Option<&'a ProcessCreate> {
    events.iter().find_map(|e| match e {
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
async fn collect_until<T>(instance: &mut PluginInstance, mut found: impl FnMut(&[Event]) -> Option<T>) -> (T, Vec<Event>) {
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
    let mut collector = process_collector(&rt).await;
    let baseline = collect(&mut collector).await;
    assert!(baseline.is_empty(), "report_existing=false: the first collection only records a baseline");

    let (mut child, command_line) = unique_sleeper();
    let pid = child.id();
    let (create, _) = collect_until(&mut collector, |events| created(events, pid).cloned()).await;
    assert_eq!(create.command_line, command_line);
    assert_eq!(create.parent_process_id, std::process::id());
    assert_eq!(create.user_id, euid());
    assert!(create.executable.ends_with("/sleep"), "executable: {}", create.executable);
    if create.user_id == 0 {
        assert_eq!(create.user_name.as_deref(), Some("root"));
    }

    // Killed but not yet reaped: a zombie still carries its exit status (SIGKILL → 9).
    child.kill().unwrap();
    let (end, events) = collect_until(&mut collector, |events| terminated(events, pid).cloned()).await;
    assert_eq!(end.exit_status, Some(9));
    assert!(created(&events, pid).is_none());
    child.wait().unwrap();
    // Reaping it is not a second termination.
    let after = collect(&mut collector).await;
    assert!(terminated(&after, pid).is_none(), "terminated twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_reaped_between_collections_ends_without_status() {
    let (rt, _cache) = runtime();
    let mut collector = process_collector(&rt).await;
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
    let grants = [Capability::Processes, Capability::Log];
    let loaded = LoadedPlugin::load_file(&rt, "process", &plugin("edgeguard-plugin-process"), &grants, &[]).await.unwrap();
    let mut collector = loaded.instantiate(HostContext::new(Path::new("/")), &Limits::default(), "{}").await.unwrap();
    let events = collect(&mut collector).await;
    let me = created(&events, std::process::id()).expect("this test process is reported");
    assert!(me.extra.contains(&("Existing".to_string(), "true".to_string())));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_plugin_configuration_is_refused_by_name() {
    let (rt, _cache) = runtime();
    let grants = [Capability::Processes, Capability::Log];
    let loaded = LoadedPlugin::load_file(&rt, "process", &plugin("edgeguard-plugin-process"), &grants, &[]).await.unwrap();
    let host = HostContext::new(Path::new("/"));
    let err = loaded.instantiate(host.clone(), &Limits::default(), r#"{"report_existing": "yes"}"#).await.err().unwrap();
    assert!(err.to_string().contains("report_existing"), "{err}");
    let err = loaded.instantiate(host, &Limits::default(), r#"{"reportExisting": true}"#).await.err().unwrap();
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
    let grants = [Capability::Processes, Capability::Log];
    let loaded = LoadedPlugin::load_file(&rt, "process", &plugin("edgeguard-plugin-process"), &grants, &[]).await.unwrap();
    let mut collector = loaded.instantiate(HostContext::new(root.path()), &Limits::default(), "{}").await.unwrap();
    let events = collect(&mut collector).await;
    let me = created(&events, std::process::id()).expect("this process, through the host root's /proc");
    assert_eq!(me.user_name.as_deref(), Some("hostadmin"));

    // A host root without /proc is an error the plugin reports, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let mut blind = loaded.instantiate(HostContext::new(empty.path()), &Limits::default(), "{}").await.unwrap();
    let error = blind.collect().await.expect("no fault").expect_err("no /proc under the root");
    assert!(edgeguard::runtime::instance::describe_error(&error).contains("proc"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_it_reports_what_changed_while_it_was_down() {
    let (rt, _cache) = runtime();
    let (mut old_sleeper, _) = unique_sleeper();
    let mut before = process_collector(&rt).await;
    collect(&mut before).await;
    let state = before.save_state().await.unwrap().expect("the process collector keeps what it knows");
    drop(before);

    // While edgeguard is down: one process ends (and is reaped), another starts.
    old_sleeper.kill().unwrap();
    old_sleeper.wait().unwrap();
    let (mut new_sleeper, new_command) = unique_sleeper();

    // A fresh instance with the default configuration (report_existing on) takes the state over.
    let grants = [Capability::Processes, Capability::Log];
    let loaded = LoadedPlugin::load_file(&rt, "process", &plugin("edgeguard-plugin-process"), &grants, &[]).await.unwrap();
    let mut after = loaded.instantiate(HostContext::new(Path::new("/")), &Limits::default(), "{}").await.unwrap();
    after.restore_state(&state).await.unwrap().unwrap();
    let events = collect(&mut after).await;
    let created_new = created(&events, new_sleeper.id()).expect("the process started while down is reported");
    assert_eq!(created_new.command_line, new_command);
    assert!(created_new.extra.iter().all(|(k, _)| k != "Existing"), "it is new, not existing");
    let ended = terminated(&events, old_sleeper.id()).expect("the process that ended while down is reported");
    assert_eq!(ended.exit_status, None, "reaped before we looked: its status is gone");
    assert!(created(&events, std::process::id()).is_none(), "processes known before the restart are not reported again");
    new_sleeper.kill().unwrap();
    new_sleeper.wait().unwrap();
}
