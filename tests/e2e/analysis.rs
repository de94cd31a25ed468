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
    assert!(shown["wit"].as_str().unwrap().ends_with("@0.1.3"));
}
