//! `edgeguard check-manifest` over the deployment manifests in `tests/manifests/`: each
//! `NAME.json` has a `NAME.expected` listing its findings (`Severity code module path`, one per
//! line, none for a clean manifest) or, for a malformed one, `error: <what the error says>`.

use edgeguard_tests::{edgeguard_bin, repo_root};
use std::process::Output;

fn check(args: &[&str]) -> Output {
    std::process::Command::new(edgeguard_bin())
        .arg("check-manifest")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_manifest_gives_its_expected_findings_or_error() {
    let dir = repo_root().join("tests/manifests");
    let mut manifests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    manifests.sort();
    assert!(
        manifests.len() >= 15,
        "at least 15 manifests, found {}",
        manifests.len()
    );
    let mut malformed = 0;
    for manifest in &manifests {
        let expected = std::fs::read_to_string(manifest.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected", manifest.display()));
        let out = check(&[manifest.to_str().unwrap(), "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(error) = expected.trim().strip_prefix("error: ") {
            malformed += 1;
            assert_eq!(
                out.status.code(),
                Some(2),
                "{}: a malformed manifest is bad input: {stderr}",
                manifest.display()
            );
            assert!(
                stderr.contains(error),
                "{}: expected the error to say `{error}`, it said: {stderr}",
                manifest.display()
            );
            assert!(!stderr.contains("panicked"));
            continue;
        }
        assert!(out.status.success(), "{}: {stderr}", manifest.display());
        let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut got: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "{} {} {} {}",
                    f["severity"].as_str().unwrap(),
                    f["code"].as_str().unwrap(),
                    f["module"].as_str().unwrap(),
                    f["path"].as_str().unwrap()
                )
            })
            .collect();
        let mut want: Vec<String> = expected
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}", manifest.display());
        for f in &findings {
            assert!(
                !f["remediation"].as_str().unwrap().is_empty()
                    && !f["message"].as_str().unwrap().is_empty()
            );
        }
    }
    assert!(malformed >= 5, "malformed manifests are part of the set");
}

#[test]
fn fail_on_sets_the_exit_code_and_the_table_reads_well() {
    let manifest = |name: &str| {
        repo_root()
            .join(format!("tests/manifests/{name}.json"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        check(&[&manifest("03-asc-security-module"), "--fail-on", "high"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        check(&[&manifest("11-logging"), "--fail-on", "medium"])
            .status
            .code(),
        Some(0),
        "only Low findings"
    );
    assert_eq!(
        check(&[&manifest("11-logging"), "--fail-on", "LOW"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        check(&[&manifest("11-logging"), "--fail-on", "severe"])
            .status
            .code(),
        Some(2),
        "a bad severity is a usage error"
    );
    let out = check(&[&manifest("03-asc-security-module")]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("SEVERITY"), "{table}");
    assert!(table.contains("fix: drop Privileged"), "{table}");
    assert!(
        table
            .trim_end()
            .ends_with("4 findings: 4 high, 0 medium, 0 low"),
        "{table}"
    );
    let clean = String::from_utf8(check(&[&manifest("01-clean")]).stdout).unwrap();
    assert_eq!(clean.trim(), "no findings");
    assert_eq!(
        check(&["/nonexistent/deployment.json"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_collector_reports_findings_when_a_manifest_appears_or_changes() {
    use edgeguard::capabilities::{Capability, HostContext};
    use edgeguard::events::{Family, from_plugin};
    use edgeguard::sandbox::LoadedPlugin;
    let (rt, _cache) = edgeguard_tests::runtime();
    let dir = tempfile::tempdir().unwrap();
    let manifests = repo_root().join("tests/manifests");
    std::fs::copy(
        manifests.join("03-asc-security-module.json"),
        dir.path().join("deployment.json"),
    )
    .unwrap();
    std::fs::copy(
        manifests.join("14-createoptions-not-json.json"),
        dir.path().join("broken.json"),
    )
    .unwrap();
    let dirs = [dir.path().to_owned()];
    let grants = [
        Capability::Filesystem,
        Capability::Containers,
        Capability::Log,
    ];
    let loaded = LoadedPlugin::load_file(
        &rt,
        "manifest",
        &edgeguard_tests::plugin("edgeguard-plugin-manifest"),
        &grants,
        &dirs,
    )
    .await
    .unwrap();
    let paths: Vec<String> = ["deployment.json", "broken.json", "absent.json"]
        .iter()
        .map(|f| dir.path().join(f).to_string_lossy().into_owned())
        .collect();
    // Files only: the running deployment is the subject of the container tests.
    let config = serde_json::json!({ "paths": paths, "running": false }).to_string();
    let mut collector = loaded
        .instantiate(
            HostContext::new(std::path::Path::new("/")),
            &edgeguard::config::Limits::default(),
            &config,
        )
        .await
        .unwrap();
    let mut collect = async || -> Vec<edgeguard::events::SecurityEvent> {
        collector
            .collect()
            .await
            .expect("no fault")
            .expect("no plugin error")
            .into_iter()
            .map(|e| from_plugin(e).unwrap())
            .collect()
    };

    let events = collect().await;
    let findings: Vec<_> = events
        .iter()
        .filter(|e| e.name == "ManifestFinding")
        .collect();
    assert_eq!(findings.len(), 4, "{events:#?}");
    assert!(findings.iter().all(|e| e.family == Family::Edgeguard && e.payload[0]["Manifest"] == paths[0].as_str()));
    let privileged = findings
        .iter()
        .find(|e| e.payload[0]["Code"] == "privileged")
        .unwrap();
    assert_eq!(privileged.payload[0]["Severity"], "High");
    assert_eq!(privileged.payload[0]["Module"], "azureiotsecurity");
    assert_eq!(
        privileged.payload[0]["Recommendation"],
        "IoT_PrivilegedDockerOptions"
    );
    let errors: Vec<_> = events
        .iter()
        .filter(|e| e.name == "ManifestError")
        .collect();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].payload[0]["Message"]
            .as_str()
            .unwrap()
            .contains("not JSON once its chunks are joined")
    );
    let validator = edgeguard_tests::schema::edgeguard_validator();
    assert!(
        validator.is_valid(&edgeguard_tests::message_of(&events)),
        "findings validate against the project's schema"
    );

    assert!(
        collect().await.is_empty(),
        "an unchanged manifest is not reported again"
    );
    std::fs::copy(
        manifests.join("12-ipc-host.json"),
        dir.path().join("deployment.json"),
    )
    .unwrap();
    let events = collect().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload[0]["Code"], "host-ipc");

    // Without the directory grant, the plugin reads nothing.
    let blind = LoadedPlugin::load_file(
        &rt,
        "manifest",
        &edgeguard_tests::plugin("edgeguard-plugin-manifest"),
        &grants,
        &[],
    )
    .await
    .unwrap();
    let mut blind = blind
        .instantiate(
            HostContext::new(std::path::Path::new("/")),
            &edgeguard::config::Limits::default(),
            &config,
        )
        .await
        .unwrap();
    assert!(blind.collect().await.unwrap().unwrap().is_empty());
}
