//! The pipeline: aggregation, queues and their frequencies, message packing, acknowledgement,
//! drops, and the sinks. Events go through the real pipeline into real state directories.

use edgeguard::events::{Category, EventType, SecurityEvent};
use edgeguard::output::{FileSink, Message, Sink};
use edgeguard::pipeline::Batch;
use edgeguard::pipeline::aggregation::{Aggregator, Bounds, KindSettings, Rule};
use edgeguard::pipeline::asc_config::{AgentConfiguration, Priority};
use edgeguard::pipeline::{Pipeline, Settings, StateDir};
use edgeguard_tests::schema::Validators;
use edgeguard_tests::{MemorySink, custom_event, process_create};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const AGENT: &str = "9c647395-b913-4997-a732-a7fe7303b649";

fn settings(asc: Value) -> Settings {
    Settings {
        asc: AgentConfiguration::parse(&asc, &AgentConfiguration::default()).unwrap(),
        ..Settings::default()
    }
}

fn open(dir: &Path, settings: Settings) -> Pipeline {
    Pipeline::open(StateDir::open(dir).unwrap(), settings, AGENT)
        .unwrap()
        .0
}

/// Closes the windows, reports, and sends everything queued to `sink`.
async fn drain(pipeline: Pipeline, sink: &mut MemorySink) -> Pipeline {
    let (_, rx) = mpsc::channel::<Batch>(1);
    pipeline
        .run(rx, sink, true, std::future::pending())
        .await
        .unwrap()
}

/// Windows bounded in distinct events only.
fn entries(entries: usize) -> Bounds {
    Bounds {
        entries,
        bytes: usize::MAX,
    }
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["Name"] == name).collect()
}

fn login(user: &str) -> SecurityEvent {
    SecurityEvent::new(
        "Login",
        Category::Triggered,
        EventType::Security,
        vec![
            json!({"ProcessId": 812, "UserName": user, "Operation": "login", "Executable": "/usr/sbin/sshd", "Result": "Fail"}),
        ],
    )
}

#[tokio::test]
async fn ten_thousand_identical_process_creates_become_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = open(dir.path(), Settings::default());
    for chunk in 0..10 {
        pipeline
            .accept(
                (0..1000)
                    .map(|i| {
                        process_create(10_000 + chunk * 1000 + i, "/usr/bin/python3 worker.py")
                    })
                    .collect(),
            )
            .unwrap();
    }
    // Different command lines stay apart, two hits each.
    for n in 0..3 {
        pipeline
            .accept(vec![
                process_create(50 + n, &format!("/usr/bin/python3 job{n}.py")),
                process_create(60 + n, &format!("/usr/bin/python3 job{n}.py")),
            ])
            .unwrap();
    }
    let mut sink = MemorySink::default();
    drain(pipeline, &mut sink).await;

    let validators = Validators::new();
    sink.messages
        .lock()
        .unwrap()
        .iter()
        .for_each(|m| validators.assert_valid(m));
    let events = sink.events();
    let creates = named(&events, "ProcessCreate");
    assert_eq!(creates.len(), 4, "{creates:#?}");
    let worker = creates
        .iter()
        .find(|e| e["Payload"][0]["CommandLine"] == "/usr/bin/python3 worker.py")
        .unwrap();
    let item = &worker["Payload"][0];
    assert_eq!(item["ExtraDetails"]["HitCount"], "10000");
    assert_eq!(
        item["ProcessId"], 0,
        "process ids vary between hits and are not shown"
    );
    assert_eq!(item["ParentProcessId"], 0);
    assert_eq!(item["Executable"], "/usr/bin/python3.11");
    for key in [
        "StartTimeLocal",
        "StartTimeUtc",
        "EndTimeLocal",
        "EndTimeUtc",
    ] {
        assert!(item["ExtraDetails"][key].is_string(), "{key}");
    }
    assert!(
        item["ExtraDetails"]["StartTimeUtc"].as_str()
            <= item["ExtraDetails"]["EndTimeUtc"].as_str()
    );
    for n in 0..3 {
        let job = creates
            .iter()
            .find(|e| e["Payload"][0]["CommandLine"] == format!("/usr/bin/python3 job{n}.py"))
            .unwrap();
        assert_eq!(job["Payload"][0]["ExtraDetails"]["HitCount"], "2");
    }
}

#[test]
fn windows_close_after_their_interval_and_a_single_hit_comes_back_unchanged() {
    let rule = Rule::builtin("ConnectionCreate").unwrap();
    let kinds = HashMap::from([(
        "ConnectionCreate".to_string(),
        KindSettings {
            rule,
            interval: Duration::from_secs(60),
        },
    )]);
    let mut agg = Aggregator::in_memory(kinds, entries(100));
    let connection = |pid: u32, remote_port: &str, direction: &str| {
        SecurityEvent::new(
            "ConnectionCreate",
            Category::Triggered,
            EventType::Security,
            vec![
                json!({"RemoteAddress": "10.0.0.9", "RemotePort": remote_port, "LocalAddress": "10.0.0.2", "LocalPort": "22",
                "Direction": direction, "Protocol": "TCP", "ProcessId": pid, "Executable": "/usr/sbin/sshd"}),
            ],
        )
    };
    let t0 = chrono::Utc::now();
    // Inbound: the remote (ephemeral) port is not part of the identity; outbound: it is.
    let batch = vec![
        connection(1, "50001", "In"),
        connection(2, "50002", "In"),
        connection(3, "443", "Out"),
        connection(4, "8443", "Out"),
    ];
    let (passed, full) = agg.add(batch).unwrap();
    assert!(passed.is_empty() && full.is_empty());
    assert!(
        agg.due(t0 + chrono::Duration::seconds(30), false)
            .is_empty(),
        "the window is still open"
    );
    let out = agg.due(t0 + chrono::Duration::seconds(61), false);
    assert_eq!(out.len(), 3);
    let inbound = out
        .iter()
        .find(|e| e.payload[0]["Direction"] == "In")
        .unwrap();
    assert_eq!(inbound.payload[0]["ExtraDetails"]["HitCount"], "2");
    assert_eq!(inbound.payload[0]["RemotePort"], "*");
    assert_eq!(inbound.payload[0]["LocalPort"], "22");
    let outbound: Vec<&SecurityEvent> = out
        .iter()
        .filter(|e| e.payload[0]["Direction"] == "Out")
        .collect();
    assert_eq!(outbound.len(), 2);
    for e in outbound {
        assert_eq!(
            e.payload[0]["ProcessId"],
            if e.payload[0]["RemotePort"] == "443" {
                3
            } else {
                4
            },
            "a single hit keeps its process id"
        );
        assert!(e.payload[0].get("ExtraDetails").is_none());
    }
    assert!(agg.is_empty());
}

#[test]
fn a_condition_field_outside_the_identity_still_merges_every_hit() {
    // `Direction` decides whether LocalPort counts but is not listed: once two hits merged,
    // the third must still find their entry (the merged item keeps what the condition reads).
    let rule = Rule::parse(&["Executable", "LocalPort when Direction=In"]).unwrap();
    assert!(
        rule.identity
            .iter()
            .any(|f| f.field == "Direction" && f.when.is_none()),
        "{rule:?}"
    );
    let kinds = HashMap::from([(
        "ConnectionCreate".to_string(),
        KindSettings {
            rule,
            interval: Duration::from_secs(60),
        },
    )]);
    let mut agg = Aggregator::in_memory(kinds, entries(100));
    let hit = |pid: u32| {
        SecurityEvent::new(
            "ConnectionCreate",
            Category::Triggered,
            EventType::Security,
            vec![
                json!({"Executable": "/usr/sbin/sshd", "LocalPort": "22", "Direction": "In", "ProcessId": pid}),
            ],
        )
    };
    let t0 = chrono::Utc::now();
    for pid in 1..=3 {
        let (passed, full) = agg.add(vec![hit(pid)]).unwrap();
        assert!(passed.is_empty() && full.is_empty());
    }
    let out = agg.due(t0 + chrono::Duration::seconds(61), false);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].payload[0]["ExtraDetails"]["HitCount"], "3");
    assert_eq!(out[0].payload[0]["Direction"], "In");
    assert_eq!(out[0].payload[0]["ProcessId"], 0);
}

#[test]
fn the_journal_brings_open_windows_back_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aggregation.journal");
    let kinds = || {
        HashMap::from([(
            "ProcessCreate".to_string(),
            KindSettings {
                rule: Rule::builtin("ProcessCreate").unwrap(),
                interval: Duration::from_secs(3600),
            },
        )])
    };
    let (mut agg, _) = Aggregator::open(&path, kinds(), entries(100)).unwrap();
    agg.add(
        (0..500)
            .map(|i| process_create(i, "sh -c backup"))
            .collect(),
    )
    .unwrap();
    agg.add(
        (0..250)
            .map(|i| process_create(i, "sh -c backup"))
            .collect(),
    )
    .unwrap();
    agg.add(vec![process_create(7, "sh -c other")]).unwrap();
    let before: Vec<SecurityEvent> = {
        let (mut copy, _) = Aggregator::open(&path, kinds(), entries(100)).unwrap();
        copy.due(chrono::Utc::now(), true)
    };
    drop(agg); // no compaction: as if killed
    let (mut agg, orphans) = Aggregator::open(&path, kinds(), entries(100)).unwrap();
    assert!(orphans.is_empty());
    let after = agg.due(chrono::Utc::now(), true);
    agg.compact().unwrap(); // what the pipeline does once the events are queued
    assert_eq!(after.len(), 2);
    let backup = after
        .iter()
        .find(|e| e.payload[0]["CommandLine"] == "sh -c backup")
        .unwrap();
    assert_eq!(backup.payload[0]["ExtraDetails"]["HitCount"], "750");
    let ids = |events: &[SecurityEvent]| {
        events
            .iter()
            .map(|e| e.id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "merged events keep their Ids across a restart"
    );
    // A kind no longer aggregated comes back as events rather than being lost.
    agg.add(vec![process_create(8, "sh -c again")]).unwrap();
    drop(agg);
    let (_, orphans) = Aggregator::open(&path, HashMap::new(), entries(100)).unwrap();
    assert_eq!(orphans.len(), 1);
}

fn process_windows() -> HashMap<String, KindSettings> {
    HashMap::from([(
        "ProcessCreate".to_string(),
        KindSettings {
            rule: Rule::builtin("ProcessCreate").unwrap(),
            interval: Duration::from_secs(3600),
        },
    )])
}

/// Hits of every ProcessCreate, in events and in what a window still counts.
fn hits(events: &[SecurityEvent]) -> u64 {
    events
        .iter()
        .map(|e| {
            e.payload[0]["ExtraDetails"]["HitCount"]
                .as_str()
                .map_or(1, |n| n.parse().unwrap())
        })
        .sum()
}

/// Distinct long events (what a user's processes with long command lines make) close the
/// largest window early once the windows hold their bytes: no hit is lost, and the journal on
/// disk stays within a few times the bound, however long the stream.
#[test]
fn windows_are_bounded_in_bytes_and_so_is_their_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aggregation.journal");
    let bound = 256 << 10;
    let bounds = Bounds {
        entries: 4096,
        bytes: bound,
    };
    let (mut agg, _) = Aggregator::open(&path, process_windows(), bounds).unwrap();
    let long = "x".repeat(10_000);
    let mut out = Vec::new();
    let mut biggest_journal = 0;
    for round in 0..20u32 {
        let batch = (0..50u32)
            .map(|i| process_create(i, &format!("/bin/sh -c {long} {round} {i}")))
            .collect();
        let (passed, closed) = agg.add(batch).unwrap();
        assert!(passed.is_empty());
        if !closed.is_empty() {
            out.extend(closed);
            agg.compact().unwrap(); // what the pipeline does once they are queued
        }
        assert!(agg.bytes() <= bound, "{} bytes open", agg.bytes());
        // The same events again: hits only, which the journal must not accumulate for ever.
        let again = (0..50u32)
            .map(|i| process_create(i, "/bin/sh -c again"))
            .collect();
        agg.add(again).unwrap();
        biggest_journal = biggest_journal.max(std::fs::metadata(&path).unwrap().len());
    }
    assert!(
        out.len() > 100,
        "windows closed early: {} events",
        out.len()
    );
    assert!(agg.take_closed_early() > 0);
    assert!(
        biggest_journal <= (4 * bound + 20_000 * 50) as u64,
        "journal grew to {biggest_journal} bytes"
    );
    out.extend(agg.due(chrono::Utc::now(), true));
    assert_eq!(hits(&out), 20 * 100, "every hit is in an event");
}

/// A journal written under larger bounds (or by a version without them) is replayed within
/// today's: windows past the bound close at once and come back as events, not kept in memory.
#[test]
fn a_journal_larger_than_the_bound_is_replayed_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aggregation.journal");
    let (mut agg, _) = Aggregator::open(&path, process_windows(), entries(4096)).unwrap();
    let long = "y".repeat(10_000);
    agg.add(
        (0..200u32)
            .map(|i| process_create(i, &format!("{long} {i}")))
            .collect(),
    )
    .unwrap();
    drop(agg); // killed
    let bound = 300 << 10;
    let bounds = Bounds {
        entries: 4096,
        bytes: bound,
    };
    let (mut agg, closed) = Aggregator::open(&path, process_windows(), bounds).unwrap();
    assert!(agg.bytes() <= bound, "{} bytes open", agg.bytes());
    assert!(!closed.is_empty());
    let open = agg.due(chrono::Utc::now(), true);
    assert_eq!(hits(&closed) + hits(&open), 200, "nothing accepted is lost");
}

#[tokio::test]
async fn messages_never_exceed_the_limit_and_a_backlog_fills_them() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 16384;
    let mut pipeline = open(
        dir.path(),
        settings(json!({
            "maxMessageSizeInBytes": {"value": limit},
            "maxLocalCacheSizeInBytes": {"value": 8 << 20},
            "aggregationEnabledProcessCreate": {"value": false},
        })),
    );
    let mut rng = fastrand::Rng::with_seed(7);
    for batch in 0..50 {
        let mut events: Vec<SecurityEvent> = (0..100)
            .map(|i| {
                let len = rng.usize(10..900);
                let arg: String = std::iter::repeat_with(|| rng.alphanumeric())
                    .take(len)
                    .collect();
                process_create(batch * 100 + i, &format!("/opt/app/run --token {arg}"))
            })
            .collect();
        events.push(login("root"));
        events.push(custom_event("ContainerFinding", json!({"Container": "web", "Finding": "privileged", "Detail": "x".repeat(rng.usize(0..2000))})));
        pipeline.accept(events).unwrap();
    }
    let mut sink = MemorySink::default();
    let pipeline = drain(pipeline, &mut sink).await;
    assert_eq!(pipeline.queued(), 0);

    let sizes = sink.sizes.lock().unwrap().clone();
    let messages = sink.taken();
    assert!(
        sizes.iter().all(|&s| s <= limit),
        "largest message {} > {limit}",
        sizes.iter().max().unwrap()
    );
    let full = sizes
        .iter()
        .filter(|&&s| s as f64 >= 0.9 * limit as f64)
        .count();
    assert!(
        full as f64 >= 0.95 * sizes.len() as f64,
        "{full} of {} messages within 10% of the limit: {sizes:?}",
        sizes.len()
    );
    // Sizes are bytes on the wire: the serialized message, envelope included.
    for (m, size) in messages.iter().zip(&sizes) {
        assert_eq!(serde_json::to_vec(m).unwrap().len(), *size);
    }
    let validators = Validators::new();
    messages.iter().for_each(|m| validators.assert_valid(m));
    let all: Vec<Value> = messages
        .iter()
        .flat_map(|m| m["Events"].as_array().unwrap().clone())
        .collect();
    assert_eq!(named(&all, "ProcessCreate").len(), 5000);
    assert_eq!(named(&all, "Login").len(), 50);
    assert_eq!(named(&all, "ContainerFinding").len(), 50);
    let own = messages
        .iter()
        .filter(|m| m["MessageSchemaVersion"] == "edgeguard/1.0")
        .count();
    assert!(
        own >= 1
            && messages.iter().all(|m| {
                let family_is_own = m["MessageSchemaVersion"] == "edgeguard/1.0";
                m["Events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| (e["Name"] == "ContainerFinding") == family_is_own)
            }),
        "each family travels in its own messages"
    );
}

/// Runs a pipeline in the background until the returned sender is dropped.
fn spawn(
    pipeline: Pipeline,
    sink: MemorySink,
) -> (
    mpsc::Sender<Batch>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Pipeline>,
) {
    let (tx, rx) = mpsc::channel::<Batch>(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut sink = sink;
        pipeline
            .run(rx, &mut sink, false, async {
                stopped.await.ok();
            })
            .await
            .unwrap()
    });
    (tx, stop, task)
}

async fn send(tx: &mpsc::Sender<Batch>, events: Vec<SecurityEvent>) {
    tx.send(Batch {
        plugin: "test".into(),
        origin: edgeguard::events::Origin::host(),
        at: std::time::Instant::now(),
        events,
        accepted: None,
    })
    .await
    .unwrap();
}

async fn wait(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn queues_go_at_their_frequencies_operational_first_the_other_queue_as_padding() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = open(
        dir.path(),
        settings(json!({
            "highPriorityMessageFrequency": {"value": "PT10S"},
            "lowPriorityMessageFrequency": {"value": "PT1M"},
            "maxMessageSizeInBytes": {"value": 8192},
            "maxLocalCacheSizeInBytes": {"value": 1048576},
            "aggregationEnabledProcessCreate": {"value": false},
        })),
    );
    let ops = AgentConfiguration {
        max_message_size: 5000,
        ..Default::default()
    };
    let configuration_error = ops.check().remove(0).to_event();
    let sink = MemorySink::default();
    let (tx, stop, task) = spawn(pipeline, sink.clone());

    send(
        &tx,
        vec![
            process_create(1, "low one"),
            login("alice"),
            configuration_error,
        ],
    )
    .await;
    wait(9.0).await;
    assert!(
        sink.messages.lock().unwrap().is_empty(),
        "nothing before the high frequency"
    );
    wait(2.0).await;
    let sent = sink.taken();
    assert_eq!(sent.len(), 1);
    let names: Vec<&str> = sent[0]["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ConfigurationError", "Login", "ProcessCreate"],
        "operational first, then high, then low as padding"
    );

    // Low alone waits for the low frequency (a minute after start).
    send(&tx, vec![process_create(2, "low two")]).await;
    wait(30.0).await;
    assert!(
        sink.messages.lock().unwrap().is_empty(),
        "the high queue is empty, the low one not due"
    );
    wait(21.0).await;
    let sent = sink.taken();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["Events"][0]["Payload"][0]["CommandLine"], "low two");

    // A message's worth of low events is sent at once.
    send(
        &tx,
        (0..40)
            .map(|i| process_create(i, &"x".repeat(300)))
            .collect(),
    )
    .await;
    wait(0.1).await;
    let sent = sink.taken();
    assert!(
        !sent.is_empty(),
        "a backlog above maxMessageSizeInBytes goes at once"
    );
    drop(tx);
    stop.send(()).ok();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn events_are_forgotten_only_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let asc = json!({"highPriorityMessageFrequency": {"value": "PT1S"}, "lowPriorityMessageFrequency": {"value": "PT2S"}, "snapshotFrequency": {"value": "PT30S"}});
    let sink = MemorySink::default();
    sink.fail_next.store(3, std::sync::atomic::Ordering::SeqCst);
    let (tx, stop, task) = spawn(open(dir.path(), settings(asc.clone())), sink.clone());
    send(&tx, vec![login("bob"), login("carol")]).await;
    wait(20.0).await;
    let logins: Vec<Value> = sink
        .events()
        .into_iter()
        .filter(|e| e["Name"] == "Login")
        .collect();
    assert_eq!(logins.len(), 2, "delivered after three refusals, once");
    wait(15.0).await;
    let stats: Vec<Value> = sink
        .events()
        .into_iter()
        .filter(|e| e["Name"] == "MessageStatistics")
        .collect();
    drop(tx);
    stop.send(()).ok();
    task.await.unwrap();
    // The statistics are queued Low and padded into later sends; wait for them.
    let (tx, stop, task) = spawn(open(dir.path(), settings(asc)), sink.clone());
    wait(5.0).await;
    let stats: Vec<Value> = stats
        .into_iter()
        .chain(
            sink.events()
                .into_iter()
                .filter(|e| e["Name"] == "MessageStatistics"),
        )
        .collect();
    assert!(!stats.is_empty());
    assert_eq!(stats[0]["Payload"][0]["TotalFailed"], 3);
    assert!(stats[0]["Payload"][0]["MessagesSent"].as_u64().unwrap() >= 1);
    drop(tx);
    stop.send(()).ok();
    task.await.unwrap();

    // Events handed to a sink that never acknowledges stay queued across a restart.
    let dir = tempfile::tempdir().unwrap();
    let down = MemorySink::default();
    down.fail_next
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let (tx, stop, task) = spawn(
        open(
            dir.path(),
            settings(json!({"highPriorityMessageFrequency": {"value": "PT1S"}})),
        ),
        down,
    );
    send(&tx, vec![login("dave")]).await;
    wait(10.0).await;
    drop(tx);
    stop.send(()).ok();
    let pipeline = task.await.unwrap();
    assert_eq!(pipeline.queued(), 1);
    assert!(pipeline.statistics().total_failed >= 2);
    drop(pipeline);
    let mut up = MemorySink::default();
    drain(open(dir.path(), Settings::default()), &mut up).await;
    assert_eq!(named(&up.events(), "Login").len(), 1);
}

#[tokio::test]
async fn a_tiny_cache_under_a_flood_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = open(
        dir.path(),
        settings(
            json!({"maxLocalCacheSizeInBytes": {"value": 8192}, "maxMessageSizeInBytes": {"value": 8192}}),
        ),
    );
    let offered = 10_000u64;
    for batch in 0..100 {
        pipeline
            .accept(
                (0..100)
                    .map(|i| custom_event("Flood", json!({"N": batch * 100 + i})))
                    .collect(),
            )
            .unwrap();
        assert!(
            pipeline.queued() < 100,
            "the cache holds at most its budget"
        );
    }
    assert!(dir.path().join("queues").read_dir().unwrap().count() > 0);
    let mut sink = MemorySink::default();
    drain(pipeline, &mut sink).await;

    let events = sink.events();
    let delivered = named(&events, "Flood").len() as u64;
    let stats = named(&events, "DroppedEventsStatistics");
    assert_eq!(stats.len(), 1);
    let low = stats[0]["Payload"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["Queue"] == "Low")
        .unwrap();
    assert_eq!(low["CollectedEvents"], offered);
    assert_eq!(
        low["DroppedEvents"],
        offered - delivered,
        "every drop counted, exactly"
    );
    assert!(delivered > 0 && delivered < 100);
    // Tail drop: the first events of the flood are the ones kept.
    let kept: Vec<u64> = named(&events, "Flood")
        .iter()
        .map(|e| e["Payload"][0]["N"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, (0..delivered).collect::<Vec<_>>());
}

#[tokio::test]
async fn off_events_are_never_collected() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = open(
        dir.path(),
        settings(
            json!({"eventPriorityLogin": {"value": "Off"}, "eventPriorityProcessCreate": {"value": "off"}}),
        ),
    );
    pipeline
        .accept(vec![
            login("eve"),
            process_create(1, "true"),
            custom_event("Mine", json!({"A": 1})),
        ])
        .unwrap();
    let mut sink = MemorySink::default();
    drain(pipeline, &mut sink).await;
    let events = sink.events();
    assert!(named(&events, "Login").is_empty() && named(&events, "ProcessCreate").is_empty());
    assert_eq!(named(&events, "Mine").len(), 1);
    let stats = named(&events, "DroppedEventsStatistics");
    let collected: u64 = stats[0]["Payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["CollectedEvents"].as_u64().unwrap())
        .sum();
    assert_eq!(collected, 1, "Off events are not even counted as collected");
}

#[tokio::test]
async fn a_plugin_whose_events_are_all_off_is_not_called() {
    use edgeguard::capabilities::{Capability, HostContext};
    use edgeguard::config::ScheduleConfig;
    use edgeguard::sandbox::LoadedPlugin;
    use edgeguard::scheduler::{PluginSpec, Scheduler};
    let (rt, _cache) = edgeguard_tests::runtime();
    let file = edgeguard_tests::plugin("edgeguard-plugin-process");
    let loaded = LoadedPlugin::load_file(
        &rt,
        "process",
        &file,
        &[Capability::Processes, Capability::Log],
        &[],
    )
    .await
    .unwrap();
    let off = settings(
        json!({"eventPriorityProcessCreate": {"value": "Off"}, "eventPriorityProcessTerminate": {"value": "Off"}}),
    );
    let routing = tokio::sync::watch::Sender::new(Arc::new(off.routing()));
    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    let schedule = ScheduleConfig {
        first_collection_jitter: edgeguard::units::Span(Duration::ZERO),
        ..ScheduleConfig::default()
    };
    let scheduler = Scheduler::new(
        HostContext::new(Path::new("/")),
        schedule,
        tx,
        routing.subscribe(),
    );
    let spec = PluginSpec {
        loaded: Arc::new(loaded),
        group: edgeguard::config::Group::High,
        interval: Some(Duration::from_millis(50)),
        limits: edgeguard_tests::test_limits(),
        config_json: "{}".into(),
        state_file: None,
        attests: Vec::new(),
    };
    let running = scheduler.spawn(spec, false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    {
        let status = running.status.lock().unwrap();
        assert_eq!(status.collections, 0);
        assert!(status.skipped_all_off >= 3, "{status:?}");
    }
    assert!(rx.try_recv().is_err(), "no batch while everything is Off");
    // Turning one of its events back on resumes it, without a restart.
    routing.send_replace(Arc::new(Settings::default().routing()));
    let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!batch.events.is_empty());
    running.task.abort();
}

#[tokio::test]
async fn the_file_sink_rotates_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.jsonl");
    let mut sink = FileSink::open(&path, 4096, 2).await.unwrap();
    for n in 0..20 {
        let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(1000)).into_bytes();
        let message = Message {
            id: uuid::Uuid::new_v4(),
            family: edgeguard::events::Family::Asc,
            priority: Priority::Low,
            body,
            events: 1,
        };
        sink.send(message).await.unwrap().await.unwrap();
    }
    let mut lines = Vec::new();
    for name in ["messages.jsonl.2", "messages.jsonl.1", "messages.jsonl"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.len() <= 4096, "{name} is {} bytes", text.len());
        lines.extend(text.lines().map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        }));
    }
    assert!(!dir.path().join("messages.jsonl.3").exists());
    // The newest messages are kept, in order, whole.
    assert_eq!(lines, ((20 - lines.len() as u64)..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_projects_own_event_kinds_aggregate_by_their_configured_identity() {
    let dir = tempfile::tempdir().unwrap();
    let config = edgeguard::config::Config::parse(
        "[events.ContainerFinding]\npriority = \"High\"\naggregate = true\naggregation_interval = \"1h\"\naggregate_by = [\"Container\", \"Finding\"]\n",
        "test",
    )
    .unwrap();
    let mut pipeline = open(dir.path(), config.pipeline_settings().unwrap());
    let finding = |container: &str, seen: u32| {
        custom_event(
            "ContainerFinding",
            json!({"Container": container, "Finding": "privileged", "Seen": seen}),
        )
    };
    pipeline
        .accept(vec![
            finding("web", 1),
            finding("web", 2),
            finding("web", 3),
            finding("db", 4),
        ])
        .unwrap();
    let mut sink = MemorySink::default();
    drain(pipeline, &mut sink).await;
    let validators = Validators::new();
    sink.messages
        .lock()
        .unwrap()
        .iter()
        .for_each(|m| validators.assert_valid(m));
    let events = sink.events();
    let findings = named(&events, "ContainerFinding");
    assert_eq!(findings.len(), 2);
    let web = findings
        .iter()
        .find(|e| e["Payload"][0]["Container"] == "web")
        .unwrap();
    assert_eq!(web["Payload"][0]["ExtraDetails"]["HitCount"], "3");
    assert_eq!(
        web["Payload"][0]["Seen"], 0,
        "a field outside the identity is neutralised"
    );
    let db = findings
        .iter()
        .find(|e| e["Payload"][0]["Container"] == "db")
        .unwrap();
    assert_eq!(
        db["Payload"][0]["Seen"], 4,
        "a single hit comes back unchanged"
    );
}
