//! edgeguard as an IoT Edge module under test: the real binary started with the environment
//! edgeAgent gives a module, against the Edge Hub test bed ([`Bed`]), and helpers to make and
//! find processes in what it sends.

use crate::edgehub::{self, HubSimulator, MODULE, MODULE_KEY, Mosquitto, Telemetry, TestCa};
use crate::workload::WorkloadSimulator;
use crate::{edgeguard_bin, write_config_with_agent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running edgeguard module; killed when dropped.
pub struct Module {
    pub child: Child,
    pub log: PathBuf,
}

impl Module {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_log(&self, limit: Duration, needle: &str) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "`{needle}` not logged within {limit:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the module in `dir` with the process and system collectors. `port` is edgeHub's
/// (mosquitto's TLS listener or the front), `extra` more configuration.
pub fn start_module(
    dir: &Path,
    workload: &WorkloadSimulator,
    gateway: &str,
    port: u16,
    extra: &str,
) -> Module {
    start_module_under(&[], dir, workload, gateway, port, extra)
}

/// The same, run by `wrapper` (`unshare --pid --fork --kill-child`, say).
pub fn start_module_under(
    wrapper: &[&str],
    dir: &Path,
    workload: &WorkloadSimulator,
    gateway: &str,
    port: u16,
    extra: &str,
) -> Module {
    launch(wrapper, dir, workload, gateway, port, "", extra)
}

/// As [`start_module`], with `agent` (TOML keys) added to the `[agent]` section.
pub fn start_module_with_agent(
    dir: &Path,
    workload: &WorkloadSimulator,
    gateway: &str,
    port: u16,
    agent: &str,
    extra: &str,
) -> Module {
    launch(&[], dir, workload, gateway, port, agent, extra)
}

fn launch(
    wrapper: &[&str],
    dir: &Path,
    workload: &WorkloadSimulator,
    gateway: &str,
    port: u16,
    agent: &str,
    extra: &str,
) -> Module {
    let plugins = crate::builtin_plugins(dir, &["process", "system"]);
    let config = write_config_with_agent(
        dir,
        "edgeguard.toml",
        &plugins,
        agent,
        &format!(
            "[schedule]\nhigh = \"300ms\"\nfirst_collection_jitter = \"0s\"\n\
             [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\naggregationEnabledProcessCreate = false\naggregationEnabledProcessTerminate = false\n\
             [edge]\nport = {port}\nstatus_interval = \"1s\"\n{extra}\n\
             [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n[plugin.config]\nreport_existing = false\n\
             [[plugin]]\nname = \"system\"\nfile = \"system.wasm\"\ngrants = [\"system\"]\n"
        ),
    );
    let log = dir.join("edgeguard.log");
    let child = crate::command_under(wrapper, &edgeguard_bin())
        .args(["--log", "info,edgeguard::edge=debug", "run", "--config"])
        .arg(&config)
        .envs(edgehub::module_environment(&workload.uri(), gateway))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Module { child, log }
}

/// A broker with a certificate for localhost, the workload API trusting its CA, the twin side.
pub struct Bed {
    pub ca: TestCa,
    pub broker: Mosquitto,
    pub workload: WorkloadSimulator,
    pub hub: HubSimulator,
    pub dir: tempfile::TempDir,
}

pub async fn bed(desired: Value) -> Bed {
    let ca = TestCa::new();
    let broker = Mosquitto::start(&ca, &["localhost"]);
    let workload = WorkloadSimulator::start(MODULE, MODULE_KEY, Some(ca.pem.clone()));
    let hub = HubSimulator::start(broker.plain_port, desired).await;
    Bed {
        ca,
        broker,
        workload,
        hub,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Waits until the process collector made its first collection (reported in the twin): what
/// runs before it is the baseline, not news.
pub async fn wait_collecting(hub: &HubSimulator) {
    hub.wait_reported(
        Duration::from_secs(30),
        "the process collector at work",
        |r| {
            r["edgeguard"]["collectors"]["process"]["collections"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        },
    )
    .await;
}

/// A process with a command line of its own (`/bin/sh -c … MARKER`), alive for a minute.
pub fn marker_process(marker: &str) -> Child {
    Command::new("/bin/sh")
        .args(["-c", "sleep 60; true", marker])
        .spawn()
        .unwrap()
}

pub fn events(messages: &[Telemetry]) -> Vec<&Value> {
    messages
        .iter()
        .flat_map(|m| m.body["Events"].as_array().unwrap().iter())
        .collect()
}

pub fn process_creates_with<'a>(messages: &'a [Telemetry], marker: &str) -> Vec<&'a Value> {
    events(messages)
        .into_iter()
        .filter(|e| {
            e["Name"] == "ProcessCreate"
                && e["Payload"][0]["CommandLine"]
                    .as_str()
                    .is_some_and(|c| c.contains(marker))
        })
        .collect()
}
