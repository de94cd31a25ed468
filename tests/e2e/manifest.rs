//! `edgeguard check-manifest` over the deployment manifests in `tests/manifests/`: each
//! `NAME.json` has a `NAME.expected` listing its findings (`Severity code module path`, one per
//! line, none for a clean manifest) or, for a document that is no deployment at all,
//! `error: <what the error says>`. `tests/manifests/README.md` says which public shape each
//! reproduces; `merge/` holds one device's deployments, merged by priority.

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
        manifests.len() >= 40,
        "at least 40 manifests, found {}",
        manifests.len()
    );
    let (mut malformed, mut with_errors, mut with_placeholders) = (0, 0, 0);
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
        with_errors += usize::from(want.iter().any(|w| w.contains(" manifest-error ")));
        with_placeholders += usize::from(want.iter().any(|w| w.contains(" template-placeholder ")));
        for f in &findings {
            assert!(
                !f["remediation"].as_str().unwrap().is_empty()
                    && !f["message"].as_str().unwrap().is_empty()
            );
        }
    }
    assert!(
        malformed >= 2,
        "documents that are no deployment are part of the set"
    );
    assert!(
        with_errors >= 10,
        "bad parts beside good ones: {with_errors}"
    );
    assert!(with_placeholders >= 4, "templates: {with_placeholders}");
}

fn manifests_dir() -> String {
    repo_root().join("tests/manifests").display().to_string()
}

#[test]
fn the_sarif_of_the_whole_directory_validates_against_the_sarif_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas/sarif/sarif-schema-2.1.0.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .build(&schema)
        .expect("the SARIF schema compiles");
    assert!(
        !validator.is_valid(&serde_json::json!({"version": "2.1.0", "runs": [{"results": []}]})),
        "a run without its tool is no SARIF"
    );
    let out = check(&[&manifests_dir(), "--format", "sarif"]);
    // One file of the set is not JSON: it fails the run, not the report; the package.json-like
    // one is no deployment, left aside as a directory's other JSON files are.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("13-not-json.json: not JSON"), "{stderr}");
    assert!(
        stderr.contains("19-not-a-manifest.json: not a deployment, left aside"),
        "{stderr}"
    );
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let run = &log["runs"][0];
    let results = run["results"].as_array().unwrap();
    assert!(results.len() > 80, "{}", results.len());
    assert_eq!(run["invocations"][0]["executionSuccessful"], false);
    assert_eq!(
        run["invocations"][0]["toolExecutionNotifications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Every result names a rule of the run, its file and its line.
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for r in results {
        let rule = &rules[r["ruleIndex"].as_u64().unwrap() as usize];
        assert_eq!(rule["id"], r["ruleId"]);
        let physical = &r["locations"][0]["physicalLocation"];
        assert!(
            physical["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with(".json"),
            "{r}"
        );
        assert!(
            physical["region"]["startLine"].as_u64().unwrap() >= 1,
            "{r}"
        );
    }
    // A finding inside createOptions is on the line of its `createOptions` key.
    let dangerous = results
        .iter()
        .find(|r| {
            r["ruleId"] == "privileged"
                && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap()
                    .ends_with("31-broken-module-beside-privileged.json")
        })
        .expect("the privileged module of 31");
    let text = std::fs::read_to_string(
        repo_root().join("tests/manifests/31-broken-module-beside-privileged.json"),
    )
    .unwrap();
    let line = dangerous["locations"][0]["physicalLocation"]["region"]["startLine"]
        .as_u64()
        .unwrap() as usize;
    let shown = text.lines().nth(line - 1).unwrap();
    assert!(
        shown.contains("\"createOptions\"") && shown.contains("Privileged"),
        "line {line}: {shown}"
    );
}

#[test]
fn deployments_given_together_merge_by_priority() {
    let dir = repo_root().join("tests/manifests/merge");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--merge", "--json"]);
    let out = check(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: Vec<String> = findings
        .iter()
        .map(|f| {
            let file = std::path::Path::new(f["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            format!(
                "{file} {} {} {} {}",
                f["severity"].as_str().unwrap(),
                f["code"].as_str().unwrap(),
                f["module"].as_str().unwrap(),
                f["path"].as_str().unwrap()
            )
        })
        .collect();
    let mut want: Vec<String> = std::fs::read_to_string(dir.join("merged.expected"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Alone, each is judged as it stands: the low base's privileged sensor is there.
    let alone = check(&[&files[0], "--json"]);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&alone.stdout).unwrap();
    assert!(findings.iter().any(|f| f["code"] == "privileged"));
}

#[test]
fn stdin_a_directory_and_a_closed_pipe() {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    // `-` reads the manifest from stdin.
    let text = std::fs::read(repo_root().join("tests/manifests/23-layered-privileged-agent.json"))
        .unwrap();
    let mut child = std::process::Command::new(edgeguard_bin())
        .args(["check-manifest", "-", "--json", "--fail-on", "high"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(findings.len(), 3);
    assert_eq!(findings[0]["file"], "stdin");

    // A directory: its deployments, a JSON file that is none left aside and said so.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("tests/manifests/35-dev-node-and-whole-dev.json"),
        dir.path().join("deployment.json"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::copy(
        repo_root().join("tests/manifests/42-layered-docker-socket-mounts.json"),
        dir.path().join("nested/layer.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("package.json"), r#"{"name": "app"}"#).unwrap();
    let out = check(&[dir.path().to_str().unwrap()]);
    let table = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("package.json: not a deployment, left aside"),
        "{stderr}"
    );
    assert!(
        table.contains("== ")
            && table.contains("deployment.json")
            && table.contains("nested/layer.json"),
        "{table}"
    );
    assert!(table.contains("2 deployments analysed"), "{table}");

    // A big report into a pipe closed after its first line: no panic, no error.
    let big = dir.path().join("big.json");
    let modules: serde_json::Map<String, serde_json::Value> = (0..3000)
        .map(|i| (format!("m{i}"), serde_json::json!({"settings": {"image": "x", "createOptions": "{\"HostConfig\":{\"Privileged\":true}}"}})))
        .collect();
    std::fs::write(&big, serde_json::json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"systemModules": {}, "modules": modules}}, "$edgeHub": {"properties.desired": {"routes": {}}}}}).to_string()).unwrap();
    let mut child = std::process::Command::new(edgeguard_bin())
        .args(["check-manifest", big.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("SEVERITY"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "quiet on a closed pipe: {stderr}");
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
        check(&[
            &manifest("14-createoptions-not-json"),
            "--fail-on",
            "medium"
        ])
        .status
        .code(),
        Some(1),
        "a part that cannot be read counts as a finding"
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
