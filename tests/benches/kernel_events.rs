//! What polling misses: the real `edgeguard run` with the process collector at the default
//! high-group interval (10 s), once following the kernel's process events and once polling,
//! while this bench starts 10,000 short-lived processes (`/bin/true`, one after the other, each
//! reaped at once). Every message goes to a file; the bench counts the ProcessCreate and
//! ProcessTerminate of each of its processes by pid, and for the creates how much of the
//! process the host could read before it ended (the race of a short process against the read
//! of its `/proc` entry).
//!
//! `cargo xtask bench` runs it; `cargo bench -p edgeguard-tests --bench kernel_events` alone
//! needs the release binary and plugins built first. `-- COUNT` changes the 10,000.

use edgeguard_tests::{edgeguard_bin, plugin, write_config};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_COUNT: usize = 10_000;

struct Outcome {
    created: usize,
    full: usize,
    name_only: usize,
    pid_only: usize,
    terminated: usize,
    spawn_rate: f64,
}

fn main() {
    let count = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(DEFAULT_COUNT);
    println!("{count} short-lived processes (/bin/true), process collector at the default 10 s interval");
    println!("{:<28} {:>10} {:>9} {:>8} {:>10} {:>9} {:>11} {:>14}", "source", "created", "capture", "full", "name only", "pid only", "terminated", "processes/s");
    for (label, events) in [("kernel events (proc connector)", true), ("polling /proc", false)] {
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

fn run(count: usize, events: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(plugin("edgeguard-plugin-process"), plugins.join("process.wasm")).unwrap();
    // Every event on its own (no aggregation), sent each second; the collector's defaults
    // otherwise (10 s interval, 4096-event buffer).
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        &format!(
            "[schedule]\nfirst_collection_jitter = \"0s\"\n\
             [asc]\nhighPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1S\"\naggregationEnabledProcessCreate = false\naggregationEnabledProcessTerminate = false\n\
             [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n[plugin.config]\nreport_existing = false\nevents = {events}\n"
        ),
    );
    let out = dir.path().join("out.jsonl");
    let mut edgeguard = Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&out)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The first collection (the baseline) is due at once; let it pass.
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let pids: Vec<u32> = (0..count)
        .map(|i| {
            let mut child = Command::new("/bin/true").arg(format!("bench-{i}")).spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        })
        .collect();
    let spawn_rate = count as f64 / started.elapsed().as_secs_f64();
    // One more collection at the 10 s interval, and its message a second later.
    std::thread::sleep(Duration::from_secs(12));
    stop(&mut edgeguard);
    let outcome = count_events(&out, &pids);
    Outcome { spawn_rate, ..outcome }
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
                let Some(pid) = payload["ProcessId"].as_u64().map(|p| p as u32) else { continue };
                if !ours.contains(&pid) {
                    continue;
                }
                match event["Name"].as_str() {
                    Some("ProcessCreate") => {
                        let detail = payload["ExtraDetails"]["Detail"].as_str().unwrap_or("full").to_owned();
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
