//! Network collector: the host's socket table into ListeningPorts (the listening sockets, sent
//! whenever the set changes) and ConnectionCreate (each TCP connection or connected UDP socket
//! the first time a collection sees it; In when its local port is a listening one, else Out).
//!
//! A connection is identified by protocol and both endpoints, so one that moved from
//! established to time-wait between two collections is not reported twice.
//!
//! A TCP connection opened and closed between two collections is not in any table: where the
//! host follows the kernel's socket destroy notifications, those that no snapshot saw are
//! reported too, without an owner (the process had let go of the socket), `Closed` in their
//! details.

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{Availability, config_bool, config_keys};
use edgeguard_sdk::{ConnectionCreate, Direction, ListeningPort, Protocol};
use sockets::{Socket, SocketState, Source};
use std::collections::{BTreeSet, HashSet};

type ConnKey = (bool, String, u16, String, u16);
type ListenKey = (bool, String, u16, u32);

struct NetworkCollector {
    /// Connections seen at the previous collection; None before the first one.
    known: Option<HashSet<ConnKey>>,
    /// The listening set last reported.
    listening: Option<BTreeSet<ListenKey>>,
    report_existing: bool,
    /// Follow the connections the kernel closes (configuration `events`).
    follow: bool,
    /// Whether the host tells closed connections.
    closed_feed: Availability,
    backlog: Vec<Event>,
    source: Option<Source>,
}

impl Collector for NetworkCollector {
    fn describe() -> PluginInfo {
        PluginInfo::new("network", env!("CARGO_PKG_VERSION"))
            .emits(["ListeningPorts", "ConnectionCreate"])
            .needs(["sockets", "log"])
            .group(PriorityGroup::Medium)
            .about("listening ports and new TCP/UDP connections from the host's socket table")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        config_keys(&config, &["report_existing", "events"])?;
        Ok(NetworkCollector {
            known: None,
            listening: None,
            report_existing: config_bool(&config, "report_existing", true)?,
            follow: config_bool(&config, "events", true)?,
            closed_feed: Availability::default(),
            backlog: Vec::new(),
            source: None,
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        let table = sockets::snapshot()?;
        if self.source != Some(table.source) {
            info!(
                "reading sockets from {}",
                match table.source {
                    Source::SockDiag => "the kernel's sock_diag interface",
                    Source::Procfs => "/proc/net",
                }
            );
            self.source = Some(table.source);
        }
        let listening: Vec<&Socket> = table
            .sockets
            .iter()
            .filter(|s| s.state == SocketState::Listen)
            .collect();
        let listen_set: BTreeSet<ListenKey> = listening
            .iter()
            .map(|s| {
                (
                    is_tcp(s),
                    s.local_address.clone(),
                    s.local_port,
                    s.owner.as_ref().map_or(0, |o| o.pid),
                )
            })
            .collect();
        if self.listening.as_ref() != Some(&listen_set) {
            let mut ports: Vec<&&Socket> = listening.iter().collect();
            ports.sort_by(|a, b| {
                (is_tcp(a), a.local_port, &a.local_address).cmp(&(
                    is_tcp(b),
                    b.local_port,
                    &b.local_address,
                ))
            });
            self.backlog.push(Event::ListeningPorts(
                ports.into_iter().map(|s| listening_port(s)).collect(),
            ));
            self.listening = Some(listen_set);
        }

        let listen_ports: HashSet<(bool, u16)> = listening
            .iter()
            .map(|s| (is_tcp(s), s.local_port))
            .collect();
        let connections: Vec<&Socket> = table.sockets.iter().filter(|s| is_connection(s)).collect();
        let now: HashSet<ConnKey> = connections.iter().map(|s| key(s)).collect();
        let first = self.known.is_none();
        let before = self.known.take().unwrap_or_default();
        if !first || self.report_existing {
            let mut new: Vec<&&Socket> = connections
                .iter()
                .filter(|s| !before.contains(&key(s)))
                .collect();
            new.sort_by_key(|s| (s.owner.as_ref().map_or(0, |o| o.pid), s.local_port));
            let mut reported = HashSet::new();
            for s in new {
                // A socket shared by several descriptors appears once per connection key.
                if reported.insert(key(s)) {
                    self.backlog.push(connection(
                        s,
                        listen_ports.contains(&(is_tcp(s), s.local_port)),
                        first,
                    ));
                }
            }
        }
        if self.follow {
            let room = (max_events as usize).saturating_sub(self.backlog.len()) as u32;
            self.closed(room, &before, &now, &listen_ports)?;
        }
        self.known = Some(now);

        let take = self.backlog.len().min(max_events as usize);
        Ok(self.backlog.drain(..take).collect())
    }
}

impl NetworkCollector {
    /// The connections the kernel closed since the last collection that neither this snapshot
    /// nor the last one saw.
    fn closed(
        &mut self,
        max: u32,
        before: &HashSet<ConnKey>,
        now: &HashSet<ConnKey>,
        listen_ports: &HashSet<(bool, u16)>,
    ) -> Result<(), CollectError> {
        if max == 0 {
            return Ok(());
        }
        let Some(batch) = self.closed_feed.check(
            sockets::closed(max),
            "only connections alive at a collection are seen",
            "following the connections the kernel closes again",
        )?
        else {
            return Ok(());
        };
        if batch.lost > 0 {
            warn!(
                "{} closed connections were lost before this collection",
                batch.lost
            );
        }
        for c in batch.connections {
            let key: ConnKey = (
                true,
                c.local_address.clone(),
                c.local_port,
                c.remote_address.clone(),
                c.remote_port,
            );
            if before.contains(&key) || now.contains(&key) {
                continue;
            }
            self.backlog.push(Event::ConnectionCreate(ConnectionCreate {
                protocol: Protocol::Tcp,
                direction: if listen_ports.contains(&(true, c.local_port)) {
                    Direction::In
                } else {
                    Direction::Out
                },
                local_address: c.local_address,
                local_port: c.local_port,
                remote_address: c.remote_address,
                remote_port: c.remote_port,
                process_id: 0,
                executable: String::new(),
                command_line: None,
                user_id: None,
                extra: vec![
                    ("OwnerKnown".to_owned(), "false".to_owned()),
                    ("Closed".to_owned(), "true".to_owned()),
                ],
            }));
        }
        Ok(())
    }
}

fn is_tcp(s: &Socket) -> bool {
    s.protocol == Protocol::Tcp
}

/// A TCP socket past its handshake start, or a UDP socket with a peer.
fn is_connection(s: &Socket) -> bool {
    match s.protocol {
        Protocol::Tcp => !matches!(
            s.state,
            SocketState::Listen | SocketState::Close | SocketState::Other
        ),
        Protocol::Udp => s.state == SocketState::Established && s.remote_port != 0,
    }
}

fn key(s: &Socket) -> ConnKey {
    (
        is_tcp(s),
        s.local_address.clone(),
        s.local_port,
        s.remote_address.clone(),
        s.remote_port,
    )
}

fn listening_port(s: &Socket) -> ListeningPort {
    let mut extra = Vec::new();
    if let Some(o) = &s.owner {
        extra.push(("Pid".to_owned(), o.pid.to_string()));
        extra.push(("Executable".to_owned(), o.executable.clone()));
    }
    ListeningPort {
        protocol: s.protocol,
        local_address: s.local_address.clone(),
        local_port: s.local_port,
        remote_address: None,
        remote_port: None,
        extra,
    }
}

fn connection(s: &Socket, inbound: bool, existing: bool) -> Event {
    let mut extra = Vec::new();
    if existing {
        extra.push(("Existing".to_owned(), "true".to_owned()));
    }
    if s.owner.is_none() {
        extra.push(("OwnerKnown".to_owned(), "false".to_owned()));
    }
    Event::ConnectionCreate(ConnectionCreate {
        protocol: s.protocol,
        direction: if inbound {
            Direction::In
        } else {
            Direction::Out
        },
        local_address: s.local_address.clone(),
        local_port: s.local_port,
        remote_address: s.remote_address.clone(),
        remote_port: s.remote_port,
        process_id: s.owner.as_ref().map_or(0, |o| o.pid),
        executable: s
            .owner
            .as_ref()
            .map(|o| o.executable.clone())
            .unwrap_or_default(),
        command_line: s
            .owner
            .as_ref()
            .map(|o| o.command_line.clone())
            .filter(|c| !c.is_empty()),
        user_id: Some(s.user_id),
        extra,
    })
}

edgeguard_sdk::export_collector!(NetworkCollector);
