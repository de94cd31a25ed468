//! `cargo xtask envelope`: the performance envelope of what ships, measured on this machine.
//!
//! The module image's static binary and plugins (the image context), with the embedded default
//! configuration (every built-in collector at its default interval), writing its messages to a
//! file:
//! - sizes: the stripped binary, the plugins, the image content (`FROM scratch`: just those);
//! - start to first message with a warm compile cache: `run --once`, from spawn to the first
//!   message in the output file, the median of several runs;
//! - a long run (10 minutes by default): resident memory at the end and at its highest (and how
//!   much of it is the binary's and plugins' mapped pages, which the kernel can drop and reread,
//!   against anonymous memory), and CPU time per hour after the first minute;
//! - memory of both binaries users run ([`one_after_another`]: the `release` build `cargo
//!   xtask run` starts, and the image's static `dist` build), each with a warm and with a cold
//!   compile cache: resident memory at 1 minute and at the end of the run, at its highest during
//!   a burst of 10,000 short processes, and 2 minutes after the burst.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The goals, printed beside the figures.
const RSS_GOAL_MB: f64 = 12.0;
const BURST_GOAL_MB: f64 = 24.0;
/// The burst: short processes with a unique argument each.
const BURST: usize = 10_000;
const CPU_GOAL_PERCENT: f64 = 0.2;
const START_GOAL_MS: f64 = 200.0;

/// `release`: the binary and plugins `cargo xtask run` starts; `image`: the image's context.
pub fn measure(release: (&Path, &Path), image: &Path, minutes: f64) -> Result<()> {
    let binary = image.join("edgeguard");
    let plugins = image.join("plugins");
    let work = std::env::temp_dir().join(format!("edgeguard-envelope-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let cache = work.join("cache");

    let binary_size = std::fs::metadata(&binary)
        .with_context(|| format!("{}", binary.display()))?
        .len();
    let (mut plugins_size, mut plugin_count) = (0, 0);
    for entry in std::fs::read_dir(&plugins)? {
        plugins_size += entry?.metadata()?.len();
        plugin_count += 1;
    }

    eprintln!("==> warming the compile cache");
    let warm = once(&binary, &plugins, &cache, &work.join("warm"))?;
    eprintln!(
        "    first run (compiling every plugin): {:.0} ms to the first message",
        warm.as_secs_f64() * 1e3
    );
    let mut starts = Vec::new();
    for i in 0..7 {
        starts.push(
            once(&binary, &plugins, &cache, &work.join(format!("once-{i}")))?.as_secs_f64() * 1e3,
        );
    }
    starts.sort_by(f64::total_cmp);
    let start_ms = starts[starts.len() / 2];

    eprintln!("==> running `edgeguard run` for {minutes} minutes");
    let state = work.join("run");
    let mut child = edgeguard_run(&binary, &plugins, &cache, &state, &[])
        .spawn()
        .context("starting edgeguard")?;
    let pid = child.id();
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut peak = Memory::default();
    let mut after_first_minute: Option<(Instant, f64)> = None;
    let mut last_report = Instant::now();
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(status) = child.try_wait()? {
            bail!("edgeguard exited early with {status}");
        }
        let memory = Memory::of(pid)?;
        if memory.rss > peak.rss {
            peak = memory;
        }
        if after_first_minute.is_none()
            && started.elapsed() >= Duration::from_secs(60).min(total / 2)
        {
            after_first_minute = Some((Instant::now(), cpu_seconds(pid)?));
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            eprintln!(
                "    {:>4.1} min: RSS {:.1} MiB ({:.1} MiB anonymous)",
                started.elapsed().as_secs_f64() / 60.0,
                mb(memory.rss),
                mb(memory.anon)
            );
            last_report = Instant::now();
        }
    }
    let end = Memory::of(pid)?;
    let (since, cpu_then) = after_first_minute.context("the run is too short")?;
    let cpu_percent = (cpu_seconds(pid)? - cpu_then) / since.elapsed().as_secs_f64() * 100.0;
    let messages =
        std::fs::read_to_string(state.join("out.jsonl")).map_or(0, |t| t.lines().count());
    stop(&mut child);

    let verdict = |ok: bool| if ok { "within" } else { "OVER" };
    println!("| what | figure | goal |");
    println!("|---|---|---|");
    println!(
        "| binary (static, stripped) | {:.1} MiB | |",
        mb(binary_size)
    );
    println!(
        "| plugins ({plugin_count} built-in) | {:.2} MiB | |",
        mb(plugins_size)
    );
    println!(
        "| image content (`FROM scratch`) | {:.1} MiB | |",
        mb(binary_size + plugins_size)
    );
    println!(
        "| start to first message, warm cache (median of {}) | {start_ms:.0} ms | at most {START_GOAL_MS:.0} ms: {} |",
        starts.len(),
        verdict(start_ms <= START_GOAL_MS)
    );
    println!(
        "| RSS after {minutes} min | {:.1} MiB ({:.1} MiB anonymous, {:.1} MiB mapped files) | at most {RSS_GOAL_MB:.0} MiB: {} |",
        mb(end.rss),
        mb(end.anon),
        mb(end.file),
        verdict(mb(end.rss) <= RSS_GOAL_MB)
    );
    println!(
        "| highest RSS | {:.1} MiB ({:.1} MiB anonymous) | |",
        mb(peak.rss),
        mb(peak.anon)
    );
    println!(
        "| CPU at the default intervals | {cpu_percent:.3} % of a core ({:.1} s per hour) | at most {CPU_GOAL_PERCENT} %: {} |",
        cpu_percent * 36.0,
        verdict(cpu_percent <= CPU_GOAL_PERCENT)
    );
    println!("| messages written | {messages} | |");
    println!();
    one_after_another(
        &[
            ("release", release.0, release.1),
            ("dist", &binary, &plugins),
        ],
        &work,
        minutes,
    )?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// One agent of [`one_after_another`]: which binary, which cache, and what its memory was.
struct Agent {
    what: String,
    child: Child,
    at_one_minute: Memory,
    at_end: Memory,
    burst_peak: Memory,
    after_burst: Memory,
}

/// One agent's figures: at 1 minute, at `minutes`, during a burst and 2 minutes after it.
fn phases(agent: &mut Agent, minutes: f64) -> Result<()> {
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0).max(Duration::from_secs(61));
    let sample = |agent: &mut Agent| -> Result<Memory> {
        if let Some(status) = agent.child.try_wait()? {
            bail!("{} exited early with {status}", agent.what);
        }
        let memory = Memory::of(agent.child.id())?;
        if memory.rss > agent.burst_peak.rss && agent.at_end.rss > 0 {
            agent.burst_peak = memory;
        }
        Ok(memory)
    };
    std::thread::sleep(Duration::from_secs(60));
    agent.at_one_minute = sample(agent)?;
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        sample(agent)?;
    }
    agent.at_end = sample(agent)?;
    let burst = std::thread::spawn(|| {
        for i in 0..BURST {
            let _ = Command::new("/bin/true")
                .arg(format!("envelope-burst-{i}"))
                .status();
        }
    });
    // The burst's events are handed out and sent for a moment after its last process.
    while !burst.is_finished() {
        sample(agent)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    burst.join().ok();
    let after = Instant::now();
    while after.elapsed() < Duration::from_secs(120) {
        sample(agent)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    agent.after_burst = sample(agent)?;
    Ok(())
}

/// Each binary with a warm and a cold compile cache on the embedded default, one after the
/// other (two agents of one binary share its pages, which neither could then hand back): the
/// memory at 1 minute and at `minutes`, then the highest during a burst of [`BURST`] short
/// processes and 2 minutes after it.
fn one_after_another(binaries: &[(&str, &Path, &Path)], work: &Path, minutes: f64) -> Result<()> {
    let mut agents = Vec::new();
    for (name, binary, plugins) in binaries {
        for cache in ["warm", "cold"] {
            eprintln!(
                "==> `{name}`, {cache} cache: {minutes} minutes, then a burst of {BURST} processes"
            );
            let dir = work.join(format!("{name}-{cache}"));
            std::fs::create_dir_all(&dir)?;
            let cache_dir = dir.join("cache");
            if cache == "warm" {
                once(binary, plugins, &cache_dir, &dir.join("warming"))?;
            }
            let child = edgeguard_run(binary, plugins, &cache_dir, &dir, &[])
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut agent = Agent {
                what: format!("`{name}`, {cache} cache"),
                child,
                at_one_minute: Memory::default(),
                at_end: Memory::default(),
                burst_peak: Memory::default(),
                after_burst: Memory::default(),
            };
            let measured = phases(&mut agent, minutes);
            stop(&mut agent.child);
            measured?;
            agents.push(agent);
        }
    }
    let verdict = |mb: f64, goal: f64| if mb <= goal { "within" } else { "OVER" };
    let cell = |m: &Memory| format!("{:.1} MiB ({:.1} anon)", mb(m.rss), mb(m.anon));
    println!(
        "| binary, cache | RSS at 1 min | RSS at {minutes} min | highest during the burst | 2 min after the burst | goals: {RSS_GOAL_MB:.0} MiB idle, {BURST_GOAL_MB:.0} MiB at the burst |"
    );
    println!("|---|---|---|---|---|---|");
    for a in &agents {
        let idle = mb(a.at_one_minute.rss)
            .max(mb(a.at_end.rss))
            .max(mb(a.after_burst.rss));
        println!(
            "| {} | {} | {} | {} | {} | idle {}, burst {} |",
            a.what,
            cell(&a.at_one_minute),
            cell(&a.at_end),
            cell(&a.burst_peak),
            cell(&a.after_burst),
            verdict(idle, RSS_GOAL_MB),
            verdict(mb(a.burst_peak.rss), BURST_GOAL_MB)
        );
    }
    Ok(())
}

/// `edgeguard run` on the embedded default configuration with `plugins` and the compiled cache
/// `cache`, its state and its messages (`out.jsonl`) under `dir`; `more` arguments to `run`.
fn edgeguard_run(
    binary: &Path,
    plugins: &Path,
    cache: &Path,
    dir: &Path,
    more: &[&str],
) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--log", "warn", "run"])
        .args(more)
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("--cache-dir")
        .arg(cache);
    command
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--output")
        .arg(dir.join("out.jsonl"))
        .stderr(Stdio::null());
    command
}

/// `run --once` with a fresh state: the time from spawn to the first message in its output.
fn once(binary: &Path, plugins: &Path, cache: &Path, dir: &Path) -> Result<Duration> {
    std::fs::create_dir_all(dir)?;
    let out: PathBuf = dir.join("out.jsonl");
    let written = || std::fs::read(&out).is_ok_and(|b| b.contains(&b'\n'));
    let started = Instant::now();
    let mut child = edgeguard_run(binary, plugins, cache, dir, &["--once"])
        .spawn()
        .context("starting edgeguard --once")?;
    let first = loop {
        // Asked before the file is read: a run that writes and exits in between still counts.
        let ended = child.try_wait()?;
        if written() {
            break started.elapsed();
        }
        if let Some(status) = ended {
            bail!("edgeguard run --once ended with {status} before writing a message");
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    child.wait()?;
    Ok(first)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
                * 1024
        };
        Ok(Memory {
            rss: kb("VmRSS:"),
            anon: kb("RssAnon:"),
            file: kb("RssFile:") + kb("RssShmem:"),
        })
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at `state`.
    let rest = stat
        .rsplit_once(") ")
        .context("malformed /proc/pid/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    // _SC_CLK_TCK is 100 on every Linux this runs on; ask getconf to be sure.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
