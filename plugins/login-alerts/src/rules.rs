//! The rules, as plain Rust over logins: what the analyzer keeps between calls, what it raises.

use edgeguard_analyzer_sdk::tuning::{Quiet, Switch, Tally, Tuning, shown_duration};
use edgeguard_analyzer_sdk::{
    CollectError, Config, Entities, Fields, Finding, RuleStatus, Severity,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Sources, and users, followed at once; past it the one quiet longest is forgotten.
const MAX_KEYS: usize = 4096;
/// Evidence cited per finding, at most (the host takes 64).
const MAX_CITED: usize = 32;

/// One login, as the `Login` event carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The event's Id.
    pub id: String,
    /// When it was observed.
    pub time_ms: u64,
    /// Success or failure.
    pub outcome: Outcome,
    /// The account, if known.
    pub user: Option<String>,
    /// Where from, if remote.
    pub source: Option<String>,
    /// The program that logged it (sshd, login, …).
    pub executable: String,
    /// Its process.
    pub process_id: Option<u32>,
    /// Ports, when known.
    pub remote_port: Option<u16>,
    /// The local port, when known.
    pub local_port: Option<u16>,
    /// The event's fields, for the rules' exceptions.
    pub fields: Vec<(String, String)>,
}

/// A login's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Logged in.
    Success,
    /// Refused.
    Fail,
}

impl Login {
    /// A login from a `Login` payload item; None when it is not one.
    pub fn read(id: &str, time_ms: u64, item: &[(String, String)]) -> Option<Login> {
        let outcome = match item.field("Result")? {
            "Success" => Outcome::Success,
            "Fail" => Outcome::Fail,
            _ => return None,
        };
        let text = |name| {
            item.field(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Some(Login {
            id: id.to_owned(),
            time_ms,
            outcome,
            user: text("UserName"),
            source: text("RemoteAddress"),
            executable: text("Executable").unwrap_or_default(),
            process_id: item.field("ProcessId").and_then(|p| p.parse().ok()),
            remote_port: item.field("RemotePort").and_then(|p| p.parse().ok()),
            local_port: item.field("LocalPort").and_then(|p| p.parse().ok()),
            fields: item.to_vec(),
        })
    }

    fn entities(&self) -> Entities {
        Entities {
            user_name: self.user.clone(),
            process_id: self.process_id,
            executable: Some(self.executable.clone()).filter(|e| !e.is_empty()),
            remote_address: self.source.clone(),
            remote_port: self.remote_port,
            local_port: self.local_port,
            ..Entities::none()
        }
    }
}

/// Every rule's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    failed_brute_force: Switch,
    successful_brute_force: Switch,
    successful_local_login: Switch,
    failed_local_login: Switch,
    user_not_allowed: Switch,
    out_of_range: Switch,
    /// Failures that make a brute force.
    failures: usize,
    /// Within this long.
    window_ms: u64,
    /// A success this soon after the last of them is a successful brute force.
    within_ms: u64,
    /// Users allowed to log in (empty: the rule is off).
    allowed_users: BTreeSet<String>,
    /// Failed logins allowed per `range_window_ms`.
    range: (u64, u64),
    range_window_ms: u64,
    /// How long an alert's key stays quiet.
    suppress_ms: u64,
}

const RULES: [&str; 6] = [
    "FailedBruteForce",
    "SuccessfulBruteForce",
    "SuccessfulLocalLogin",
    "FailedLocalLogin",
    "LoginUserNotAllowed",
    "FailedLoginsOutOfRange",
];

impl Settings {
    /// The settings a configuration asks for: one object per rule, by the rule's name
    /// (`{"FailedBruteForce": {"failures": 8, "window": "2m"}}`), and `suppress`.
    pub fn from_config(config: &Config) -> Result<Settings, CollectError> {
        let tuning = Tuning::new(config, &RULES, &["suppress"])?;
        let fbf = tuning.rule("FailedBruteForce", &["failures", "window"])?;
        let sbf = tuning.rule("SuccessfulBruteForce", &["within"])?;
        let allowed = tuning.rule("LoginUserNotAllowed", &["users"])?;
        let range = tuning.rule("FailedLoginsOutOfRange", &["min", "max", "window"])?;
        let allowed_users: BTreeSet<String> = allowed
            .strings("users")?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let settings = Settings {
            failed_brute_force: fbf.switch(true, Severity::Low)?,
            successful_brute_force: sbf.switch(true, Severity::High)?,
            successful_local_login: tuning
                .rule("SuccessfulLocalLogin", &[])?
                .switch(true, Severity::High)?,
            failed_local_login: tuning
                .rule("FailedLocalLogin", &[])?
                .switch(true, Severity::Medium)?,
            user_not_allowed: allowed.switch(!allowed_users.is_empty(), Severity::Low)?,
            out_of_range: range.switch(false, Severity::Low)?,
            failures: fbf.count("failures", 5, 2..=1000)? as usize,
            window_ms: fbf.duration("window", 600_000)?,
            within_ms: sbf.duration("within", 240_000)?,
            range: (
                range.count("min", 0, 0..=1_000_000)?,
                range.count("max", 20, 0..=1_000_000)?,
            ),
            range_window_ms: range.duration("window", 3_600_000)?,
            suppress_ms: tuning.settings().duration("suppress", 600_000)?,
            allowed_users,
        };
        if settings.user_not_allowed.enabled && settings.allowed_users.is_empty() {
            return Err(CollectError::config(
                "LoginUserNotAllowed.users",
                "the rule is enabled with no user allowed: list the users who may log in",
            ));
        }
        if settings.range.0 > settings.range.1 {
            return Err(CollectError::config(
                "FailedLoginsOutOfRange.min",
                "is above max",
            ));
        }
        Ok(settings)
    }
}

/// A failed login as a window keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Failure {
    at: u64,
    id: String,
    /// The other key: the user for a source's window, the source for a user's.
    other: Option<String>,
}

/// What the analyzer keeps between calls (and hands over on a swap). What a previous version
/// did not keep starts empty.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct State {
    /// The latest failures per source and per user, `failures` of them at most.
    by_source: HashMap<String, VecDeque<Failure>>,
    by_user: HashMap<String, VecDeque<Failure>>,
    /// Keys each rule raised for lately.
    quiet: Quiet,
    /// The failed logins of the open window.
    range: Tally,
}

/// The analyzer's rules and state.
pub struct LoginAlerts {
    settings: Settings,
    state: State,
}

impl LoginAlerts {
    /// Empty windows under `settings`.
    pub fn new(settings: Settings) -> LoginAlerts {
        LoginAlerts {
            settings,
            state: State::default(),
        }
    }

    /// The rules as configured.
    pub fn rules(&self) -> Vec<RuleStatus> {
        let s = &self.settings;
        let suppress = shown_duration(s.suppress_ms);
        vec![
            s.failed_brute_force.status(
                "FailedBruteForce",
                format!(
                    "{} failures in {}, suppressed {suppress}",
                    s.failures,
                    shown_duration(s.window_ms)
                ),
            ),
            s.successful_brute_force.status(
                "SuccessfulBruteForce",
                format!(
                    "a success within {} of {} failures",
                    shown_duration(s.within_ms),
                    s.failures
                ),
            ),
            s.successful_local_login.status(
                "SuccessfulLocalLogin",
                format!("suppressed {suppress} per user"),
            ),
            s.failed_local_login.status(
                "FailedLocalLogin",
                format!("suppressed {suppress} per user"),
            ),
            s.user_not_allowed.status(
                "LoginUserNotAllowed",
                format!(
                    "allowed: {}",
                    s.allowed_users
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            s.out_of_range.status(
                "FailedLoginsOutOfRange",
                format!(
                    "{} to {} per {}",
                    s.range.0,
                    s.range.1,
                    shown_duration(s.range_window_ms)
                ),
            ),
        ]
    }

    /// Whether `rule/key` may raise now; if so it is quiet for `suppress` from now on.
    fn speak(&mut self, rule: &str, key: &str, now: u64) -> bool {
        self.state
            .quiet
            .speak(rule, key, now, self.settings.suppress_ms)
    }

    /// Takes one login in; the findings it raises.
    pub fn login(&mut self, login: &Login) -> Vec<Finding> {
        let mut out = Vec::new();
        let now = login.time_ms;
        let local = login.source.is_none();
        match login.outcome {
            Outcome::Fail => {
                self.count_range(login);
                if local && self.settings.failed_local_login.applies(&login.fields) {
                    let who = login.user.clone().unwrap_or_else(|| "(unknown)".into());
                    if self.speak("FailedLocalLogin", &who, now) {
                        out.push(
                            Finding::alert("FailedLocalLogin", self.settings.failed_local_login.severity, "Failed local login attempt")
                                .description(format!("A local login as {who} through {} failed.", shown(&login.executable)))
                                .remediation("If nobody at the device tried to log in, check who has physical or console access.")
                                .techniques(["T1110"])
                                .entities(login.entities())
                                .cites(&login.id),
                        );
                    }
                }
                out.extend(self.failure(login));
            }
            Outcome::Success => {
                out.extend(self.success(login));
                if local && self.settings.successful_local_login.applies(&login.fields) {
                    let who = login.user.clone().unwrap_or_else(|| "(unknown)".into());
                    if self.speak("SuccessfulLocalLogin", &who, now) {
                        out.push(
                            Finding::alert("SuccessfulLocalLogin", self.settings.successful_local_login.severity, "Successful local login")
                                .description(format!("{who} logged in locally through {}.", shown(&login.executable)))
                                .remediation("If this login was not expected, check who has physical or console access and change the account's password.")
                                .techniques(["T1078.003"])
                                .entities(login.entities())
                                .cites(&login.id),
                        );
                    }
                }
                if self.settings.user_not_allowed.applies(&login.fields)
                    && let Some(user) = &login.user
                    && !self.settings.allowed_users.contains(user)
                    && self.speak("LoginUserNotAllowed", user, now)
                {
                    out.push(
                        Finding::alert("LoginUserNotAllowed", self.settings.user_not_allowed.severity, "Login of a user not on the allowed list")
                            .description(format!("{user} logged in{}, and is not among the users allowed to.", from(login)))
                            .remediation("Lock the account if it should not log in, or add it to LoginUserNotAllowed.users.")
                            .techniques(["T1078"])
                            .entities(login.entities())
                            .cites(&login.id),
                    );
                }
            }
        }
        out
    }

    /// A failure into its source's and its user's windows; a brute force when either is full.
    fn failure(&mut self, login: &Login) -> Vec<Finding> {
        let (n, window) = (self.settings.failures, self.settings.window_ms);
        let now = login.time_ms;
        let mut out = Vec::new();
        let keys = [(true, login.source.clone()), (false, login.user.clone())];
        for (by_source, key) in keys {
            let Some(key) = key else { continue };
            let other = if by_source {
                login.user.clone()
            } else {
                login.source.clone()
            };
            let map = if by_source {
                &mut self.state.by_source
            } else {
                &mut self.state.by_user
            };
            if !map.contains_key(&key) && map.len() >= MAX_KEYS {
                forget_quietest(map);
            }
            let failures = map.entry(key.clone()).or_default();
            failures.retain(|f| f.at + window > now);
            failures.push_back(Failure {
                at: now,
                id: login.id.clone(),
                other,
            });
            while failures.len() > n {
                failures.pop_front();
            }
            let count = failures.len();
            if count < n || !self.settings.failed_brute_force.applies(&login.fields) {
                continue;
            }
            let others: BTreeSet<String> =
                failures.iter().filter_map(|f| f.other.clone()).collect();
            let ids: Vec<String> = failures
                .iter()
                .rev()
                .take(MAX_CITED)
                .map(|f| f.id.clone())
                .collect();
            // From one source against several users, or against one user from several sources:
            // one alert, keyed by where it comes from when it comes from one place.
            if !by_source && others.len() <= 1 && login.source.is_some() {
                continue;
            }
            let rule = if by_source { "source" } else { "user" };
            if !self.speak("FailedBruteForce", &format!("{rule}:{key}"), now) {
                continue;
            }
            let others: Vec<String> = others.into_iter().collect();
            let description = if by_source {
                format!(
                    "{count} failed logins from {key} within {} (users: {}).",
                    shown_duration(window),
                    list(&others)
                )
            } else {
                format!(
                    "{count} failed logins as {key} within {} (from: {}).",
                    shown_duration(window),
                    list(&others)
                )
            };
            let mut entities = login.entities();
            if !by_source && others.len() > 1 {
                entities.remote_address = None;
                entities.remote_port = None;
            }
            out.push(
                Finding::alert("FailedBruteForce", self.settings.failed_brute_force.severity, "Failed brute force attempt")
                    .description(description)
                    .remediation("If these attempts are not yours, block the source (a firewall rule, fail2ban), turn off password authentication in sshd, and check which accounts can be reached from the network.")
                    .techniques(["T1110", "T1110.001"])
                    .entities(entities)
                    .cites_all(ids)
                    .detail("Failures", count.to_string())
                    .detail("Window", shown_duration(window)),
            );
        }
        out
    }

    /// A success right after a brute force from its source or against its user.
    fn success(&mut self, login: &Login) -> Vec<Finding> {
        if !self.settings.successful_brute_force.applies(&login.fields) {
            return Vec::new();
        }
        let (n, window, within) = (
            self.settings.failures,
            self.settings.window_ms,
            self.settings.within_ms,
        );
        let now = login.time_ms;
        let recent = |failures: Option<&VecDeque<Failure>>| -> Option<Vec<String>> {
            let failures = failures?;
            let in_window: Vec<&Failure> =
                failures.iter().filter(|f| f.at + window > now).collect();
            let last = in_window.last()?;
            (in_window.len() >= n && last.at + within >= now).then(|| {
                in_window
                    .iter()
                    .rev()
                    .take(MAX_CITED - 1)
                    .map(|f| f.id.clone())
                    .collect()
            })
        };
        let found = login
            .source
            .as_ref()
            .and_then(|s| {
                recent(self.state.by_source.get(s)).map(|ids| (format!("source:{s}"), ids))
            })
            .or_else(|| {
                login.user.as_ref().and_then(|u| {
                    recent(self.state.by_user.get(u)).map(|ids| (format!("user:{u}"), ids))
                })
            });
        let Some((key, failed)) = found else {
            return Vec::new();
        };
        if !self.speak("SuccessfulBruteForce", &key, now) {
            return Vec::new();
        }
        let who = login.user.clone().unwrap_or_else(|| "(unknown)".into());
        vec![
            Finding::alert("SuccessfulBruteForce", self.settings.successful_brute_force.severity, "Successful brute force attempt")
                .description(format!("{who} logged in{} after {} failed logins within {}.", from(login), failed.len(), shown_duration(window)))
                .remediation("Treat the account as compromised: end its sessions, change its credentials, look for what it ran, and block the source.")
                .techniques(["T1110", "T1078"])
                .entities(login.entities())
                .cites_all(failed)
                .cites(&login.id)
                .detail("Failures", n.to_string()),
        ]
    }

    fn count_range(&mut self, login: &Login) {
        if self.settings.out_of_range.applies(&login.fields) {
            self.state.range.count(&login.id, login.time_ms);
        }
    }

    /// Time passing: a window of failed logins closes; old failures and quiet times go.
    pub fn tick(&mut self, now: u64) -> Vec<Finding> {
        let window = self.settings.window_ms;
        for map in [&mut self.state.by_source, &mut self.state.by_user] {
            map.retain(|_, failures| {
                failures.retain(|f| f.at + window > now);
                !failures.is_empty()
            });
        }
        self.state.quiet.expire(now);
        let mut out = Vec::new();
        if !self.settings.out_of_range.enabled {
            return out;
        }
        let (min, max) = self.settings.range;
        if let Some((count, ids)) =
            self.state
                .range
                .close(now, self.settings.range_window_ms, min..=max)
        {
            out.push(
                Finding::alert("FailedLoginsOutOfRange", self.settings.out_of_range.severity, "Number of failed logins is outside the allowed range")
                    .description(format!("{count} failed logins in {}; allowed: {min} to {max}.", shown_duration(self.settings.range_window_ms)))
                    .remediation("Look at where the failed logins come from; adjust FailedLoginsOutOfRange if this is the device's normal.")
                    .techniques(["T1110"])
                    .cites_all(ids)
                    .detail("Count", count.to_string()),
            );
        }
        out
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

/// Forgets the key whose latest failure is the oldest.
fn forget_quietest(map: &mut HashMap<String, VecDeque<Failure>>) {
    let quietest = map
        .iter()
        .min_by_key(|(_, f)| f.back().map_or(0, |f| f.at))
        .map(|(k, _)| k.clone());
    if let Some(key) = quietest {
        map.remove(&key);
    }
}

fn from(login: &Login) -> String {
    login
        .source
        .as_ref()
        .map(|s| format!(" from {s}"))
        .unwrap_or_default()
}

fn shown(executable: &str) -> &str {
    if executable.is_empty() {
        "an unknown program"
    } else {
        executable
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "unknown".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn settings(config: Value) -> Settings {
        Settings::from_config(config.as_object().unwrap()).unwrap()
    }

    fn login(n: u32, at_s: u64, outcome: Outcome, user: &str, source: Option<&str>) -> Login {
        Login {
            id: format!("id-{n}"),
            time_ms: at_s * 1000,
            outcome,
            user: Some(user.into()),
            source: source.map(str::to_owned),
            executable: "/usr/sbin/sshd".into(),
            process_id: Some(100 + n),
            remote_port: source.map(|_| 40000),
            local_port: Some(22),
            fields: vec![("UserName".into(), user.into())],
        }
    }

    fn names(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn five_failures_from_one_source_are_one_brute_force_then_a_success_another() {
        let mut a = LoginAlerts::new(settings(json!({})));
        let mut raised = Vec::new();
        for i in 0..12 {
            raised.extend(a.login(&login(
                i,
                10 + u64::from(i),
                Outcome::Fail,
                "root",
                Some("203.0.113.9"),
            )));
        }
        assert_eq!(
            names(&raised),
            ["FailedBruteForce"],
            "suppressed after the first"
        );
        let alert = &raised[0];
        assert_eq!(alert.evidence, ["id-4", "id-3", "id-2", "id-1", "id-0"]);
        assert_eq!(
            alert.entities.remote_address.as_deref(),
            Some("203.0.113.9")
        );
        let success = a.login(&login(
            20,
            30,
            Outcome::Success,
            "root",
            Some("203.0.113.9"),
        ));
        assert_eq!(names(&success), ["SuccessfulBruteForce"]);
        assert!(success[0].evidence.contains(&"id-20".to_string()));
        assert!(
            a.login(&login(
                21,
                31,
                Outcome::Success,
                "root",
                Some("203.0.113.9")
            ))
            .is_empty()
        );
    }

    #[test]
    fn failures_spread_past_the_window_are_not_a_brute_force() {
        let mut a = LoginAlerts::new(settings(
            json!({"FailedBruteForce": {"failures": 3, "window": "1m"}}),
        ));
        let raised: Vec<Finding> = (0..6)
            .flat_map(|i| {
                a.login(&login(
                    i,
                    u64::from(i) * 40,
                    Outcome::Fail,
                    "edge",
                    Some("192.0.2.1"),
                ))
            })
            .collect();
        assert!(raised.is_empty(), "{:?}", names(&raised));
        // A success long after the last failure is just a login.
        assert!(
            a.login(&login(9, 1000, Outcome::Success, "edge", Some("192.0.2.1")))
                .is_empty()
        );
    }

    #[test]
    fn one_user_from_many_sources_is_a_brute_force_on_the_user() {
        let mut a = LoginAlerts::new(settings(json!({})));
        let raised: Vec<Finding> = (0..5)
            .flat_map(|i| {
                a.login(&login(
                    i,
                    100 + u64::from(i),
                    Outcome::Fail,
                    "admin",
                    Some(&format!("198.51.100.{i}")),
                ))
            })
            .collect();
        assert_eq!(names(&raised), ["FailedBruteForce"]);
        assert_eq!(raised[0].entities.user_name.as_deref(), Some("admin"));
        assert_eq!(raised[0].entities.remote_address, None);
    }

    #[test]
    fn local_logins_are_alerts_of_their_own_and_remote_ones_are_not() {
        let mut a = LoginAlerts::new(settings(json!({})));
        assert_eq!(
            names(&a.login(&login(1, 5, Outcome::Success, "pi", None))),
            ["SuccessfulLocalLogin"]
        );
        assert_eq!(
            names(&a.login(&login(2, 6, Outcome::Fail, "pi", None))),
            ["FailedLocalLogin"]
        );
        assert!(
            a.login(&login(3, 7, Outcome::Success, "pi", Some("10.0.0.2")))
                .is_empty()
        );
        assert!(
            a.login(&login(4, 8, Outcome::Success, "pi", None))
                .is_empty(),
            "suppressed per user"
        );
    }

    #[test]
    fn allow_list_and_range_are_off_until_configured() {
        let mut a = LoginAlerts::new(settings(json!({
            "LoginUserNotAllowed": {"users": ["edge"]},
            "FailedLoginsOutOfRange": {"enabled": true, "max": 2, "window": "1h"},
            "SuccessfulLocalLogin": {"enabled": false},
        })));
        assert_eq!(
            names(&a.login(&login(1, 0, Outcome::Success, "mallory", Some("10.0.0.9")))),
            ["LoginUserNotAllowed"]
        );
        assert!(
            a.login(&login(2, 1, Outcome::Success, "edge", None))
                .is_empty()
        );
        for i in 0..3 {
            a.login(&login(
                10 + i,
                2,
                Outcome::Fail,
                "x",
                Some(&format!("10.1.0.{i}")),
            ));
        }
        assert!(a.tick(1800 * 1000).is_empty(), "the window is still open");
        let closed = a.tick(3700 * 1000);
        assert_eq!(names(&closed), ["FailedLoginsOutOfRange"]);
        assert_eq!(closed[0].evidence.len(), 3);
        assert!(
            a.tick(7300 * 1000).is_empty(),
            "none in the next window: within 0..=2"
        );
    }

    #[test]
    fn exceptions_keep_a_rule_quiet_about_what_they_name() {
        let mut a = LoginAlerts::new(settings(json!({
            "SuccessfulLocalLogin": {"except": [{"UserName": "pi"}]},
            "FailedBruteForce": {"except": [{"UserName": "svc-*"}]},
        })));
        assert!(
            a.login(&login(1, 5, Outcome::Success, "pi", None))
                .is_empty()
        );
        assert_eq!(
            names(&a.login(&login(2, 6, Outcome::Success, "edge", None))),
            ["SuccessfulLocalLogin"]
        );
        let raised: Vec<Finding> = (0..6)
            .flat_map(|i| {
                a.login(&login(
                    10 + i,
                    10,
                    Outcome::Fail,
                    "svc-backup",
                    Some("10.9.0.1"),
                ))
            })
            .collect();
        assert!(raised.is_empty(), "{:?}", names(&raised));
    }

    #[test]
    fn state_survives_a_swap() {
        let mut old = LoginAlerts::new(settings(json!({})));
        for i in 0..3 {
            assert!(
                old.login(&login(
                    i,
                    u64::from(i),
                    Outcome::Fail,
                    "root",
                    Some("203.0.113.1")
                ))
                .is_empty()
            );
        }
        let mut new = LoginAlerts::new(settings(json!({})));
        new.restore(&old.save()).unwrap();
        let raised: Vec<Finding> = (3..5)
            .flat_map(|i| {
                new.login(&login(
                    i,
                    u64::from(i),
                    Outcome::Fail,
                    "root",
                    Some("203.0.113.1"),
                ))
            })
            .collect();
        assert_eq!(
            names(&raised),
            ["FailedBruteForce"],
            "the brute force straddling the swap is seen once"
        );
        assert_eq!(raised[0].evidence.len(), 5);
        assert!(new.restore(b"not json").is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |config: Value| match Settings::from_config(config.as_object().unwrap()) {
            Err(CollectError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            err(json!({"FailedBruteForce": {"failures": 1}}))
                .starts_with("FailedBruteForce.failures")
        );
        assert!(
            err(json!({"FailedBruteForce": {"window": "10 minutes"}}))
                .starts_with("FailedBruteForce.window")
        );
        assert!(err(json!({"FailedBruteForce": {"treshold": 3}})).contains("treshold"));
        assert!(
            err(json!({"SuccessfulLocalLogin": {"severity": "Critical"}}))
                .starts_with("SuccessfulLocalLogin.severity")
        );
        assert!(
            err(json!({"LoginUserNotAllowed": {"enabled": true}}))
                .starts_with("LoginUserNotAllowed.users")
        );
        assert!(err(json!({"Bruteforce": {}})).contains("Bruteforce"));
    }

    #[test]
    fn windows_are_bounded_in_keys() {
        let mut a = LoginAlerts::new(settings(json!({})));
        for i in 0..(MAX_KEYS as u32 + 100) {
            a.login(&login(
                i,
                u64::from(i),
                Outcome::Fail,
                "u",
                Some(&format!("s{i}")),
            ));
        }
        assert!(a.state.by_source.len() <= MAX_KEYS);
        assert!(
            a.state
                .by_source
                .contains_key(&format!("s{}", MAX_KEYS + 99)),
            "the newest kept"
        );
    }
}
