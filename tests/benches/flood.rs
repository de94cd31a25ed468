//! Memory under a flood any local user can start: processes whose arguments take a megabyte
//! each, started by `nobody` within seconds, while `edgeguard run` runs the built-in plugins on
//! the embedded default configuration (the ASC default aggregation: an hour-long window).
//!
//! For each binary users run (the `release` build of `cargo xtask run`, and the image's static
//! `dist` build, staged by `cargo xtask bench`), and each flood size: resident memory before
//! the flood, at its highest during it and 20 s after, with its anonymous part. `cargo xtask
//! bench` runs it; alone, `cargo bench -p edgeguard-tests --bench flood -- [SIZES…]` needs the
//! release binary and plugins built (and `cargo xtask image` for the dist binary).

use edgeguard_tests::user_binaries;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_SIZES: [usize; 2] = [200, 1000];
/// Arguments of each flood process: eight of 120 kB (the kernel takes 128 kB per argument).
const ARGS: usize = 8;
const ARG_BYTES: usize = 120_000;

#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    anon: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
                * 1024
        };
        Memory {
            rss: field("VmRSS:"),
            anon: field("RssAnon:"),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        sizes
    };
    let binaries = user_binaries();
    println!(
        "the built-in plugins on the embedded default; processes of {:.2} MB of arguments by `nobody`",
        (ARGS * ARG_BYTES) as f64 / 1e6
    );
    println!(
        "| binary | flood | RSS before | highest RSS during | RSS 20 s after | goal |\n|---|---|---|---|---|---|"
    );
    for (what, binary, plugins) in &binaries {
        for &size in &sizes {
            let (before, peak, after) = flood(binary, plugins, size);
            println!(
                "| `{what}` | {size} processes | {:.1} MiB ({:.1} anon) | {:.1} MiB ({:.1} anon) | {:.1} MiB ({:.1} anon) | under 32 MiB: {} |",
                mib(before.rss),
                mib(before.anon),
                mib(peak.rss),
                mib(peak.anon),
                mib(after.rss),
                mib(after.anon),
                if mib(peak.rss) < 32.0 {
                    "within"
                } else {
                    "OVER"
                }
            );
        }
    }
}

/// One run: settles (compile cache warm), floods, waits; memory before, highest, after.
fn flood(binary: &Path, plugins: &Path, size: usize) -> (Memory, Memory, Memory) {
    let work = tempfile::tempdir().expect("a temporary directory");
    let cache = work.path().join("cache");
    // A first run compiles the plugins; the measured one starts as a device does every day.
    let mut warm = edgeguard(binary, plugins, &cache, &work.path().join("warm"));
    std::thread::sleep(Duration::from_secs(5));
    stop(&mut warm);
    let mut child = edgeguard(binary, plugins, &cache, &work.path().join("run"));
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(10));
    let before = Memory::of(pid);
    let mut peak = before;
    let sample = |peak: &mut Memory| {
        let now = Memory::of(pid);
        if now.rss > peak.rss {
            *peak = now;
        }
    };
    let tag = format!("flood-{}", std::process::id());
    let started = Instant::now();
    let mut processes: Vec<Child> = Vec::with_capacity(size);
    for i in 0..size {
        let args: Vec<String> = (0..ARGS)
            .map(|a| format!("{tag}-{i}-{a}-{}", "A".repeat(ARG_BYTES)))
            .collect();
        let spawned = std::os::unix::process::CommandExt::uid(
            Command::new("/bin/sh")
                .args(["-c", "sleep 120; :", &format!("{tag}-{i}")])
                .args(&args)
                .stdout(Stdio::null()),
            65534,
        )
        .spawn()
        .expect("starting a flood process");
        processes.push(spawned);
        sample(&mut peak);
    }
    eprintln!(
        "    {size} processes started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        sample(&mut peak);
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = Memory::of(pid);
    for mut p in processes {
        let _ = p.kill();
        let _ = p.wait();
    }
    stop(&mut child);
    (before, peak, after)
}

fn edgeguard(binary: &Path, plugins: &Path, cache: &Path, dir: &Path) -> Child {
    std::fs::create_dir_all(dir).expect("a run directory");
    let out: PathBuf = dir.join("out.jsonl");
    Command::new(binary)
        .args(["--log", "warn", "run", "--plugin-dir"])
        .arg(plugins)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--output")
        .arg(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("starting edgeguard")
}

fn stop(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
