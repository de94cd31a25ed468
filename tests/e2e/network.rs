//! The network collector against the real kernel: listeners and connections this test opens
//! on loopback, IPv4 and IPv6, TCP and UDP, are reported with this process as their owner and
//! the right direction, once; the sock_diag source and the /proc/net fallback agree; TCP
//! connections opened and closed between two collections are caught from the kernel's destroy
//! notifications, which polling misses.

use edgeguard::capabilities::{Capability, HostContext, SocketSource, read_sockets};
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
        "edgeguard:collector/sockets@0.1.4",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_opened_and_closed_between_collections_are_caught_from_the_kernel() {
    let _turn = one_at_a_time().await;
    let (rt, _cache) = runtime();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().port();
    let host = HostContext::new(Path::new("/"));
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
