//! The network collector against the real kernel: listeners and connections this test opens
//! on loopback, IPv4 and IPv6, TCP and UDP, are reported with this process as their owner and
//! the right direction, once; the sock_diag source and the /proc/net fallback agree; TCP
//! connections opened and closed between two collections are caught from the kernel's destroy
//! notifications, which polling misses, and given their process from the kernel's audit
//! records of `connect` and `accept`, which also tell a UDP exchange no table showed.

use edgeguard::capabilities::{
    AuditMode, Capability, HostContext, HostOptions, SocketSource, read_sockets,
};
use edgeguard::config::Limits;
use edgeguard::sandbox::{LoadedPlugin, PluginInstance};
use edgeguard::wit::edgeguard::collector::sockets::{SocketState, Source};
use edgeguard::wit::edgeguard::collector::types::Protocol;
use edgeguard_tests::{
    assert_refused, collect_items as collect, find_items as find, plugin, run_once_under, runtime,
    short_connections,
};
use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;

async fn network_collector(rt: &edgeguard::runtime::Runtime, host_root: &Path) -> PluginInstance {
    network_collector_with(rt, HostContext::new(host_root), "{}").await
}

async fn network_collector_with(
    rt: &edgeguard::runtime::Runtime,
    host: std::sync::Arc<HostContext>,
    config: &str,
) -> PluginInstance {
    let grants = [Capability::Sockets, Capability::Log];
    let loaded = LoadedPlugin::load_file(
        rt,
        "network",
        &plugin("edgeguard-plugin-network"),
        &grants,
        &[],
    )
    .await
    .unwrap();
    loaded
        .instantiate(host, &Limits::default(), config)
        .await
        .unwrap()
}

fn port(v: &Value, key: &str) -> u16 {
    v[key].as_str().unwrap().parse().unwrap()
}

/// The listening set is the host's: the tests of this file take turns, so one test's listeners
/// do not change the set another one watches.
/// An async lock: a turn is held across the collections' awaits.
static HOST_SOCKETS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    HOST_SOCKETS.lock().await
}

/// The same for a test outside the runtime.
fn one_at_a_time_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    HOST_SOCKETS.blocking_lock()
}

struct Loopback {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

fn listeners() -> Loopback {
    Loopback {
        tcp: vec![
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("[::1]:0").unwrap(),
        ],
        udp: vec![
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("[::1]:0").unwrap(),
        ],
    }
}

async fn listens_and_connects(host_root: &Path) {
    let _turn = one_at_a_time().await;
    let (rt, _cache) = runtime();
    let me = std::process::id();
    let lo = listeners();
    let mut collector = network_collector(&rt, host_root).await;

    let first = collect(&mut collector).await;
    for (listener, address) in lo.tcp.iter().zip(["127.0.0.1", "::1"]) {
        let p = listener.local_addr().unwrap().port();
        let found = find(&first, "ListeningPorts", |i| {
            i["Protocol"] == "TCP" && port(i, "LocalPort") == p
        });
        assert_eq!(found.len(), 1, "TCP {address}:{p} listening: {first:#?}");
        assert_eq!(found[0]["LocalAddress"], address);
        assert_eq!(found[0]["ExtraDetails"]["Pid"], me.to_string());
        assert!(
            found[0]["ExtraDetails"]["Executable"]
                .as_str()
                .unwrap()
                .contains("network-"),
            "{:?}",
            found[0]
        );
    }
    for socket in &lo.udp {
        let p = socket.local_addr().unwrap().port();
        assert_eq!(
            find(&first, "ListeningPorts", |i| i["Protocol"] == "UDP"
                && port(i, "LocalPort") == p)
            .len(),
            1,
            "UDP {p} bound"
        );
    }

    // New connections: TCP over IPv4 and IPv6, and a connected UDP socket.
    let mut streams = Vec::new();
    for listener in &lo.tcp {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        streams.push((client, server));
    }
    let udp_client = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_client.connect(lo.udp[0].local_addr().unwrap()).unwrap();

    let second = collect(&mut collector).await;
    assert!(
        find(&second, "ListeningPorts", |_| true).is_empty(),
        "the listening set did not change"
    );
    for (client, server) in &streams {
        let (c, s) = (client.local_addr().unwrap(), server.local_addr().unwrap());
        let out = find(&second, "ConnectionCreate", |i| {
            i["Protocol"] == "TCP" && port(i, "LocalPort") == c.port()
        });
        assert_eq!(out.len(), 1, "the client side of {c} -> {s}: {second:#?}");
        assert_eq!(out[0]["Direction"], "Out");
        assert_eq!(port(out[0], "RemotePort"), s.port());
        assert_eq!(out[0]["RemoteAddress"], s.ip().to_string());
        assert_eq!(out[0]["ProcessId"], me);
        let inbound = find(&second, "ConnectionCreate", |i| {
            i["Protocol"] == "TCP"
                && port(i, "LocalPort") == s.port()
                && port(i, "RemotePort") == c.port()
        });
        assert_eq!(inbound.len(), 1, "the accepted side of {c} -> {s}");
        assert_eq!(inbound[0]["Direction"], "In");
        assert_eq!(inbound[0]["ProcessId"], me);
        assert!(
            inbound[0]["Executable"]
                .as_str()
                .unwrap()
                .contains("network-")
        );
        assert!(
            inbound[0]
                .get("ExtraDetails")
                .is_none_or(|d| d.get("Existing").is_none()),
            "a new connection is not marked existing"
        );
    }
    let udp = find(&second, "ConnectionCreate", |i| {
        i["Protocol"] == "UDP" && port(i, "LocalPort") == udp_client.local_addr().unwrap().port()
    });
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0]["Direction"], "Out");
    assert_eq!(
        port(udp[0], "RemotePort"),
        lo.udp[0].local_addr().unwrap().port()
    );

    // Seen once: the next collection reports none of them again, even after they close.
    let ours: Vec<u16> = streams
        .iter()
        .flat_map(|(c, s)| {
            [
                c.local_addr().unwrap().port(),
                s.local_addr().unwrap().port(),
            ]
        })
        .collect();
    for (mut client, server) in streams {
        drop(server);
        let _ = client.read(&mut [0u8; 1]);
    }
    let third = collect(&mut collector).await;
    assert!(
        find(&third, "ConnectionCreate", |i| ours
            .contains(&port(i, "LocalPort")))
        .is_empty(),
        "{third:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_listeners_and_new_connections_through_sock_diag() {
    listens_and_connects(Path::new("/")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_the_same_through_the_proc_net_fallback() {
    // A host root other than `/` reads `<root>/proc/1/net`: here a root whose proc is ours.
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc", root.path().join("proc")).unwrap();
    listens_and_connects(root.path()).await;
}

#[test]
fn sock_diag_and_proc_net_agree() {
    let _turn = one_at_a_time_blocking();
    let lo = listeners();
    let host = HostContext::new(Path::new("/"));
    let diag = read_sockets(&host, SocketSource::Auto).unwrap();
    let proc = read_sockets(&host, SocketSource::Procfs).unwrap();
    assert_eq!(
        diag.source,
        Source::SockDiag,
        "sock_diag answers on this kernel"
    );
    assert_eq!(proc.source, Source::Procfs);
    for table in [&diag, &proc] {
        for (protocol, port) in lo
            .tcp
            .iter()
            .map(|l| (Protocol::Tcp, l.local_addr().unwrap().port()))
            .chain(
                lo.udp
                    .iter()
                    .map(|u| (Protocol::Udp, u.local_addr().unwrap().port())),
            )
        {
            // Unconnected: a connection of an earlier test may linger in time-wait on the port.
            let s = table
                .sockets
                .iter()
                .find(|s| s.protocol == protocol && s.local_port == port && s.remote_port == 0)
                .unwrap_or_else(|| panic!("{protocol:?} {port} in {:?}", table.source));
            assert_eq!(s.state, SocketState::Listen);
            assert_eq!(s.owner.as_ref().map(|o| o.pid), Some(std::process::id()));
            assert_ne!(s.inode, 0);
        }
    }
}

#[tokio::test]
async fn refused_without_the_sockets_grant() {
    assert_refused(
        "edgeguard-plugin-network",
        &[Capability::Log],
        "edgeguard:collector/sockets@0.1.5",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_opened_and_closed_between_collections_are_caught_from_the_kernel() {
    let _turn = one_at_a_time().await;
    let (rt, _cache) = runtime();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().port();
    // The destroy notifications alone: no process from audit records.
    let host = host_with_audit(AuditMode::Off);
    let mut collector =
        network_collector_with(&rt, host.clone(), r#"{"report_existing": false}"#).await;
    collect(&mut collector).await; // starts following
    let clients = short_connections(&listener, 50);
    // The kernel announces a freed socket from a work queue: a moment later.
    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(collect(&mut collector).await);
        if clients
            .iter()
            .all(|c| !find(&events, "ConnectionCreate", |i| port(i, "LocalPort") == *c).is_empty())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for &client in &clients {
        let out = find(&events, "ConnectionCreate", |i| {
            port(i, "LocalPort") == client && port(i, "RemotePort") == server
        });
        assert_eq!(
            out.len(),
            1,
            "the client side of connection from {client}: {:?}",
            host.feeds("network")
        );
        assert_eq!(
            (out[0]["Direction"].as_str(), out[0]["Protocol"].as_str()),
            (Some("Out"), Some("TCP"))
        );
        assert_eq!(out[0]["ExtraDetails"]["Closed"], "true");
        assert_eq!(out[0]["ExtraDetails"]["OwnerKnown"], "false");
        let inbound = find(&events, "ConnectionCreate", |i| {
            port(i, "LocalPort") == server && port(i, "RemotePort") == client
        });
        assert_eq!(
            inbound.len(),
            1,
            "the accepted side of connection from {client}"
        );
        assert_eq!(inbound[0]["Direction"], "In");
    }
    let feeds = host.feeds("network");
    assert_eq!(feeds.len(), 1);
    assert_eq!(
        (
            feeds[0].source,
            feeds[0].lost,
            feeds[0].unavailable.as_deref()
        ),
        ("sock_diag destroy notifications", 0, None)
    );
    assert!(feeds[0].delivered >= 100, "{feeds:?}");

    // Polling sees only what is open at a collection.
    let host = HostContext::new(Path::new("/"));
    let mut polling = network_collector_with(
        &rt,
        host.clone(),
        r#"{"report_existing": false, "events": false}"#,
    )
    .await;
    collect(&mut polling).await;
    let clients = short_connections(&listener, 20);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let events = collect(&mut polling).await;
    assert!(
        clients
            .iter()
            .all(|c| find(&events, "ConnectionCreate", |i| port(i, "LocalPort") == *c).is_empty()),
        "{events:#?}"
    );
    assert_eq!(host.feeds("network")[0].source, "polling");
}

fn host_with_audit(audit: AuditMode) -> std::sync::Arc<HostContext> {
    let root = Path::new("/");
    HostContext::with_options(
        root,
        HostOptions {
            audit,
            ..HostOptions::new(root)
        },
    )
}

/// A child (perl-base, in every Debian) that listens on loopback, connects to itself and
/// accepts `n` times (a byte each way, both sides closed), then sends one UDP datagram to
/// `udp_port` over a connected socket and exits: its pid, the server's port, the clients'.
/// A child, because the kernel audits no call of the registered audit daemon's process, which
/// this test process may be.
fn short_lived_connections(n: usize, udp_port: u16) -> (u32, u16, Vec<u16>) {
    use std::io::BufRead;
    let script = format!(
        "use IO::Socket::INET; $| = 1;
         my $l = IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1', Proto => 'tcp') or die;
         print $l->sockport, \"\\n\";
         for (1..{n}) {{
           my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $l->sockport) or die;
           my $s = $l->accept; syswrite($c, 'x'); sysread($s, my $b, 1);
           print $c->sockport, \"\\n\"; close $c; close $s;
         }}
         my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => {udp_port}, Proto => 'udp') or die;
         $u->send('q'); close $u;"
    );
    let child = std::process::Command::new("/usr/bin/perl")
        .args(["-e", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("perl runs");
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the connecting child failed");
    let ports: Vec<u16> = output
        .stdout
        .lines()
        .map(|l| l.unwrap().parse().unwrap())
        .collect();
    (pid, ports[0], ports[1..].to_vec())
}

/// With the audit records of `connect` and `accept` (edgeguard's own rules), connections
/// opened and closed between two collections have their process, and a UDP exchange over
/// before any snapshot is told from its record alone.
#[tokio::test(flavor = "multi_thread")]
async fn audit_records_give_short_connections_their_process_and_tell_udp_exchanges() {
    let _turn = one_at_a_time().await;
    let (rt, _cache) = runtime();
    let host = host_with_audit(AuditMode::Manage);
    let mut collector =
        network_collector_with(&rt, host.clone(), r#"{"report_existing": false}"#).await;
    collect(&mut collector).await; // starts following: the rules go in
    // The UDP datagram's destination: a socket of ours, so nothing answers unreachable.
    let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp_peer.local_addr().unwrap().port();
    let (child, server, clients) = short_lived_connections(30, udp_port);
    let (mut events, mut whole) = (Vec::new(), Vec::new());
    let told = |events: &[(String, Value)]| {
        clients.iter().all(|c| {
            !find(events, "ConnectionCreate", |i| {
                i.get("LocalPort").is_some() && port(i, "LocalPort") == *c
            })
            .is_empty()
        }) && !find(events, "ConnectionCreate", |i| {
            i["Protocol"] == "UDP" && port(i, "RemotePort") == udp_port
        })
        .is_empty()
    };
    for _ in 0..100 {
        let batch = collector
            .collect()
            .await
            .expect("no fault")
            .expect("no plugin error");
        for e in batch
            .into_iter()
            .map(|e| edgeguard::events::from_plugin(e).unwrap())
        {
            events.extend(e.payload.iter().map(|item| (e.name.clone(), item.clone())));
            whole.push(e);
        }
        if told(&events) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = host.feeds("network");
    for &client in &clients {
        for (local, remote, direction) in [(client, server, "Out"), (server, client, "In")] {
            let out = find(&events, "ConnectionCreate", |i| {
                i.get("LocalPort").is_some()
                    && port(i, "LocalPort") == local
                    && port(i, "RemotePort") == remote
            });
            assert_eq!(out.len(), 1, "{direction} {local} → {remote}: {status:?}");
            let c = &out[0];
            assert_eq!(
                (c["Direction"].as_str(), c["Protocol"].as_str()),
                (Some(direction), Some("TCP"))
            );
            // Over before the next collection: told by the kernel as it freed the socket, or in
            // the snapshot in time-wait, no descriptor holding it; either way without a
            // process but for its audit record.
            assert_eq!(c["ExtraDetails"]["ProcessFrom"], "audit record", "{c}");
            assert!(c["ExtraDetails"].get("OwnerKnown").is_none(), "{c}");
            assert_eq!(c["ProcessId"], child, "{c}");
            assert!(c["Executable"].as_str().unwrap().contains("perl"), "{c}");
            assert!(
                c["CommandLine"]
                    .as_str()
                    .unwrap()
                    .starts_with("/usr/bin/perl -e"),
                "{c}"
            );
            assert_eq!(c["UserId"], "0", "{c}");
        }
    }
    let udp = find(&events, "ConnectionCreate", |i| {
        i["Protocol"] == "UDP" && port(i, "RemotePort") == udp_port
    });
    assert_eq!(udp.len(), 1, "the UDP exchange, once: {status:?}");
    let u = &udp[0];
    assert_eq!(
        (u["Direction"].as_str(), u["ProcessId"].as_u64()),
        (Some("Out"), Some(u64::from(child)))
    );
    assert_eq!(u["RemoteAddress"], "127.0.0.1");
    assert_eq!(u["ExtraDetails"]["AuditOnly"], "true");
    assert!(
        u.get("LocalAddress").is_none() && u.get("LocalPort").is_none(),
        "no local end: {u}"
    );
    edgeguard_tests::schema::assert_valid(
        &edgeguard_tests::schema::asc_validator(),
        &edgeguard_tests::message_of(&whole),
    );
    let note = status[0]
        .notes
        .iter()
        .find(|(k, _)| *k == "opened")
        .map(|(_, v)| v.clone());
    assert!(
        note.as_deref()
            .is_some_and(|n| n.contains("rules for connect and accept added by edgeguard")),
        "{status:?}"
    );
    assert!(
        status[0]
            .details
            .iter()
            .any(|(k, v)| *k == "openedDelivered" && *v >= 61),
        "{status:?}"
    );
    host.close();
}

#[test]
fn outside_the_hosts_network_namespace_closed_connections_are_not_followed() {
    // The destroy notifications are per network namespace: in another one they would be
    // someone else's connections. The plugin says so and polls.
    let (_dir, log) = run_once_under(&["unshare", "--net"], "network", r#""sockets", "log""#);
    assert!(log.contains("not in the host's network namespace"), "{log}");
    assert!(
        log.contains("only connections alive at a collection are seen"),
        "{log}"
    );
}
