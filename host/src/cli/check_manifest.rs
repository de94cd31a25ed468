//! `edgeguard check-manifest`: deployment manifests from files, directories or stdin, each
//! analysed alone or all merged as one device's deployments, reported as a table, JSON or SARIF.

use edgeguard_manifest::{Finding, Severity, deployment, locate};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Exit code: nothing at or above `--fail-on`.
pub const EXIT_OK: u8 = 0;
/// Exit code: a finding at or above `--fail-on` (manifest errors included).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: an input could not be read, or is not a deployment at all.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The largest manifest read (IoT Hub takes 32 KiB per module twin's desired properties; a
/// template or an `az` export with many layers stays far below this).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Files read from the directories given, at most.
pub const MAX_FILES: usize = 10_000;

/// How a report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: one block per finding.
    Table,
    /// A list of findings.
    Json,
    /// SARIF 2.1.0, as code-scanning services read it.
    Sarif,
}

/// What the command line asked for.
pub struct Options {
    /// Files, directories (their `*.json`, recursively) or `-` (stdin).
    pub inputs: Vec<PathBuf>,
    /// How to print the report.
    pub format: Format,
    /// Analyse the inputs as the deployments of one device, merged by priority.
    pub merge: bool,
    /// Findings at least this severe make the exit code 1.
    pub fail_on: Option<Severity>,
}

/// One document read.
pub struct Input {
    /// As the user gave it, or as found in a directory.
    pub name: String,
    /// Its content.
    pub text: String,
    /// Found in a directory (a JSON file there may be anything) rather than named.
    found: bool,
}

impl Input {
    /// The line of each key of the document, for locating findings.
    pub fn key_lines(&self) -> HashMap<String, usize> {
        locate::key_lines(&self.text)
    }
}

/// What one run found: the findings with the input each is in, and the inputs that could not
/// be analysed with why.
pub struct Report {
    /// The inputs analysed (the index of a finding's input is its place here).
    pub inputs: Vec<Input>,
    /// Each finding with the index of its input.
    pub findings: Vec<(usize, Finding)>,
    /// Inputs that could not be analysed: the name and why.
    pub failures: Vec<(String, String)>,
    /// Inputs found in directories that are JSON but no deployment, left aside.
    pub skipped: Vec<String>,
}

/// Reads and analyses; returns the text to print and the exit code.
pub fn run(options: &Options) -> (String, u8, Report) {
    let mut failures = Vec::new();
    let inputs = read_inputs(&options.inputs, &mut failures);
    let report = analyse(inputs, options.merge, failures);
    let text = match options.format {
        Format::Table => table(&report),
        Format::Json => json(&report),
        Format::Sarif => super::sarif::log(&report).to_string() + "\n",
    };
    let code = if !report.failures.is_empty() {
        EXIT_BAD_INPUT
    } else if options
        .fail_on
        .is_some_and(|t| report.findings.iter().any(|(_, f)| f.severity >= t))
    {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    (text, code, report)
}

fn read_inputs(given: &[PathBuf], failures: &mut Vec<(String, String)>) -> Vec<Input> {
    let mut inputs = Vec::new();
    let mut read = |name: String, found: bool, text: Result<String, String>| match text {
        Ok(text) => inputs.push(Input { name, text, found }),
        Err(why) => failures.push((name, why)),
    };
    let file = |path: &Path| {
        std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(read_bounded)
    };
    for path in given {
        let name = path.display().to_string();
        if name == "-" {
            read("stdin".into(), false, read_bounded(std::io::stdin()));
        } else if path.is_dir() {
            match super::files_under(path, &["json"], MAX_FILES) {
                Ok((_, true)) => read(
                    name,
                    false,
                    Err(format!("more than {MAX_FILES} JSON files")),
                ),
                Ok((files, false)) => {
                    for f in files {
                        read(f.display().to_string(), true, file(&f));
                    }
                }
                Err(e) => read(name, false, Err(e.to_string())),
            }
        } else {
            read(name, false, file(path));
        }
    }
    inputs
}

/// All of `reader`, unless it holds more than [`MAX_MANIFEST_BYTES`].
fn read_bounded(reader: impl Read) -> Result<String, String> {
    let mut text = String::new();
    reader
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "larger than {} MiB: not a deployment manifest",
            MAX_MANIFEST_BYTES >> 20
        ));
    }
    Ok(text)
}

fn analyse(inputs: Vec<Input>, merge: bool, mut failures: Vec<(String, String)>) -> Report {
    let mut deployments = Vec::new();
    let mut skipped = Vec::new();
    let mut kept = Vec::new();
    for input in inputs {
        let parsed = serde_json::from_str::<serde_json::Value>(&input.text)
            .map_err(|e| (false, format!("not JSON: {e}")))
            .and_then(|doc| {
                deployment::parse(&doc, kept.len()).map_err(|invalid| (true, invalid.to_string()))
            });
        match parsed {
            Ok(d) => {
                deployments.push(d);
                kept.push(input);
            }
            // A JSON file found beside the deployments (a package.json) is none of them.
            Err((true, _)) if input.found => skipped.push(input.name),
            Err((_, why)) => failures.push((input.name, why)),
        }
    }
    let findings = if merge {
        let merged = deployment::merge(deployments);
        edgeguard_manifest::analyze_deployment(&merged)
            .into_iter()
            .map(|f| (f.source, f))
            .collect()
    } else {
        deployments
            .iter()
            .flat_map(|d| {
                edgeguard_manifest::analyze_deployment(d)
                    .into_iter()
                    .map(|f| (d.source, f))
            })
            .collect()
    };
    Report {
        inputs: kept,
        findings,
        failures,
        skipped,
    }
}

/// Where each finding is: its input's name and the line of its path.
pub fn locations(report: &Report) -> Vec<(&str, Option<usize>)> {
    let mut lines: HashMap<usize, HashMap<String, usize>> = HashMap::new();
    report
        .findings
        .iter()
        .map(|(i, f)| {
            let keys = lines
                .entry(*i)
                .or_insert_with(|| report.inputs[*i].key_lines());
            (
                report.inputs[*i].name.as_str(),
                locate::line_of(keys, &f.path),
            )
        })
        .collect()
}

fn json(report: &Report) -> String {
    let list: Vec<serde_json::Value> = report
        .findings
        .iter()
        .zip(locations(report))
        .map(|((_, f), (file, line))| {
            serde_json::json!({
                "file": file,
                "line": line,
                "severity": f.severity.as_str(),
                "code": f.code,
                "module": f.module,
                "path": f.path,
                "message": f.message,
                "remediation": f.remediation,
                "recommendation": f.recommendation,
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).expect("JSON") + "\n"
}

fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let several = report.inputs.len() > 1;
    let located = locations(report);
    let width = report
        .findings
        .iter()
        .map(|(_, f)| f.module.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut current = None;
    for ((i, f), (file, line)) in report.findings.iter().zip(&located) {
        // A header per input when there are several, else one.
        if current.is_none() || (several && current != Some(*i)) {
            current = Some(*i);
            if several {
                let _ = writeln!(out, "== {file}");
            }
            let _ = writeln!(
                out,
                "{:<8} {:<width$} {:<26} WHAT",
                "SEVERITY", "MODULE", "FINDING"
            );
        }
        let at = match line {
            Some(n) => format!("{} ({file}:{n})", f.path),
            None => f.path.clone(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<width$} {:<26} {}",
            f.severity.as_str(),
            f.module,
            f.code,
            f.message
        );
        let _ = writeln!(out, "{:<8} {:<width$} {:<26} at {at}", "", "", "");
        let _ = writeln!(
            out,
            "{:<8} {:<width$} {:<26} fix: {}",
            "", "", "", f.remediation
        );
    }
    let count = |s| {
        report
            .findings
            .iter()
            .filter(|(_, f)| f.severity == s)
            .count()
    };
    if report.findings.is_empty() {
        let _ = writeln!(out, "no findings");
    } else {
        let _ = writeln!(
            out,
            "{} findings: {} high, {} medium, {} low",
            report.findings.len(),
            count(Severity::High),
            count(Severity::Medium),
            count(Severity::Low)
        );
    }
    if several {
        let _ = writeln!(out, "{} deployments analysed", report.inputs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, text: &str, found: bool) -> Input {
        Input {
            name: name.into(),
            text: text.into(),
            found,
        }
    }

    #[test]
    fn a_json_file_beside_deployments_is_skipped_a_named_one_refused() {
        let deployment = r#"{"modulesContent": {"$edgeAgent": {"properties.desired.modules.m": {"settings": {"image": "m"}}}}}"#;
        let report = analyse(
            vec![
                input("d.json", deployment, true),
                input("package.json", r#"{"name": "x"}"#, true),
                input("broken.json", "{", true),
                input("named.json", r#"{"name": "x"}"#, false),
            ],
            false,
            Vec::new(),
        );
        assert_eq!(report.inputs.len(), 1);
        assert_eq!(report.skipped, ["package.json"]);
        let failed: Vec<&str> = report.failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(failed, ["broken.json", "named.json"]);
        // The layered module's image has no tag and it has no log options: two findings, on
        // line 1 of d.json.
        assert_eq!(report.findings.len(), 2, "{:?}", report.findings);
        assert_eq!(
            locations(&report),
            [("d.json", Some(1)), ("d.json", Some(1))]
        );
    }
}
