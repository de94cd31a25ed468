//! Hot-swap of collectors while running, end to end: the real module against the Edge Hub test
//! bed, plugin versions published on a loopback HTTP server or put in the plugin directory,
//! signed with keys made here. The process collector is swapped under a process-spawning load
//! and every process is counted; each kind of bad version is refused with its own reason while
//! the running one goes on; collectors are removed, re-added, disabled; and the same works from
//! the local file without Edge.

use edgeguard::fleet::trust::signing;
use edgeguard_tests::edgehub::{HubSimulator, Telemetry, TestCa};
use edgeguard_tests::http::FileServer;
use edgeguard_tests::module::{
    Module, bed, events, marker_process, process_creates_with, start_module, wait_collecting,
};
use edgeguard_tests::{edgeguard_bin, plugin, with_custom_section, with_wit_version, write_config};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sha256(bytes: &[u8]) -> String {
    edgeguard::runtime::artifact_cache::sha256_hex(bytes)
}

/// The release key the devices trust, and another one they do not.
struct Keys {
    release: ed25519_dalek::SigningKey,
    vendor: ed25519_dalek::SigningKey,
}

impl Keys {
    fn new() -> Keys {
        let key =
            || signing::key_from_text(&signing::encode(&signing::new_seed().unwrap())).unwrap();
        Keys {
            release: key(),
            vendor: key(),
        }
    }

    /// The local configuration's `[remote]` section: only the release key.
    fn remote_section(&self) -> String {
        format!(
            "[remote]\nsigning_keys = {{ release = \"{}\" }}\n",
            signing::encode(self.release.verifying_key().as_bytes())
        )
    }
}

fn signature(key: &ed25519_dalek::SigningKey, name: &str, bytes: &[u8]) -> Value {
    json!({ "key": name, "ed25519": signing::sign(key, bytes) })
}

/// The process collector as built (v1), and v2: the same collector rebuilt with other build
/// metadata, so other bytes and another digest.
fn process_versions() -> (Vec<u8>, Vec<u8>) {
    let v1 = std::fs::read(plugin("edgeguard-plugin-process")).unwrap();
    let v2 = with_custom_section(&v1, "edgeguard-build", b"process collector, build 2");
    (v1, v2)
}

fn process_entry(reported: &Value) -> &Value {
    &reported["edgeguard"]["collectors"]["process"]
}

/// A twin entry for the process collector that sets every field the tests vary (null: unset).
fn entry(source: Value, sha: Value, signature: Value, grants: Value) -> Value {
    json!({ "edgeguard": { "collectors": { "process": { "source": source, "sha256": sha, "signature": signature, "grants": grants } } } })
}

/// Processes that live `life` each, started one every `every`: their pids and markers.
struct Load {
    children: Vec<(Child, String)>,
}

impl Load {
    fn spawn_one(&mut self, tag: &str, life: &str) {
        let marker = format!(
            "eg-swap-{}-{tag}-{}.",
            std::process::id(),
            self.children.len()
        );
        let child = Command::new("/bin/sh")
            .args(["-c", &format!("sleep {life}; true"), &marker])
            .spawn()
            .unwrap();
        self.children.push((child, marker));
    }

    fn reap(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn terminates_of(messages: &[Telemetry], pid: u32) -> usize {
    events(messages)
        .iter()
        .filter(|e| e["Name"] == "ProcessTerminate" && e["Payload"][0]["ProcessId"] == pid)
        .count()
}

async fn wait_error(hub: &HubSimulator, step: &str, needle: &str) -> Value {
    hub.wait_reported(
        Duration::from_secs(30),
        &format!("a refusal at {step} naming `{needle}`"),
        |r| {
            let e = &process_entry(r)["lastError"];
            e["step"] == step && e["message"].as_str().is_some_and(|m| m.contains(needle))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_collector_is_swapped_under_load_without_losing_or_repeating_an_event() {
    let keys = Keys::new();
    let bed = bed(json!({})).await;
    let server = FileServer::start().await;
    let (v1, v2) = process_versions();
    server.put("process-2.wasm", v2.clone());
    let module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        &keys.remote_section(),
    );
    wait_collecting(&bed.hub).await;
    let before = bed.hub.reported();
    assert_eq!(process_entry(&before)["sha256"], sha256(&v1));
    assert_eq!(process_entry(&before)["from"], "local");

    // A process every 40 ms, each alive 2 s, for 4 s; the swap is asked for 1.5 s in.
    let mut load = Load {
        children: Vec::new(),
    };
    let started = Instant::now();
    let mut asked = false;
    while started.elapsed() < Duration::from_secs(4) {
        load.spawn_one("load", "2");
        if !asked && started.elapsed() > Duration::from_millis(1500) {
            let v2_entry = entry(
                json!(server.url("process-2.wasm")),
                json!(sha256(&v2)),
                signature(&keys.release, "release", &v2),
                Value::Null,
            );
            bed.hub.patch_desired(v2_entry).await;
            asked = true;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(30), "v2 in place", |r| {
            process_entry(r)["sha256"] == sha256(&v2)
        })
        .await;
    load.reap();

    // Every process created and ended exactly once, across the swap.
    let pids: Vec<(u32, &str)> = load
        .children
        .iter()
        .map(|(c, m)| (c.id(), m.as_str()))
        .collect();
    bed.hub
        .wait_telemetry(
            Duration::from_secs(30),
            "a create and a terminate for every process of the load",
            |all| {
                pids.iter().all(|(pid, marker)| {
                    !process_creates_with(all, marker).is_empty() && terminates_of(all, *pid) >= 1
                })
            },
        )
        .await;
    // A repeat would be sent within a few more sends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = bed.hub.telemetry();
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (pid, marker) in &pids {
        counts.insert(
            marker,
            (
                process_creates_with(&messages, marker).len(),
                terminates_of(&messages, *pid),
            ),
        );
    }
    let wrong: Vec<_> = counts.iter().filter(|(_, c)| **c != (1, 1)).collect();
    assert!(
        wrong.is_empty(),
        "{} processes: (creates, terminates) not (1, 1) for {wrong:?}",
        pids.len()
    );

    let p = process_entry(&reported);
    assert_eq!(p["from"], "twin");
    assert_eq!(p["state"], "running");
    assert_eq!(p["lastError"], Value::Null);
    let swap = &p["lastSwap"];
    assert_eq!(swap["from"], sha256(&v1));
    assert_eq!(swap["to"], sha256(&v2));
    assert!(
        swap["state"].as_str().unwrap().starts_with("handed over ("),
        "{swap}"
    );
    let (switch_ms, total_ms) = (
        swap["switchMs"].as_f64().unwrap(),
        swap["totalMs"].as_f64().unwrap(),
    );
    println!(
        "swap v1 -> v2 under load of {} processes: {switch_ms} ms in the actor, {total_ms} ms from the desired patch (fetch and compile included)",
        pids.len()
    );
    assert!(switch_ms > 0.0 && total_ms >= switch_ms);
    assert_eq!(server.requests("process-2.wasm"), 1);

    // Back to the local v1 (the twin's entry deleted): compiled before, so no compile now.
    bed.hub
        .patch_desired(json!({ "edgeguard": { "collectors": { "process": null } } }))
        .await;
    let back = bed
        .hub
        .wait_reported(Duration::from_secs(30), "v1 back", |r| {
            process_entry(r)["sha256"] == sha256(&v1)
        })
        .await;
    assert_eq!(process_entry(&back)["from"], "local");
    assert_eq!(
        process_entry(&back)["lastSwap"]["compiled"],
        false,
        "{}",
        process_entry(&back)
    );
    // And forth again: v2 is kept by digest, not fetched again.
    bed.hub
        .patch_desired(entry(
            json!(server.url("process-2.wasm")),
            json!(sha256(&v2)),
            signature(&keys.release, "release", &v2),
            Value::Null,
        ))
        .await;
    bed.hub
        .wait_reported(Duration::from_secs(30), "v2 again", |r| {
            process_entry(r)["sha256"] == sha256(&v2)
        })
        .await;
    assert_eq!(
        server.requests("process-2.wasm"),
        1,
        "the kept component is used"
    );
    let log = module.log();
    assert!(log.contains("collector swapped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_version_is_refused_with_its_reason_while_the_running_one_goes_on() {
    let keys = Keys::new();
    let bed = bed(json!({})).await;
    let server = FileServer::start().await;
    let (v1, v2) = process_versions();
    let plugins = bed.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("process-2.wasm"), &v2).unwrap();
    // A collector built against edgeguard:collector@2.0.0: a major version this host does not implement.
    let compat = std::fs::read(plugin("edgeguard-compat-plugin")).unwrap();
    let wrong_major = with_wit_version(&compat, "0.1.0", "2.0.0");
    std::fs::write(plugins.join("next-major.wasm"), &wrong_major).unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    server.put("garbage.wasm", garbage.clone());
    server.put("process-2.wasm", v2.clone());
    let closed_port = edgeguard_tests::edgehub::free_port();
    let _module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        &keys.remote_section(),
    );
    wait_collecting(&bed.hub).await;

    let url = |name: &str| json!(server.url(name));
    let signed = |bytes: &[u8]| signature(&keys.release, "release", bytes);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "wrong digest",
            entry(
                json!("process-2.wasm"),
                json!(sha256(&v1)),
                Value::Null,
                Value::Null,
            ),
            "verify",
            "sha256 mismatch",
        ),
        (
            "bad signature",
            entry(
                url("process-2.wasm"),
                json!(sha256(&v2)),
                signed(b"other bytes"),
                Value::Null,
            ),
            "verify",
            "signature is not valid for these bytes with key `release`",
        ),
        (
            "untrusted key",
            entry(
                url("process-2.wasm"),
                json!(sha256(&v2)),
                signature(&keys.vendor, "vendor", &v2),
                Value::Null,
            ),
            "verify",
            "key `vendor`, which the local configuration does not trust",
        ),
        (
            "unsigned",
            entry(
                url("process-2.wasm"),
                json!(sha256(&v2)),
                Value::Null,
                Value::Null,
            ),
            "verify",
            "unsigned",
        ),
        (
            "invalid wasm",
            entry(
                url("garbage.wasm"),
                json!(sha256(&garbage)),
                signed(&garbage),
                Value::Null,
            ),
            "load",
            "is not WebAssembly",
        ),
        (
            "wrong WIT major",
            entry(
                json!("next-major.wasm"),
                json!(sha256(&wrong_major)),
                Value::Null,
                Value::Null,
            ),
            "load",
            "was built against edgeguard:collector@2.0.0",
        ),
        (
            "missing grant",
            entry(
                json!("process-2.wasm"),
                json!(sha256(&v2)),
                Value::Null,
                json!(["log"]),
            ),
            "load",
            "does not grant `processes`",
        ),
        (
            "unreachable URL",
            entry(
                json!(format!("http://127.0.0.1:{closed_port}/process.wasm")),
                json!(sha256(&v2)),
                signed(&v2),
                Value::Null,
            ),
            "fetch",
            "cannot connect to 127.0.0.1",
        ),
    ];
    for (case, patch, step, needle) in cases {
        let collections = process_entry(&bed.hub.reported())["collections"]
            .as_u64()
            .unwrap();
        bed.hub.patch_desired(patch).await;
        let reported = wait_error(&bed.hub, step, needle).await;
        let p = process_entry(&reported);
        assert_eq!(p["sha256"], sha256(&v1), "{case}: v1 stays");
        assert_eq!(p["state"], "running", "{case}");
        // v1 keeps collecting.
        bed.hub
            .wait_reported(
                Duration::from_secs(10),
                &format!("{case}: v1 collecting on"),
                |r| process_entry(r)["collections"].as_u64().unwrap() > collections + 1,
            )
            .await;
        println!("{case}: refused at {step}: {}", p["lastError"]["message"]);
    }
    // v1 still reports processes, and each refusal was sent as a diagnostic too.
    let marker = format!("eg-after-refusals-{}", std::process::id());
    let mut proc = marker_process(&marker);
    let messages = bed
        .hub
        .wait_telemetry(
            Duration::from_secs(30),
            "a process after the refusals, and the refusals",
            |all| {
                !process_creates_with(all, &marker).is_empty()
                    && events(all)
                        .iter()
                        .filter(|e| {
                            e["Name"] == "Diagnostic"
                                && e["Payload"][0]["Message"]
                                    .as_str()
                                    .is_some_and(|m| m.contains("keeps running"))
                        })
                        .count()
                        >= 8
            },
        )
        .await;
    proc.kill().unwrap();
    proc.wait().unwrap();
    let diagnostic = events(&messages)
        .into_iter()
        .find(|e| {
            e["Name"] == "Diagnostic"
                && e["Payload"][0]["Message"]
                    .as_str()
                    .is_some_and(|m| m.contains("sha256 mismatch"))
        })
        .unwrap()
        .clone();
    assert!(
        diagnostic["Payload"][0]["Message"]
            .as_str()
            .unwrap()
            .contains("collector `process`"),
        "{diagnostic}"
    );

    // A good version after all that clears the error.
    bed.hub
        .patch_desired(entry(
            url("process-2.wasm"),
            json!(sha256(&v2)),
            signed(&v2),
            Value::Null,
        ))
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(30), "v2 in place", |r| {
            process_entry(r)["sha256"] == sha256(&v2)
        })
        .await;
    assert_eq!(process_entry(&reported)["lastError"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_are_removed_re_added_disabled_and_added_from_the_twin() {
    let bed = bed(json!({})).await;
    let _module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        "",
    );
    wait_collecting(&bed.hub).await;

    // Removed: gone from the reported collectors, and no longer collecting.
    bed.hub
        .patch_desired(json!({ "edgeguard": { "collectors": { "process": { "remove": true } } } }))
        .await;
    bed.hub
        .wait_reported(Duration::from_secs(10), "process removed", |r| {
            process_entry(r).is_null()
        })
        .await;
    let marker = format!("eg-gap-{}", std::process::id());
    let mut during_gap = marker_process(&marker);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        process_creates_with(&bed.hub.telemetry(), &marker).is_empty(),
        "a removed collector does not collect"
    );

    // Re-added: it takes up its saved state, so the process started meanwhile is reported as new.
    bed.hub
        .patch_desired(json!({ "edgeguard": { "collectors": { "process": { "remove": false } } } }))
        .await;
    bed.hub
        .wait_reported(Duration::from_secs(10), "process back", |r| {
            process_entry(r)["state"] == "running"
        })
        .await;
    let messages = bed
        .hub
        .wait_telemetry(
            Duration::from_secs(20),
            "the process started in the gap",
            |all| !process_creates_with(all, &marker).is_empty(),
        )
        .await;
    assert_eq!(process_creates_with(&messages, &marker).len(), 1);
    during_gap.kill().unwrap();
    during_gap.wait().unwrap();

    // Disabled: loaded (same digest) and idle; enabled again, it collects on.
    bed.hub
        .patch_desired(
            json!({ "edgeguard": { "collectors": { "process": { "enabled": false } } } }),
        )
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "process disabled", |r| {
            process_entry(r)["state"] == "disabled"
        })
        .await;
    let idle_at = process_entry(&reported)["collections"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(5), "status", |r| {
            process_entry(r)["state"] == "disabled"
        })
        .await;
    assert_eq!(
        process_entry(&reported)["collections"].as_u64().unwrap(),
        idle_at,
        "a disabled collector does not collect"
    );
    assert_eq!(process_entry(&reported)["enabled"], false);
    bed.hub
        .patch_desired(json!({ "edgeguard": { "collectors": { "process": { "enabled": true } } } }))
        .await;
    bed.hub
        .wait_reported(Duration::from_secs(10), "process enabled", |r| {
            process_entry(r)["collections"].as_u64().unwrap() > idle_at + 1
        })
        .await;

    // A collector the local file does not have, added from the twin with its own schedule.
    let system = std::fs::read(bed.dir.path().join("plugins/system.wasm")).unwrap();
    bed.hub
        .patch_desired(json!({ "edgeguard": { "collectors": { "inventory": { "source": "system.wasm", "sha256": sha256(&system), "grants": ["system"], "interval": "1s", "group": "high" } } } }))
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "inventory collecting", |r| {
            r["edgeguard"]["collectors"]["inventory"]["collections"]
                .as_u64()
                .is_some_and(|n| n >= 2)
        })
        .await;
    let inventory = &reported["edgeguard"]["collectors"]["inventory"];
    assert_eq!(inventory["interval"], "1s");
    assert_eq!(inventory["from"], "twin");
    // A section that does not parse changes nothing and says why.
    bed.hub
        .patch_desired(
            json!({ "edgeguard": { "collectors": { "inventory": { "interval": "soon" } } } }),
        )
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "the refusal", |r| {
            r["edgeguard"]["configuration"]["status"] == "refused"
        })
        .await;
    let errors = reported["edgeguard"]["configuration"]["errors"].to_string();
    assert!(
        errors.contains("edgeguard.collectors.inventory"),
        "{errors}"
    );
    assert_eq!(
        reported["edgeguard"]["collectors"]["inventory"]["interval"],
        "1s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sources_are_checked_against_the_configured_roots() {
    let keys = Keys::new();
    let bed = bed(json!({})).await;
    let server = FileServer::start_tls(bed.ca.server_config(&["localhost"])).await;
    let (v1, v2) = process_versions();
    server.put("process-2.wasm", v2.clone());
    // The roots the device trusts for https: first another CA's (of the same name, so the
    // chain is refused on its signature).
    let roots = bed.dir.path().join("roots.pem");
    std::fs::write(&roots, TestCa::new().pem).unwrap();
    let extra = format!("{}ca_file = {:?}\n", keys.remote_section(), roots);
    let _module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        &extra,
    );
    wait_collecting(&bed.hub).await;

    let https = entry(
        json!(server.https_url("process-2.wasm")),
        json!(sha256(&v2)),
        signature(&keys.release, "release", &v2),
        Value::Null,
    );
    bed.hub.patch_desired(https.clone()).await;
    let reported = wait_error(&bed.hub, "fetch", "invalid peer certificate").await;
    assert_eq!(process_entry(&reported)["sha256"], sha256(&v1));
    assert_eq!(
        server.requests("process-2.wasm"),
        0,
        "nothing asked of an unauthenticated server"
    );

    // The right roots: the next attempt (here, a changed entry) fetches over TLS and swaps.
    std::fs::write(&roots, &bed.ca.pem).unwrap();
    let mut again = https;
    again["edgeguard"]["collectors"]["process"]["interval"] = json!("300ms");
    bed.hub.patch_desired(again).await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(30), "v2 over https", |r| {
            process_entry(r)["sha256"] == sha256(&v2)
        })
        .await;
    assert_eq!(
        process_entry(&reported)["source"],
        server.https_url("process-2.wasm")
    );
    assert_eq!(server.requests("process-2.wasm"), 1);
}

/// `edgeguard run` without Edge, writing to a file; the configuration file is edited while it runs.
fn start_local(dir: &Path, config: &Path) -> Module {
    let log = dir.join("edgeguard.log");
    let child = Command::new(edgeguard_bin())
        .args(["run", "--config"])
        .arg(config)
        .arg("--output")
        .arg(dir.join("messages.jsonl"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Module { child, log }
}

fn local_messages(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("messages.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn local_creates(messages: &[Value], marker: &str) -> usize {
    messages
        .iter()
        .flat_map(|m| m["Events"].as_array().unwrap().iter())
        .filter(|e| {
            e["Name"] == "ProcessCreate"
                && e["Payload"][0]["CommandLine"]
                    .as_str()
                    .is_some_and(|c| c.contains(marker))
        })
        .count()
}

async fn wait_local(dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pred(&local_messages(dir)) {
        assert!(Instant::now() < deadline, "{what}: not within 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_file_swaps_collectors_on_change_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (v1, v2) = process_versions();
    std::fs::write(plugins.join("process.wasm"), &v1).unwrap();
    let config_text = |file: &str| {
        format!(
            "[schedule]\nhigh = \"300ms\"\nfirst_collection_jitter = \"0s\"\n\
             [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\naggregationEnabledProcessCreate = false\n\
             [[plugin]]\nname = \"process\"\nfile = \"{file}\"\ngrants = [\"processes\", \"log\"]\n[plugin.config]\nreport_existing = false\n"
        )
    };
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        &config_text("process.wasm"),
    );
    let module = start_local(dir.path(), &config);
    module
        .wait_log(Duration::from_secs(30), "collector started")
        .await;
    // Its first collection (at once, then every 300 ms) is the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = format!("eg-local-1-{}", std::process::id());
    let mut p1 = marker_process(&first);
    wait_local(dir.path(), "the first process", |m| {
        local_creates(m, &first) == 1
    })
    .await;

    // The component file replaced on disk (unpinned): SIGHUP has it looked at again.
    std::fs::write(plugins.join("process.wasm"), &v2).unwrap();
    unsafe { libc::kill(module.child.id() as i32, libc::SIGHUP) };
    let log = module
        .wait_log(Duration::from_secs(15), "collector swapped")
        .await;
    assert!(log.contains(&format!("to={}", &sha256(&v2)[..12])), "{log}");

    // The file changes: v3, pinned. Watched, not signalled.
    let v3 = with_custom_section(&v1, "edgeguard-build", b"process collector, build 3");
    std::fs::write(plugins.join("process-3.wasm"), &v3).unwrap();
    let edited = config_text("process-3.wasm").replace(
        "file = \"process-3.wasm\"",
        &format!("file = \"process-3.wasm\"\nsha256 = \"{}\"", sha256(&v3)),
    );
    write_config(dir.path(), "edgeguard.toml", &plugins, &edited);
    let log = module
        .wait_log(
            Duration::from_secs(15),
            &format!("to={}", &sha256(&v3)[..12]),
        )
        .await;
    assert_eq!(log.matches("collector swapped").count(), 2, "{log}");
    let second = format!("eg-local-2-{}", std::process::id());
    let mut p2 = marker_process(&second);
    wait_local(dir.path(), "the second process", |m| {
        local_creates(m, &second) == 1
    })
    .await;
    assert_eq!(
        local_creates(&local_messages(dir.path()), &first),
        1,
        "not again after the swaps"
    );

    // A broken file is refused on SIGHUP; everything keeps running.
    std::fs::write(&config, "[schedule]\nhigh = \"fast\"\n").unwrap();
    unsafe { libc::kill(module.child.id() as i32, libc::SIGHUP) };
    module
        .wait_log(Duration::from_secs(10), "configuration reload refused")
        .await;
    // The pinned digest no longer matching the file is refused too, naming both digests.
    let wrong_pin = edited.replace(&sha256(&v3), &sha256(&v1));
    write_config(dir.path(), "edgeguard.toml", &plugins, &wrong_pin);
    unsafe { libc::kill(module.child.id() as i32, libc::SIGHUP) };
    module
        .wait_log(Duration::from_secs(10), "sha256 mismatch")
        .await;
    let third = format!("eg-local-3-{}", std::process::id());
    let mut p3 = marker_process(&third);
    wait_local(dir.path(), "a process after the refusals", |m| {
        local_creates(m, &third) == 1
    })
    .await;
    for p in [&mut p1, &mut p2, &mut p3] {
        p.kill().unwrap();
    }
}
