//! `edgeguard run --once` on this machine, with the built-in plugins: every message validates
//! against the official schema.

use edgeguard_tests::schema::{Validators, asc_validator};
use edgeguard_tests::{builtin_plugins, edgeguard_bin};

#[test]
fn local_run_once_writes_schema_valid_messages() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["process", "network", "system"]);
    // Something of ours to be seen by the network collector: a listener and a connection to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _server = listener.accept().unwrap();
    let out = std::process::Command::new(edgeguard_bin())
        .args(["run", "--once", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--plugin-dir")
        .arg(&plugins)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edgeguard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let validators = Validators::new();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let messages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(!messages.is_empty(), "no message written");
    let mut process_creates = 0;
    let mut names = std::collections::BTreeSet::new();
    for m in &messages {
        validators.assert_valid(m);
        for e in m["Events"].as_array().unwrap() {
            if e["Name"] == "ProcessCreate" {
                process_creates += 1;
            }
            names.insert(e["Name"].as_str().unwrap().to_owned());
        }
    }
    for name in [
        "ListeningPorts",
        "ConnectionCreate",
        "SystemInformation",
        "LocalUsers",
        "Heartbeat",
    ] {
        assert!(
            names.contains(name),
            "no {name} from the built-in collectors: {names:?}"
        );
    }
    // report_existing is on in the default configuration: at least this test and its parent run.
    assert!(
        process_creates >= 2,
        "expected the running processes as ProcessCreate, got {process_creates}"
    );
    let me = std::process::id();
    assert!(
        messages
            .iter()
            .flat_map(|m| m["Events"].as_array().unwrap())
            .any(|e| e["Payload"][0]["ProcessId"] == me),
        "this test process ({me}) is not among the reported processes"
    );
}

#[test]
fn the_schema_check_rejects_what_it_should() {
    // The validator must not be vacuous: a message missing AgentId, or with a bad timestamp, fails.
    let validator = asc_validator();
    let good = serde_json::json!({
        "AgentVersion": "0.1.0", "AgentId": "9c647395-b913-4997-a732-a7fe7303b649", "MessageSchemaVersion": "1.0",
        "Events": [{"Category": "Triggered", "EventType": "Security", "Name": "ProcessCreate", "PayloadSchemaVersion": "1.0",
            "Id": "9c647395-b913-4997-a732-a7fe7303b649", "TimestampLocal": "2026-01-01T00:00:00.000Z",
            "TimestampUTC": "2026-01-01T00:00:00.000Z", "IsEmpty": false,
            "Payload": [{"Executable": "/bin/true", "ProcessId": 1, "ParentProcessId": 0, "UserId": "0", "CommandLine": "true"}]}]
    });
    assert!(validator.is_valid(&good));
    let mut no_agent = good.clone();
    no_agent.as_object_mut().unwrap().remove("AgentId");
    assert!(!validator.is_valid(&no_agent));
    let mut bad_time = good.clone();
    bad_time["Events"][0]["TimestampUTC"] = "yesterday".into();
    assert!(!validator.is_valid(&bad_time));
    let mut string_pid = good;
    string_pid["Events"][0]["Payload"][0]["ProcessId"] = "1".into();
    assert!(!validator.is_valid(&string_pid));
}

#[test]
fn the_projects_schema_rejects_what_it_should() {
    let validator = edgeguard_tests::schema::edgeguard_validator();
    let event = |name: &str, category: &str, payload: serde_json::Value| {
        serde_json::json!({
            "AgentVersion": "0.1.0", "AgentId": "9c647395-b913-4997-a732-a7fe7303b649", "MessageSchemaVersion": "edgeguard/1.0",
            "Events": [{"Category": category, "EventType": "Security", "Name": name, "PayloadSchemaVersion": "1.0",
                "Id": "9c647395-b913-4997-a732-a7fe7303b649", "TimestampLocal": "2026-01-01T00:00:00.000Z",
                "TimestampUTC": "2026-01-01T00:00:00.000Z", "IsEmpty": payload.as_array().unwrap().is_empty(), "Payload": payload}]
        })
    };
    assert!(validator.is_valid(&event("Heartbeat", "Periodic", serde_json::json!([]))));
    assert!(validator.is_valid(&event(
        "ContainerFinding",
        "Triggered",
        serde_json::json!([{"Container": "web", "ExtraDetails": {"HitCount": "3"}}])
    )));
    assert!(
        !validator.is_valid(&event(
            "ProcessCreate",
            "Triggered",
            serde_json::json!([{"CommandLine": "x"}])
        )),
        "ASC kinds travel in ASC messages"
    );
    assert!(!validator.is_valid(&event(
        "Heartbeat",
        "Triggered",
        serde_json::json!([{"A": 1}])
    )));
    assert!(
        !validator.is_valid(&event("Mine", "Triggered", serde_json::json!([]))),
        "a triggered event has a payload"
    );
    assert!(
        !validator.is_valid(&event(
            "Mine",
            "Triggered",
            serde_json::json!([{"ExtraDetails": {"HitCount": 3}}])
        )),
        "ExtraDetails are strings"
    );
    let mut wrong_version = event("Heartbeat", "Periodic", serde_json::json!([]));
    wrong_version["MessageSchemaVersion"] = "1.0".into();
    assert!(!validator.is_valid(&wrong_version));
}
