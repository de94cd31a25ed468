//! The container and manifest collectors against a real Docker daemon started for each test
//! (Debian's dockerd on a private socket, a busybox image made with `docker import`):
//! lifecycle events from the daemon's event stream, findings from each container's real
//! configuration, the daemon exposed on TCP, and the IoT Edge deployment reconstructed from
//! containers labelled as edgeAgent labels them. Privileged containers are created and
//! inspected, not started: this sandbox cannot start them.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::Limits;
use edgeguard::runtime::Runtime;
use edgeguard::sandbox::{LoadedPlugin, PluginInstance};
use edgeguard_tests::docker::{BUSYBOX, Dockerd};
use edgeguard_tests::schema::Validators;
use edgeguard_tests::{
    assert_refused, builtin_plugins, collect_items, edgeguard_bin, find_items, plugin, runtime,
    write_config,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const OWNER: &str = "net.azure-devices.edge.owner=Microsoft.Azure.Devices.Edge.Agent";

async fn collector(
    rt: &Runtime,
    package: &str,
    grants: &[Capability],
    socket: &Path,
    config: &str,
) -> PluginInstance {
    let loaded = LoadedPlugin::load_file(rt, package, &plugin(package), grants, &[])
        .await
        .unwrap();
    loaded
        .instantiate(
            HostContext::with_docker_socket(Path::new("/"), socket),
            &Limits::default(),
            config,
        )
        .await
        .unwrap()
}

async fn container_collector(rt: &Runtime, socket: &Path) -> PluginInstance {
    collector(
        rt,
        "edgeguard-plugin-container",
        &[Capability::Containers, Capability::Log],
        socket,
        "{}",
    )
    .await
}

/// The findings of the container `name`, as `(Severity, Code, Field)`, sorted.
fn findings_of(items: &[(String, Value)], name: &str) -> Vec<(String, String, String)> {
    let mut found: Vec<_> = find_items(items, "ContainerFinding", |f| f["Name"] == name)
        .into_iter()
        .map(|f| {
            (
                f["Severity"].as_str().unwrap().to_owned(),
                f["Code"].as_str().unwrap().to_owned(),
                f["Field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn finding(severity: &str, code: &str, field: &str) -> (String, String, String) {
    (severity.to_owned(), code.to_owned(), field.to_owned())
}

/// Collects until `done` holds for everything collected so far (the daemon's events arrive
/// asynchronously), at most 20 s.
async fn collect_until(
    instance: &mut PluginInstance,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for _ in 0..100 {
        all.extend(collect_items(instance).await);
        if done(&all) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not all expected events within 20 s; got {all:#?}");
}

fn lifecycle_of<'a>(items: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    find_items(items, "ContainerLifecycle", |e| e["Name"] == name)
}

fn actions(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["Action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn risky_settings_and_lifecycle_events_from_a_real_dockerd() {
    let daemon = Dockerd::start(true);
    let socket = daemon.socket.to_str().unwrap();
    daemon.docker(&[
        "create",
        "--name",
        "privileged",
        "--privileged",
        BUSYBOX,
        "sleep",
        "60",
    ]);
    daemon.docker(&[
        "create",
        "--name",
        "risky",
        "--cap-add",
        "SYS_ADMIN",
        "--network",
        "host",
        "--pid",
        "host",
        "--ipc",
        "host",
        "-v",
        "/:/host:ro",
        "-v",
        &format!("{socket}:/var/run/docker.sock"),
        "-v",
        "/etc:/host-etc",
        "--device",
        "/dev/null:/dev/hostnull",
        "--security-opt",
        "seccomp=unconfined",
        "--log-driver",
        "none",
        "edgeguard-test/busybox",
        "sleep",
        "60",
    ]);
    daemon.docker(&[
        "create",
        "--name",
        "tidy",
        "--user",
        "1000:1000",
        "--read-only",
        "--log-opt",
        "max-size=1m",
        BUSYBOX,
        "sleep",
        "60",
    ]);
    // A module as edgeAgent creates it: its owner label, and named after the module.
    daemon.docker(&[
        "create",
        "--name",
        "sensor",
        "--label",
        OWNER,
        "--label",
        "net.azure-devices.edge.version=1.0",
        "--user",
        "1000",
        "--read-only",
        "--log-opt",
        "max-size=1m",
        "--cap-add",
        "NET_ADMIN",
        BUSYBOX,
        "sleep",
        "60",
    ]);

    let (rt, _cache) = runtime();
    let mut collector = container_collector(&rt, &daemon.socket).await;
    let first = collect_items(&mut collector).await;

    assert_eq!(
        findings_of(&first, "privileged"),
        [
            finding("High", "privileged", "HostConfig.Privileged"),
            finding("Low", "no-log-rotation", "HostConfig.LogConfig.Config"),
            finding("Low", "writable-rootfs", "HostConfig.ReadonlyRootfs"),
            finding("Medium", "runs-as-root", "Config.User (image default)"),
        ]
    );
    assert_eq!(
        findings_of(&first, "risky"),
        [
            finding("High", "dangerous-capability", "HostConfig.CapAdd"),
            finding("High", "host-network", "HostConfig.NetworkMode"),
            finding("High", "host-pid", "HostConfig.PidMode"),
            finding("High", "sensitive-bind", "Mounts"),
            finding("High", "sensitive-bind", "Mounts"),
            finding("High", "sensitive-bind", "Mounts"),
            finding("Low", "logging-disabled", "HostConfig.LogConfig.Type"),
            finding("Low", "writable-rootfs", "HostConfig.ReadonlyRootfs"),
            finding("Medium", "host-device", "HostConfig.Devices"),
            finding("Medium", "host-ipc", "HostConfig.IpcMode"),
            finding("Medium", "runs-as-root", "Config.User (image default)"),
            finding("Medium", "unconfined", "HostConfig.SecurityOpt"),
            finding("Medium", "unpinned-image", "Config.Image"),
        ]
    );
    let binds: Vec<&str> = find_items(&first, "ContainerFinding", |f| {
        f["Name"] == "risky" && f["Code"] == "sensitive-bind"
    })
    .iter()
    .map(|f| f["Message"].as_str().unwrap())
    .collect();
    assert!(
        binds
            .iter()
            .any(|m| m.starts_with("binds the host's / (read-only)")),
        "{binds:?}"
    );
    assert!(
        binds.iter().any(|m| m.starts_with("binds the host's /etc")),
        "{binds:?}"
    );
    assert!(
        binds.iter().any(|m| m.contains("Docker daemon's socket")),
        "{binds:?}"
    );
    assert_eq!(
        findings_of(&first, "tidy"),
        [],
        "a careful container has nothing to report"
    );
    let sensor = find_items(&first, "ContainerFinding", |f| f["Name"] == "sensor");
    assert_eq!(sensor.len(), 1, "{sensor:?}");
    assert_eq!(
        (sensor[0]["Code"].as_str(), sensor[0]["EdgeModule"].as_str()),
        (Some("dangerous-capability"), Some("sensor"))
    );
    assert!(
        find_items(&first, "ContainerFinding", |f| f["Name"] == "risky")
            .iter()
            .all(|f| f["EdgeModule"].is_null())
    );

    let tcp = daemon.tcp.as_deref().unwrap();
    let exposed = find_items(&first, "ContainerFinding", |f| f["Code"] == "daemon-tcp");
    assert_eq!(exposed.len(), 1);
    assert_eq!(
        (
            exposed[0]["Scope"].as_str(),
            exposed[0]["Severity"].as_str()
        ),
        (Some("daemon"), Some("Medium")),
        "loopback without TLS"
    );
    assert!(
        exposed[0]["Message"].as_str().unwrap().contains(tcp),
        "{}",
        exposed[0]["Message"]
    );

    let inventory = find_items(&first, "ContainerInventory", |_| true);
    let mut names: Vec<&str> = inventory
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["privileged", "risky", "sensor", "tidy"]);
    let risky = inventory.iter().find(|c| c["Name"] == "risky").unwrap();
    // (Newer docker CLIs write capabilities with their CAP_ prefix.)
    let cap = risky["CapAdd"].as_str().unwrap().trim_start_matches("CAP_");
    assert_eq!(
        (
            risky["NetworkMode"].as_str(),
            risky["PidMode"].as_str(),
            cap,
            risky["State"].as_str()
        ),
        (Some("host"), Some("host"), "SYS_ADMIN", Some("created"))
    );

    // Nothing changed: nothing is reported again.
    let again = collect_items(&mut collector).await;
    assert!(again.is_empty(), "{again:?}");

    // A container's whole life: create, start, die with its exit code, destroy.
    daemon.try_docker(&["run", "--name", "short", BUSYBOX, "sh", "-c", "exit 3"]);
    daemon.docker(&["rm", "short"]);
    let seen = collect_until(&mut collector, |all| {
        lifecycle_of(all, "short")
            .iter()
            .any(|e| e["Action"] == "destroy")
    })
    .await;
    let short = lifecycle_of(&seen, "short");
    assert_eq!(actions(&short), ["create", "start", "die", "destroy"]);
    assert_eq!(short[2]["ExitCode"], "3");
    assert!(short.iter().all(|e| e["Image"] == BUSYBOX
        && e["ContainerId"].as_str().unwrap().len() == 64
        && e["EdgeModule"].is_null()));
    let at =
        chrono::DateTime::parse_from_rfc3339(short[0]["Time"].as_str().unwrap()).expect("RFC 3339");
    assert!(
        (chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60,
        "{at}"
    );

    // A restart resumes the event stream where the saved state says, and reports nothing twice.
    let state = collector
        .save_state()
        .await
        .unwrap()
        .expect("the container collector saves its cursor");
    drop(collector);
    daemon.docker(&[
        "create", "--name", "later", "--label", OWNER, BUSYBOX, "true",
    ]);
    daemon.docker(&["rm", "later"]);
    let mut restarted = container_collector(&rt, &daemon.socket).await;
    restarted.restore_state(&state).await.unwrap().unwrap();
    let resumed = collect_until(&mut restarted, |all| lifecycle_of(all, "later").len() == 2).await;
    let later = lifecycle_of(&resumed, "later");
    assert_eq!(
        actions(&later),
        ["create", "destroy"],
        "events while no collector ran are replayed by the daemon"
    );
    assert_eq!(
        later[0]["EdgeModule"], "later",
        "an edgeAgent label names the module"
    );
    assert!(
        lifecycle_of(&resumed, "short").is_empty(),
        "events already delivered are not repeated"
    );
    let repeated = find_items(&resumed, "ContainerFinding", |_| true);
    assert!(
        repeated.is_empty(),
        "findings already reported are not repeated: {repeated:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_survives_a_restart_of_the_daemon() {
    let mut daemon = Dockerd::start(false);
    let (rt, _cache) = runtime();
    let mut collector = container_collector(&rt, &daemon.socket).await;
    daemon.docker(&["create", "--name", "before", BUSYBOX, "true"]);
    collect_until(&mut collector, |all| lifecycle_of(all, "before").len() == 1).await;
    daemon.restart();
    daemon.docker(&["rm", "before"]);
    daemon.docker(&["create", "--name", "after", BUSYBOX, "true"]);
    let seen = collect_until(&mut collector, |all| lifecycle_of(all, "after").len() == 1).await;
    assert_eq!(
        actions(&lifecycle_of(&seen, "before")),
        ["destroy"],
        "nothing lost or repeated across the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_daemon_the_collector_waits_quietly() {
    let (rt, _cache) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut collector = container_collector(&rt, &dir.path().join("docker.sock")).await;
    assert!(collect_items(&mut collector).await.is_empty());
    assert!(collect_items(&mut collector).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_collector_analyses_the_modules_edgeagent_runs() {
    let daemon = Dockerd::start(false);
    let labelled = |name: &str, create_options: &str, image: &str| {
        daemon.docker(&[
            "create",
            "--name",
            name,
            "--label",
            OWNER,
            "--label",
            &format!("net.azure-devices.edge.normalizedCreateOptions={create_options}"),
            "--label",
            "net.azure-devices.edge.restartPolicy=Always",
            "--label",
            "net.azure-devices.edge.desiredStatus=Running",
            image,
            "sleep",
            "60",
        ]);
    };
    labelled(
        "edgeHub",
        r#"{"HostConfig":{"PortBindings":{"8883/tcp":[{"HostPort":"8883"}]},"LogConfig":{"Type":"local"}}}"#,
        BUSYBOX,
    );
    labelled(
        "sensor",
        r#"{"HostConfig":{"Privileged":true,"Binds":["/var/run/docker.sock:/var/run/docker.sock"],"LogConfig":{"Type":"json-file","Config":{"max-size":"10m"}}}}"#,
        "edgeguard-test/busybox:latest",
    );
    labelled("broken", r#"{"HostConfig": "#, BUSYBOX);
    // Not edgeAgent's: the container collector's business, not the deployment's.
    daemon.docker(&[
        "create",
        "--name",
        "bystander",
        "--privileged",
        BUSYBOX,
        "sleep",
        "60",
    ]);

    let (rt, _cache) = runtime();
    let grants = [Capability::Containers, Capability::Log];
    let mut manifest = collector(
        &rt,
        "edgeguard-plugin-manifest",
        &grants,
        &daemon.socket,
        r#"{"running": true}"#,
    )
    .await;
    let first = collect_items(&mut manifest).await;
    let mut found: Vec<(String, String, String)> = find_items(&first, "ManifestFinding", |_| true)
        .iter()
        .map(|f| {
            assert_eq!(f["Manifest"], "running modules (edgeAgent containers)");
            assert!(!f["Remediation"].as_str().unwrap().is_empty());
            (
                f["Module"].as_str().unwrap().to_owned(),
                f["Code"].as_str().unwrap().to_owned(),
                f["Field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let expect = |m: &str, c: &str, f: &str| (m.to_owned(), c.to_owned(), f.to_owned());
    assert_eq!(
        found,
        [
            expect(
                "edgeHub",
                "edgehub-idle-protocol-head",
                "systemModules.edgeHub.env.httpSettings__enabled"
            ),
            expect(
                "sensor",
                "privileged",
                "modules.sensor.settings.createOptions.HostConfig.Privileged"
            ),
            expect(
                "sensor",
                "sensitive-bind",
                "modules.sensor.settings.createOptions.HostConfig.Binds"
            ),
            expect("sensor", "unpinned-image", "modules.sensor.settings.image"),
        ]
    );
    let errors = find_items(&first, "ManifestError", |_| true);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["Field"], "modules.broken.settings.createOptions");
    assert!(
        errors[0]["Message"].as_str().unwrap().contains("not JSON"),
        "{}",
        errors[0]["Message"]
    );

    assert!(
        collect_items(&mut manifest).await.is_empty(),
        "an unchanged deployment is not reported again"
    );

    // A new deployment of one module: only that module is analysed and reported again.
    daemon.docker(&["rm", "-f", "sensor"]);
    labelled(
        "sensor",
        r#"{"HostConfig":{"LogConfig":{"Type":"local"}}}"#,
        BUSYBOX,
    );
    let redeployed = collect_items(&mut manifest).await;
    assert!(
        redeployed.is_empty(),
        "the fixed sensor has no finding left: {redeployed:?}"
    );
    daemon.docker(&["rm", "-f", "sensor"]);
    labelled(
        "sensor",
        r#"{"HostConfig":{"PidMode":"host","LogConfig":{"Type":"local"}}}"#,
        BUSYBOX,
    );
    let redeployed = collect_items(&mut manifest).await;
    let codes: Vec<_> = redeployed
        .iter()
        .map(|(n, f)| {
            (
                n.as_str(),
                f["Module"].as_str().unwrap(),
                f["Code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(codes, [("ManifestFinding", "sensor", "host-pid")]);
}

#[test]
fn the_binary_reports_containers_and_modules_as_schema_valid_messages() {
    let daemon = Dockerd::start(false);
    daemon.docker(&[
        "create",
        "--name",
        "edgeHub",
        "--label",
        OWNER,
        "--label",
        r#"net.azure-devices.edge.normalizedCreateOptions={"HostConfig":{"Privileged":true}}"#,
        BUSYBOX,
        "sleep",
        "60",
    ]);
    // A privileged container, and a miner's image as an attacker would name it (the same
    // busybox, tagged).
    daemon.docker(&["create", "--privileged", "--name", "debug", BUSYBOX, "true"]);
    daemon.docker(&["tag", BUSYBOX, "xmrig/xmrig:6"]);
    daemon.docker(&["create", "--name", "worker", "xmrig/xmrig:6", "true"]);
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["container", "manifest", "container-alerts"]);
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        "[[plugin]]\nname = \"container\"\nfile = \"container.wasm\"\ngrants = [\"containers\", \"log\"]\n\
         [[plugin]]\nname = \"manifest\"\nfile = \"manifest.wasm\"\ngrants = [\"containers\", \"log\"]\n\
         [[plugin]]\nname = \"container-alerts\"\nfile = \"container-alerts.wasm\"\ngrants = [\"log\"]\n",
    );
    let out = std::process::Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--once", "--docker-socket"])
        .arg(&daemon.socket)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let validators = Validators::new();
    let mut names = Vec::new();
    let mut alerts = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        validators.assert_valid(&message);
        for event in message["Events"].as_array().unwrap() {
            names.push(event["Name"].as_str().unwrap().to_owned());
            if event["Name"] == "Alert" {
                alerts.push(event["Payload"][0].clone());
            }
        }
    }
    for expected in [
        "ContainerFinding",
        "ContainerInventory",
        "ManifestFinding",
        "Alert",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} in {names:?}"
        );
    }
    // The privileged container and the miner's, once each.
    let mut raised: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["Rule"].as_str().unwrap().to_owned(),
                a["Entities"]["Container"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    raised.sort();
    assert_eq!(
        raised,
        [
            ("CryptoMinerImage".to_owned(), "worker".to_owned()),
            ("PrivilegedContainer".to_owned(), "debug".to_owned())
        ]
    );
    let privileged = alerts
        .iter()
        .find(|a| a["Rule"] == "PrivilegedContainer")
        .unwrap();
    assert_eq!(privileged["Severity"], "Medium");
    assert_eq!(privileged["ExtraDetails"]["Image"], BUSYBOX);
}

#[tokio::test]
async fn refused_without_the_containers_grant() {
    assert_refused(
        "edgeguard-plugin-container",
        &[Capability::Log],
        "edgeguard:collector/containers@0.1.5",
    )
    .await;
    assert_refused(
        "edgeguard-plugin-manifest",
        &[Capability::Log, Capability::Filesystem],
        "edgeguard:collector/containers@0.1.5",
    )
    .await;
}
