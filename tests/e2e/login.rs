//! The login collector against wtmp and btmp records written with the C library's own
//! `updwtmpx`, and sshd lines in an auth log: successes, failures and logouts, once each, across
//! restarts, rotation and truncation.

use edgeguard::capabilities::{Capability, HostContext};
use edgeguard::config::Limits;
use edgeguard::events::from_plugin;
use edgeguard::runtime::Runtime;
use edgeguard::sandbox::{LoadedPlugin, PluginInstance};
use edgeguard_tests::utmp::record;
use edgeguard_tests::{
    assert_refused, builtin_plugins, events_named, plugin, run_once, runtime, write_config,
};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

async fn login_collector(rt: &Runtime, config: &Value) -> PluginInstance {
    let loaded = LoadedPlugin::load_file(
        rt,
        "login",
        &plugin("edgeguard-plugin-login"),
        &[Capability::Logins, Capability::Log],
        &[],
    )
    .await
    .unwrap();
    loaded
        .instantiate(
            HostContext::new(Path::new("/")),
            &Limits::default(),
            &config.to_string(),
        )
        .await
        .unwrap()
}

/// One collection's Login payloads, checked against the official schema.
async fn collect(instance: &mut PluginInstance) -> Vec<Value> {
    let events: Vec<_> = instance
        .collect()
        .await
        .expect("no fault")
        .expect("no plugin error")
        .into_iter()
        .map(|e| from_plugin(e).unwrap())
        .collect();
    if !events.is_empty() {
        edgeguard_tests::schema::assert_valid(
            &edgeguard_tests::schema::asc_validator(),
            &edgeguard_tests::message_of(&events),
        );
    }
    events
        .into_iter()
        .inspect(|e| assert_eq!(e.name, "Login"))
        .map(|e| e.payload[0].clone())
        .collect()
}

/// A new instance that takes over the old one's saved state, as after a restart.
async fn restarted(rt: &Runtime, config: &Value, old: &mut PluginInstance) -> PluginInstance {
    let state = old
        .save_state()
        .await
        .unwrap()
        .expect("the login collector saves its cursors");
    let mut fresh = login_collector(rt, config).await;
    fresh.restore_state(&state).await.unwrap().unwrap();
    fresh
}

fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["Operation"].as_str().unwrap().into(),
                e["Result"].as_str().unwrap().into(),
                e["UserName"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_logouts_and_failures_once_each_across_restart_rotation_and_truncation() {
    let (rt, _cache) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (wtmp, btmp) = (dir.path().join("wtmp"), dir.path().join("btmp"));
    record(&wtmp, libc::BOOT_TIME, 0, "~", "reboot", "6.1.0", None);
    let config = serde_json::json!({"wtmp": wtmp, "btmp": btmp, "auth_log": ""});
    let mut collector = login_collector(&rt, &config).await;
    assert!(
        collect(&mut collector).await.is_empty(),
        "history before the first collection is not reported"
    );

    let me = std::process::id() as i32;
    record(
        &wtmp,
        libc::USER_PROCESS,
        me,
        "pts/7",
        "alice",
        "203.0.113.5",
        Some([203, 0, 113, 5]),
    );
    // btmp did not exist at the first collection: all of it is new.
    record(
        &btmp,
        libc::LOGIN_PROCESS,
        4242,
        "ssh:notty",
        "mallory",
        "198.51.100.7",
        None,
    );
    let events = collect(&mut collector).await;
    assert_eq!(
        summary(&events),
        [
            ("login".into(), "Success".into(), "alice".into()),
            ("login".into(), "Fail".into(), "mallory".into())
        ]
    );
    let alice = &events[0];
    assert_eq!(alice["ProcessId"], me);
    assert_eq!(alice["RemoteAddress"], "203.0.113.5");
    assert!(
        alice["Executable"].as_str().unwrap().contains("login-"),
        "the pid still runs: its executable {alice}"
    );
    assert_eq!(alice["ExtraDetails"]["Line"], "pts/7");
    assert_eq!(
        events[1]["RemoteAddress"], "198.51.100.7",
        "the host name when the record has no binary address"
    );
    assert_eq!(events[1]["ExtraDetails"]["Source"], "btmp");

    // A logout names the terminal only; the session knows the user, even across a restart.
    let mut collector = restarted(&rt, &config, &mut collector).await;
    assert!(
        collect(&mut collector).await.is_empty(),
        "nothing is reported twice after a restart"
    );
    record(&wtmp, libc::DEAD_PROCESS, me, "pts/7", "", "", None);
    assert_eq!(
        summary(&collect(&mut collector).await),
        [("logout".into(), "Success".into(), "alice".into())]
    );

    // Rotation: a record lands in the old file, which is renamed, and the new file gets one.
    record(&wtmp, libc::USER_PROCESS, 5001, "tty1", "bob", "", None);
    std::fs::rename(&wtmp, dir.path().join("wtmp.1")).unwrap();
    record(&wtmp, libc::USER_PROCESS, 5002, "tty2", "carol", "", None);
    let users: Vec<String> = summary(&collect(&mut collector).await)
        .into_iter()
        .map(|s| s.2)
        .collect();
    assert_eq!(
        users,
        ["bob", "carol"],
        "the old file finished, then the new one"
    );
    assert!(collect(&mut collector).await.is_empty());

    // Truncation: btmp emptied and written again.
    std::fs::File::create(&btmp).unwrap();
    record(
        &btmp,
        libc::LOGIN_PROCESS,
        4243,
        "ssh:notty",
        "root",
        "192.0.2.1",
        None,
    );
    assert_eq!(
        summary(&collect(&mut collector).await),
        [("login".into(), "Fail".into(), "root".into())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sshd_failures_from_the_auth_log() {
    let (rt, _cache) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.log");
    std::fs::write(
        &auth,
        "Nov 22 10:00:00 gw sshd[100]: Server listening on 0.0.0.0 port 22.\n",
    )
    .unwrap();
    let config = serde_json::json!({"wtmp": "", "btmp": "", "auth_log": auth});
    let mut collector = login_collector(&rt, &config).await;
    assert!(collect(&mut collector).await.is_empty());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&auth)
        .unwrap();
    writeln!(f, "Nov 22 10:01:02 gw sshd[812]: Failed password for invalid user admin from 203.0.113.9 port 51234 ssh2").unwrap();
    writeln!(
        f,
        "Nov 22 10:01:03 gw sshd[813]: Failed publickey for root from 2001:db8::7 port 40022 ssh2"
    )
    .unwrap();
    writeln!(
        f,
        "Nov 22 10:01:04 gw sshd[814]: Accepted publickey for edge from 192.0.2.4 port 40100 ssh2"
    )
    .unwrap();
    write!(
        f,
        "Nov 22 10:01:05 gw sshd[815]: Failed password for edge from 192.0.2."
    )
    .unwrap();
    f.flush().unwrap();
    let events = collect(&mut collector).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        (
            events[0]["UserName"].as_str(),
            events[0]["RemoteAddress"].as_str(),
            events[0]["RemotePort"].as_str()
        ),
        (Some("admin"), Some("203.0.113.9"), Some("51234"))
    );
    assert_eq!(events[0]["ProcessId"], 812);
    assert_eq!(events[0]["Result"], "Fail");
    assert_eq!(events[0]["ExtraDetails"]["InvalidUser"], "true");
    assert_eq!(events[1]["RemoteAddress"], "2001:db8::7");
    assert_eq!(events[1]["ExtraDetails"]["Method"], "publickey");
    // The half-written line is read once it is whole.
    writeln!(f, "5 port 40200 ssh2").unwrap();
    let events = collect(&mut collector).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["RemoteAddress"], "192.0.2.5");
}

#[test]
fn the_cursor_survives_a_restart_of_edgeguard() {
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    record(&wtmp, libc::USER_PROCESS, 1, "tty1", "dave", "", None);
    let plugins = builtin_plugins(dir.path(), &["login"]);
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        &format!(
            "[[plugin]]\nname = \"login\"\nfile = \"login.wasm\"\ngrants = [\"logins\", \"log\"]\n\
             [plugin.config]\nwtmp = {wtmp:?}\nbtmp = \"\"\nauth_log = \"\"\nfrom_start = true\n"
        ),
    );
    let run = || events_named(&run_once(&config), "Login").len();
    assert_eq!(run(), 1, "the first run reports the record");
    assert_eq!(run(), 0, "the second run resumes after it");
    record(&wtmp, libc::USER_PROCESS, 2, "tty2", "erin", "", None);
    assert_eq!(run(), 1, "and reports only what is new");
}

#[tokio::test]
async fn refused_without_the_logins_grant() {
    assert_refused(
        "edgeguard-plugin-login",
        &[Capability::Log],
        "edgeguard:collector/logins@0.1.5",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_history_comes_in_collections_of_the_host_cap_without_loss_or_repeat() {
    let (rt, _cache) = runtime();
    let dir = tempfile::tempdir().unwrap();
    let wtmp = dir.path().join("wtmp");
    for i in 0..12_000 {
        record(
            &wtmp,
            libc::USER_PROCESS,
            10_000 + i,
            &format!("pts/{i}"),
            "fleet",
            "",
            None,
        );
    }
    let config = serde_json::json!({"wtmp": wtmp, "btmp": "", "auth_log": "", "from_start": true});
    let mut collector = login_collector(&rt, &config).await;
    let cap = Limits::default().max_events_per_call as usize;
    let mut pids = Vec::new();
    let first = collect(&mut collector).await;
    assert_eq!(first.len(), cap, "at most the host's cap per collection");
    pids.extend(first.iter().map(|e| e["ProcessId"].as_u64().unwrap()));
    // A restart after the first collection resumes exactly where the delivered events end.
    let mut collector = restarted(&rt, &config, &mut collector).await;
    loop {
        let events = collect(&mut collector).await;
        let left = 12_000 - pids.len();
        assert_eq!(events.len(), left.min(cap), "{left} records left");
        if events.is_empty() {
            break;
        }
        pids.extend(events.iter().map(|e| e["ProcessId"].as_u64().unwrap()));
    }
    assert_eq!(pids, (10_000..22_000).collect::<Vec<u64>>());
}
