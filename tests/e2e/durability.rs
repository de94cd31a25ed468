//! The real binary under abuse: `kill -9` with events queued loses none of them, and a flood
//! into a tiny cache keeps memory bounded and counts its drops.

use edgeguard_tests::schema::Validators;
use edgeguard_tests::{edgeguard_bin, events_named as events, plugin, run_once, write_config};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A configuration running the fault plugin in `sequence` mode: `count` numbered events every
/// `interval`, sent to `output`; the plugin's cap per call is `count`, so a flood is not a fault.
fn config(dir: &Path, asc: &str, count: u32, interval: &str, output: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin("edgeguard-fault-plugin"), plugins.join("fault.wasm")).unwrap();
    let rest = format!(
        "[schedule]\nfirst_collection_jitter = \"0s\"\n\
         [asc]\n{asc}\n\
         [events.Sequence]\npriority = \"High\"\n\
         [output]\nsink = \"file\"\nfile = {output:?}\nmax_file_size = \"1GiB\"\n\
         [[plugin]]\nname = \"sequence\"\nfile = \"fault.wasm\"\ninterval = \"{interval}\"\ngrants = [\"processes\", \"log\"]\n\
         [plugin.limits]\nmax_events_per_call = {cap}\n\
         [plugin.config]\nmode = \"sequence\"\ncount = {count}\n",
        cap = count.max(1)
    );
    write_config(dir, &format!("edgeguard-{count}.toml"), &plugins, &rest)
}

fn start(config: &Path) -> Child {
    Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn messages(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
        .collect()
}

/// Runs `--once` on the same state: whatever is queued is sent.
fn drain(config: &Path) {
    run_once(config);
}

fn wait_for(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(
        edgeguard_tests::poll_until(timeout, done),
        "timed out waiting for {what}"
    );
}

#[test]
fn kill_9_with_events_queued_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.jsonl");
    let after = dir.path().join("after.jsonl");
    let asc = "highPriorityMessageFrequency = \"PT1S\"\nlowPriorityMessageFrequency = \"PT1H\"";
    let mut child = start(&config(dir.path(), asc, 20, "50ms", &before));
    // Kill half-way between two sends, when about half a second of events is queued.
    wait_for("a first message", Duration::from_secs(30), || {
        !messages(&before).is_empty()
    });
    let seen = messages(&before).len();
    wait_for("a second message", Duration::from_secs(30), || {
        messages(&before).len() > seen
    });
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill on our own child.
    unsafe { libc_kill(child.id() as i32, 9) };
    child.wait().unwrap();

    // Restart on the same state, collecting nothing new, and send what is queued.
    drain(&config(dir.path(), asc, 0, "50ms", &after));

    let (first, second) = (messages(&before), messages(&after));
    let validators = Validators::new();
    first
        .iter()
        .chain(&second)
        .for_each(|m| validators.assert_valid(m));
    let resent = events(&second, "Sequence");
    assert!(
        !resent.is_empty(),
        "events were queued at the kill and sent after the restart"
    );
    // Every number from 0 to the last accepted one arrived: nothing accepted was lost. Events
    // sent twice (written but not acknowledged before the kill) keep their Id.
    let mut ids: BTreeMap<u64, &str> = BTreeMap::new();
    for e in events(&first, "Sequence").into_iter().chain(resent) {
        let n = e["Payload"][0]["N"].as_u64().unwrap();
        let id = e["Id"].as_str().unwrap();
        assert_eq!(*ids.entry(n).or_insert(id), id, "event {n} changed its Id");
    }
    let numbers: BTreeSet<u64> = ids.keys().copied().collect();
    let last = *numbers.last().unwrap();
    assert_eq!(
        numbers,
        (0..=last).collect(),
        "a gap: an accepted event was lost"
    );
    assert!(
        last >= 40,
        "at least two collections' worth (got {})",
        last + 1
    );
    eprintln!(
        "{} events accepted; {} sent before the kill, {} after the restart",
        last + 1,
        events(&first, "Sequence").len(),
        events(&second, "Sequence").len()
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn a_flood_into_a_tiny_cache_keeps_memory_bounded_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    // Nothing is sent during the flood (frequencies of an hour): the cache fills and drops.
    let asc = "highPriorityMessageFrequency = \"PT1H\"\nlowPriorityMessageFrequency = \"PT1H\"\n\
               maxLocalCacheSizeInBytes = 65536\nmaxMessageSizeInBytes = 65536";
    let config_path = config(dir.path(), asc, 5000, "10ms", &output);
    let mut child = start(&config_path);
    let pid = child.id();
    let queue = dir.path().join("state/queues/high-edgeguard");
    wait_for("the flood to start", Duration::from_secs(30), || {
        std::fs::read_dir(&queue).is_ok_and(|d| {
            d.filter_map(std::result::Result::ok)
                .any(|e| e.metadata().unwrap().len() > 0)
        })
    });
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
        samples.push((
            start.elapsed(),
            edgeguard_tests::status_bytes(pid, "VmRSS") >> 10,
        ));
    }
    // SAFETY: kill on our own child.
    unsafe { libc_kill(pid as i32, 15) };
    assert!(child.wait().unwrap().success());
    // After a second of flood the process is at its working size; it must stay there while
    // millions of events go on arriving (without the bounds, they would pile up by the 100 MB).
    let early = samples
        .iter()
        .filter(|(t, _)| *t <= Duration::from_millis(1500))
        .map(|s| s.1)
        .max()
        .unwrap();
    let late = samples
        .iter()
        .filter(|(t, _)| *t >= Duration::from_secs(3))
        .map(|s| s.1)
        .max()
        .unwrap();
    assert!(
        late <= early + 8 * 1024,
        "RSS grew under the flood: {early} KiB in the first 1.5 s, {late} KiB at the end ({samples:?})"
    );
    assert!(late < 150 * 1024, "RSS {late} KiB");

    // Drain: the counts carried over the restart add up, exactly.
    drain(&config(dir.path(), asc, 0, "10ms", &output));
    let all = messages(&output);
    let validators = Validators::new();
    all.iter().for_each(|m| validators.assert_valid(m));
    let delivered = events(&all, "Sequence").len() as u64;
    let stats = events(&all, "DroppedEventsStatistics");
    let high = stats
        .iter()
        .flat_map(|s| s["Payload"].as_array().unwrap())
        .filter(|q| q["Queue"] == "High");
    let (collected, dropped) = high.fold((0, 0), |(c, d), q| {
        (
            c + q["CollectedEvents"].as_u64().unwrap(),
            d + q["DroppedEvents"].as_u64().unwrap(),
        )
    });
    assert!(collected >= 100_000, "the flood offered {collected} events");
    assert_eq!(
        collected,
        delivered + dropped,
        "collected = delivered + dropped"
    );
    assert!(delivered > 0 && dropped > 0);
    eprintln!(
        "flood: {collected} collected, {delivered} delivered, {dropped} dropped; RSS {early} KiB in the first 1.5 s of flood, {late} KiB after 4 s"
    );
}

#[test]
fn a_state_directory_serves_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let asc = "highPriorityMessageFrequency = \"PT1S\"";
    let config_path = config(dir.path(), asc, 1, "1s", &dir.path().join("out.jsonl"));
    let mut child = start(&config_path);
    wait_for(
        "the first instance to open its state",
        Duration::from_secs(30),
        || dir.path().join("state/queues").exists(),
    );
    let out = Command::new(edgeguard_bin())
        .args(["run", "--once", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    // SAFETY: kill on our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    child.wait().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another edgeguard"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
