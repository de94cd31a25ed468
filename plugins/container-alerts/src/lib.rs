//! `container-alerts`: the ASC agents' container alerts, computed on the device from the
//! container collector's `ContainerFinding`, `ContainerLifecycle` and `ContainerInventory` events.
//!
//! | rule | severity | raised when |
//! |---|---|---|
//! | `PrivilegedContainer` | Medium | a container runs, or is created to run, privileged (not on `allowed`: names or images, `*` globs) |
//! | `CryptoMinerImage` | Medium | a container is created, started or found from an image whose name says miner (xmrig, minergate, `…-miner`, and `names`) |
//!
//! A container's key is its id: it is raised once per container.

use edgeguard_analyzer_sdk::known::MINERS;
use edgeguard_analyzer_sdk::prelude::*;
use edgeguard_analyzer_sdk::tuning::{glob, shown_duration};
use serde::{Deserialize, Serialize};

/// What it keeps between calls (and hands over on a swap).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct State {
    quiet: Quiet,
}

/// The rules, their settings and state.
pub struct ContainerAlerts {
    privileged: Switch,
    allowed: Vec<String>,
    miner: Switch,
    names: Vec<String>,
    suppress_ms: u64,
    state: State,
}

/// A container as an event names it.
struct Container<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    module: Option<&'a str>,
}

impl<'a> Container<'a> {
    fn read(item: &'a [(String, String)]) -> Option<Container<'a>> {
        Some(Container {
            id: item.field("ContainerId")?,
            name: item.field("Name").unwrap_or_default(),
            image: item.field("Image").unwrap_or_default(),
            module: item.field("EdgeModule").filter(|m| !m.is_empty()),
        })
    }

    fn entities(&self) -> Entities {
        Entities {
            container: Some(self.name.to_owned()).filter(|n| !n.is_empty()),
            module: self.module.map(str::to_owned),
            ..Entities::none()
        }
    }

    fn shown(&self) -> String {
        let short = &self.id[..self.id.len().min(12)];
        match self.module {
            Some(m) => format!("the IoT Edge module {m} (container {}, {short})", self.name),
            None => format!("the container {} ({short})", self.name),
        }
    }
}

/// Whether an image's name says it mines: a word of its repository is a miner's name, or
/// `miner`/`mining`.
pub fn miner_image(image: &str, extra: &[String]) -> Option<String> {
    let repository = image.split('@').next().unwrap_or(image);
    let repository = match repository.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repository,
    };
    let lower = repository.to_ascii_lowercase();
    let path = lower.rsplit('/').next().unwrap_or(&lower);
    if MINERS.contains(&path) || extra.iter().any(|e| e.eq_ignore_ascii_case(path)) {
        return Some(path.to_owned());
    }
    lower
        .split(['/', '-', '_', '.'])
        .find(|w| {
            MINERS.contains(w)
                || matches!(*w, "miner" | "mining" | "minergate")
                || extra.iter().any(|e| e.eq_ignore_ascii_case(w))
        })
        .map(str::to_owned)
}

impl ContainerAlerts {
    /// The rules a configuration asks for.
    pub fn from_config(config: &Config) -> Result<ContainerAlerts, CollectError> {
        let tuning = Tuning::new(
            config,
            &["PrivilegedContainer", "CryptoMinerImage"],
            &["suppress"],
        )?;
        let privileged = tuning.rule("PrivilegedContainer", &["allowed"])?;
        let miner = tuning.rule("CryptoMinerImage", &["names"])?;
        Ok(ContainerAlerts {
            privileged: privileged.switch(true, Severity::Medium)?,
            allowed: privileged.strings("allowed")?.unwrap_or_default(),
            miner: miner.switch(true, Severity::Medium)?,
            names: miner.strings("names")?.unwrap_or_default(),
            // A container is one finding for as long as it lives: a week unless tuned.
            suppress_ms: tuning.settings().duration("suppress", 7 * 86_400_000)?,
            state: State::default(),
        })
    }

    fn rules(&self) -> Vec<RuleStatus> {
        let suppress = shown_duration(self.suppress_ms);
        vec![
            self.privileged.status(
                "PrivilegedContainer",
                format!(
                    "{} allowed, once per container for {suppress}",
                    self.allowed.len()
                ),
            ),
            self.miner.status(
                "CryptoMinerImage",
                format!(
                    "{} names added, once per container for {suppress}",
                    self.names.len()
                ),
            ),
        ]
    }

    /// A container finding's item; the alert it makes.
    pub fn finding(&mut self, id: &str, now: u64, item: &[(String, String)]) -> Option<Finding> {
        if item.field("Code") != Some("privileged") {
            return None;
        }
        let c = Container::read(item)?;
        let allowed = self
            .allowed
            .iter()
            .any(|p| glob(p, c.name) || glob(p, c.image) || c.module.is_some_and(|m| glob(p, m)));
        if allowed
            || !self.privileged.applies(item)
            || !self
                .state
                .quiet
                .speak("PrivilegedContainer", c.id, now, self.suppress_ms)
        {
            return None;
        }
        Some(
            Finding::alert("PrivilegedContainer", self.privileged.severity, "Privileged container detected")
                .description(format!("{} runs privileged (image {}): it has every device and capability of the host, and can take the host over.", c.shown(), c.image))
                .remediation("Run it without --privileged: grant the one device or capability it needs (--device, --cap-add), or add it to PrivilegedContainer.allowed if it must be.")
                .techniques(["T1610", "T1611"])
                .entities(c.entities())
                .cites(id)
                .detail("Image", c.image),
        )
    }

    /// A container of the inventory, or a lifecycle event's item; the alert it makes.
    pub fn container(&mut self, id: &str, now: u64, item: &[(String, String)]) -> Option<Finding> {
        if !matches!(item.field("Action"), None | Some("create" | "start")) {
            return None;
        }
        let c = Container::read(item)?;
        let miner = miner_image(c.image, &self.names)?;
        if !self.miner.applies(item)
            || !self
                .state
                .quiet
                .speak("CryptoMinerImage", c.id, now, self.suppress_ms)
        {
            return None;
        }
        Some(
            Finding::alert("CryptoMinerImage", self.miner.severity, "Crypto coin miner container image detected")
                .description(format!("{} was made from the image {} (`{miner}`: a miner's name).", c.shown(), c.image))
                .remediation("Remove the container and its image, find who deployed it (the deployment manifest, docker's history) and rotate the credentials that allowed it.")
                .techniques(["T1496", "T1610"])
                .entities(c.entities())
                .cites(id)
                .detail("Image", c.image),
        )
    }
}

/// The analyzer as the host runs it.
pub struct Plugin(ContainerAlerts);

impl Analyzer for Plugin {
    fn describe() -> AnalyzerInfo {
        AnalyzerInfo::new("container-alerts", env!("CARGO_PKG_VERSION"))
            .wants([
                "ContainerFinding",
                "ContainerLifecycle",
                "ContainerInventory",
            ])
            .needs(["log"])
            .about("Privileged containers and coin-miner images, from the container collector")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        Ok(Plugin(ContainerAlerts::from_config(&config)?))
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
                let found = if event.name == "ContainerFinding" {
                    self.0.finding(&event.id, event.time_ms, item)
                } else {
                    self.0.container(&event.id, event.time_ms, item)
                };
                findings.extend(found);
            }
        }
        self.0.state.quiet.expire(now_ms);
        cap_findings(&mut findings, max_findings);
        Ok(findings)
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(&self.0.state).expect("the state serializes"))
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        self.0.state = serde_json::from_slice(&state)
            .map_err(|e| CollectError::InvalidState(e.to_string()))?;
        Ok(())
    }
}

// Only the component exports it: a native build (the unit tests) has no such symbols to link.
#[cfg(target_arch = "wasm32")]
edgeguard_analyzer_sdk::export_analyzer!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn alerts(config: Value) -> ContainerAlerts {
        ContainerAlerts::from_config(config.as_object().unwrap()).unwrap()
    }

    fn item(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_privileged_container_is_one_alert_unless_allowed() {
        let mut a = alerts(json!({"PrivilegedContainer": {"allowed": ["edgeHub"]}}));
        let privileged = item(&[
            ("Code", "privileged"),
            ("ContainerId", "0123456789abcdef"),
            ("Name", "debug"),
            ("Image", "busybox:1"),
        ]);
        let found = a.finding("f-1", 0, &privileged).unwrap();
        assert_eq!(found.name, "PrivilegedContainer");
        assert_eq!(found.entities.container.as_deref(), Some("debug"));
        assert!(
            found.description.contains("0123456789ab")
                && !found.description.contains("0123456789abc")
        );
        assert!(
            a.finding("f-2", 10, &privileged).is_none(),
            "once per container"
        );
        assert!(
            a.finding(
                "f-3",
                0,
                &item(&[("Code", "cap-add"), ("ContainerId", "x")])
            )
            .is_none()
        );
        let hub = item(&[
            ("Code", "privileged"),
            ("ContainerId", "feed"),
            ("Name", "edgeHub"),
            ("Image", "mcr.microsoft.com/azureiotedge-hub:1.5"),
            ("EdgeModule", "edgeHub"),
        ]);
        assert!(a.finding("f-4", 0, &hub).is_none(), "allowed");
    }

    #[test]
    fn miner_images_by_name() {
        for (image, word) in [
            ("xmrig/xmrig:latest", "xmrig"),
            ("docker.io/metal3d/xmrig", "xmrig"),
            ("kannix/monero-miner@sha256:abcd", "miner"),
            (
                "registry.local:5000/minergate/minergate-cli:1",
                "minergate-cli",
            ),
        ] {
            assert_eq!(miner_image(image, &[]).as_deref(), Some(word), "{image}");
        }
        for image in [
            "busybox",
            "mcr.microsoft.com/azureiotedge-agent:1.5",
            "grafana/grafana",
            "registry:5000/dataminers-ui",
        ] {
            assert_eq!(miner_image(image, &[]), None, "{image}");
        }
        let mut a = alerts(json!({}));
        let create = item(&[
            ("Action", "create"),
            ("ContainerId", "c1"),
            ("Name", "w"),
            ("Image", "xmrig/xmrig"),
        ]);
        assert_eq!(
            a.container("l-1", 0, &create).unwrap().name,
            "CryptoMinerImage"
        );
        let start = item(&[
            ("Action", "start"),
            ("ContainerId", "c1"),
            ("Name", "w"),
            ("Image", "xmrig/xmrig"),
        ]);
        assert!(
            a.container("l-2", 1, &start).is_none(),
            "once per container"
        );
        let die = item(&[
            ("Action", "die"),
            ("ContainerId", "c2"),
            ("Image", "xmrig/xmrig"),
        ]);
        assert!(a.container("l-3", 1, &die).is_none());
        let found = item(&[
            ("ContainerId", "c3"),
            ("Name", "x"),
            ("Image", "xmrig/xmrig"),
            ("State", "running"),
        ]);
        assert!(
            a.container("i-1", 1, &found).is_some(),
            "an inventory's container"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |config: Value| match ContainerAlerts::from_config(config.as_object().unwrap()) {
            Err(CollectError::InvalidConfig(m)) => m,
            _ => panic!("accepted"),
        };
        assert!(
            err(json!({"PrivilegedContainer": {"allowed": "edgeHub"}}))
                .starts_with("PrivilegedContainer.allowed")
        );
        assert!(err(json!({"Privileged": {}})).starts_with("Privileged"));
    }
}
