//! `sockets`: the host's TCP and UDP sockets with the processes holding them.
//!
//! The table comes from the kernel's sock_diag netlink interface (one dump per family and
//! protocol, no text parsing) when the host root is `/`; otherwise, or when netlink is refused,
//! from `<host root>/proc/1/net/{tcp,tcp6,udp,udp6}`, which is the host's network namespace
//! as its init process sees it (the namespace edgeguard's own `/proc/net` would not show from
//! a container). Owners are found in one pass over `<host root>/proc/*/fd`.
//!
//! Two kernel feeds follow what no snapshot catches: the TCP connections the kernel frees
//! (sock_diag destroy notifications, with both ends but no process) and, from the audit
//! subsystem's records of `connect` and `accept`, the connections processes make and take
//! (with the process and the peer, but not the local end).

use super::audit_use::Shown;
use super::{AuditUse, HostContext, HostState};
use crate::kernel::audit::{self, Audit};
use crate::kernel::feed;
use crate::kernel::sock_destroy::{ClosedSocket, SockDestroy};
use crate::wit::edgeguard::collector::sockets::{
    AddressFamily, ClosedBatch, ClosedConnection, Host, OpenedBatch, OpenedConnection, Owner,
    Socket, SocketState, SocketTable, Source,
};
use crate::wit::edgeguard::collector::types::{Direction, HostError, Protocol};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Host for HostState {
    async fn snapshot(&mut self) -> Result<SocketTable, HostError> {
        self.host.sockets.feed.note_polled(&self.plugin);
        // Blocking reads of /proc; see the processes capability.
        let host = Arc::clone(&self.host);
        self.blocking("socket scan", move || read_sockets(&host, Preference::Auto))
            .await
    }

    async fn closed(&mut self, max: u32) -> Result<ClosedBatch, HostError> {
        let d = super::drain_feed(self, max, "closed connections", |h| &h.sockets.feed).await?;
        Ok(ClosedBatch {
            connections: d.events,
            lost: d.lost,
            fresh: d.fresh,
        })
    }

    async fn opened(&mut self, max: u32) -> Result<OpenedBatch, HostError> {
        let d = super::drain_feed(self, max, "opened connections", |h| &h.sockets.opened).await?;
        Ok(OpenedBatch {
            connections: d.events,
            lost: d.lost,
            fresh: d.fresh,
        })
    }
}

/// What the `sockets` capability keeps for every plugin: the destroy notifications' feed and
/// the audit records' connections.
pub(crate) struct Shared {
    pub(crate) feed: feed::Feed<ClosedSource>,
    pub(crate) opened: feed::Feed<OpenedSource>,
    audit: Arc<Shown>,
}

impl Shared {
    pub(crate) fn new(host_root: &Path, options: &super::HostOptions, wake: feed::Wake) -> Shared {
        let root = host_root.to_owned();
        let (kernel_events, kernel_buffer) = (options.kernel_events, options.kernel_buffer);
        let what = "sock_diag destroy notifications";
        let feed = feed::Feed::new(what, options.event_buffer, Arc::clone(&wake), move || {
            if !kernel_events {
                return Err(super::KERNEL_EVENTS_OFF.to_owned());
            }
            ClosedSource::open(&root, kernel_buffer)
        });
        let audit: Arc<Shown> = Arc::default();
        let (proc_dir, mode, state) = (
            host_root.join("proc"),
            options.audit.kernel_mode(),
            Arc::clone(&audit),
        );
        let opened = feed::Feed::new("audit records", options.event_buffer, wake, move || {
            let Some(mode) = mode.filter(|_| kernel_events) else {
                let why = if kernel_events {
                    "audit records are off (agent.audit = \"off\")"
                } else {
                    super::KERNEL_EVENTS_OFF
                };
                return Err(why.to_owned());
            };
            let opened = OpenedSource::open(mode, &proc_dir, kernel_buffer, Arc::clone(&state));
            if let Err(why) = &opened {
                state.set(AuditUse::Unavailable(why.clone()));
            }
            opened
        });
        Shared {
            feed,
            opened,
            audit,
        }
    }

    /// Where `plugin`'s closed and opened connections come from, if it asked for either: one
    /// status, the audit records' in its notes and counts.
    pub(crate) fn status(&self, plugin: &str) -> Option<super::FeedStatus> {
        let opened = self.opened.usage(plugin);
        let (what, usage) = match (self.feed.usage(plugin), &opened) {
            (Some(closed), _) => (self.feed.what, closed),
            (None, Some(opened)) => (self.opened.what, opened.clone()),
            (None, None) => return None,
        };
        let mut status = super::FeedStatus::of(super::Capability::Sockets, what, usage, Vec::new());
        if let Some(opened) = opened {
            status.details.push(("openedDelivered", opened.delivered));
            status.details.push(("openedLost", opened.lost));
            let note = match (&opened.unavailable, opened.following) {
                (Some(why), _) => format!("unavailable: {why}"),
                (None, true) => self.audit.get().describe(),
                (None, false) => "not followed".to_owned(),
            };
            status.notes.push(("opened", note));
        }
        Some(status)
    }
}

/// The kernel's TCP destroy notifications, for the host's network namespace only: they are
/// per namespace, and the socket table is the host's.
pub(crate) struct ClosedSource {
    destroy: SockDestroy,
    raw: Vec<ClosedSocket>,
}

impl ClosedSource {
    pub(crate) fn open(host_root: &Path, kernel_buffer: usize) -> Result<ClosedSource, String> {
        let destroy = SockDestroy::open(feed::READ_TIMEOUT, kernel_buffer)?;
        // Our socket is listed in the netlink table of the host's init process's namespace
        // exactly when we share it.
        let table = host_root.join("proc/1/net/netlink");
        let table = std::fs::read_to_string(&table).map_err(|e| {
            format!(
                "cannot tell the host's network namespace ({}: {e})",
                table.display()
            )
        })?;
        if !destroy.in_namespace_of(&table) {
            return Err(
                "edgeguard is not in the host's network namespace (run with the host network)"
                    .to_owned(),
            );
        }
        Ok(ClosedSource {
            destroy,
            raw: Vec::new(),
        })
    }
}

impl feed::Source for ClosedSource {
    type Event = ClosedConnection;

    fn bytes(c: &ClosedConnection) -> usize {
        std::mem::size_of::<ClosedConnection>() + c.local_address.len() + c.remote_address.len()
    }

    fn readiness(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self.destroy.socket()))
    }

    fn next(&mut self, out: &mut Vec<ClosedConnection>) -> std::io::Result<u64> {
        self.raw.clear();
        let dropped = self.destroy.read(&mut self.raw)?.dropped();
        out.extend(self.raw.drain(..).map(|c| ClosedConnection {
            family: if c.ipv6 {
                AddressFamily::Ipv6
            } else {
                AddressFamily::Ipv4
            },
            local_address: c.local.0,
            local_port: c.local.1,
            remote_address: c.remote.0,
            remote_port: c.remote.1,
        }));
        Ok(dropped)
    }
}

/// The connections processes make and take, from the audit subsystem's records of their
/// `connect` and `accept` calls, each with its process read as the record comes.
pub(crate) struct OpenedSource {
    audit: Audit,
    proc_dir: PathBuf,
    raw: Vec<audit::Connection>,
    /// Processes read lately, by pid: a process making many connections is read once a
    /// [`OWNER_FRESH`], not at each.
    owners: HashMap<u32, (Instant, Owner, bool)>,
    /// The host's network namespace, as `/proc/1/ns/net` names it.
    host_network: Option<PathBuf>,
    state: Arc<Shown>,
    changes: u64,
}

/// How long a process read for one connection stands for its next ones.
const OWNER_FRESH: Duration = Duration::from_secs(2);
/// Processes remembered at most.
const MAX_OWNERS: usize = 1024;

impl OpenedSource {
    fn open(
        mode: audit::Mode,
        proc_dir: &Path,
        kernel_buffer: usize,
        state: Arc<Shown>,
    ) -> Result<OpenedSource, String> {
        let audit = Audit::open(mode, audit::Purpose::Connections, kernel_buffer, 0)?;
        let source = OpenedSource {
            audit,
            proc_dir: proc_dir.to_owned(),
            raw: Vec::new(),
            owners: HashMap::new(),
            host_network: std::fs::read_link(proc_dir.join("1/ns/net")).ok(),
            state,
            changes: 0,
        };
        let use_ = AuditUse::of(&source.audit);
        tracing::info!("connections from the audit subsystem: {}", use_.describe());
        source.state.set(use_);
        Ok(source)
    }

    /// What others changed in the audit state, mended where edgeguard manages it, and told.
    fn look_after(&mut self) {
        self.audit.look_after(Instant::now());
        self.state.follow(&self.audit, &mut self.changes);
    }

    fn connection(&mut self, c: audit::Connection, now: Instant) -> OpenedConnection {
        let inode = c.fd.and_then(|fd| {
            let link = std::fs::read_link(self.proc_dir.join(format!("{}/fd/{fd}", c.pid))).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        });
        let (owner, host_network) = self.owner(&c, now);
        let (family, address) = match c.remote.ip() {
            std::net::IpAddr::V4(ip) => (AddressFamily::Ipv4, ip.to_string()),
            std::net::IpAddr::V6(ip) => (AddressFamily::Ipv6, ip.to_string()),
        };
        OpenedConnection {
            direction: if c.inbound { Direction::In } else { Direction::Out },
            family,
            remote_address: address,
            remote_port: c.remote.port(),
            in_progress: c.in_progress,
            inode,
            host_network,
            owner,
            user_id: c.uid,
            login_user_id: (c.auid != u32::MAX).then_some(c.auid),
            time: c.time_ms,
        }
    }

    /// The process of `c`: its command line from `/proc` while it runs the program the record
    /// names, else the title the record carries; and whether it is in the host's network (a
    /// process gone is taken to have been).
    fn owner(&mut self, c: &audit::Connection, now: Instant) -> (Owner, bool) {
        if let Some((at, owner, host_network)) = self.owners.get(&c.pid)
            && now.duration_since(*at) < OWNER_FRESH
            && owner.executable == c.executable
        {
            return (owner.clone(), *host_network);
        }
        let network = std::fs::read_link(self.proc_dir.join(format!("{}/ns/net", c.pid))).ok();
        let host_network = match (&network, &self.host_network) {
            (Some(theirs), Some(host)) => theirs == host,
            _ => true,
        };
        let command_line = super::command_line_of(&self.proc_dir, c.pid, super::MAX_COMMAND_LINE)
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| c.title.clone());
        let owner = Owner {
            pid: c.pid,
            executable: c.executable.clone(),
            command_line,
        };
        if self.owners.len() >= MAX_OWNERS {
            self.owners.retain(|_, (at, ..)| now.duration_since(*at) < OWNER_FRESH);
            if self.owners.len() >= MAX_OWNERS {
                self.owners.clear();
            }
        }
        self.owners.insert(c.pid, (now, owner.clone(), host_network));
        (owner, host_network)
    }
}

impl feed::Source for OpenedSource {
    type Event = OpenedConnection;

    fn bytes(c: &OpenedConnection) -> usize {
        std::mem::size_of::<OpenedConnection>()
            + c.remote_address.len()
            + c.owner.executable.len()
            + c.owner.command_line.len()
    }

    fn readiness(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self.audit.socket()))
    }

    fn next(&mut self, out: &mut Vec<OpenedConnection>) -> std::io::Result<u64> {
        self.look_after();
        // The round's buffer is kept for the next one.
        let mut raw = std::mem::take(&mut self.raw);
        let dropped = self.audit.read_connections(&mut raw);
        let now = Instant::now();
        out.extend(raw.drain(..).map(|c| self.connection(c, now)));
        self.raw = raw;
        dropped
    }

    fn tick(&mut self, _out: &mut Vec<OpenedConnection>) {
        self.look_after();
    }
}

/// Which source to read (tests compare both on the same kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// sock_diag where the kernel answers, else `/proc/net`.
    Auto,
    /// `/proc/net` only.
    Procfs,
}

/// A socket as the kernel reports it, before owners are attached.
struct Raw {
    protocol: Protocol,
    family: AddressFamily,
    local: (String, u16),
    remote: (String, u16),
    state: SocketState,
    uid: u32,
    inode: u64,
}

/// The host's socket table, from the source `prefer` names.
pub fn read_sockets(host: &HostContext, prefer: Preference) -> Result<SocketTable, HostError> {
    let on_host_root = host.host_root == Path::new("/");
    let (raw, source) = match (prefer, on_host_root) {
        (Preference::Auto, true) => match sock_diag::dump_all() {
            Ok(raw) => (raw, Source::SockDiag),
            Err(e) => {
                tracing::debug!("sock_diag unavailable ({e}); reading /proc/net");
                (read_procfs(&host.host_root)?, Source::Procfs)
            }
        },
        _ => (read_procfs(&host.host_root)?, Source::Procfs),
    };
    let owners = owners(&host.host_root);
    let sockets = raw
        .into_iter()
        .map(|r| Socket {
            protocol: r.protocol,
            family: r.family,
            local_address: r.local.0,
            local_port: r.local.1,
            remote_address: r.remote.0,
            remote_port: r.remote.1,
            state: r.state,
            user_id: r.uid,
            inode: r.inode,
            owner: owners.get(&r.inode).cloned(),
        })
        .collect();
    Ok(SocketTable { sockets, source })
}

fn state_from_kernel(state: u8, protocol: Protocol, remote_port: u16) -> SocketState {
    if protocol == Protocol::Udp {
        // UDP has no states; TCP_ESTABLISHED (1) marks a connected socket, TCP_CLOSE (7) an unconnected one.
        return if state == 1 || remote_port != 0 {
            SocketState::Established
        } else {
            SocketState::Listen
        };
    }
    match state {
        1 => SocketState::Established,
        2 => SocketState::SynSent,
        3 => SocketState::SynRecv,
        4 => SocketState::FinWait1,
        5 => SocketState::FinWait2,
        6 => SocketState::TimeWait,
        7 => SocketState::Close,
        8 => SocketState::CloseWait,
        9 => SocketState::LastAck,
        10 => SocketState::Listen,
        11 => SocketState::Closing,
        _ => SocketState::Other,
    }
}

/// `/proc/net/{tcp,udp}[6]` of the host's init process.
fn read_procfs(host_root: &Path) -> Result<Vec<Raw>, HostError> {
    let net = host_root.join("proc/1/net");
    let mut out = Vec::new();
    for (file, protocol, family) in [
        ("tcp", Protocol::Tcp, AddressFamily::Ipv4),
        ("tcp6", Protocol::Tcp, AddressFamily::Ipv6),
        ("udp", Protocol::Udp, AddressFamily::Ipv4),
        ("udp6", Protocol::Udp, AddressFamily::Ipv6),
    ] {
        let path = net.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // A kernel without IPv6 has no tcp6/udp6.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && family == AddressFamily::Ipv6 => {
                continue;
            }
            Err(e) => return Err(super::read_error(&path, e)),
        };
        for line in text.lines().skip(1) {
            if let Some(raw) = parse_proc_line(line, protocol, family) {
                out.push(raw);
            }
        }
    }
    Ok(out)
}

/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_proc_line(line: &str, protocol: Protocol, family: AddressFamily) -> Option<Raw> {
    let mut f = line.split_whitespace();
    let local = parse_proc_endpoint(f.nth(1)?, family)?;
    let remote = parse_proc_endpoint(f.next()?, family)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let uid = f.nth(3)?.parse().ok()?;
    let inode = f.nth(1)?.parse().ok()?;
    Some(Raw {
        protocol,
        family,
        state: state_from_kernel(state, protocol, remote.1),
        local,
        remote,
        uid,
        inode,
    })
}

/// `0100007F:1F90`: the address as the kernel's 32-bit words in host order, the port in hex.
fn parse_proc_endpoint(text: &str, family: AddressFamily) -> Option<(String, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let mut bytes = Vec::with_capacity(16);
    for w in words {
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    Some((format_address(family, &bytes)?, port))
}

fn format_address(family: AddressFamily, bytes: &[u8]) -> Option<String> {
    Some(match family {
        AddressFamily::Ipv4 => {
            Ipv4Addr::from(<[u8; 4]>::try_from(bytes.get(..4)?).ok()?).to_string()
        }
        AddressFamily::Ipv6 => {
            Ipv6Addr::from(<[u8; 16]>::try_from(bytes.get(..16)?).ok()?).to_string()
        }
    })
}

/// Socket inode → the process holding it, from one pass over every process's descriptors.
/// A socket shared by several processes (a forking server) goes to the lowest pid, the parent.
fn owners(host_root: &Path) -> HashMap<u64, Owner> {
    let proc_dir = host_root.join("proc");
    let Ok(entries) = std::fs::read_dir(&proc_dir) else {
        return HashMap::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut by_inode: HashMap<u64, u32> = HashMap::new();
    let mut link = Vec::with_capacity(64);
    for &pid in &pids {
        let Ok(fds) = std::fs::read_dir(proc_dir.join(format!("{pid}/fd"))) else {
            continue;
        };
        for fd in fds.flatten() {
            link.clear();
            // readlink gives "socket:[12345]" for sockets; anything else is skipped unparsed.
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            link.extend_from_slice(target.as_os_str().as_encoded_bytes());
            if let Some(inode) = link
                .strip_prefix(b"socket:[")
                .and_then(|r| r.strip_suffix(b"]"))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
            {
                by_inode.entry(inode).or_insert(pid);
            }
        }
    }
    let mut details: HashMap<u32, Owner> = HashMap::new();
    by_inode
        .into_iter()
        .map(|(inode, pid)| {
            let owner = details.entry(pid).or_insert_with(|| {
                let executable = super::executable_of(&proc_dir, pid).unwrap_or_default();
                let command_line =
                    super::command_line_of(&proc_dir, pid, super::MAX_COMMAND_LINE)
                        .unwrap_or_default();
                Owner {
                    pid,
                    executable,
                    command_line,
                }
            });
            (inode, owner.clone())
        })
        .collect()
}

/// The kernel's sock_diag interface (linux/inet_diag.h): a dump request per family and protocol.
mod sock_diag {
    use super::{AddressFamily, Protocol, Raw, state_from_kernel};
    use crate::kernel::inet_diag::{self, SOCK_DIAG_BY_FAMILY};
    use crate::kernel::netlink::{self, NLMSG_DONE, NLMSG_ERROR, Netlink};
    use std::io;

    pub fn dump_all() -> io::Result<Vec<Raw>> {
        let socket = Netlink::open(libc::NETLINK_SOCK_DIAG)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        for (seq, (af, protocol, proto)) in [
            (libc::AF_INET, Protocol::Tcp, libc::IPPROTO_TCP),
            (libc::AF_INET6, Protocol::Tcp, libc::IPPROTO_TCP),
            (libc::AF_INET, Protocol::Udp, libc::IPPROTO_UDP),
            (libc::AF_INET6, Protocol::Udp, libc::IPPROTO_UDP),
        ]
        .into_iter()
        .enumerate()
        {
            // inet_diag_req_v2: family, protocol, ext, pad, states (all), a zero sockid.
            let mut req = [0u8; 56];
            req[0] = af as u8;
            req[1] = proto as u8;
            req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
            socket.send(&netlink::request(
                SOCK_DIAG_BY_FAMILY,
                flags,
                seq as u32 + 1,
                &req,
            ))?;
            dump(&socket, &mut buf, protocol, &mut out)?;
        }
        Ok(out)
    }

    /// Reads the answers to one dump request until its end.
    fn dump(
        socket: &Netlink,
        buf: &mut [u8],
        protocol: Protocol,
        out: &mut Vec<Raw>,
    ) -> io::Result<()> {
        loop {
            let n = socket.recv(buf)?;
            for message in netlink::messages(&buf[..n]) {
                match message? {
                    (NLMSG_DONE, _) => return Ok(()),
                    (NLMSG_ERROR, payload) => {
                        return Err(io::Error::from_raw_os_error(netlink::error_of(payload)));
                    }
                    (SOCK_DIAG_BY_FAMILY, payload) => {
                        if let Some(s) = inet_diag::parse(payload) {
                            let family = if s.ipv6 {
                                AddressFamily::Ipv6
                            } else {
                                AddressFamily::Ipv4
                            };
                            let state = state_from_kernel(s.state, protocol, s.remote.1);
                            out.push(Raw {
                                protocol,
                                family,
                                state,
                                local: s.local,
                                remote: s.remote,
                                uid: s.uid,
                                inode: s.inode,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_parse() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0";
        let r = parse_proc_line(v4, Protocol::Tcp, AddressFamily::Ipv4).unwrap();
        assert_eq!((r.local.0.as_str(), r.local.1), ("127.0.0.1", 8080));
        assert_eq!(
            (r.state, r.uid, r.inode),
            (SocketState::Listen, 1000, 12345)
        );
        let v6 = "   1: 00000000000000000000000001000000:0016 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1";
        let r = parse_proc_line(v6, Protocol::Tcp, AddressFamily::Ipv6).unwrap();
        assert_eq!(
            (r.local.0.as_str(), r.local.1, r.remote.1),
            ("::1", 22, 0xD431)
        );
        assert_eq!(r.state, SocketState::Established);
    }
}
