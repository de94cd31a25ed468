//! The command line: help, config check, plugin inspect, keygen and sign, rules check, and exit
//! codes on bad input.

use edgeguard_tests::{edgeguard_bin, plugin, repo_root, write_config};
use std::process::{Command, Output};

fn edgeguard(args: &[&str]) -> Output {
    Command::new(edgeguard_bin()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_on_every_command() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["plugin", "inspect", "--help"],
        &["plugin", "keygen", "--help"],
        &["plugin", "sign", "--help"],
        &["config", "check", "--help"],
        &["rules", "check", "--help"],
    ] {
        let out = edgeguard(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("Usage:"), "{args:?}");
    }
    let out = edgeguard(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_shipped_config_checks_clean() {
    let out = edgeguard(&[
        "config",
        "check",
        repo_root().join("config/edgeguard.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("valid"));
}

#[test]
fn an_invalid_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[schedule]\nhigh = \"soon\"\n", "high"),
        ("[schedule]\nhihg = \"10s\"\n", "hihg"),
        ("[limits]\nmemory = \"100B\"\n", "limits.memory"),
        (
            "[[plugin]]\nname = \"p\"\nfile = \"p.wasm\"\ngrants = [\"root\"]\n",
            "plugin[0].grants",
        ),
        ("[agent\n", "TOML parse error"),
        (
            "[asc]\nmaxMessageSizeInBytes = 100\n",
            "asc.maxMessageSizeInBytes",
        ),
        (
            "[asc]\nlowPriorityMessageFrequency = \"5h\"\n",
            "asc.lowPriorityMessageFrequency",
        ),
        (
            "[events.Heartbeat]\npriority = \"loud\"\n",
            "events.Heartbeat.priority",
        ),
    ];
    for (i, (content, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, content).unwrap();
        for args in [
            vec!["config", "check", file.to_str().unwrap()],
            vec!["run", "--once", "--config", file.to_str().unwrap()],
        ] {
            let out = edgeguard(&args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} on {content:?}: {}",
                text(&out)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(key) && stderr.contains(file.to_str().unwrap()),
                "{content:?}: {stderr}"
            );
        }
    }
    let out = edgeguard(&["config", "check", "/nonexistent/edgeguard.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_check_warns_of_what_the_agents_would_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edgeguard.toml");
    std::fs::write(
        &file,
        "[asc]\nmaxMessageSizeInBytes = 10000\nhighPriorityMessageFrequency = \"PT6H\"\n",
    )
    .unwrap();
    let out = edgeguard(&["config", "check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("maxMessageSizeInBytes (NotOptimal)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("highPriorityMessageFrequency (Conflict)"),
        "{stdout}"
    );
}

#[test]
fn plugin_inspect_shows_the_self_description() {
    let path = plugin("edgeguard-plugin-process");
    let cache = tempfile::tempdir().unwrap();
    let out = edgeguard(&[
        "plugin",
        "inspect",
        path.to_str().unwrap(),
        "--json",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "process");
    assert_eq!(v["wit"], "edgeguard:collector@0.1.5");
    assert_eq!(v["default_group"], "high");
    assert_eq!(
        v["events"],
        serde_json::json!(["ProcessCreate", "ProcessTerminate"])
    );
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "edgeguard:collector/processes@0.1.5")
    );
    assert_eq!(
        v["size"].as_u64().unwrap(),
        std::fs::metadata(&path).unwrap().len()
    );

    let junk = cache.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").unwrap();
    let out = edgeguard(&[
        "plugin",
        "inspect",
        junk.to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not WebAssembly"));
}

#[test]
fn a_plugin_that_fails_to_load_is_reported_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        plugin("edgeguard-plugin-process"),
        dir.path().join("process.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x01\x00\x00\x00").unwrap();
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        dir.path(),
        "[[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
         [[plugin]]\nname = \"broken\"\nfile = \"broken.wasm\"\n",
    );
    let out = edgeguard(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"ProcessCreate\""));
    assert!(
        stdout.contains("\"Diagnostic\"") && stdout.contains("plugin `broken`"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_built_against_the_previous_contract_still_loads() {
    // tests/compat-plugin is built against the frozen edgeguard:collector@0.1.0 WIT.
    let path = plugin("edgeguard-compat-plugin");
    let cache = tempfile::tempdir().unwrap();
    let out = edgeguard(&[
        "plugin",
        "inspect",
        path.to_str().unwrap(),
        "--json",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wit"], "edgeguard:collector@0.1.0");
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "edgeguard:collector/log@0.1.0")
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&path, dir.path().join("compat.wasm")).unwrap();
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        dir.path(),
        "[[plugin]]\nname = \"compat\"\nfile = \"compat.wasm\"\ngrants = [\"log\"]\n",
    );
    let out = edgeguard(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"Heartbeat\""),
        "{}",
        text(&out)
    );
}

#[test]
fn plugins_signed_with_keygen_and_sign_are_accepted_and_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let out = edgeguard(&["plugin", "keygen", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 44, "base64 of 32 bytes: {public}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        edgeguard(&["plugin", "keygen", key.to_str().unwrap()])
            .status
            .code(),
        Some(2),
        "an existing key is never replaced"
    );

    let component = dir.path().join("process.wasm");
    std::fs::copy(plugin("edgeguard-plugin-process"), &component).unwrap();
    let out = edgeguard(&[
        "plugin",
        "sign",
        component.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--key-name",
        "release",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = |signature: &str| {
        format!(
            "[remote]\nsigning_keys = {{ release = \"{public}\" }}\n[[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\nsha256 = {}\nsignature = {{ key = \"release\", ed25519 = \"{signature}\" }}\n",
            signed["sha256"]
        )
    };
    let good = write_config(
        dir.path(),
        "good.toml",
        dir.path(),
        &entry(signed["signature"]["ed25519"].as_str().unwrap()),
    );
    let out = edgeguard(&["run", "--once", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ProcessCreate\""));
    // Someone else's signature over the same bytes is refused, and with it the only collector.
    let other = signing_of_other_key(&component);
    let bad = write_config(dir.path(), "bad.toml", dir.path(), &entry(&other));
    let out = edgeguard(&["run", "--once", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the signature is not valid for these bytes with key `release`"),
        "{}",
        text(&out)
    );
}

/// A signature of `component` by a key the configuration does not know.
fn signing_of_other_key(component: &std::path::Path) -> String {
    use edgeguard::fleet::trust::signing;
    let key = signing::key_from_text(&signing::encode(&[42u8; 32])).unwrap();
    signing::sign(&key, &std::fs::read(component).unwrap())
}

/// Rules of each kind `rules check` tells apart, written as SigmaHQ writes them.
const MINER: &str = "title: Coin miner pool URL\nid: 0d2c9e38-1111-4b7e-9d7a-000000000001\n\
logsource:\n  category: process_creation\n  product: linux\ndetection:\n  selection:\n    \
CommandLine|contains:\n      - 'stratum+tcp://'\n      - 'stratum+ssl://'\n  condition: selection\nlevel: high\n";
const PARENT: &str = "title: Shell spawned by a web server\nlogsource:\n  category: process_creation\n  \
product: linux\ndetection:\n  selection:\n    ParentImage|endswith: '/nginx'\n    Image|endswith: '/sh'\n  \
condition: selection\nlevel: high\n";
const WINDOWS: &str = "title: Encoded PowerShell\nlogsource:\n  category: process_creation\n  product: windows\n\
detection:\n  selection:\n    CommandLine|windash: '-enc '\n  condition: selection\n";
const BROKEN: &str = "title: Unclosed\nlogsource:\n  category: process_creation\n  product: linux\n\
detection:\n  selection:\n    Image|endswith: '/nc'\n  condition: (selection\n";

#[test]
fn rules_check_says_rule_by_rule_what_is_evaluated_skipped_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("linux/process_creation")).unwrap();
    std::fs::write(dir.path().join("linux/process_creation/miner.yml"), MINER).unwrap();
    std::fs::write(
        dir.path().join("linux/process_creation/parent.yaml"),
        PARENT,
    )
    .unwrap();
    // Two documents in one file, and a file that is not a rule.
    std::fs::write(
        dir.path().join("more.yml"),
        format!("{WINDOWS}---\n{BROKEN}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a rule").unwrap();
    let root = dir.path().to_str().unwrap();

    let out = edgeguard(&["rules", "check", root]);
    let shown = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused rule: exit 1\n{shown}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{shown}");
    assert!(
        lines[0].starts_with("loaded")
            && lines[0].contains("Coin miner pool URL")
            && lines[0].ends_with("ProcessCreate"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("skipped") && lines[1].contains("ParentImage"),
        "{shown}"
    );
    assert!(
        lines[2].starts_with("skipped") && lines[2].contains("windows"),
        "{shown}"
    );
    assert!(
        lines[3].starts_with("refused") && lines[3].contains("not closed"),
        "{shown}"
    );
    assert_eq!(
        lines[4],
        "4 rules in 3 files: 1 evaluated, 2 skipped, 1 refused"
    );

    let out = edgeguard(&["rules", "check", "--json", root]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["status"], "loaded");
    assert_eq!(list[0]["event"], "ProcessCreate");
    assert_eq!(list[3]["status"], "refused");

    // Only rules edgeguard can take or names the reason for: exit 0.
    std::fs::remove_file(dir.path().join("more.yml")).unwrap();
    assert!(edgeguard(&["rules", "check", root]).status.success());
    // No rule file at all: bad input.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        edgeguard(&["rules", "check", empty.path().to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    // A reader that stops at once (`| head -0`): quiet, no panic.
    let mut child = Command::new(edgeguard_bin())
        .args(["rules", "check", root])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
