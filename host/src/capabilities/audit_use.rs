//! How a capability reads the kernel's audit records, or why it does not: for its status.

use crate::kernel::audit;
use std::sync::Mutex;

/// Whether the audit records of one purpose are read, and why not.
#[derive(Clone, Debug, Default)]
pub enum AuditUse {
    /// Not asked for (`agent.audit = "off"`), or the feed has not opened yet.
    #[default]
    Off,
    /// Asked for and not available: why.
    Unavailable(String),
    /// Read.
    Reading {
        /// What the records are read for.
        purpose: audit::Purpose,
        /// As a reader beside a daemon, or as the daemon.
        role: audit::Role,
        /// Rules edgeguard added for the purpose.
        rules_added: usize,
        /// The last change edgeguard made after opening, and why.
        last_change: Option<String>,
    },
}

impl AuditUse {
    pub(crate) fn of(audit: &audit::Audit) -> AuditUse {
        AuditUse::Reading {
            purpose: audit.purpose(),
            role: audit.role(),
            rules_added: audit.rules_added(),
            last_change: audit.last_change().map(str::to_owned),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            AuditUse::Off => "off".to_owned(),
            AuditUse::Unavailable(why) => format!("unavailable: {why}"),
            AuditUse::Reading {
                purpose,
                role,
                rules_added,
                last_change,
            } => {
                let role = match role {
                    audit::Role::Reader => "read beside the audit daemon's",
                    audit::Role::Daemon => "received as the audit daemon",
                };
                let (records, calls) = match purpose {
                    audit::Purpose::Execs => ("exec records", "execve"),
                    audit::Purpose::Connections => ("connection records", "connect and accept"),
                };
                let rules = match (rules_added, purpose) {
                    (0, audit::Purpose::Execs) => "the rules in force audit execve".to_owned(),
                    (0, audit::Purpose::Connections) => {
                        "the rules in force decide which connects and accepts are told".to_owned()
                    }
                    (n, _) => format!("{n} rules for {calls} added by edgeguard"),
                };
                match last_change {
                    None => format!("{records} {role}; {rules}"),
                    Some(change) => format!("{records} {role}; {rules}; last change: {change}"),
                }
            }
        }
    }
}

/// An [`AuditUse`] a reader thread keeps current and a status reads.
#[derive(Default)]
pub(crate) struct Shown(Mutex<AuditUse>);

impl Shown {
    pub(crate) fn set(&self, state: AuditUse) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub(crate) fn get(&self) -> AuditUse {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Shows `audit` anew when it changed since `seen` (its count of changes, kept by the
    /// caller): true then.
    pub(crate) fn follow(&self, audit: &audit::Audit, seen: &mut u64) -> bool {
        if audit.changes() == *seen {
            return false;
        }
        *seen = audit.changes();
        self.set(AuditUse::of(audit));
        true
    }
}
