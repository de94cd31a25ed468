//! A report as a SARIF 2.1.0 log (OASIS), the format code-scanning services take: one run,
//! a rule per kind of finding, a result per finding located at its file and line with the
//! manifest path as its logical location, and the inputs that could not be analysed as
//! notifications of a failed invocation.

use super::check_manifest::{Report, locations};
use edgeguard_manifest::Severity;
use serde_json::{Value, json};

/// What each kind of finding is about, for the rule's short description.
const RULES: [(&str, &str); 16] = [
    ("privileged", "A module runs privileged"),
    (
        "dangerous-capability",
        "A module adds a capability that controls the host",
    ),
    (
        "host-network",
        "A module shares the host's network namespace",
    ),
    ("host-pid", "A module shares the host's process namespace"),
    ("host-ipc", "A module shares the host's IPC namespace"),
    ("sensitive-bind", "A module binds a sensitive host path"),
    ("host-device", "A module is given a host device"),
    ("unconfined", "A module turns seccomp or AppArmor off"),
    ("no-log-rotation", "A module's logs grow without bound"),
    ("logging-disabled", "A module's logging is disabled"),
    ("unpinned-image", "A module's image does not say what runs"),
    ("registry-password", "A registry password in clear text"),
    (
        "edgehub-idle-protocol-head",
        "An edgeHub protocol head nothing can use",
    ),
    (
        "route-everything-upstream",
        "A route sends every message to IoT Hub",
    ),
    (
        "manifest-error",
        "A part of the deployment edgeAgent would refuse",
    ),
    (
        "template-placeholder",
        "A template placeholder left unanalysed",
    ),
];

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

/// The score code-scanning services sort by (GitHub's `security-severity`, CVSS-like).
fn score(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
    }
}

/// A file name as a URI reference: what is not unreserved (or `/`) percent-encoded.
fn uri(name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(char::from(b));
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn location(file: &str, line: Option<usize>) -> Value {
    let mut physical = json!({ "artifactLocation": { "uri": uri(file) } });
    if let Some(line) = line {
        physical["region"] = json!({ "startLine": line });
    }
    json!({ "physicalLocation": physical })
}

/// The SARIF log of `report`.
pub fn log(report: &Report) -> Value {
    let mut codes: Vec<&str> = report.findings.iter().map(|(_, f)| f.code).collect();
    codes.sort_unstable();
    codes.dedup();
    let rules: Vec<Value> = codes
        .iter()
        .map(|code| {
            let first = report
                .findings
                .iter()
                .map(|(_, f)| f)
                .find(|f| f.code == *code)
                .expect("a finding of each code");
            let about = RULES
                .iter()
                .find(|(c, _)| c == code)
                .map_or(*code, |(_, d)| *d);
            let mut properties = json!({ "tags": ["security", "iot-edge", "deployment"] });
            if let Some(r) = first.recommendation {
                properties["ascRecommendation"] = json!(r);
            }
            json!({
                "id": code,
                "shortDescription": { "text": about },
                "help": { "text": first.remediation },
                "defaultConfiguration": { "level": level(first.severity) },
                "properties": properties,
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .zip(locations(report))
        .map(|((_, f), (file, line))| {
            let mut properties = json!({
                "severity": f.severity.as_str(),
                "security-severity": score(f.severity),
                "module": f.module,
                "remediation": f.remediation,
            });
            if let Some(r) = f.recommendation {
                properties["ascRecommendation"] = json!(r);
            }
            let mut located = location(file, line);
            located["logicalLocations"] =
                json!([{ "fullyQualifiedName": f.path, "kind": "member" }]);
            json!({
                "ruleId": f.code,
                "ruleIndex": codes.iter().position(|c| *c == f.code).expect("a rule of each code"),
                "level": level(f.severity),
                "message": { "text": format!("{}: {}", f.module, f.message) },
                "locations": [located],
                "properties": properties,
            })
        })
        .collect();
    let notifications: Vec<Value> = report
        .failures
        .iter()
        .map(|(file, why)| {
            json!({
                "level": "error",
                "message": { "text": format!("{file}: {why}") },
                "locations": [location(file, None)],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "edgeguard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": report.failures.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }]
    })
}
