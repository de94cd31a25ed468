//! Manifest collector: analyses IoT Edge deployments and reports each finding
//! (`ManifestFinding`) when a deployment is first seen or changes, and a `ManifestError` for one
//! that cannot be analysed. Two sources:
//!
//! - the deployment running now, reconstructed from the containers edgeAgent created (granted
//!   `containers`): edgeAgent labels each with the module's createOptions as the manifest gave
//!   them, its version, restart policy and desired status, and names it after the module;
//! - manifest files at the configured `paths`, read through WASI from the directories the
//!   configuration grants (`filesystem` with `dirs`).
//!
//! The analysis is the same code as `edgeguard check-manifest`.

use edgeguard_manifest::edge_agent;
use edgeguard_manifest::{Finding, Invalid};
use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{CustomEvent, config_bool, config_keys, fingerprint};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The module fields edgeAgent keeps in labels, by their name in the manifest.
const MODULE_LABELS: [(&str, &str); 3] = [
    ("version", edge_agent::VERSION),
    ("restartPolicy", edge_agent::RESTART_POLICY),
    ("status", edge_agent::DESIRED_STATUS),
];
/// How findings about the running deployment name their source.
const RUNNING: &str = "running modules (edgeAgent containers)";

struct ManifestCollector {
    paths: Vec<String>,
    running: bool,
    /// Fingerprint of each manifest as last analysed.
    seen: HashMap<String, u64>,
    backlog: Vec<Event>,
}

impl Collector for ManifestCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("manifest", env!("CARGO_PKG_VERSION"))
            .emits(["ManifestFinding", "ManifestError"])
            .needs(["containers", "filesystem", "log"])
            .group(PriorityGroup::Low)
            .about("security findings of IoT Edge deployment manifests")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["paths", "running"])?;
        let paths = match config.get("paths") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| p.as_str().filter(|p| p.starts_with('/')).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    CollectError::config("paths", "expected a list of absolute paths")
                })?,
            Some(other) => {
                return Err(CollectError::config(
                    "paths",
                    format!("expected a list of absolute paths, got {other}"),
                ));
            }
        };
        Ok(ManifestCollector {
            paths,
            running: config_bool(&config, "running", true)?,
            seen: HashMap::new(),
            backlog: Vec::new(),
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        let mut events = std::mem::take(&mut self.backlog);
        let mut current: Vec<String> = self.paths.clone();
        // Each running module is analysed alone, so that one whose labels cannot be read does
        // not hide the findings of the others.
        match self.running.then(running_modules).flatten() {
            Some(modules) => {
                for (name, path, module) in &modules {
                    let key = format!("{RUNNING}/{name}");
                    self.report(
                        &key,
                        RUNNING,
                        &module.to_string(),
                        || {
                            Ok(edgeguard_manifest::analyze_modules(&[(
                                name.clone(),
                                path.clone(),
                                module,
                            )]))
                        },
                        &mut events,
                    );
                    current.push(key);
                }
            }
            // No daemon to ask right now: what was seen stays seen.
            None => current.extend(self.seen.keys().filter(|k| k.starts_with(RUNNING)).cloned()),
        }
        // A module or file gone is forgotten: when it comes back, it is reported anew.
        self.seen.retain(|key, _| current.contains(key));
        for path in self.paths.clone() {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    debug!("{path}: {e}");
                    continue;
                }
            };
            self.report(
                &path,
                &path,
                &text,
                || edgeguard_manifest::analyze_text(&text),
                &mut events,
            );
        }
        // What does not fit in this call waits for the next.
        self.backlog = events.split_off(events.len().min(max_events as usize));
        Ok(events)
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(json!(self.seen).to_string().into_bytes())
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        let seen: HashMap<String, u64> = serde_json::from_slice(&state)
            .map_err(|e| CollectError::InvalidState(format!("manifest state: {e}")))?;
        self.seen = seen;
        Ok(())
    }
}

impl ManifestCollector {
    /// Analyses a deployment (or one module of it) named `source`, remembered as `key`, unless
    /// its content `text` is unchanged since the last time.
    fn report(
        &mut self,
        key: &str,
        source: &str,
        text: &str,
        analyze: impl FnOnce() -> Result<Vec<Finding>, Invalid>,
        events: &mut Vec<Event>,
    ) {
        let fingerprint = fingerprint(&text);
        if self.seen.get(key) == Some(&fingerprint) {
            return;
        }
        match analyze() {
            Ok(findings) => {
                info!("{source}: {} findings", findings.len());
                events.extend(findings.iter().map(|f| {
                    // A part that could not be read is an error, as a whole file is.
                    if f.code == "manifest-error" {
                        return event("ManifestError", json!({ "Manifest": source, "Module": f.module, "Field": f.path, "Message": f.message }));
                    }
                    event(
                        "ManifestFinding",
                        json!({
                            "Manifest": source,
                            "Severity": f.severity.as_str(),
                            "Code": f.code,
                            "Module": f.module,
                            "Field": f.path,
                            "Message": f.message,
                            "Remediation": f.remediation,
                            "Recommendation": f.recommendation,
                        }),
                    )
                }));
            }
            Err(invalid) => {
                warn!("{source}: {invalid}");
                events.push(event("ManifestError", json!({ "Manifest": source, "Field": invalid.path, "Message": invalid.message })));
            }
        }
        self.seen.insert(key.to_owned(), fingerprint);
    }
}

/// The running deployment's modules in the manifest's shape (name, path, module), from the
/// containers edgeAgent created; None when there is no Docker daemon to ask.
fn running_modules() -> Option<Vec<(String, String, Value)>> {
    let list = match containers::inventory() {
        Ok(list) => list,
        Err(HostError::Unavailable(why)) => {
            debug!("{why}");
            return None;
        }
        Err(e) => {
            warn!("cannot list the containers: {e:?}");
            return None;
        }
    };
    let mut modules: Vec<_> = list
        .iter()
        .filter_map(|c| edge_agent::module_of(&c.labels, &c.name).map(|name| (name, c)))
        .map(|(name, c)| {
            let group = if name == "edgeAgent" || name == "edgeHub" { "systemModules" } else { "modules" };
            let env: serde_json::Map<String, Value> = c.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), json!({ "value": v }))).collect();
            let mut module = json!({
                "type": "docker",
                "settings": { "image": c.image, "createOptions": edge_agent::label(&c.labels, edge_agent::CREATE_OPTIONS).unwrap_or_default() },
                "env": env,
            });
            for (field, key) in MODULE_LABELS {
                if let Some(value) = edge_agent::label(&c.labels, key) {
                    module[field] = Value::String(value.to_owned());
                }
            }
            (name.to_owned(), format!("{group}.{name}"), module)
        })
        .collect();
    modules.sort_by(|a, b| a.1.cmp(&b.1));
    Some(modules)
}

fn event(name: &str, item: Value) -> Event {
    Event::Custom(CustomEvent {
        name: name.to_owned(),
        periodic: false,
        payload_json: vec![item.to_string()],
    })
}

edgeguard_sdk::export_collector!(ManifestCollector);
