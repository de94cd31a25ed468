//! What polling misses: the real `edgeguard run` with a collector at its default interval, once
//! following the kernel's events and once polling:
//!
//! - the process collector (10 s) while this bench starts 10,000 short-lived processes
//!   (`/bin/true`, one after the other, each reaped at once): ProcessCreate and
//!   ProcessTerminate counted by pid, and for the creates how much of the process the host
//!   could read before it ended (the race of a short process against the read of its `/proc`);
//! - the network collector (1 min) while it opens 1,000 short TCP connections on loopback
//!   (connect, accept, one byte, close both): the outbound ConnectionCreate counted by client port.
//!
//! Every message goes to a file. `cargo xtask bench` runs it; `cargo bench -p edgeguard-tests
//! --bench kernel_events` alone needs the release binary and plugins built first.
//! `-- PROCESSES CONNECTIONS` change the 10,000 and the 1,000.

use edgeguard_tests::{
    builtin_plugins, edgeguard_bin, short_connections, short_lived_processes, write_config,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_PROCESSES: usize = 10_000;
const DEFAULT_CONNECTIONS: usize = 1_000;

struct Outcome {
    created: usize,
    full: usize,
    name_only: usize,
    pid_only: usize,
    terminated: usize,
    spawn_rate: f64,
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let count = numbers.first().copied().unwrap_or(DEFAULT_PROCESSES);
    let connections = numbers.get(1).copied().unwrap_or(DEFAULT_CONNECTIONS);
    processes(count);
    tcp_connections(connections);
}

fn processes(count: usize) {
    println!(
        "{count} short-lived processes (/bin/true), process collector at the default 10 s interval"
    );
    println!(
        "{:<28} {:>10} {:>9} {:>8} {:>10} {:>9} {:>11} {:>14}",
        "source",
        "created",
        "capture",
        "full",
        "name only",
        "pid only",
        "terminated",
        "processes/s"
    );
    for (label, events) in [
        ("kernel events (proc connector)", true),
        ("polling /proc", false),
    ] {
        let o = run(count, events);
        println!(
            "{:<28} {:>10} {:>8.2}% {:>8} {:>10} {:>9} {:>11} {:>14.0}",
            label,
            o.created,
            o.created as f64 * 100.0 / count as f64,
            o.full,
            o.name_only,
            o.pid_only,
            o.terminated,
            o.spawn_rate
        );
    }
}

/// `edgeguard run` with one built-in collector (`name`, its `grants`), every event on its own
/// (no aggregation) and sent each second, the collector's defaults otherwise (interval,
/// 4096-event buffer), following the kernel's events or not; messages into `<dir>/out.jsonl`.
/// Returns once its first collection (the baseline) has passed.
fn start(dir: &Path, name: &str, grants: &str, events: bool) -> Child {
    let plugins = builtin_plugins(dir, &[name]);
    let config = write_config(
        dir,
        "edgeguard.toml",
        &plugins,
        &format!(
            "[schedule]\nfirst_collection_jitter = \"0s\"\n\
             [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\n\
             aggregationEnabledProcessCreate = false\naggregationEnabledProcessTerminate = false\naggregationEnabledConnectionCreate = false\n\
             [[plugin]]\nname = \"{name}\"\nfile = \"{name}.wasm\"\ngrants = [{grants}]\n[plugin.config]\nreport_existing = false\nevents = {events}\n"
        ),
    );
    let child = Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(dir.join("out.jsonl"))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    child
}

fn run(count: usize, events: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let mut edgeguard = start(dir.path(), "process", "\"processes\", \"log\"", events);
    let out = dir.path().join("out.jsonl");

    let started = Instant::now();
    let pids = short_lived_processes("bench", count);
    let spawn_rate = count as f64 / started.elapsed().as_secs_f64();
    // One more collection at the 10 s interval, and its message a second later.
    std::thread::sleep(Duration::from_secs(12));
    stop(&mut edgeguard);
    let outcome = count_events(&out, &pids);
    Outcome {
        spawn_rate,
        ..outcome
    }
}

fn stop(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

fn count_events(out: &Path, pids: &[u32]) -> Outcome {
    // Pids recycle over 10,000 processes only on a small pid_max; count each pid once.
    let ours: HashSet<u32> = pids.iter().copied().collect();
    let mut created: HashMap<u32, String> = HashMap::new();
    let mut terminated = HashSet::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        for event in message["Events"].as_array().into_iter().flatten() {
            for payload in event["Payload"].as_array().into_iter().flatten() {
                let Some(pid) = payload["ProcessId"].as_u64().map(|p| p as u32) else {
                    continue;
                };
                if !ours.contains(&pid) {
                    continue;
                }
                match event["Name"].as_str() {
                    Some("ProcessCreate") => {
                        let detail = payload["ExtraDetails"]["Detail"]
                            .as_str()
                            .unwrap_or("full")
                            .to_owned();
                        created.insert(pid, detail);
                    }
                    Some("ProcessTerminate") => {
                        terminated.insert(pid);
                    }
                    _ => {}
                }
            }
        }
    }
    let with = |needle: &str| created.values().filter(|d| d.contains(needle)).count();
    Outcome {
        created: created.len(),
        full: with("full"),
        name_only: with("executable and arguments"),
        pid_only: with("user of its parent"),
        terminated: terminated.len(),
        spawn_rate: 0.0,
    }
}

fn tcp_connections(count: usize) {
    println!();
    println!(
        "{count} short TCP connections on loopback, network collector at the default 1 min interval"
    );
    println!(
        "{:<36} {:>18} {:>9} {:>16}",
        "source", "ConnectionCreate", "capture", "connections/s"
    );
    for (label, events) in [
        ("kernel events (sock_diag destroy)", true),
        ("polling the socket table", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut edgeguard = start(dir.path(), "network", "\"sockets\", \"log\"", events);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap().port();
        let started = Instant::now();
        let clients: HashSet<u16> = short_connections(&listener, count).into_iter().collect();
        let rate = count as f64 / started.elapsed().as_secs_f64();
        // The next collection, a minute after the first, and its message a second later.
        std::thread::sleep(Duration::from_secs(62));
        stop(&mut edgeguard);
        let mut seen = HashSet::new();
        for line in std::fs::read_to_string(dir.path().join("out.jsonl"))
            .unwrap_or_default()
            .lines()
        {
            let message: Value = serde_json::from_str(line).unwrap();
            for event in message["Events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["Name"] == "ConnectionCreate")
            {
                for p in event["Payload"].as_array().into_iter().flatten() {
                    let port = |key: &str| p[key].as_str().and_then(|v| v.parse::<u16>().ok());
                    if p["Direction"] == "Out"
                        && port("RemotePort") == Some(server)
                        && port("LocalPort").is_some_and(|l| clients.contains(&l))
                    {
                        seen.insert(port("LocalPort"));
                    }
                }
            }
        }
        println!(
            "{:<36} {:>18} {:>8.2}% {:>16.0}",
            label,
            seen.len(),
            seen.len() as f64 * 100.0 / clients.len() as f64,
            rate
        );
    }
}
