//! Manifest collector: analyses the IoT Edge deployment manifests at the configured paths and
//! reports each finding (`ManifestFinding`) when a manifest is first seen or changes, and a
//! `ManifestError` for one that cannot be analysed. The manifests are read through WASI from the
//! directories the configuration grants (`filesystem` with `dirs`); the analysis is the same
//! code as `edgeguard check-manifest`.

use edgeguard_sdk::{CustomEvent, config_keys};
use edgeguard_sdk::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

struct ManifestCollector {
    paths: Vec<String>,
    /// Fingerprint of each manifest as last analysed.
    seen: HashMap<String, u64>,
}

impl Collector for ManifestCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("manifest", env!("CARGO_PKG_VERSION"))
            .emits(["ManifestFinding", "ManifestError"])
            .needs(["filesystem", "log"])
            .group(PriorityGroup::Low)
            .about("security findings of IoT Edge deployment manifests")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["paths"])?;
        let paths = match config.get("paths") {
            None => vec!["/etc/iotedge/deployment.json".to_owned()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| p.as_str().filter(|p| p.starts_with('/')).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| CollectError::config("paths", "expected a list of absolute paths"))?,
            Some(other) => return Err(CollectError::config("paths", format!("expected a list of absolute paths, got {other}"))),
        };
        Ok(ManifestCollector { paths, seen: HashMap::new() })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        let mut events = Vec::new();
        for path in &self.paths {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    debug!("{path}: {e}");
                    continue;
                }
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            let fingerprint = h.finish();
            if self.seen.get(path) == Some(&fingerprint) {
                continue;
            }
            match edgeguard_manifest::analyze_text(&text) {
                Ok(findings) => {
                    info!("{path}: {} findings", findings.len());
                    events.extend(findings.iter().map(|f| {
                        event("ManifestFinding", json!({
                            "Manifest": path,
                            "Severity": f.severity.as_str(),
                            "Code": f.code,
                            "Module": f.module,
                            "Field": f.path,
                            "Message": f.message,
                            "Remediation": f.remediation,
                            "Recommendation": f.recommendation,
                        }))
                    }));
                }
                Err(invalid) => {
                    warn!("{path}: {invalid}");
                    events.push(event("ManifestError", json!({ "Manifest": path, "Field": invalid.path, "Message": invalid.message })));
                }
            }
            self.seen.insert(path.clone(), fingerprint);
        }
        events.truncate(max_events as usize);
        Ok(events)
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(json!(self.seen).to_string().into_bytes())
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        let seen: HashMap<String, u64> = serde_json::from_slice(&state).map_err(|e| CollectError::InvalidState(format!("manifest state: {e}")))?;
        self.seen = seen;
        Ok(())
    }
}

fn event(name: &str, item: Value) -> Event {
    Event::Custom(CustomEvent { name: name.to_owned(), periodic: false, payload_json: vec![item.to_string()] })
}

edgeguard_sdk::export_collector!(ManifestCollector);
