//! `login-alerts`: the ASC agents' login alerts, computed on the device from `Login` events.
//!
//! | rule | severity | raised when |
//! |---|---|---|
//! | `FailedBruteForce` | Low | `failures` failed logins from one source, or against one user, within `window` (fail2ban's 5 in 10 minutes) |
//! | `SuccessfulBruteForce` | High | a success from a source, or for a user, that failed `failures` times, the last within `within` (Wazuh 40112: 4 minutes) |
//! | `SuccessfulLocalLogin` | High | a success with no remote address |
//! | `FailedLocalLogin` | Medium | a failure with no remote address |
//! | `LoginUserNotAllowed` | Low | a success of a user not on `users` (off until `users` is set) |
//! | `FailedLoginsOutOfRange` | Low | failed logins within `window` outside `min`..=`max` (off until enabled) |
//!
//! Each alert's key (its source, or its user) is then quiet for `suppress` (default 10 minutes):
//! a brute force is one alert, not one per attempt.

mod rules;

use edgeguard_analyzer_sdk::prelude::*;
pub use rules::{Login, LoginAlerts, Outcome, Settings};

/// The analyzer as the host runs it.
pub struct Plugin(LoginAlerts);

impl Analyzer for Plugin {
    fn describe() -> AnalyzerInfo {
        AnalyzerInfo::new("login-alerts", env!("CARGO_PKG_VERSION"))
            .wants(["Login"])
            .needs(["log"])
            .about("Brute force, local logins and login allow-lists, from Login events")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        Ok(Plugin(LoginAlerts::new(Settings::from_config(&config)?)))
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
            for item in &event.items {
                if let Some(login) = Login::read(&event.id, event.time_ms, item) {
                    findings.extend(self.0.login(&login));
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
