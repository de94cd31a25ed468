//! A raw netlink socket and the framing of its messages: what the sock_diag dump and the kernel
//! event sources share. Only what they need, on `libc`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The size of `struct nlmsghdr`.
pub const NLMSG_HDR: usize = 16;
/// An error (or acknowledgement) message.
pub const NLMSG_ERROR: u16 = 2;
/// The end of a multipart answer.
pub const NLMSG_DONE: u16 = 3;

/// A netlink socket, closed when dropped.
pub struct Netlink {
    fd: OwnedFd,
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Netlink {
    /// A netlink socket of `protocol` (`NETLINK_SOCK_DIAG`, `NETLINK_CONNECTOR`, ...).
    pub fn open(protocol: i32) -> io::Result<Netlink> {
        // SAFETY: plain socket creation; the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Netlink {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Joins the multicast `groups` (a bit mask, as `nl_groups`); the kernel picks our port id.
    pub fn bind(&self, groups: u32) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        // SAFETY: a valid address of the right length for a socket we own.
        let r = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Asks for a receive buffer of `bytes`: past `rmem_max` when privileged (SO_RCVBUFFORCE),
    /// else as much as the system allows. Event sources need room for bursts.
    pub fn set_receive_buffer(&self, bytes: usize) {
        let value = bytes.min(i32::MAX as usize) as libc::c_int;
        if self
            .set_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value)
            .is_err()
        {
            let _ = self.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, value);
        }
    }

    /// `recv` gives up after `timeout` with `WouldBlock`, so a reader thread can look around.
    pub fn set_receive_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as _,
            tv_usec: timeout.subsec_micros().into(),
        };
        // SAFETY: a timeval of the right size for SO_RCVTIMEO on a socket we own.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn set_option(&self, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
        // SAFETY: an int option on a socket we own.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `recv` returns `WouldBlock` at once when nothing waits: for a reader of several sockets.
    pub fn set_nonblocking(&self) {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(self.fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }

    /// Sends one message to the kernel.
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: sending a buffer we own to a socket we own; the kernel is the default destination.
        if unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram into `buf`. `ENOBUFS` means the kernel dropped messages for us (see [`drops`](Self::drops)).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own, within its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// How many messages the kernel dropped for this bound socket since it was opened (its
    /// receive buffer was full): the `Drops` column of our line in `/proc/self/net/netlink`. The
    /// `ENOBUFS` of `recv` only says that some were; this says how many.
    pub fn drops(&self) -> Option<u64> {
        let table = std::fs::read_to_string("/proc/self/net/netlink").ok()?;
        drops_of(&table, self.inode()?)
    }

    /// Whether this bound socket is listed in `table` (a `net/netlink` file): whether it lives
    /// in that file's network namespace. Needs no privilege over the namespace's processes.
    pub fn listed_in(&self, table: &str) -> bool {
        self.inode()
            .is_some_and(|inode| drops_of(table, inode).is_some())
    }

    fn inode(&self) -> Option<u64> {
        // SAFETY: fstat of a descriptor we own into a zeroed stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &raw mut st) } < 0 {
            return None;
        }
        Some(st.st_ino)
    }
}

/// What [`Multicast::receive`] got.
pub enum Received {
    /// A datagram of this many bytes.
    Datagram(usize),
    /// Nothing within the receive timeout.
    Idle,
    /// The kernel dropped this many messages for us: the socket's buffer was full.
    Dropped(u64),
}

impl Received {
    /// The messages the kernel dropped, 0 unless it said so.
    pub fn dropped(&self) -> u64 {
        match self {
            Received::Dropped(n) => *n,
            Received::Datagram(_) | Received::Idle => 0,
        }
    }
}

/// A socket joined to multicast groups, telling apart a datagram, a quiet moment and an
/// overrun, with the exact number of messages an overrun cost.
pub struct Multicast {
    socket: Netlink,
    drops_seen: u64,
}

impl Multicast {
    /// `socket` is bound to its groups already.
    pub fn new(socket: Netlink) -> Multicast {
        let drops_seen = socket.drops().unwrap_or(0);
        Multicast { socket, drops_seen }
    }

    /// The socket the groups arrive on.
    pub fn socket(&self) -> &Netlink {
        &self.socket
    }

    /// Receives one datagram into `buf`, with the kernel's drop count.
    pub fn receive(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        match self.socket.recv(buf) {
            Ok(n) => Ok(Received::Datagram(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Received::Idle)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let total = self.socket.drops().unwrap_or(self.drops_seen + 1);
                let dropped = total.saturating_sub(self.drops_seen).max(1);
                self.drops_seen = total.max(self.drops_seen + 1);
                Ok(Received::Dropped(dropped))
            }
            Err(e) => Err(e),
        }
    }
}

/// `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`: the drops of the socket `inode`.
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(9)?.parse::<u64>().ok()? == inode).then(|| fields.get(8)?.parse().ok())?
    })
}

/// The messages of one datagram: `(type, payload)` each, or an error for a torn one.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + NLMSG_HDR > datagram.len() {
            return None;
        }
        let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(datagram[at + 4..at + 6].try_into().expect("2 bytes"));
        if len < NLMSG_HDR || at + len > datagram.len() {
            at = datagram.len();
            return Some(Err(io::Error::other("malformed netlink message")));
        }
        let payload = &datagram[at + NLMSG_HDR..at + len];
        at += (len + 3) & !3;
        Some(Ok((kind, payload)))
    })
}

/// A request: the netlink header (`kind`, `flags`, `seq`) before `payload`.
pub fn request(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + payload.len());
    m.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// The native-endian `u32` at `at` in `b`, if `b` is long enough: netlink payloads are in the
/// host's byte order.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The errno of an `NLMSG_ERROR` payload (0 for an acknowledgement).
pub fn error_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map_or(0, |b| -i32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_torn_messages_are_errors() {
        let mut datagram = request(20, 0, 7, &[1, 2, 3]);
        datagram.resize(20, 0); // aligned to 4
        datagram.extend(request(NLMSG_DONE, 0, 7, &[]));
        let got: Vec<(u16, Vec<u8>)> = messages(&datagram)
            .map(|m| m.map(|(k, p)| (k, p.to_vec())))
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(got, vec![(20, vec![1, 2, 3]), (NLMSG_DONE, vec![])]);
        let mut torn = request(20, 0, 1, &[0; 8]);
        torn.truncate(20);
        assert!(messages(&torn).next().unwrap().is_err());
    }

    #[test]
    fn drops_are_read_by_inode() {
        let table = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
                     ffff8881 0   1234       00000000 0        0        0     2        0        999\n\
                     ffff8882 11  5678       00000001 0        0        0     2        42       1000\n";
        assert_eq!(drops_of(table, 1000), Some(42));
        assert_eq!(drops_of(table, 999), Some(0));
        assert_eq!(drops_of(table, 5), None);
    }

    #[test]
    fn a_bound_socket_is_found_and_has_no_drops() {
        let s = Netlink::open(libc::NETLINK_SOCK_DIAG).unwrap();
        s.bind(0).unwrap(); // unbound netlink sockets are not listed
        assert_eq!(s.drops(), Some(0));
    }
}
