//! `network-alerts`: the ASC agents' network recommendation and alerts, computed on the device
//! from `ListeningPorts` snapshots and `ConnectionCreate` events.
//!
//! | rule | kind, severity | raised when |
//! |---|---|---|
//! | `OpenPorts` | Recommendation, Medium | an endpoint listens on an address the network reaches, and its port is not on `allowed` (`22`, `tcp/22`); repeated every `remind` (1 day) |
//! | `NewListeningPort` | Alert, Low | such an endpoint that the previous snapshot did not have |
//! | `DockerExposed` | Alert, Medium | a TCP endpoint on `ports` (2375, 2376), or of dockerd, that the network reaches |
//! | `OutboundNotAllowed` | Alert, Low | an outbound connection to an address outside `allowed` (addresses and blocks; loopback is always allowed; off until set) |
//! | `ConnectionsOutOfRange` | Alert, Low | connections per `window` outside `min`..=`max` (off until enabled) |

mod rules;

use edgeguard_analyzer_sdk::prelude::*;
pub use rules::{Cidr, Connection, Listener, NetworkAlerts, Settings};

/// The analyzer as the host runs it.
pub struct Plugin(NetworkAlerts);

impl Analyzer for Plugin {
    fn describe() -> AnalyzerInfo {
        AnalyzerInfo::new("network-alerts", env!("CARGO_PKG_VERSION"))
            .wants(["ListeningPorts", "ConnectionCreate"])
            .needs(["log"])
            .about("Open and new listening ports, Docker on TCP, outbound allow-lists and connection counts")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        Ok(Plugin(NetworkAlerts::new(Settings::from_config(&config)?)))
    }

    fn rules(&self) -> Vec<RuleStatus> {
        self.0.rules()
    }

    fn analyze(
        &mut self,
        events: Vec<Observed>,
        now_ms: u64,
        max_findings: u32,
    ) -> Result<Vec<Finding>, CollectError> {
        let mut findings = Vec::new();
        for event in &events {
            match event.name.as_str() {
                "ListeningPorts" => {
                    findings.extend(self.0.listening(&event.id, event.time_ms, &event.items));
                }
                _ => {
                    for item in &event.items {
                        if let Some(c) = Connection::read(&event.id, event.time_ms, item) {
                            findings.extend(self.0.connection(&c));
                        }
                    }
                }
            }
        }
        findings.extend(self.0.tick(now_ms));
        cap_findings(&mut findings, max_findings);
        Ok(findings)
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(self.0.save())
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        self.0
            .restore(&state)
            .map_err(|e| CollectError::InvalidState(e.to_string()))
    }
}

// Only the component exports it: a native build (the unit tests) has no such symbols to link.
#[cfg(target_arch = "wasm32")]
edgeguard_analyzer_sdk::export_analyzer!(Plugin);
