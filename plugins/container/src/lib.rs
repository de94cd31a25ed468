//! Container collector: the Docker Engine of the host, through the `containers` capability.
//!
//! - `ContainerLifecycle` for each create, start, die (with the exit code), destroy, oom, kill
//!   and stop, from the daemon's event stream, which the host follows between collections.
//! - `ContainerFinding` for each risky setting of a container (privileged, added capabilities,
//!   host namespaces, sensitive binds, devices, unconfined profiles, logging, unpinned image,
//!   root user, writable root filesystem) when the container is first seen or its findings
//!   change, and for a daemon that listens on TCP.
//! - `ContainerInventory` (periodic): the containers and their security-relevant settings,
//!   sent whenever that changes.
//!
//! Containers that edgeAgent created carry its owner label; their events and findings name the
//! IoT Edge module (`EdgeModule`).

use containers::{Container, ContainerEvent};
use edgeguard_manifest::container::{self as judge, Issue, Settings};
use edgeguard_manifest::edge_agent;
use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{config_bool, config_keys, fingerprint, rfc3339};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Lifecycle actions worth an event; the stream also carries attach, resize, exec_*, ...
const ACTIONS: [&str; 8] = [
    "create", "start", "restart", "die", "oom", "kill", "stop", "destroy",
];

struct ContainerCollector {
    lifecycle: bool,
    inventory: bool,
    /// Time of the last lifecycle event received: where the host resumes after a restart.
    since: u64,
    /// Fingerprint of each container's findings as last reported, by container id.
    reported: HashMap<String, u64>,
    daemon_reported: Option<u64>,
    inventory_reported: Option<u64>,
    /// Whether the last call found a daemon; logged on each change.
    reachable: Option<bool>,
    backlog: Vec<Event>,
}

impl Collector for ContainerCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("container", env!("CARGO_PKG_VERSION"))
            .emits([
                "ContainerLifecycle",
                "ContainerFinding",
                "ContainerInventory",
                "ContainerEventsLost",
            ])
            .needs(["containers", "log"])
            .group(PriorityGroup::Medium)
            .about("Docker container lifecycle events and risky container and daemon configuration")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["lifecycle", "inventory"])?;
        Ok(ContainerCollector {
            lifecycle: config_bool(&config, "lifecycle", true)?,
            inventory: config_bool(&config, "inventory", true)?,
            since: 0,
            reported: HashMap::new(),
            daemon_reported: None,
            inventory_reported: None,
            reachable: None,
            backlog: Vec::new(),
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        match self.gather(max_events) {
            Ok(()) => self.reachable(true, ""),
            // No daemon (yet): not an error of ours; the next collection tries again.
            Err(HostError::Unavailable(why)) => self.reachable(false, &why),
            Err(other) => return Err(other.into()),
        }
        let take = self.backlog.len().min(max_events as usize);
        Ok(self.backlog.drain(..take).collect())
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(json!({ "since": self.since, "reported": self.reported, "daemon": self.daemon_reported }).to_string().into_bytes())
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        let bad = |e: String| CollectError::InvalidState(format!("container state: {e}"));
        let state: Value = serde_json::from_slice(&state).map_err(|e| bad(e.to_string()))?;
        self.since = state["since"]
            .as_u64()
            .ok_or_else(|| bad("no `since`".into()))?;
        self.reported =
            serde_json::from_value(state["reported"].clone()).map_err(|e| bad(e.to_string()))?;
        self.daemon_reported = state["daemon"].as_u64();
        Ok(())
    }
}

impl ContainerCollector {
    fn reachable(&mut self, now: bool, why: &str) {
        if self.reachable != Some(now) {
            if now {
                info!("connected to the Docker daemon");
            } else {
                info!("{why}; trying again at each collection");
            }
            self.reachable = Some(now);
        }
    }

    fn gather(&mut self, max_events: u32) -> Result<(), HostError> {
        if self.lifecycle {
            let batch = containers::events(self.since, max_events)?;
            if batch.lost > 0 {
                warn!(
                    "{} container events were lost: the host's buffer filled between two collections",
                    batch.lost
                );
                self.backlog.push(event(
                    "ContainerEventsLost",
                    false,
                    vec![json!({ "Count": batch.lost.to_string() })],
                ));
            }
            for e in batch.events {
                self.since = self.since.max(e.time_unix_nanos);
                if ACTIONS.contains(&e.action.as_str()) {
                    self.backlog
                        .push(event("ContainerLifecycle", false, vec![lifecycle(&e)]));
                }
            }
        }
        if self.inventory {
            let daemon = containers::daemon()?;
            let remapped = daemon
                .security_options
                .iter()
                .any(|o| o.contains("name=userns") || o.contains("name=rootless"));
            let issue = judge::check_daemon(&daemon.tcp_listeners, daemon.tls_verify);
            let print = fingerprint(&issue.as_ref().map(|i| &i.message));
            if self.daemon_reported != Some(print) {
                if let Some(issue) = issue {
                    self.backlog.push(event(
                        "ContainerFinding",
                        false,
                        vec![finding(&issue, None)],
                    ));
                }
                self.daemon_reported = Some(print);
            }
            let list = containers::inventory()?;
            let mut current = HashMap::new();
            for c in &list {
                let issues = issues(c, remapped);
                let print = fingerprint(
                    &issues
                        .iter()
                        .map(|i| (&i.code, &i.field, &i.message))
                        .collect::<Vec<_>>(),
                );
                if self.reported.get(&c.id) != Some(&print) && !issues.is_empty() {
                    info!("{}: {} findings", c.name, issues.len());
                    self.backlog.push(event(
                        "ContainerFinding",
                        false,
                        issues.iter().map(|i| finding(i, Some(c))).collect(),
                    ));
                }
                current.insert(c.id.clone(), print);
            }
            // Removed containers are forgotten: a new one by the same name is reported anew.
            self.reported = current;
            let items: Vec<Value> = list.iter().map(inventory_item).collect();
            let print = fingerprint(&items.iter().map(Value::to_string).collect::<Vec<_>>());
            if self.inventory_reported != Some(print) {
                self.backlog.push(event("ContainerInventory", true, items));
                self.inventory_reported = Some(print);
            }
        }
        Ok(())
    }
}

/// Everything wrong with a container, the daemon's user-namespace remapping considered.
fn issues(c: &Container, remapped: bool) -> Vec<Issue> {
    let settings = Settings {
        privileged: c.privileged,
        cap_add: c.cap_add.clone(),
        network_mode: c.network_mode.clone(),
        pid_mode: c.pid_mode.clone(),
        ipc_mode: c.ipc_mode.clone(),
        binds: c
            .mounts
            .iter()
            .filter(|m| m.kind == "bind")
            .map(|m| judge::Bind {
                source: m.source.clone(),
                read_only: m.read_only,
                field: "Mounts",
            })
            .collect(),
        devices: c.devices.clone(),
        security_opt: c.security_opt.clone(),
        log: Some(judge::Log {
            driver: c.log_driver.clone(),
            options: c.log_options.clone(),
        }),
    };
    let mut issues = judge::check(&settings);
    if let Some(mut image) = judge::check_image(&c.image) {
        image.field = "Config.Image".into();
        issues.push(image);
    }
    issues.extend(judge::check_process(
        &c.user,
        &c.image_user,
        c.readonly_rootfs,
        remapped,
    ));
    issues
}

fn lifecycle(e: &ContainerEvent) -> Value {
    json!({
        "Action": e.action,
        "ContainerId": e.id,
        "Name": e.name,
        "Image": e.image,
        "ExitCode": e.exit_code.map(|c| c.to_string()),
        "Time": rfc3339(e.time_unix_nanos),
        "EdgeModule": edge_agent::module_of(&e.labels, &e.name),
    })
}

fn finding(i: &Issue, c: Option<&Container>) -> Value {
    json!({
        "Severity": i.severity.as_str(),
        "Code": i.code,
        "Scope": if c.is_some() { "container" } else { "daemon" },
        "ContainerId": c.map(|c| c.id.as_str()),
        "Name": c.map(|c| c.name.as_str()),
        "Image": c.map(|c| c.image.as_str()),
        "EdgeModule": c.and_then(|c| edge_agent::module_of(&c.labels, &c.name)),
        "Field": i.field,
        "Message": i.message,
        "Remediation": i.remediation,
        "Recommendation": i.recommendation,
    })
}

fn inventory_item(c: &Container) -> Value {
    let user = if c.user.is_empty() {
        &c.image_user
    } else {
        &c.user
    };
    json!({
        "ContainerId": c.id,
        "Name": c.name,
        "Image": c.image,
        "State": c.state,
        "EdgeModule": edge_agent::module_of(&c.labels, &c.name),
        "EdgeModuleVersion": edge_agent::label(&c.labels, edge_agent::VERSION),
        "User": if user.is_empty() { "root (image default)" } else { user.as_str() },
        "Privileged": c.privileged.to_string(),
        "CapAdd": c.cap_add.join(","),
        "NetworkMode": c.network_mode,
        "PidMode": c.pid_mode,
        "IpcMode": c.ipc_mode,
        "ReadonlyRootfs": c.readonly_rootfs.to_string(),
        "Binds": c.mounts.iter().filter(|m| m.kind == "bind").map(|m| format!("{}:{}{}", m.source, m.destination, if m.read_only { ":ro" } else { "" })).collect::<Vec<_>>().join(","),
        "Ports": c.ports.iter().map(|p| format!("{}:{}->{}", if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }, p.host_port, p.container_port)).collect::<Vec<_>>().join(","),
    })
}

fn event(name: &str, periodic: bool, items: Vec<Value>) -> Event {
    Event::Custom(CustomEvent {
        name: name.to_owned(),
        periodic,
        payload_json: items.iter().map(Value::to_string).collect(),
    })
}

edgeguard_sdk::export_collector!(ContainerCollector);
