//! `process-alerts`: the ASC agents' process alerts, computed on the device from
//! `ProcessCreate` events as they arrive (the kernel's exec events reach it within the call
//! after the exec, not at the collector's next interval).
//!
//! | rule | severity | raised when a command line |
//! |---|---|---|
//! | `ReverseShell` | High | redirects a shell to `/dev/tcp`, runs a program for a network peer (`nc -e`, `ncat --sh-exec`, `socat exec:`), hands a script's socket to a shell, or loops a FIFO through netcat |
//! | `CryptoMiner` | Medium | names a miner (xmrig, cpuminer-multi, …, and `names`), a `stratum+` URL, a known pool, or `--donate-level` |
//! | `DownloadRun` | Medium | pipes a download into a shell, substitutes one into a shell, or saves one and runs it |
//! | `AttackTool` | Medium | runs a tool made for attacking (hydra, john, sqlmap, masscan, linpeas, …, and `names`) |
//! | `SystemLogsRemoved` | Medium | removes, empties or links to `/dev/null` a path under `/var/log`, or vacuums the journal |
//! | `BashHistoryCleared` | Low | clears, removes or empties a shell's history, or turns history off |
//! | `FirewallDisabled` | High | flushes the filter table or a built-in chain, sets a built-in chain's policy to ACCEPT, flushes nftables' rule set or deletes a table, disables ufw, stops the firewall's service |
//! | `AuditDisabled` | High | `auditctl -e 0`, `auditctl -D`, or stops auditd |
//! | `LocalUserAdded`, `LocalUserDeleted` | Medium, Low | useradd, adduser, userdel, deluser |
//! | `UserAddedToGroup`, `UserRemovedFromGroup` | Low | usermod `-G`, gpasswd, groupmems, adduser/deluser/addgroup/delgroup with a group |
//! | `ProcessNotAllowed` | Low | runs an executable outside `allowed` (off until `allowed` is set) |
//!
//! Each rule takes `enabled`, `severity` and `except` (tuples of field values that silence it);
//! what it matched stays quiet for `suppress` (default 10 minutes).

mod command;
mod detect;
mod rules;

use edgeguard_analyzer_sdk::prelude::*;
pub use rules::{Exec, ProcessAlerts, Settings};

/// The analyzer as the host runs it.
pub struct Plugin(ProcessAlerts);

impl Analyzer for Plugin {
    fn describe() -> AnalyzerInfo {
        AnalyzerInfo::new("process-alerts", env!("CARGO_PKG_VERSION"))
            .wants(["ProcessCreate"])
            .needs(["log"])
            .about("Reverse shells, miners, attack tools, tampering and account changes, from ProcessCreate events")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        Ok(Plugin(ProcessAlerts::new(Settings::from_config(&config)?)))
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
                if let Some(exec) = Exec::read(&event.id, event.time_ms, item) {
                    findings.extend(self.0.exec(&exec));
                }
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
