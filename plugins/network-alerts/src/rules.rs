//! The rules over sockets: their settings, what the analyzer keeps, what it raises.

use edgeguard_analyzer_sdk::tuning::{Quiet, Section, Switch, Tally, Tuning, shown_duration};
use edgeguard_analyzer_sdk::{
    CollectError, Config, Entities, Fields, Finding, RuleStatus, Severity,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Listening endpoints remembered between snapshots, at most.
const MAX_LISTENING: usize = 4096;

/// A listening endpoint, from a `ListeningPorts` item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// The address it is bound to.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// Its owner, when known.
    pub executable: Option<String>,
    /// The owner's process.
    pub pid: Option<u32>,
}

impl Listener {
    /// A listener from a `ListeningPorts` payload item.
    pub fn read(item: &[(String, String)]) -> Option<Listener> {
        Some(Listener {
            protocol: item.field("Protocol")?.to_ascii_uppercase(),
            address: item.field("LocalAddress")?.to_owned(),
            port: item.field("LocalPort")?.parse().ok()?,
            executable: item
                .field("ExtraDetails.Executable")
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            pid: item.field("ExtraDetails.Pid").and_then(|p| p.parse().ok()),
        })
    }

    /// Whether only this host can reach it.
    fn loopback(&self) -> bool {
        self.address
            .parse::<IpAddr>()
            .is_ok_and(|a| a.is_loopback())
            || self.address == "localhost"
    }

    fn key(&self) -> String {
        format!("{}/{}", self.protocol.to_ascii_lowercase(), self.port)
    }

    fn entities(&self) -> Entities {
        Entities {
            local_port: Some(self.port),
            process_id: self.pid,
            executable: self.executable.clone(),
            ..Entities::none()
        }
    }

    fn shown(&self) -> String {
        let owner = match (&self.executable, self.pid) {
            (Some(e), Some(p)) => format!(" ({e}, pid {p})"),
            (Some(e), None) => format!(" ({e})"),
            _ => String::new(),
        };
        format!("{} {}:{}{owner}", self.protocol, self.address, self.port)
    }
}

/// A connection, from a `ConnectionCreate` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The event's Id.
    pub id: String,
    /// When it was seen.
    pub time_ms: u64,
    /// Outbound (this host connected).
    pub outbound: bool,
    /// The peer.
    pub remote: Option<IpAddr>,
    /// The peer's port.
    pub remote_port: Option<u16>,
    /// The local port.
    pub local_port: Option<u16>,
    /// The owner, when known.
    pub executable: Option<String>,
    /// Its process.
    pub pid: Option<u32>,
    /// The event's fields, for the rules' exceptions.
    pub fields: Vec<(String, String)>,
}

impl Connection {
    /// A connection from a `ConnectionCreate` payload item.
    pub fn read(id: &str, time_ms: u64, item: &[(String, String)]) -> Option<Connection> {
        Some(Connection {
            id: id.to_owned(),
            time_ms,
            outbound: item.field("Direction")? == "Out",
            remote: item.field("RemoteAddress").and_then(|a| a.parse().ok()),
            remote_port: item.field("RemotePort").and_then(|p| p.parse().ok()),
            local_port: item.field("LocalPort").and_then(|p| p.parse().ok()),
            executable: item
                .field("Executable")
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            pid: item
                .field("ProcessId")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p != 0),
            fields: item.to_vec(),
        })
    }

    fn entities(&self) -> Entities {
        Entities {
            remote_address: self.remote.map(|a| a.to_string()),
            remote_port: self.remote_port,
            local_port: self.local_port,
            process_id: self.pid,
            executable: self.executable.clone(),
            ..Entities::none()
        }
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n` or an address alone.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let base: IpAddr = addr.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { base, bits })
    }

    /// Whether `addr` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        let mask = |bits: u8, width: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                (!0u128 << (width - u32::from(bits))) & (!0u128 >> (128 - width))
            }
        };
        match (self.base, addr) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let m = mask(self.bits, 32);
                u128::from(u32::from(b)) & m == u128::from(u32::from(a)) & m
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let m = mask(self.bits, 128);
                u128::from(b) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

/// A port allowed to listen: `22` (any protocol) or `tcp/22`, `udp/68`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortRule {
    protocol: Option<String>,
    port: u16,
}

impl PortRule {
    fn parse(text: &str) -> Option<PortRule> {
        let (protocol, port) = match text.split_once('/') {
            Some((p, port)) => {
                let p = p.to_ascii_uppercase();
                if p != "TCP" && p != "UDP" {
                    return None;
                }
                (Some(p), port)
            }
            None => (None, text),
        };
        Some(PortRule {
            protocol,
            port: port.parse().ok()?,
        })
    }

    fn allows(&self, l: &Listener) -> bool {
        self.port == l.port && self.protocol.as_ref().is_none_or(|p| *p == l.protocol)
    }
}

/// Every rule's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    open_ports: Switch,
    allowed_ports: Vec<PortRule>,
    remind_ms: u64,
    new_listening: Switch,
    docker_exposed: Switch,
    docker_ports: Vec<u16>,
    outbound: Switch,
    allowed_remotes: Vec<Cidr>,
    out_of_range: Switch,
    range: (u64, u64),
    range_window_ms: u64,
    suppress_ms: u64,
}

const RULES: [&str; 5] = [
    "OpenPorts",
    "NewListeningPort",
    "DockerExposed",
    "OutboundNotAllowed",
    "ConnectionsOutOfRange",
];

fn list<T>(
    section: &Section<'_>,
    key: &str,
    path: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, CollectError> {
    section
        .strings(key)?
        .unwrap_or_default()
        .iter()
        .map(|item| {
            parse(item)
                .ok_or_else(|| CollectError::config(path, format!("`{item}` is not {expected}")))
        })
        .collect()
}

impl Settings {
    /// The settings a configuration asks for: one object per rule by its name, and `suppress`.
    pub fn from_config(config: &Config) -> Result<Settings, CollectError> {
        let tuning = Tuning::new(config, &RULES, &["suppress"])?;
        let open = tuning.rule("OpenPorts", &["allowed", "remind"])?;
        let docker = tuning.rule("DockerExposed", &["ports"])?;
        let outbound = tuning.rule("OutboundNotAllowed", &["allowed"])?;
        let range = tuning.rule("ConnectionsOutOfRange", &["min", "max", "window"])?;
        let allowed_remotes = list(
            &outbound,
            "allowed",
            "OutboundNotAllowed.allowed",
            Cidr::parse,
            "an address or an address block (10.0.0.0/8)",
        )?;
        let docker_ports: Vec<u16> = match docker.counts("ports", 1..=65535)? {
            Some(ports) => ports
                .into_iter()
                .filter_map(|p| u16::try_from(p).ok())
                .collect(),
            None => vec![2375, 2376],
        };
        let settings = Settings {
            open_ports: open.switch(true, Severity::Medium)?,
            allowed_ports: list(
                &open,
                "allowed",
                "OpenPorts.allowed",
                PortRule::parse,
                "a port (22) or a protocol and port (tcp/22)",
            )?,
            remind_ms: open.duration("remind", 86_400_000)?,
            new_listening: tuning
                .rule("NewListeningPort", &[])?
                .switch(true, Severity::Low)?,
            docker_exposed: docker.switch(true, Severity::Medium)?,
            docker_ports,
            outbound: outbound.switch(!allowed_remotes.is_empty(), Severity::Low)?,
            allowed_remotes,
            out_of_range: range.switch(false, Severity::Low)?,
            range: (
                range.count("min", 0, 0..=10_000_000)?,
                range.count("max", 1000, 0..=10_000_000)?,
            ),
            range_window_ms: range.duration("window", 3_600_000)?,
            suppress_ms: tuning.settings().duration("suppress", 600_000)?,
        };
        if settings.outbound.enabled && settings.allowed_remotes.is_empty() {
            return Err(CollectError::config(
                "OutboundNotAllowed.allowed",
                "the rule is enabled with no address allowed: list the addresses the device may connect to",
            ));
        }
        if settings.range.0 > settings.range.1 {
            return Err(CollectError::config(
                "ConnectionsOutOfRange.min",
                "is above max",
            ));
        }
        Ok(settings)
    }
}

/// What the analyzer keeps between calls (and hands over on a swap). What a previous version
/// did not keep starts empty.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct State {
    /// The listening endpoints of the last snapshot (None before the first).
    listening: Option<BTreeSet<Listener>>,
    quiet: Quiet,
    /// The connections of the open window.
    range: Tally,
}

/// The analyzer's rules and state.
pub struct NetworkAlerts {
    settings: Settings,
    state: State,
}

impl NetworkAlerts {
    /// Nothing seen yet, under `settings`.
    pub fn new(settings: Settings) -> NetworkAlerts {
        NetworkAlerts {
            settings,
            state: State::default(),
        }
    }

    /// The rules as configured.
    pub fn rules(&self) -> Vec<RuleStatus> {
        let s = &self.settings;
        let suppress = shown_duration(s.suppress_ms);
        vec![
            s.open_ports.status(
                "OpenPorts",
                format!(
                    "{} ports allowed, reminded every {}",
                    s.allowed_ports.len(),
                    shown_duration(s.remind_ms)
                ),
            ),
            s.new_listening
                .status("NewListeningPort", format!("suppressed {suppress}")),
            s.docker_exposed.status(
                "DockerExposed",
                format!(
                    "ports {}",
                    s.docker_ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            s.outbound.status(
                "OutboundNotAllowed",
                format!("{} address blocks allowed", s.allowed_remotes.len()),
            ),
            s.out_of_range.status(
                "ConnectionsOutOfRange",
                format!(
                    "{} to {} per {}",
                    s.range.0,
                    s.range.1,
                    shown_duration(s.range_window_ms)
                ),
            ),
        ]
    }

    /// A snapshot of the listening endpoints (one `ListeningPorts` event, whole); what it raises.
    pub fn listening(
        &mut self,
        id: &str,
        now: u64,
        items: &[Vec<(String, String)>],
    ) -> Vec<Finding> {
        let s = &self.settings;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for item in items {
            let Some(l) = Listener::read(item) else {
                continue;
            };
            if seen.len() < MAX_LISTENING {
                seen.insert(l.clone());
            }
            if l.loopback() {
                continue;
            }
            let first = self.state.listening.is_none();
            let new = self.state.listening.as_ref().is_some_and(|before| {
                !before
                    .iter()
                    .any(|b| b.protocol == l.protocol && b.port == l.port && b.address == l.address)
            });
            let docker = l.protocol == "TCP"
                && (s.docker_ports.contains(&l.port)
                    || l.executable
                        .as_deref()
                        .is_some_and(|e| e.rsplit('/').next() == Some("dockerd")));
            if docker
                && s.docker_exposed.applies(item)
                && self
                    .state
                    .quiet
                    .speak("DockerExposed", &l.key(), now, s.suppress_ms)
            {
                out.push(
                    Finding::alert("DockerExposed", s.docker_exposed.severity, "Exposed Docker daemon by TCP socket")
                        .description(format!("{} listens where the network reaches it: whoever connects controls the Docker daemon, and so the device, as root.", l.shown()))
                        .remediation("Bind the daemon to its Unix socket only (remove tcp:// from dockerd's -H and daemon.json's hosts), or require TLS client certificates (--tlsverify) and firewall the port.")
                        .techniques(["T1133", "T1610"])
                        .entities(l.entities())
                        .cites(id),
                );
            }
            let allowed = s.allowed_ports.iter().any(|r| r.allows(&l));
            if !allowed
                && s.open_ports.applies(item)
                && self
                    .state
                    .quiet
                    .speak("OpenPorts", &l.key(), now, s.remind_ms)
            {
                out.push(
                    Finding::recommendation("OpenPorts", s.open_ports.severity, "Open ports on device")
                        .description(format!("A listening endpoint was found: {}.", l.shown()))
                        .remediation("Close the port if nothing needs it, bind it to loopback, or firewall it; if it belongs on the device, add it to OpenPorts.allowed.")
                        .techniques(["T1046"])
                        .entities(l.entities())
                        .cites(id)
                        .detail("RecommendationType", "IoT_OpenPorts"),
                );
            }
            if !first
                && new
                && !allowed
                && s.new_listening.applies(item)
                && self
                    .state
                    .quiet
                    .speak("NewListeningPort", &l.key(), now, s.suppress_ms)
            {
                out.push(
                    Finding::alert("NewListeningPort", s.new_listening.severity, "New listening port")
                        .description(format!("{} started listening since the last snapshot.", l.shown()))
                        .remediation("Check the program that opened it; a listener nobody planned may be a backdoor or a bind shell.")
                        .techniques(["T1571"])
                        .entities(l.entities())
                        .cites(id),
                );
            }
        }
        self.state.listening = Some(seen);
        out
    }

    /// One connection in; what it raises.
    pub fn connection(&mut self, c: &Connection) -> Vec<Finding> {
        let s = &self.settings;
        let mut out = Vec::new();
        if s.out_of_range.applies(&c.fields) {
            self.state.range.count(&c.id, c.time_ms);
        }
        if let Some(remote) = c.remote
            && c.outbound
            && !remote.is_loopback()
            && !s.allowed_remotes.iter().any(|b| b.contains(remote))
            && s.outbound.applies(&c.fields)
            && self.state.quiet.speak(
                "OutboundNotAllowed",
                &remote.to_string(),
                c.time_ms,
                s.suppress_ms,
            )
        {
            let by = c
                .executable
                .as_ref()
                .map(|e| format!(" by {e}"))
                .unwrap_or_default();
            out.push(
                Finding::alert("OutboundNotAllowed", s.outbound.severity, "Outbound connection created to an IP that isn't allowed")
                    .description(format!("A connection to {remote}{} was made{by}; the address is not among those allowed.", c.remote_port.map(|p| format!(":{p}")).unwrap_or_default()))
                    .remediation("Find the program that connected; if the address belongs to a service the device uses, add it to OutboundNotAllowed.allowed.")
                    .techniques(["T1071"])
                    .entities(c.entities())
                    .cites(&c.id),
            );
        }
        out
    }

    /// Time passing: a window of connections closes; quiet keys expire.
    pub fn tick(&mut self, now: u64) -> Vec<Finding> {
        self.state.quiet.expire(now);
        let s = &self.settings;
        if !s.out_of_range.enabled {
            return Vec::new();
        }
        let (min, max) = s.range;
        let Some((count, ids)) = self.state.range.close(now, s.range_window_ms, min..=max) else {
            return Vec::new();
        };
        vec![
            Finding::alert("ConnectionsOutOfRange", s.out_of_range.severity, "Number of active connections is outside the allowed range")
                .description(format!("{count} connections in {}; allowed: {min} to {max}.", shown_duration(s.range_window_ms)))
                .remediation("Look at which programs made the connections; adjust ConnectionsOutOfRange if this is the device's normal.")
                .techniques(["T1071"])
                .cites_all(ids)
                .detail("Count", count.to_string()),
        ]
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

    fn port(protocol: &str, address: &str, port: u16, exe: &str) -> Vec<(String, String)> {
        let mut item = vec![
            ("Protocol".to_owned(), protocol.to_owned()),
            ("LocalAddress".to_owned(), address.to_owned()),
            ("LocalPort".to_owned(), port.to_string()),
        ];
        if !exe.is_empty() {
            item.push(("ExtraDetails.Executable".to_owned(), exe.to_owned()));
            item.push(("ExtraDetails.Pid".to_owned(), "77".to_owned()));
        }
        item
    }

    fn conn(n: u32, at_s: u64, remote: &str) -> Connection {
        Connection::read(
            &format!("c-{n}"),
            at_s * 1000,
            &[
                ("Direction".to_owned(), "Out".to_owned()),
                ("RemoteAddress".to_owned(), remote.to_owned()),
                ("RemotePort".to_owned(), "443".to_owned()),
                ("LocalPort".to_owned(), "50000".to_owned()),
                ("Executable".to_owned(), "/usr/bin/curl".to_owned()),
                ("ProcessId".to_owned(), "9".to_owned()),
            ],
        )
        .unwrap()
    }

    fn names(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn open_ports_are_recommended_once_per_port_and_new_ones_are_alerts() {
        let mut a = NetworkAlerts::new(settings(json!({"OpenPorts": {"allowed": ["tcp/22"]}})));
        let first = a.listening(
            "l-1",
            0,
            &[
                port("TCP", "0.0.0.0", 22, "/usr/sbin/sshd"),
                port("TCP", "127.0.0.1", 631, "/usr/sbin/cupsd"),
                port("UDP", "0.0.0.0", 5353, ""),
            ],
        );
        assert_eq!(names(&first), ["OpenPorts"], "allowed and loopback are not");
        assert_eq!(first[0].entities.local_port, Some(5353));
        assert!(matches!(
            first[0].kind,
            edgeguard_analyzer_sdk::FindingKind::Recommendation
        ));
        // nc -lkp 8888: a recommendation, and an alert as a port that was not there before.
        let second = a.listening(
            "l-2",
            1000,
            &[
                port("TCP", "0.0.0.0", 22, "/usr/sbin/sshd"),
                port("UDP", "0.0.0.0", 5353, ""),
                port("TCP", "0.0.0.0", 8888, "/usr/bin/nc.openbsd"),
            ],
        );
        assert_eq!(names(&second), ["OpenPorts", "NewListeningPort"]);
        assert!(
            second[1].description.contains("8888") && second[1].description.contains("nc.openbsd")
        );
        // The same ports again: nothing until the reminder is due.
        assert!(
            a.listening("l-3", 2000, &[port("TCP", "0.0.0.0", 8888, "")])
                .is_empty()
        );
        assert_eq!(
            names(&a.listening("l-4", 86_401_000, &[port("TCP", "0.0.0.0", 8888, "")])),
            ["OpenPorts"]
        );
    }

    #[test]
    fn a_docker_daemon_on_tcp_is_an_alert() {
        let mut a = NetworkAlerts::new(settings(json!({"OpenPorts": {"enabled": false}})));
        let found = a.listening(
            "l-1",
            0,
            &[
                port("TCP", "::", 2375, "/usr/bin/dockerd"),
                port("TCP", "127.0.0.1", 2376, "/usr/bin/dockerd"),
            ],
        );
        assert_eq!(names(&found), ["DockerExposed"], "loopback is not exposed");
        assert_eq!(found[0].severity, Severity::Medium);
        let found = a.listening(
            "l-2",
            0,
            &[port("TCP", "0.0.0.0", 9999, "/usr/sbin/dockerd")],
        );
        assert_eq!(names(&found), ["DockerExposed", "NewListeningPort"]);
    }

    #[test]
    fn outbound_connections_outside_the_allow_list() {
        let mut a = NetworkAlerts::new(settings(
            json!({"OutboundNotAllowed": {"allowed": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}}),
        ));
        for remote in [
            "10.1.2.3",
            "2001:db8::1",
            "192.0.2.7",
            "127.0.0.1",
            "::ffff:10.9.9.9",
        ] {
            assert!(a.connection(&conn(1, 0, remote)).is_empty(), "{remote}");
        }
        let found = a.connection(&conn(2, 0, "203.0.113.50"));
        assert_eq!(names(&found), ["OutboundNotAllowed"]);
        assert_eq!(
            found[0].entities.remote_address.as_deref(),
            Some("203.0.113.50")
        );
        assert_eq!(found[0].evidence, ["c-2"]);
        assert!(
            a.connection(&conn(3, 1, "203.0.113.50")).is_empty(),
            "suppressed per address"
        );
        // Off until a list is set.
        let mut off = NetworkAlerts::new(settings(json!({})));
        assert!(off.connection(&conn(4, 0, "203.0.113.50")).is_empty());
    }

    #[test]
    fn connection_counts_out_of_range_per_window() {
        let mut a = NetworkAlerts::new(settings(
            json!({"ConnectionsOutOfRange": {"enabled": true, "max": 2, "window": "1m"}}),
        ));
        for i in 0..3 {
            a.connection(&conn(i, 1, "10.0.0.1"));
        }
        assert!(a.tick(30_000).is_empty());
        let closed = a.tick(61_000);
        assert_eq!(names(&closed), ["ConnectionsOutOfRange"]);
        assert_eq!(closed[0].evidence.len(), 3);
        assert!(
            a.tick(122_000).is_empty(),
            "none in the next window: within 0..=2"
        );
    }

    #[test]
    fn cidrs() {
        let c = |t: &str| Cidr::parse(t).unwrap();
        assert!(c("10.0.0.0/8").contains("10.255.0.1".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(c("192.0.2.7").contains("192.0.2.7".parse().unwrap()));
        assert!(!c("192.0.2.7").contains("192.0.2.8".parse().unwrap()));
        assert!(c("2001:db8::/32").contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!c("2001:db8::/32").contains("10.0.0.1".parse().unwrap()));
        assert!(c("::/0").contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("example.com").is_none());
    }

    #[test]
    fn bad_settings_are_named_and_state_survives_a_swap() {
        let err = |config: Value| match Settings::from_config(config.as_object().unwrap()) {
            Err(CollectError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(json!({"OpenPorts": {"allowed": ["ssh"]}})).starts_with("OpenPorts.allowed"));
        assert!(
            err(json!({"OutboundNotAllowed": {"allowed": ["10.0.0.0/40"]}}))
                .starts_with("OutboundNotAllowed.allowed")
        );
        assert!(
            err(json!({"OutboundNotAllowed": {"enabled": true}}))
                .starts_with("OutboundNotAllowed.allowed")
        );
        assert!(err(json!({"DockerExposed": {"ports": [0]}})).starts_with("DockerExposed.ports"));
        assert!(
            err(json!({"ConnectionsOutOfRange": {"min": 5, "max": 1}}))
                .starts_with("ConnectionsOutOfRange.min")
        );

        let mut old = NetworkAlerts::new(settings(json!({})));
        old.listening("l-1", 0, &[port("TCP", "0.0.0.0", 22, "")]);
        let mut new = NetworkAlerts::new(settings(json!({})));
        new.restore(&old.save()).unwrap();
        assert_eq!(
            names(&new.listening(
                "l-2",
                10,
                &[
                    port("TCP", "0.0.0.0", 22, ""),
                    port("TCP", "0.0.0.0", 80, "")
                ]
            )),
            ["OpenPorts", "NewListeningPort"],
            "port 22 was recommended and known before the swap"
        );
    }
}
