//! What each process source tells of a burst, and what polling misses:
//!
//! - 10,000 short-lived processes (`/bin/true` with a unique argument, one after the other,
//!   each reaped at once), for each source in turn with a burst of its own: `edgeguard run`
//!   with the process collector following the proc connector alone, then with the audit
//!   records (`agent.audit = "manage"`), then polling `/proc` at the default 10 s; auditd with
//!   the ASC agents' execve rules and a backlog of 8192 (its log); forkstat (the proc
//!   connector, reading `/proc` at each exec). For each: the processes told, those told with
//!   their whole command line, and the CPU time of the source's process for the burst;
//! - the network collector (1 min) while it opens 1,000 short TCP connections on loopback
//!   (connect, accept, one byte, close both): the outbound ConnectionCreate counted by client port.
//!
//! Every message goes to a file. `cargo xtask bench` runs it; `cargo bench -p edgeguard-tests
//! --bench kernel_events` alone needs the release binary and plugins built first.
//! `-- PROCESSES CONNECTIONS` change the 10,000 and the 1,000.

use edgeguard_tests::{
    auditd, builtin_plugins, edgeguard_bin, short_connections, short_lived_processes,
    write_config_with_agent,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_PROCESSES: usize = 10_000;
const DEFAULT_CONNECTIONS: usize = 1_000;

/// One source's run of a burst of that many processes.
type Burst = fn(usize) -> Outcome;

/// What one source told of a burst, and what it cost.
struct Outcome {
    /// Processes it told at all.
    told: usize,
    /// Of those, with the whole command line.
    whole: usize,
    /// CPU time of its process over the burst and until it had told it, in seconds.
    cpu: f64,
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

/// Each source in turn, with a burst of its own: edgeguard without and with the audit
/// records, auditd with the ASC agents' execve rules, forkstat.
fn processes(count: usize) {
    println!(
        "{count} short-lived processes (/bin/true with a unique argument), one after the other"
    );
    println!(
        "| source | told | with the whole command line | CPU for the burst |\n|---|---|---|---|"
    );
    let sources: [(&str, Burst); 5] = [
        ("edgeguard, proc connector (`agent.audit = \"off\"`)", |n| {
            edgeguard_burst(n, "off")
        }),
        (
            "edgeguard, proc connector + audit records (`manage`)",
            |n| edgeguard_burst(n, "manage"),
        ),
        ("edgeguard polling `/proc` (10 s)", edgeguard_polling),
        (
            "auditd, the ASC agents' execve rules, backlog 8192",
            auditd_burst,
        ),
        ("forkstat (proc connector, reads `/proc`)", forkstat_burst),
    ];
    for (label, run) in sources {
        let o = run(count);
        println!(
            "| {label} | {:.1} % | {:.1} % | {:.2} s |",
            o.told as f64 * 100.0 / count as f64,
            o.whole as f64 * 100.0 / count as f64,
            o.cpu
        );
    }
}

/// User and system time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

/// A burst's tag, unique to the run.
fn tag(what: &str) -> String {
    format!("{what}{}", std::process::id())
}

/// `edgeguard run` with one built-in collector (`name`, its `grants`), every event on its own
/// (no aggregation) and sent each second, the collector's defaults otherwise (interval,
/// 4096-event buffer), following the kernel's events or not, the audit source as `audit` says;
/// messages into `<dir>/out.jsonl`. Returns once its first collection (the baseline) has passed.
fn start(dir: &Path, name: &str, grants: &str, events: bool, audit: &str) -> Child {
    let plugins = builtin_plugins(dir, &[name]);
    let config = write_config_with_agent(
        dir,
        "edgeguard.toml",
        &plugins,
        &format!("audit = \"{audit}\""),
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

fn edgeguard_burst(count: usize, audit: &str) -> Outcome {
    let _audit = auditd::exclusive();
    edgeguard_run(count, true, audit, Duration::from_secs(3))
}

fn edgeguard_polling(count: usize) -> Outcome {
    // One more collection at the 10 s interval, and its message a second later.
    edgeguard_run(count, false, "off", Duration::from_secs(12))
}

fn edgeguard_run(count: usize, events: bool, audit: &str, settle: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let mut edgeguard = start(
        dir.path(),
        "process",
        "\"processes\", \"log\"",
        events,
        audit,
    );
    let before = cpu_seconds(edgeguard.id());
    let tag = tag(&format!("eg-{audit}-"));
    let pids = short_lived_processes(&tag, count);
    std::thread::sleep(settle);
    let cpu = cpu_seconds(edgeguard.id()) - before;
    stop(&mut edgeguard);
    let told = told_by_edgeguard(&dir.path().join("out.jsonl"), &pids);
    let index: HashMap<u32, usize> = pids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let whole = told
        .iter()
        .filter(|(pid, line)| **line == format!("/bin/true {tag}-{}", index[*pid]))
        .count();
    Outcome {
        told: told.len(),
        whole,
        cpu,
    }
}

/// auditd with the execve rules the ASC agents load, in its own log.
fn auditd_burst(count: usize) -> Outcome {
    let _audit = auditd::exclusive();
    let mut daemon = auditd::Auditd::start();
    auditd::auditctl(&["-b", "8192"]);
    auditd::add_operator_rules();
    let before = cpu_seconds(daemon.pid());
    let tag = tag("auditd-");
    short_lived_processes(&tag, count);
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_seconds(daemon.pid()) - before;
    daemon.stop();
    auditd::delete_operator_rules();
    let log = daemon.log();
    let whole = told_whole(&log, &format!("a0=\"/bin/true\" a1=\"{tag}-"), "\"");
    Outcome {
        told: whole,
        whole,
        cpu,
    }
}

/// forkstat's exec lines, which end in the command line it read from `/proc`.
fn forkstat_burst(count: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("forkstat.out");
    let mut forkstat = Command::new("forkstat")
        .args(["-l", "-e", "exec"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("forkstat is missing: `cargo xtask bench` installs Debian's forkstat");
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_seconds(forkstat.id());
    let tag = tag("forkstat-");
    let pids = short_lived_processes(&tag, count);
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_seconds(forkstat.id()) - before;
    stop(&mut forkstat);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let execs: HashSet<u32> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    let told = pids.iter().filter(|p| execs.contains(p)).count();
    let whole = told_whole(&text, &format!("/bin/true {tag}-"), "");
    Outcome { told, whole, cpu }
}

/// How many of the burst's processes `text` has whole: lines with `prefix`, the process's
/// number, then `end` (the rest of the line when empty).
fn told_whole(text: &str, prefix: &str, end: &str) -> usize {
    let mut seen = HashSet::new();
    for line in text.lines().map(str::trim_end) {
        let Some((_, rest)) = line.split_once(prefix) else {
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after = &rest[digits..];
        if digits > 0
            && if end.is_empty() {
                after.is_empty()
            } else {
                after.starts_with(end)
            }
        {
            seen.insert(rest[..digits].to_owned());
        }
    }
    seen.len()
}

fn stop(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// The ProcessCreate of each of `pids` in edgeguard's messages: its command line.
fn told_by_edgeguard(out: &Path, pids: &[u32]) -> HashMap<u32, String> {
    // Pids recycle over 10,000 processes only on a small pid_max; count each pid once.
    let ours: HashSet<u32> = pids.iter().copied().collect();
    let mut created = HashMap::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        for event in message["Events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["Name"] == "ProcessCreate")
        {
            for payload in event["Payload"].as_array().into_iter().flatten() {
                let Some(pid) = payload["ProcessId"].as_u64().map(|p| p as u32) else {
                    continue;
                };
                if ours.contains(&pid) {
                    let line = payload["CommandLine"].as_str().unwrap_or_default();
                    created.insert(pid, line.to_owned());
                }
            }
        }
    }
    created
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
        let mut edgeguard = start(dir.path(), "network", "\"sockets\", \"log\"", events, "off");
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
