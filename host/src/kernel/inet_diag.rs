//! `struct inet_diag_msg` and its attributes (`linux/inet_diag.h`): what the sock_diag dump of
//! the socket table and the socket destroy notifications both carry.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The netlink message type of both the dump's answers and the destroy notifications.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_MSG: usize = 72;

/// One socket as the kernel describes it.
pub struct DiagMsg<'a> {
    /// An IPv6 socket (else IPv4).
    pub ipv6: bool,
    /// The kernel's TCP state number (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
    /// The local address and port.
    pub local: (String, u16),
    /// The remote address and port.
    pub remote: (String, u16),
    /// The owner's uid.
    pub uid: u32,
    /// The socket's inode (0 once freed).
    pub inode: u64,
    /// The `rtattr`s after the message, as asked for in the request's `ext`.
    attributes: &'a [u8],
}

/// `inet_diag_msg`: family, state, timer, retrans; sockid (sport, dport big-endian; src, dst 16
/// bytes each; interface; cookie); expires, rqueue, wqueue, uid, inode. None when too short or
/// not IPv4 or IPv6.
pub fn parse(m: &[u8]) -> Option<DiagMsg<'_>> {
    let attributes = m.get(INET_DIAG_MSG..)?;
    let ipv6 = match i32::from(m[0]) {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        _ => return None,
    };
    let address = |b: &[u8]| match ipv6 {
        false => Ipv4Addr::from(<[u8; 4]>::try_from(&b[..4]).expect("4 bytes")).to_string(),
        true => Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).expect("16 bytes")).to_string(),
    };
    let port = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    Some(DiagMsg {
        ipv6,
        state: m[1],
        local: (address(&m[8..24]), port(4)),
        remote: (address(&m[24..40]), port(6)),
        uid: super::netlink::u32_at(m, 64)?,
        inode: u64::from(super::netlink::u32_at(m, 68)?),
        attributes,
    })
}

impl DiagMsg<'_> {
    /// The payload of the attribute of type `kind`, if the kernel sent it.
    pub fn attribute(&self, kind: u16) -> Option<&[u8]> {
        let m = self.attributes;
        let mut at = 0;
        while at + 4 <= m.len() {
            let len = u16::from_ne_bytes([m[at], m[at + 1]]) as usize;
            if len < 4 || at + len > m.len() {
                return None;
            }
            if u16::from_ne_bytes([m[at + 2], m[at + 3]]) == kind {
                return Some(&m[at + 4..at + len]);
            }
            at += (len + 3) & !3;
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An `inet_diag_msg` from 127.0.0.1:`sport` to 10.0.0.2:`dport`, then `attributes` (type, payload).
    pub(crate) fn message(
        family: u8,
        sport: u16,
        dport: u16,
        attributes: &[(u16, &[u8])],
    ) -> Vec<u8> {
        let mut m = vec![0u8; INET_DIAG_MSG];
        m[0] = family;
        m[1] = 7;
        m[4..6].copy_from_slice(&sport.to_be_bytes());
        m[6..8].copy_from_slice(&dport.to_be_bytes());
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[24..28].copy_from_slice(&[10, 0, 0, 2]);
        m[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        m[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        for (kind, payload) in attributes {
            m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(payload);
            m.resize((m.len() + 3) & !3, 0);
        }
        m
    }

    #[test]
    fn the_message_and_its_attributes_parse() {
        let m = message(
            libc::AF_INET as u8,
            40000,
            443,
            &[(1, &[9; 3]), (2, &[5; 8])],
        );
        let d = parse(&m).unwrap();
        assert_eq!((d.ipv6, d.state, d.uid, d.inode), (false, 7, 1000, 4242));
        assert_eq!(
            (&d.local, &d.remote),
            (
                &("127.0.0.1".to_owned(), 40000),
                &("10.0.0.2".to_owned(), 443)
            )
        );
        assert_eq!(d.attribute(1), Some(&[9u8; 3][..]), "padded to 4");
        assert_eq!(d.attribute(2), Some(&[5u8; 8][..]));
        assert_eq!(d.attribute(3), None);
        assert!(parse(&m[..INET_DIAG_MSG - 1]).is_none(), "too short");
        assert!(
            parse(&message(libc::AF_UNIX as u8, 1, 2, &[])).is_none(),
            "not inet"
        );
    }
}
