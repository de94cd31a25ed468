//! Startup of a healthy collector with a compile bomb beside it: the time from starting
//! `edgeguard run` to the process collector started, alone and with a component beside it
//! whose compile takes seconds (eight functions of 240 kB of branchy code, each within the
//! host's bounds). Both with a cold compile cache, so each run compiles the process plugin too:
//! the goal is the same figure with and without the bomb, since each plugin compiles in a
//! process of its own, at a lower priority than the collectors, and each collector starts
//! the moment its own load is done. Then, once, what the bomb itself costs: the time until it
//! is refused and edgeguard's peak RSS by then (the compiler's is its own, bounded by
//! `agent.compile_memory`).
//!
//! For each binary users run (`release` and the image's `dist`). `cargo xtask bench` runs it;
//! alone, `cargo bench -p edgeguard-tests --bench startup -- [RUNS]` needs the release binary
//! and plugins built (and `cargo xtask image` for the dist binary).

use edgeguard_tests::{branchy_body, component_of, user_binaries, write_config};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_RUNS: usize = 7;

fn main() {
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let bodies: Vec<Vec<u8>> = (0..8).map(|_| branchy_body(240_000)).collect();
    let bomb = component_of(1, &bodies);
    println!(
        "start to the process collector started, cold compile cache, median (max) of {runs} runs"
    );
    println!(
        "| binary | alone | beside a compile bomb | the bomb refused after, peak RSS by then | goal |\n|---|---|---|---|---|"
    );
    for (what, binary, plugins) in user_binaries() {
        let alone = median_max(
            (0..runs)
                .map(|_| startup(&binary, &plugins, None, false).0)
                .collect(),
        );
        let beside = median_max(
            (0..runs)
                .map(|_| startup(&binary, &plugins, Some(&bomb), false).0)
                .collect(),
        );
        let (_, bomb_cost) = startup(&binary, &plugins, Some(&bomb), true);
        let (refused_after, peak) = bomb_cost.expect("the bomb was refused");
        println!(
            "| `{what}` | {:.0} ms ({:.0}) | {:.0} ms ({:.0}) | {:.1} s, {:.1} MiB | unchanged: {} |",
            alone.0,
            alone.1,
            beside.0,
            beside.1,
            refused_after.as_secs_f64(),
            peak as f64 / f64::from(1 << 20),
            // Within a fifth, or 50 ms: the two share the machine's two cores.
            if beside.0 <= (alone.0 * 1.2).max(alone.0 + 50.0) {
                "yes"
            } else {
                "NO"
            }
        );
    }
}

/// One run: milliseconds from the spawn to the log line of the process collector started;
/// with `until_refused`, also the time until the bomb is refused and the peak RSS by then.
fn startup(
    binary: &Path,
    plugins: &Path,
    bomb: Option<&[u8]>,
    until_refused: bool,
) -> (f64, Option<(Duration, u64)>) {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path().join("plugins");
    std::fs::create_dir_all(&dir).expect("a plugin directory");
    std::fs::copy(plugins.join("process.wasm"), dir.join("process.wasm"))
        .expect("the process plugin beside the binary");
    let mut rest = String::from(
        "[[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n",
    );
    if let Some(bytes) = bomb {
        std::fs::write(dir.join("bomb.wasm"), bytes).expect("writing the bomb");
        rest.push_str("[[plugin]]\nname = \"bomb\"\nfile = \"bomb.wasm\"\ngrants = [\"log\"]\n");
    }
    let config = write_config(work.path(), "edgeguard.toml", &dir, &rest);
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["--log", "info", "run", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(work.path().join("out.jsonl"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting edgeguard");
    let log = BufReader::new(child.stderr.take().expect("its log"));
    let (mut seen, mut refused) = (None, None);
    for line in log.lines() {
        let line = line.expect("reading its log");
        if line.contains("collector started") && line.contains("process") {
            seen = Some(started.elapsed());
        }
        if line.contains("bomb") && line.contains("not an edgeguard collector") {
            refused = Some((
                started.elapsed(),
                edgeguard_tests::status_bytes(child.id(), "VmHWM"),
            ));
        }
        if seen.is_some() && (!until_refused || refused.is_some()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the process collector never started, or the bomb was never refused"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let ms = seen.expect("the process collector started").as_secs_f64() * 1e3;
    (ms, refused)
}

fn median_max(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms[ms.len() / 2], ms[ms.len() - 1])
}
