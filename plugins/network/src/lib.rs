//! Network collector: the host's socket table into ListeningPorts (the listening sockets, sent
//! whenever the set changes) and ConnectionCreate (each TCP connection or connected UDP socket
//! the first time a collection sees it; In when its local port is a listening one, else Out).
//!
//! A connection is identified by protocol and both endpoints, so one that moved from
//! established to time-wait between two collections is not reported twice.
//!
//! A TCP connection opened and closed between two collections is not in any table: where the
//! host follows the kernel's socket destroy notifications, those that no snapshot saw are
//! reported too, `Closed` in their details.
//!
//! Where the host reads the kernel's audit records of `connect` and `accept`, each tells the
//! process of a connection and its peer, not its local end: matched to a socket of the
//! snapshot (by inode) or to a closed connection (by peer), it gives the process to a
//! connection that had none; one that nothing matched within a collection (a UDP exchange
//! over between two snapshots, a connection attempt that never completed, a container's own
//! network) is reported from the record alone, without a local end.

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::{Availability, config_bool, config_keys};
use edgeguard_sdk::{ConnectionCreate, Direction, ListeningPort, Protocol};
use sockets::{AddressFamily, OpenedConnection, Socket, SocketState, Source};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

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
    /// Whether the host tells the connections its audit records show.
    opened_feed: Availability,
    /// Audited connections no snapshot or closed connection matched yet, with the collections
    /// they waited.
    pending: Vec<(u8, OpenedConnection)>,
    /// Peers of this collection's closed connections reported without a process: a record of
    /// theirs coming by the next one is not a connection of its own.
    closed_peers: HashSet<Peer>,
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
            opened_feed: Availability::default(),
            pending: Vec::new(),
            closed_peers: HashSet::new(),
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
        if self.follow {
            self.opened()?;
        }
        let mut audited = Audited::new(std::mem::take(&mut self.pending));
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
                    let mut event =
                        connection(s, listen_ports.contains(&(is_tcp(s), s.local_port)), first);
                    if s.owner.is_none()
                        && let Some(record) = audited.take_socket(s)
                    {
                        with_process(&mut event, &record);
                    }
                    self.backlog.push(event);
                }
            }
        }
        let earlier = std::mem::take(&mut self.closed_peers);
        if self.follow {
            let room = (max_events as usize).saturating_sub(self.backlog.len()) as u32;
            self.closed(room, &before, &now, &listen_ports, &mut audited)?;
        }
        // Records of connections the snapshot holds (reported now or before) are no news: by
        // inode, or by peer for a socket no descriptor holds any more (in time-wait).
        for s in &connections {
            audited.take_inode(s.inode);
        }
        for s in connections.iter().filter(|s| s.inode == 0) {
            audited.take_peer(&(s.remote_address.clone(), s.remote_port));
        }
        let room = (max_events as usize).saturating_sub(self.backlog.len());
        let closed_followed = self.follow && self.closed_feed.answered();
        let told = [&earlier, &self.closed_peers];
        self.pending = audited.rest(room, closed_followed, told, &mut self.backlog);
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
        audited: &mut Audited,
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
            let peer: Peer = (c.remote_address.clone(), c.remote_port);
            let record = audited.take_peer(&peer);
            if record.is_none() {
                self.closed_peers.insert(peer);
            }
            let mut event = Event::ConnectionCreate(ConnectionCreate {
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
            });
            if let Some(record) = record {
                with_process(&mut event, &record);
            }
            self.backlog.push(event);
        }
        Ok(())
    }

    /// The connections the audit records told since the last collection, to be matched.
    fn opened(&mut self) -> Result<(), CollectError> {
        let Some(batch) = self.opened_feed.check(
            sockets::opened(MAX_PENDING as u32),
            "connections closed between two collections have no process",
            "connections have their process from the audit records again",
        )?
        else {
            return Ok(());
        };
        if batch.lost > 0 {
            warn!(
                "{} connections from the audit records were lost before this collection",
                batch.lost
            );
        }
        self.pending
            .extend(batch.connections.into_iter().map(|c| (0, c)));
        // Bounded in count and in bytes (a command line may be 16 KiB): the newest that fit
        // are kept, the oldest go.
        let (mut kept, mut bytes) = (0, 0);
        for (_, c) in self.pending.iter().rev() {
            if kept == MAX_PENDING || bytes + record_bytes(c) > MAX_PENDING_BYTES {
                break;
            }
            kept += 1;
            bytes += record_bytes(c);
        }
        let over = self.pending.len() - kept;
        if over > 0 {
            warn!(
                "{over} connections from the audit records dropped: more than {MAX_PENDING} or {MAX_PENDING_BYTES} bytes waited"
            );
            self.pending.drain(..over);
        }
        Ok(())
    }
}

/// Audited connections waiting for a match, at most, in count and in bytes.
const MAX_PENDING: usize = 4096;
const MAX_PENDING_BYTES: usize = 4 << 20;

fn record_bytes(c: &OpenedConnection) -> usize {
    std::mem::size_of::<OpenedConnection>()
        + c.remote_address.len()
        + c.owner.executable.len()
        + c.owner.command_line.len()
}

/// A peer: its address and port.
type Peer = (String, u16);

/// One collection's audited connections, looked up by socket inode and by peer.
struct Audited {
    waiting: Vec<Option<(u8, OpenedConnection)>>,
    by_inode: HashMap<u64, usize>,
    /// Oldest first.
    by_peer: HashMap<Peer, VecDeque<usize>>,
}

impl Audited {
    fn new(pending: Vec<(u8, OpenedConnection)>) -> Audited {
        let mut by_inode = HashMap::new();
        let mut by_peer: HashMap<Peer, VecDeque<usize>> = HashMap::new();
        for (i, (_, c)) in pending.iter().enumerate() {
            if let Some(inode) = c.inode {
                by_inode.insert(inode, i);
            }
            by_peer
                .entry((c.remote_address.clone(), c.remote_port))
                .or_default()
                .push_back(i);
        }
        Audited {
            waiting: pending.into_iter().map(Some).collect(),
            by_inode,
            by_peer,
        }
    }

    /// The record of socket `s`: by its inode, else the oldest of its peer's.
    fn take_socket(&mut self, s: &Socket) -> Option<OpenedConnection> {
        self.take_inode(s.inode)
            .or_else(|| self.take_peer(&(s.remote_address.clone(), s.remote_port)))
    }

    fn take_inode(&mut self, inode: u64) -> Option<OpenedConnection> {
        let i = self.by_inode.remove(&inode)?;
        self.waiting[i].take().map(|(_, c)| c)
    }

    /// The oldest record of a connection with `peer`.
    fn take_peer(&mut self, peer: &Peer) -> Option<OpenedConnection> {
        let list = self.by_peer.get_mut(peer)?;
        while let Some(i) = list.pop_front() {
            if let Some((_, c)) = self.waiting[i].take() {
                return Some(c);
            }
        }
        None
    }

    /// What nothing matched: a record that waited a collection already is reported on its own
    /// (at most `room`); the others wait for the next one. A connect that completed at once is
    /// TCP or UDP: where the host tells closed TCP connections and its sockets, one that neither
    /// showed was UDP; elsewhere its protocol cannot be told, and it is counted and logged.
    fn rest(
        self,
        mut room: usize,
        closed_followed: bool,
        closed_peers: [&HashSet<Peer>; 2],
        out: &mut Vec<Event>,
    ) -> Vec<(u8, OpenedConnection)> {
        let mut keep = Vec::new();
        let mut untold = 0u64;
        for (waited, c) in self.waiting.into_iter().flatten() {
            let peer = (c.remote_address.clone(), c.remote_port);
            if closed_peers.iter().any(|told| told.contains(&peer)) {
                // Its closed connection was reported without a process, before it came.
                continue;
            }
            // A container's network is in no table of the host's: nothing will match.
            if waited == 0 && c.host_network {
                keep.push((1, c));
                continue;
            }
            let protocol = if c.direction == Direction::In || c.in_progress {
                Some(Protocol::Tcp)
            } else if closed_followed && c.host_network {
                Some(Protocol::Udp)
            } else {
                None
            };
            match protocol {
                Some(_) if room == 0 => keep.push((waited, c)),
                Some(protocol) => {
                    room -= 1;
                    out.push(audited_only(&c, protocol));
                }
                None => untold += 1,
            }
        }
        if untold > 0 {
            info!(
                "{untold} connections told by audit records alone not reported: their protocol cannot be told (no socket table shows their network)"
            );
        }
        keep
    }
}

/// The process of an audited connection, given to a connection reported without one.
fn with_process(event: &mut Event, record: &OpenedConnection) {
    let Event::ConnectionCreate(c) = event else {
        return;
    };
    // The call tells the direction, where the listening ports may no longer (the listener
    // closed before the collection).
    c.direction = record.direction;
    c.process_id = record.owner.pid;
    c.executable = record.owner.executable.clone();
    c.command_line = Some(record.owner.command_line.clone()).filter(|l| !l.is_empty());
    c.user_id = Some(record.user_id);
    c.extra.retain(|(k, _)| k != "OwnerKnown");
    audit_details(&mut c.extra, record);
}

fn audit_details(extra: &mut Vec<(String, String)>, record: &OpenedConnection) {
    extra.push(("ProcessFrom".to_owned(), "audit record".to_owned()));
    if let Some(auid) = record.login_user_id {
        extra.push(("LoginUserId".to_owned(), auid.to_string()));
    }
}

/// A connection its audit record alone tells: no local end.
fn audited_only(record: &OpenedConnection, protocol: Protocol) -> Event {
    let mut extra = vec![("AuditOnly".to_owned(), "true".to_owned())];
    if record.in_progress {
        extra.push(("HandshakeBegun".to_owned(), "true".to_owned()));
    }
    if !record.host_network {
        extra.push(("HostNetwork".to_owned(), "false".to_owned()));
    }
    if record.family == AddressFamily::Ipv6 {
        extra.push(("Family".to_owned(), "IPv6".to_owned()));
    }
    audit_details(&mut extra, record);
    Event::ConnectionCreate(ConnectionCreate {
        protocol,
        direction: record.direction,
        local_address: String::new(),
        local_port: 0,
        remote_address: record.remote_address.clone(),
        remote_port: record.remote_port,
        process_id: record.owner.pid,
        executable: record.owner.executable.clone(),
        command_line: Some(record.owner.command_line.clone()).filter(|l| !l.is_empty()),
        user_id: Some(record.user_id),
        extra,
    })
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
