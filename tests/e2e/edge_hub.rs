//! edgeguard as an IoT Edge module, end to end: the real binary, started with the environment
//! edgeAgent gives a module, against a real mosquitto over TLS (a CA made here), the workload
//! API simulator (real HMAC-SHA256), the twin/method simulator, and for token checks an
//! edgeHub-like front that verifies every CONNECT's SAS token.

use edgeguard_tests::edgehub::{
    self, ConnectRecord, DEVICE, Front, HUB, HubSimulator, MODULE, MODULE_KEY, Mosquitto, TestCa,
};
use edgeguard_tests::module::{
    bed, events, marker_process, process_creates_with, start_module, start_module_with_agent,
    wait_collecting,
};
use edgeguard_tests::schema::Validators;
use edgeguard_tests::workload::{Fault, WorkloadSimulator};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ASC_OBJECT: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_messages_reach_edgehub_with_the_right_topic_and_properties() {
    let bed = bed(json!({})).await;
    let module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        "",
    );
    wait_collecting(&bed.hub).await;
    let marker = format!("eg-wire-{}", std::process::id());
    let mut proc = marker_process(&marker);
    let messages = bed
        .hub
        .wait_telemetry(
            Duration::from_secs(30),
            "a ProcessCreate and SystemInformation",
            |all| {
                !process_creates_with(all, &marker).is_empty()
                    && events(all).iter().any(|e| e["Name"] == "SystemInformation")
            },
        )
        .await;
    proc.kill().unwrap();
    proc.wait().unwrap();
    let validators = Validators::new();
    let mut ids = HashSet::new();
    for m in &messages {
        assert!(
            m.topic.starts_with(&format!(
                "devices/{DEVICE}/modules/{MODULE}/messages/events/%24.mid="
            )),
            "{}",
            m.topic
        );
        assert_eq!(m.property("$.ct"), Some("application/json"));
        assert_eq!(m.property("$.ce"), Some("utf-8"));
        assert!(
            ids.insert(m.property("$.mid").unwrap().to_owned()),
            "message ids are unique"
        );
        assert!(matches!(
            m.property("MessagePriority"),
            Some("High" | "Low")
        ));
        validators.assert_valid(&m.body);
        match m.body["MessageSchemaVersion"].as_str().unwrap() {
            "1.0" => {
                assert_eq!(
                    m.property("$.ifid"),
                    Some("urn:azureiot:Security:SecurityAgent:1"),
                    "{}",
                    m.topic
                );
                assert_eq!(m.property("$.on"), Some("security"));
            }
            _ => {
                assert_eq!(
                    m.property("$.ifid"),
                    None,
                    "only security messages carry the interface id"
                );
                assert_eq!(m.property("$.on"), Some("edgeguard"));
            }
        }
    }
    // The topic is encoded as the SDKs encode it.
    assert!(
        messages[0]
            .topic
            .contains("%24.ct=application%2Fjson&%24.ce=utf-8"),
        "{}",
        messages[0].topic
    );

    // The twin was read and the configuration in force reported as the agents report it.
    assert!(bed.hub.twin_gets() >= 1);
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "reported properties", |r| {
            r.get(ASC_OBJECT).is_some()
        })
        .await;
    let asc = &reported[ASC_OBJECT];
    assert_eq!(
        asc["highPriorityMessageFrequency"],
        json!({"value": "PT1S"})
    );
    assert_eq!(asc["maxMessageSizeInBytes"], json!({"value": 204800}));
    assert_eq!(asc["eventPriorityProcessCreate"], json!({"value": "Low"}));
    let own = &reported["edgeguard"];
    assert_eq!(own["configuration"]["status"], "applied");
    assert_eq!(
        own["schedule"],
        json!({"high": "300ms", "medium": "1m", "low": "15m"})
    );
    assert_eq!(own["collectors"]["process"]["group"], "high");
    assert_eq!(
        own["collectors"]["process"]["grants"],
        json!(["processes", "log"])
    );
    assert_eq!(own["collectors"]["system"]["state"], "running");
    assert!(own["limits"]["memory"].is_string());
    // Where the process collector's data comes from: the kernel's process events, here.
    let reported = bed
        .hub
        .wait_reported(
            Duration::from_secs(10),
            "the process events followed",
            |r| {
                r["edgeguard"]["collectors"]["process"]["feeds"]["processes"]["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("proc connector"))
            },
        )
        .await;
    let feed = &reported["edgeguard"]["collectors"]["process"]["feeds"]["processes"];
    assert_eq!(feed["lost"], 0);
    assert!(feed.get("unavailable").is_none(), "{feed}");
    let log = module.log();
    assert!(
        log.contains("connected to edgeHub gateway=localhost"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_patches_apply_at_once_and_bad_ones_are_refused_whole() {
    let bed =
        bed(json!({ ASC_OBJECT: { "lowPriorityMessageFrequency": { "value": "PT2S" } } })).await;
    let _module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        "",
    );
    // The twin read at start applies over the local configuration.
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(20), "the twin's configuration", |r| {
            r[ASC_OBJECT]["lowPriorityMessageFrequency"]["value"] == "PT2S"
        })
        .await;
    assert_eq!(
        reported[ASC_OBJECT]["highPriorityMessageFrequency"]["value"], "PT1S",
        "local keys the twin leaves alone stay"
    );
    assert_eq!(reported["edgeguard"]["configuration"]["desiredVersion"], 1);

    // A good patch: a new group interval and an ASC property, applied without a restart.
    let v = bed.hub.patch_desired(json!({ "edgeguard": { "schedule": { "high": "2s" } }, ASC_OBJECT: { "eventPriorityProcessCreate": { "value": "High" } } })).await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "the patch in force", |r| {
            r["edgeguard"]["configuration"]["desiredVersion"] == v
        })
        .await;
    assert_eq!(reported["edgeguard"]["configuration"]["status"], "applied");
    assert_eq!(reported["edgeguard"]["schedule"]["high"], "2s");
    assert_eq!(
        reported["edgeguard"]["collectors"]["process"]["interval"],
        "2s"
    );
    assert_eq!(
        reported[ASC_OBJECT]["eventPriorityProcessCreate"]["value"],
        "High"
    );
    assert_eq!(
        reported[ASC_OBJECT]["lowPriorityMessageFrequency"]["value"], "PT2S",
        "earlier desired keys stay"
    );

    // A bad patch is refused whole: a ConfigurationError goes out and nothing changes.
    let v = bed
        .hub
        .patch_desired(json!({ ASC_OBJECT: { "highPriorityMessageFrequency": { "value": "soon" }, "eventPriorityLogin": { "value": "Off" } } }))
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "the refusal", |r| {
            r["edgeguard"]["configuration"]["desiredVersion"] == v
        })
        .await;
    assert_eq!(reported["edgeguard"]["configuration"]["status"], "refused");
    let errors = reported["edgeguard"]["configuration"]["errors"].to_string();
    assert!(
        errors.contains("highPriorityMessageFrequency") && errors.contains("soon"),
        "{errors}"
    );
    assert_eq!(
        reported[ASC_OBJECT]["highPriorityMessageFrequency"]["value"], "PT1S",
        "the configuration in force stays"
    );
    assert_eq!(
        reported[ASC_OBJECT]["eventPriorityLogin"]["value"], "High",
        "nothing of a refused patch applies"
    );
    let messages = bed
        .hub
        .wait_telemetry(Duration::from_secs(10), "a ConfigurationError", |all| {
            events(all)
                .iter()
                .any(|e| e["Name"] == "ConfigurationError")
        })
        .await;
    let error = events(&messages)
        .into_iter()
        .find(|e| e["Name"] == "ConfigurationError")
        .unwrap()
        .clone();
    assert_eq!(
        error["Payload"][0]["ConfigurationName"],
        "highPriorityMessageFrequency"
    );
    assert_eq!(error["Payload"][0]["ErrorType"], "TypeMismatch");
    assert_eq!(error["Payload"][0]["UsedConfiguration"], "PT1S");

    // Fixing it applies the whole document again.
    let v = bed
        .hub
        .patch_desired(
            json!({ ASC_OBJECT: { "highPriorityMessageFrequency": { "value": "PT3S" } } }),
        )
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "the fix", |r| {
            r["edgeguard"]["configuration"]["desiredVersion"] == v
        })
        .await;
    assert_eq!(reported["edgeguard"]["configuration"]["status"], "applied");
    assert_eq!(
        reported[ASC_OBJECT]["highPriorityMessageFrequency"]["value"],
        "PT3S"
    );
    assert_eq!(reported[ASC_OBJECT]["eventPriorityLogin"]["value"], "Off");

    // A missed patch (a version gap) makes the module read the whole twin.
    let gets = bed.hub.twin_gets();
    bed.hub
        .patch_desired_silently(json!({ "edgeguard": { "schedule": { "low": "1h" } } }));
    let v = bed
        .hub
        .patch_desired(json!({ "edgeguard": { "schedule": { "medium": "5m" } } }))
        .await;
    let reported = bed
        .hub
        .wait_reported(Duration::from_secs(10), "both patches after the gap", |r| {
            r["edgeguard"]["configuration"]["desiredVersion"] == v
        })
        .await;
    assert_eq!(
        reported["edgeguard"]["schedule"],
        json!({"high": "2s", "medium": "5m", "low": "1h"})
    );
    assert!(
        bed.hub.twin_gets() > gets,
        "the gap was filled by a full read"
    );

    // A patch that is not JSON: the module reads the twin again and keeps running.
    let gets = bed.hub.twin_gets();
    bed.hub
        .publish_desired(bed.hub.desired_version() + 1, b"{not json".to_vec())
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bed.hub.twin_gets() == gets {
        assert!(
            Instant::now() < deadline,
            "no twin read after a garbage patch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = bed
        .hub
        .invoke("status", json!({}), Duration::from_secs(10))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_methods_collect_now_and_report_status() {
    let bed = bed(json!({ "edgeguard": { "schedule": { "high": "1h" } } })).await;
    // Without kernel events, which would collect the marker promptly on their own.
    let _module = start_module_with_agent(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        "kernel_events = false",
        "",
    );
    bed.hub
        .wait_reported(Duration::from_secs(20), "the twin applied", |r| {
            r["edgeguard"]["schedule"]["high"] == "1h"
        })
        .await;
    // What runs at the first collection is the baseline: it must be made before the marker.
    wait_collecting(&bed.hub).await;
    // With an hour between collections, only collectNow can report this process soon.
    let marker = format!("eg-method-{}", std::process::id());
    let mut proc = marker_process(&marker);
    let (status, body) = bed
        .hub
        .invoke(
            "collectNow",
            json!({ "group": "high" }),
            Duration::from_secs(25),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let collected = body["collected"].as_array().unwrap();
    assert_eq!(collected.len(), 1, "{body}");
    assert_eq!(collected[0]["collector"], "process");
    assert_eq!(collected[0]["outcome"], "collected");
    assert!(collected[0]["events"].as_u64().unwrap() >= 1, "{body}");
    bed.hub
        .wait_telemetry(
            Duration::from_secs(10),
            "the process collected now",
            |all| !process_creates_with(all, &marker).is_empty(),
        )
        .await;
    proc.kill().unwrap();
    proc.wait().unwrap();

    let (status, body) = bed
        .hub
        .invoke("status", Value::Null, Duration::from_secs(10))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connection"]["connected"], true);
    assert!(body["connection"]["tokenExpiresAt"].as_u64().unwrap() > 0);
    assert!(body["pipeline"]["queuedEvents"].is_u64());
    assert_eq!(body["collectors"]["process"]["interval"], "1h");
    assert!(
        body["collectors"]["process"]["collections"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(body["configuration"]["status"], "applied");

    let (status, body) = bed
        .hub
        .invoke(
            "collectNow",
            json!({ "group": "urgent" }),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("urgent"), "{body}");
    let (status, body) = bed
        .hub
        .invoke("reboot", json!({}), Duration::from_secs(10))
        .await;
    assert_eq!(status, 501);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("collectNow, status"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_flow_loses_nothing() {
    let mut bed = bed(json!({})).await;
    let mut module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        bed.broker.tls_port,
        "",
    );
    wait_collecting(&bed.hub).await;
    let tag = format!("eg-loss-{}", std::process::id());
    let mut procs = Vec::new();
    let spawn = |procs: &mut Vec<Child>, range: std::ops::Range<usize>| {
        for i in range {
            procs.push(marker_process(&format!("{tag}-{i}-")));
        }
    };
    spawn(&mut procs, 0..10);
    bed.hub
        .wait_telemetry(Duration::from_secs(30), "the first ten", |all| {
            process_creates_with(all, &tag).len() >= 10
        })
        .await;
    bed.broker.stop();
    spawn(&mut procs, 10..20);
    module
        .wait_log(Duration::from_secs(15), "edgeHub connection:")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bed.broker.start_again();
    spawn(&mut procs, 20..30);
    let all = bed
        .hub
        .wait_telemetry(
            Duration::from_secs(60),
            "all thirty after the restart",
            |all| {
                let seen: HashSet<String> = process_creates_with(all, &tag)
                    .iter()
                    .map(|e| e["Payload"][0]["CommandLine"].as_str().unwrap().to_owned())
                    .collect();
                seen.len() >= 30
            },
        )
        .await;
    for p in &mut procs {
        let _ = p.kill();
    }
    let creates = process_creates_with(&all, &tag);
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for e in &creates {
        *per_id.entry(e["Id"].as_str().unwrap()).or_default() += 1;
    }
    let unique: HashSet<&str> = creates
        .iter()
        .map(|e| e["Payload"][0]["CommandLine"].as_str().unwrap())
        .collect();
    assert_eq!(unique.len(), 30, "every process reported");
    assert_eq!(per_id.len(), 30, "one event per process");
    let log = module.log();
    assert!(
        log.matches("connected to edgeHub gateway").count() >= 2,
        "reconnected:\n{log}"
    );
    module.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_renewed_and_workload_failures_are_survived() {
    let bed = bed(json!({})).await;
    let hosts = vec![HUB.to_owned(), "localhost".to_owned()];
    let front = Front::start(
        &bed.ca,
        &["localhost"],
        bed.broker.tls_port,
        MODULE_KEY,
        hosts,
    )
    .await;
    // A 6 s token: a fresh one (a new CONNECT) every 4.8 s.
    let module = start_module(
        bed.dir.path(),
        &bed.workload,
        "localhost",
        front.port,
        "token_ttl = \"6s\"",
    );
    wait_collecting(&bed.hub).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while front
        .connects()
        .iter()
        .filter(|c| c.verdict.is_ok())
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "three connections: {:?}\n{}",
            front.connects(),
            module.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connects = front.connects();
    let accepted: Vec<&ConnectRecord> = connects.iter().filter(|c| c.verdict.is_ok()).collect();
    assert_eq!(
        accepted.len(),
        connects.len(),
        "every token edgeguard made is valid: {connects:?}"
    );
    let expiries: Vec<u64> = accepted
        .iter()
        .map(|c| *c.verdict.as_ref().unwrap())
        .collect();
    assert!(
        expiries.windows(2).all(|w| w[1] > w[0]),
        "each connection has a fresh token: {expiries:?}"
    );
    for c in &accepted {
        assert_eq!(c.client_id, format!("{DEVICE}/{MODULE}"));
        assert!(
            c.username.starts_with(&format!(
                "{HUB}/{DEVICE}/{MODULE}/?api-version=2021-04-12&DeviceClientType=edgeguard%2F"
            )),
            "{}",
            c.username
        );
        assert!(!c.clean_session, "CleanSession 0");
        assert_eq!(c.protocol_level, 4, "MQTT 3.1.1");
        assert_eq!(c.keep_alive, 60);
    }
    assert!(
        module
            .log()
            .contains("reconnecting to edgeHub with a fresh SAS token")
    );

    // The workload API fails, then answers garbage: no token, no connection, named in the log;
    // once it recovers, the module connects again and what was collected meanwhile arrives.
    bed.workload.set_fault(Fault::Status(500));
    module
        .wait_log(Duration::from_secs(15), "workload API")
        .await;
    bed.workload.set_fault(Fault::Garbage);
    let marker = format!("eg-workload-{}", std::process::id());
    let mut proc = marker_process(&marker);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = module.log();
    assert!(log.contains("500"), "the failing status is named:\n{log}");
    assert!(
        log.contains("unusable answer"),
        "the garbage is named:\n{log}"
    );
    let before = front.connects().len();
    bed.workload.set_fault(Fault::None);
    bed.hub
        .wait_telemetry(
            Duration::from_secs(60),
            "the process collected while there was no token",
            |all| !process_creates_with(all, &marker).is_empty(),
        )
        .await;
    proc.kill().unwrap();
    proc.wait().unwrap();
    assert!(front.connects().len() > before);
    assert!(front.connects().iter().all(|c| c.verdict.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_name_is_refused() {
    let ca = TestCa::new();
    let broker = Mosquitto::start(&ca, &["edgehub.other.example"]);
    let workload = WorkloadSimulator::start(MODULE, MODULE_KEY, Some(ca.pem.clone()));
    let hub = HubSimulator::start(broker.plain_port, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let module = start_module(dir.path(), &workload, "localhost", broker.tls_port, "");
    let log = module
        .wait_log(Duration::from_secs(15), "TLS with localhost failed")
        .await;
    assert!(
        log.contains("NotValidForName") || log.to_lowercase().contains("not valid for"),
        "{log}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        hub.telemetry().is_empty(),
        "nothing went to a broker that is not edgeHub"
    );
    assert!(!module.log().contains("connected to edgeHub gateway"));
    drop(module);

    // A CA that did not issue the certificate is refused likewise.
    let other = TestCa::new();
    let broker = Mosquitto::start(&other, &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let module = start_module(dir.path(), &workload, "localhost", broker.tls_port, "");
    let log = module
        .wait_log(Duration::from_secs(15), "TLS with localhost failed")
        .await;
    // Same issuer name, another key: the signature does not verify.
    assert!(
        log.contains("invalid peer certificate: BadSignature"),
        "{log}"
    );
}

#[test]
fn the_front_checks_tokens_as_edgehub_does() {
    // The reference's worked example (§2.4).
    let password = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Ffilter&sig=YHRimujpb2vNpXNQ%2F3qUaDEbu7aCBuEBeKVCZDMOQ3Q%3D&se=1767225600";
    let hosts = [HUB, "edge-01.local"];
    assert_eq!(
        edgehub::verify_sas(
            password,
            MODULE_KEY,
            &hosts,
            "edge-01",
            "filter",
            1767225600 - 60
        ),
        Ok(1767225600)
    );
    assert_eq!(
        edgehub::verify_sas(
            password,
            MODULE_KEY,
            &hosts,
            "edge-01",
            "filter",
            1767225600 + 299
        ),
        Ok(1767225600),
        "5 minutes of skew"
    );
    assert_eq!(
        edgehub::verify_sas(
            password,
            MODULE_KEY,
            &hosts,
            "edge-01",
            "filter",
            1767225600 + 301
        ),
        Err("expired at 1767225600".into())
    );
    assert_eq!(
        edgehub::verify_sas(
            password, MODULE_KEY, &hosts, "edge-01", "sensor", 1767225600
        ),
        Err("audience devices/edge-01/modules/filter is not this module".into())
    );
    assert_eq!(
        edgehub::verify_sas(
            password,
            MODULE_KEY,
            &["otherhub.azure-devices.net"],
            "edge-01",
            "filter",
            1767225600
        )
        .unwrap_err(),
        "audience host myhub.azure-devices.net is neither the hub nor the gateway"
    );
    let tampered = password.replace("se=1767225600", "se=1767229200");
    assert_eq!(
        edgehub::verify_sas(
            &tampered, MODULE_KEY, &hosts, "edge-01", "filter", 1767225600
        ),
        Err("signature mismatch".into())
    );
    // Field names in any case, any order (the Node SDK's order).
    let reordered = "SharedAccessSignature SR=myhub.azure-devices.net%2Fdevices%2Fedge-01%2Fmodules%2Ffilter&SE=1767225600&Sig=YHRimujpb2vNpXNQ%2F3qUaDEbu7aCBuEBeKVCZDMOQ3Q%3D";
    assert_eq!(
        edgehub::verify_sas(
            reordered, MODULE_KEY, &hosts, "edge-01", "filter", 1767225600
        ),
        Ok(1767225600)
    );
    // The device-scope known answer of azure_iot_sdk, as a signature check.
    let device = "SharedAccessSignature sr=pontifex.azure-devices.net%2Fdevices%2FFirstDevice&sig=CKYVArtLm72J2UNWLb4V3XqPc679Ig3LX83G3nPExUc%3D&se=1593353305";
    assert_eq!(
        edgehub::verify_sas(
            device,
            MODULE_KEY,
            &["pontifex.azure-devices.net"],
            "FirstDevice",
            "x",
            1593353305
        )
        .unwrap_err(),
        "audience devices/FirstDevice is not this module",
        "the signature holds; only the module audience differs"
    );
}

/// The createOptions of the deployment template as `docker run` flags: the test runs the image
/// exactly as edgeAgent would create it from `deploy/deployment.template.json`.
fn template_run_flags() -> Vec<String> {
    let text = std::fs::read_to_string(
        edgeguard_tests::repo_root().join("deploy/deployment.template.json"),
    )
    .unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let module =
        &manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["edgeguard"];
    let create: Value =
        serde_json::from_str(module["settings"]["createOptions"].as_str().unwrap()).unwrap();
    let host = &create["HostConfig"];
    let mut flags = vec![
        format!("--pid={}", host["PidMode"].as_str().unwrap()),
        format!("--network={}", host["NetworkMode"].as_str().unwrap()),
    ];
    for bind in host["Binds"].as_array().unwrap() {
        flags.push(format!("--volume={}", bind.as_str().unwrap()));
    }
    for cap in host["CapDrop"].as_array().unwrap() {
        flags.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    for cap in host["CapAdd"].as_array().unwrap() {
        flags.push(format!("--cap-add={}", cap.as_str().unwrap()));
    }
    if host["ReadonlyRootfs"] == true {
        flags.push("--read-only".into());
    }
    let known = [
        "PidMode",
        "NetworkMode",
        "Binds",
        "CapDrop",
        "CapAdd",
        "ReadonlyRootfs",
        "LogConfig",
    ];
    assert!(
        host.as_object()
            .unwrap()
            .keys()
            .all(|k| known.contains(&k.as_str())),
        "a createOption the test does not apply: {host}"
    );
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_image_builds_runs_under_docker_and_reaches_the_broker() {
    let context = edgeguard_tests::target_dir().join("image");
    assert!(
        context.join("edgeguard").exists(),
        "{} is not staged: run the suite with `cargo xtask test`",
        context.display()
    );
    let daemon = edgeguard_tests::docker::Dockerd::start(false);
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", daemon.socket.display()))
            .env("DOCKER_BUILDKIT", "0")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // FROM scratch: no registry is reachable here, and none is needed.
    docker(&[
        "build",
        "-t",
        "edgeguard-test/edgeguard:1",
        context.to_str().unwrap(),
    ]);
    let inspect: Value =
        serde_json::from_str(&docker(&["image", "inspect", "edgeguard-test/edgeguard:1"])).unwrap();
    assert_eq!(
        inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "the binary and the plugins, no base layers"
    );
    assert_eq!(inspect[0]["Config"]["Entrypoint"][0], "/usr/bin/edgeguard");

    let bed = bed(json!({})).await;
    // The module configuration a test needs on top of the image's: edgeHub's port here.
    let config_dir = bed.dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("edgeguard.toml"),
        format!(
            "[edge]\nport = {}\n[schedule]\nfirst_collection_jitter = \"0s\"\n[asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\n\
             [[plugin]]\nname = \"system\"\nfile = \"system.wasm\"\ngrants = [\"system\"]\n\
             [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n",
            bed.broker.tls_port
        ),
    )
    .unwrap();
    let workload_dir = bed.workload.socket.parent().unwrap().display().to_string();
    let mut args: Vec<String> = vec!["run".into(), "--detach".into(), "--name=edgeguard".into()];
    args.extend(template_run_flags());
    // What edgeAgent adds: the module's workload socket and the IOTEDGE_* environment.
    args.push(format!("--volume={workload_dir}:/var/run/iotedge"));
    args.push(format!(
        "--volume={}:/etc/edgeguard:ro",
        config_dir.display()
    ));
    for (k, v) in edgehub::module_environment("unix:///var/run/iotedge/workload.sock", "localhost")
    {
        args.push(format!("--env={k}={v}"));
    }
    args.extend([
        "edgeguard-test/edgeguard:1".into(),
        "--config".into(),
        "/etc/edgeguard/edgeguard.toml".into(),
    ]);
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let all = bed.hub.telemetry();
        if events(&all)
            .iter()
            .any(|e| e["Name"] == "SystemInformation")
        {
            break all;
        }
        let logs = Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", daemon.socket.display()))
            .args(["logs", "edgeguard"])
            .output()
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "no SystemInformation from the container; its log:\n{}",
            String::from_utf8_lossy(&logs.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let validators = Validators::new();
    for m in &messages {
        validators.assert_valid(&m.body);
    }
    // It read the host through /host: the host's machine-id is the AgentId.
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        messages[0].body["AgentId"]
            .as_str()
            .unwrap()
            .replace('-', ""),
        machine_id
    );
    bed.hub
        .wait_reported(
            Duration::from_secs(20),
            "the container's reported properties",
            |r| r["edgeguard"]["collectors"]["process"]["state"] == "running",
        )
        .await;
    docker(&["rm", "--force", "edgeguard"]);
}

/// The template asks for what the collectors need and nothing else: edgeguard's own manifest
/// analysis finds exactly those four trade-offs (the README justifies each), and no others.
#[test]
fn the_deployment_template_asks_only_for_what_edgeguard_needs() {
    let text = std::fs::read_to_string(
        edgeguard_tests::repo_root().join("deploy/deployment.template.json"),
    )
    .unwrap();
    let findings = edgeguard_manifest::analyze_text(&text).unwrap();
    let mut got: Vec<(String, String)> = findings
        .iter()
        .map(|f| (f.module.clone(), f.code.to_string()))
        .collect();
    got.sort();
    let expected = [
        ("edgeguard", "dangerous-capability"),
        ("edgeguard", "host-network"),
        ("edgeguard", "host-pid"),
        ("edgeguard", "sensitive-bind"),
        // The image's registry is left to the operator: `${REGISTRY_ADDRESS}`.
        ("edgeguard", "template-placeholder"),
    ];
    assert_eq!(
        got,
        expected.map(|(m, c)| (m.to_owned(), c.to_owned())),
        "{findings:#?}"
    );
    let capability = findings
        .iter()
        .find(|f| f.code == "dangerous-capability")
        .unwrap();
    assert!(
        capability.message.contains("SYS_PTRACE"),
        "{}",
        capability.message
    );
    // The module's desired properties are a configuration edgeguard accepts as it is.
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let desired = manifest["modulesContent"]["edgeguard"]["properties.desired"]
        .as_object()
        .unwrap();
    let local = edgeguard::config::Config::embedded_default();
    let in_force = edgeguard::control::wanted::Wanted::local(&local).unwrap();
    let wanted = edgeguard::control::wanted::resolve(&local, desired, &in_force).unwrap();
    assert_eq!(
        wanted.settings.asc.high_priority_message_frequency,
        Duration::from_secs(7 * 60)
    );
}
