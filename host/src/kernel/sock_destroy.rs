//! The kernel's socket destroy notifications (the sock_diag multicast groups of
//! `linux/sock_diag.h`): each TCP socket of this network namespace as the kernel frees it, with
//! its endpoints and `tcp_info`, so that a connection opened and closed between two snapshots
//! of the socket table is still seen. The process that held it is gone from it by then.

use super::inet_diag::{self, SOCK_DIAG_BY_FAMILY};
use super::netlink::{self, Multicast, Netlink, Received, u32_at};
use std::io;
use std::time::Duration;

/// `SKNLGRP_INET_TCP_DESTROY` (1) and `SKNLGRP_INET6_TCP_DESTROY` (3), as `nl_groups` bits.
const TCP_DESTROY_GROUPS: u32 = 1 << 0 | 1 << 2;
const INET_DIAG_INFO: u16 = 2;
/// Offsets in `struct tcp_info`.
const TCPI_OPTIONS: usize = 5;
const TCPI_RTT: usize = 68;
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

/// A TCP connection the kernel freed, as it saw it last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedSocket {
    /// An IPv6 connection (else IPv4).
    pub ipv6: bool,
    /// The local address and port.
    pub local: (String, u16),
    /// The remote address and port.
    pub remote: (String, u16),
}

/// The sock_diag destroy notifications of the host's network namespace, subscribed.
pub struct SockDestroy {
    multicast: Multicast,
    buf: Vec<u8>,
}

impl SockDestroy {
    /// The socket the events arrive on (it polls readable while some wait).
    pub fn socket(&self) -> &super::netlink::Netlink {
        self.multicast.socket()
    }

    /// Joins the TCP destroy groups; the error says why that is impossible here.
    pub fn open(receive_timeout: Duration, receive_buffer: usize) -> Result<SockDestroy, String> {
        let socket = Netlink::open(libc::NETLINK_SOCK_DIAG)
            .map_err(|e| format!("cannot open a sock_diag socket: {e}"))?;
        socket
            .bind(TCP_DESTROY_GROUPS)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) => {
                    "the kernel refuses socket destroy notifications without CAP_NET_ADMIN"
                        .to_owned()
                }
                _ => format!("cannot join the socket destroy groups: {e}"),
            })?;
        socket.set_receive_buffer(receive_buffer);
        socket
            .set_receive_timeout(receive_timeout)
            .map_err(|e| e.to_string())?;
        Ok(SockDestroy {
            multicast: Multicast::new(socket),
            buf: vec![0; 16 << 10],
        })
    }

    /// Whether these notifications are those of the network namespace whose `net/netlink`
    /// table is `table`: our socket is listed there.
    pub fn in_namespace_of(&self, table: &str) -> bool {
        self.multicast.socket().listed_in(table)
    }

    /// Waits for the next datagram (up to the receive timeout) and appends the connections it
    /// reports to `out`: the ones that completed their handshake.
    pub fn read(&mut self, out: &mut Vec<ClosedSocket>) -> io::Result<Received> {
        let received = self.multicast.receive(&mut self.buf)?;
        if let Received::Datagram(n) = received {
            for message in netlink::messages(&self.buf[..n]) {
                let (kind, payload) = message?;
                if kind == SOCK_DIAG_BY_FAMILY
                    && let Some(closed) = parse(payload)
                {
                    out.push(closed);
                }
            }
        }
        Ok(received)
    }
}

/// A freed socket that had connected; None for one that never did (a listener, a refused
/// connect): one that did has options negotiated in its handshake, a round trip time (0 on
/// loopback, under 8 µs), or bytes acknowledged or received.
fn parse(m: &[u8]) -> Option<ClosedSocket> {
    let socket = inet_diag::parse(m)?;
    let info = socket.attribute(INET_DIAG_INFO)?;
    let u64_at = |at: usize| {
        info.get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    };
    let handshake = info.get(TCPI_OPTIONS).is_some_and(|o| *o != 0)
        || u32_at(info, TCPI_RTT).is_some_and(|rtt| rtt > 0)
        || u64_at(TCPI_BYTES_ACKED).is_some_and(|b| b > 0)
        || u64_at(TCPI_BYTES_RECEIVED).is_some_and(|b| b > 0);
    let connected = handshake && socket.local.1 != 0 && socket.remote.1 != 0;
    connected.then_some(ClosedSocket {
        ipv6: socket.ipv6,
        local: socket.local,
        remote: socket.remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed socket with a `tcp_info` whose options are `options` and the rest zero.
    fn message(family: u8, sport: u16, dport: u16, options: u8) -> Vec<u8> {
        let mut info = vec![0u8; 232];
        info[TCPI_OPTIONS] = options;
        inet_diag::tests::message(family, sport, dport, &[(INET_DIAG_INFO, &info)])
    }

    #[test]
    fn connections_parse_and_never_connected_sockets_are_left_out() {
        let c = parse(&message(libc::AF_INET as u8, 40000, 443, 7)).unwrap();
        assert_eq!(
            c,
            ClosedSocket {
                ipv6: false,
                local: ("127.0.0.1".into(), 40000),
                remote: ("10.0.0.2".into(), 443)
            }
        );
        assert_eq!(
            parse(&message(libc::AF_INET as u8, 40000, 443, 0)),
            None,
            "nothing negotiated, no round trip, no bytes: refused"
        );
        assert_eq!(
            parse(&message(libc::AF_INET as u8, 8080, 0, 0)),
            None,
            "a listener"
        );
        assert_eq!(
            parse(&inet_diag::tests::message(
                libc::AF_INET as u8,
                40000,
                443,
                &[]
            )),
            None,
            "no tcp_info"
        );
    }
}
