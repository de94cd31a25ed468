//! `sigma`: the operator's Sigma rules (the SigmaHQ format) evaluated on the device, in the
//! sandbox, against the events they are written for: `process_creation` rules against
//! ProcessCreate, `network_connection` rules against ConnectionCreate, as the events arrive
//! (the engine and the field mapping are `plugins/sigma/engine`, shared with
//! `edgeguard rules check`).
//!
//! ```toml
//! [[plugin]]
//! name = "sigma"
//! file = "sigma.wasm"
//! grants = ["log", "filesystem"]      # filesystem: only to read `dirs`
//! [plugin.config]
//! dirs = ["/etc/edgeguard/sigma"]     # *.yml and *.yaml, recursively
//! rules = ["title: ...\n..."]         # rules as text (the local file, the twin)
//! disabled = ["<rule id or title>"]
//! except = { "<rule id or title>" = [{ CommandLine = "*/backup.sh*" }] }
//! suppress = "10m"                    # per rule and process (or peer)
//! ```
//!
//! Every rule is in the reported rule set: loaded (its level, its events, its exceptions),
//! disabled, or skipped with the reason (a field the events lack, another product or log, a
//! rule that does not parse). A match raises an Alert named after the rule's title, with its
//! level as severity, its ATT&CK techniques, the event as evidence and the rule's id.

mod rules;

use edgeguard_analyzer_sdk::prelude::*;
pub use rules::Sigma;

/// The analyzer as the host runs it.
pub struct Plugin(Sigma);

impl Analyzer for Plugin {
    fn describe() -> AnalyzerInfo {
        AnalyzerInfo::new("sigma", env!("CARGO_PKG_VERSION"))
            .wants(["ProcessCreate", "ConnectionCreate"])
            .needs(["log"])
            .about("The operator's Sigma rules for process creation and network connections")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        let sigma = Sigma::from_config(&config)?;
        info!(
            "{} Sigma rules loaded of {} read",
            sigma.loaded(),
            sigma.read()
        );
        Ok(Plugin(sigma))
    }

    fn rules(&self) -> Vec<RuleStatus> {
        self.0.statuses()
    }

    fn analyze(
        &mut self,
        events: Vec<Observed>,
        now_ms: u64,
        max_findings: u32,
    ) -> Result<Vec<Finding>, CollectError> {
        let mut findings = Vec::new();
        for event in &events {
            for item in &event.items {
                findings.extend(self.0.event(&event.id, &event.name, item, now_ms));
            }
        }
        self.0.tick(now_ms);
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
