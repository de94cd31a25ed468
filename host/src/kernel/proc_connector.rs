//! The kernel's process events connector (`linux/cn_proc.h`): a netlink multicast of fork, exec
//! and exit as they happen, so that a process living a millisecond is seen too.
//!
//! The kernel only sends to listeners in the initial PID and user namespaces, and its
//! connector socket exists in the initial network namespace only; older kernels (before 6.6)
//! also want CAP_NET_ADMIN. [`ProcConnector::open`] tells which of these stands in the way, so
//! that the caller can fall back to polling with a reason.

use super::netlink::{self, Multicast, Netlink, Received, u32_at};
use std::io;
use std::time::{Duration, Instant};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const CN_MSG: usize = 20;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// `what`, `cpu`, `timestamp_ns` before the event's data.
const PROC_EVENT_HEADER: usize = 16;
/// How long the kernel has to acknowledge a listen request. It answers within the `send`, so
/// silence means it ignored us: we are not in the initial PID and user namespaces.
const ACK_WAIT: Duration = Duration::from_millis(250);

/// One event, threads left out: pids are thread-group ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// A process forked.
    Fork {
        /// The parent's pid.
        parent: u32,
        /// The child's pid.
        child: u32,
    },
    /// A process ran a new program.
    Exec {
        /// Its pid.
        pid: u32,
    },
    /// `code` is the wait status (`exit << 8 | signal`); `parent` is 0 on kernels that do not say.
    Exit {
        /// Its pid.
        pid: u32,
        /// Its parent's pid.
        parent: u32,
        /// The wait status.
        code: i32,
    },
}

/// The kernel's process events connector, subscribed.
pub struct ProcConnector {
    multicast: Multicast,
    buf: Vec<u8>,
}

impl ProcConnector {
    /// The socket the events arrive on (it polls readable while some wait).
    pub fn socket(&self) -> &super::netlink::Netlink {
        self.multicast.socket()
    }

    /// Subscribes to fork, exec and exit. The error is why this is impossible here, in words
    /// an operator can act on.
    /// `receive_buffer` is the kernel's buffer for us: what a burst may fill before we read.
    pub fn open(receive_timeout: Duration, receive_buffer: usize) -> Result<ProcConnector, String> {
        let socket =
            Netlink::open(libc::NETLINK_CONNECTOR).map_err(|e| match e.raw_os_error() {
                Some(libc::EPROTONOSUPPORT) => {
                    "this kernel has no process events connector (CONFIG_PROC_EVENTS)".to_owned()
                }
                _ => format!("cannot open a connector socket: {e}"),
            })?;
        socket
            .bind(CN_IDX_PROC)
            .map_err(|e| format!("cannot join the process events group: {e}"))?;
        socket.set_receive_buffer(receive_buffer);
        socket
            .set_receive_timeout(ACK_WAIT)
            .map_err(|e| e.to_string())?;
        // The kernel answers a request by echoing its `ack` plus one to every listener.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let nonce = std::process::id().rotate_left(16) ^ nanos;
        let mut buf = vec![0; 8192];
        match listen(&socket, &mut buf, nonce)? {
            Some(0) => {}
            Some(libc::EPERM) => return Err("the kernel refuses process events without CAP_NET_ADMIN".to_owned()),
            Some(errno) => return Err(format!("the kernel refused process events: {}", io::Error::from_raw_os_error(errno))),
            None => return Err("the kernel does not answer: process events go only to the host's PID and user namespaces (run with the host's PID namespace)".to_owned()),
        }
        // Kernels since 6.6 filter per listener: only the three events we use. This form gets
        // no answer (the filter drops it), and older kernels ignore it: they send everything.
        let filter = [
            PROC_CN_MCAST_LISTEN,
            PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT,
        ];
        let _ = socket.send(&control(
            nonce.wrapping_add(2),
            &filter.map(u32::to_ne_bytes).concat(),
        ));
        socket
            .set_receive_timeout(receive_timeout)
            .map_err(|e| e.to_string())?;
        Ok(ProcConnector {
            multicast: Multicast::new(socket),
            buf,
        })
    }

    /// Waits for the next datagram (up to the receive timeout) and appends its events to `out`.
    pub fn read(&mut self, out: &mut Vec<ProcEvent>) -> io::Result<Received> {
        let received = self.multicast.receive(&mut self.buf)?;
        if let Received::Datagram(n) = received {
            for message in netlink::messages(&self.buf[..n]) {
                let (_, payload) = message?;
                if let Some(event) = parse(payload) {
                    out.push(event);
                }
            }
        }
        Ok(received)
    }
}

/// Sends a listen request and waits for its acknowledgement: the errno it carries, or None when
/// none came.
fn listen(socket: &Netlink, buf: &mut [u8], nonce: u32) -> Result<Option<i32>, String> {
    socket.send(&control(nonce, &PROC_CN_MCAST_LISTEN.to_ne_bytes())).map_err(|e| match e.raw_os_error() {
        // No kernel end in this network namespace.
        Some(libc::ECONNREFUSED) => "the process events connector exists only in the host's network namespace (run with the host network)".to_owned(),
        _ => format!("cannot ask for process events: {e}"),
    })?;
    let deadline = Instant::now() + ACK_WAIT;
    while Instant::now() < deadline {
        let n = match socket.recv(buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            // Others' events can overflow us before our answer: keep waiting for it.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
            Err(e) => return Err(format!("reading the process events connector: {e}")),
        };
        for message in netlink::messages(&buf[..n]) {
            let Ok((_, payload)) = message else { continue };
            if let Some(errno) = acknowledgement(payload, nonce) {
                return Ok(Some(errno));
            }
        }
    }
    Ok(None)
}

impl Drop for ProcConnector {
    /// The kernel counts listeners and stops making events when none is left.
    fn drop(&mut self) {
        let _ = self
            .multicast
            .socket()
            .send(&control(0, &PROC_CN_MCAST_IGNORE.to_ne_bytes()));
    }
}

/// A message to the connector: netlink header, `cn_msg` for the process events with our
/// `nonce` as its `ack`, `op`.
fn control(nonce: u32, op: &[u8]) -> Vec<u8> {
    let mut cn = Vec::with_capacity(CN_MSG + op.len());
    cn.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    cn.extend_from_slice(&0u32.to_ne_bytes()); // seq
    cn.extend_from_slice(&nonce.to_ne_bytes()); // ack
    cn.extend_from_slice(&(op.len() as u16).to_ne_bytes());
    cn.extend_from_slice(&0u16.to_ne_bytes()); // flags
    cn.extend_from_slice(op);
    netlink::request(netlink::NLMSG_DONE, 0, 0, &cn)
}

/// The errno of the kernel's answer to our request `nonce`, if `payload` is that answer.
fn acknowledgement(payload: &[u8], nonce: u32) -> Option<i32> {
    let data = payload.get(CN_MSG..)?;
    (u32_at(payload, 12)? == nonce.wrapping_add(1) && u32_at(data, 0)? == PROC_EVENT_NONE)
        .then(|| u32_at(data, PROC_EVENT_HEADER).map(|e| e as i32))?
}

/// A `cn_msg` carrying a `proc_event`, as one of ours; None for other events and for threads.
fn parse(payload: &[u8]) -> Option<ProcEvent> {
    if u32_at(payload, 0)? != CN_IDX_PROC {
        return None;
    }
    let event = payload.get(CN_MSG..)?;
    let data = event.get(PROC_EVENT_HEADER..)?;
    let at = |i: usize| u32_at(data, i * 4);
    match u32_at(event, 0)? {
        // parent_pid, parent_tgid, child_pid, child_tgid: a new thread is not a new process.
        PROC_EVENT_FORK => (at(2)? == at(3)?).then(|| ProcEvent::Fork {
            parent: at(1).unwrap_or(0),
            child: at(3).unwrap_or(0),
        }),
        // process_pid, process_tgid: the exec'ing thread has become the leader.
        PROC_EVENT_EXEC => Some(ProcEvent::Exec { pid: at(1)? }),
        // process_pid, process_tgid, exit_code, exit_signal, parent_pid, parent_tgid.
        PROC_EVENT_EXIT => (at(0)? == at(1)?).then(|| ProcEvent::Exit {
            pid: at(1).unwrap_or(0),
            parent: at(5).unwrap_or(0),
            code: at(2).unwrap_or(0) as i32,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_buffer_overrun_is_counted_exactly() {
        // The smallest buffer the kernel allows, and nobody reading while processes come and go.
        let mut connector = ProcConnector::open(Duration::from_millis(100), 4096)
            .expect("the proc connector is available here");
        for i in 0..100 {
            std::process::Command::new("/bin/true")
                .arg(format!("overrun-{}-{i}", std::process::id()))
                .status()
                .expect("running /bin/true");
        }
        let mut events = Vec::new();
        let mut dropped = 0;
        let mut read = 0;
        loop {
            match connector.read(&mut events).unwrap() {
                Received::Dropped(n) => dropped += n,
                Received::Datagram(_) => read += 1,
                Received::Idle => break,
            }
        }
        // At least fork, exec and exit for each of the 100: what was not read was dropped, and said.
        assert!(dropped > 0, "nothing dropped with {read} datagrams read");
        assert!(
            read as u64 + dropped >= 300,
            "{read} read + {dropped} dropped"
        );
    }

    fn message(what: u32, data: &[u32]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 9] {
            m.extend_from_slice(&v.to_ne_bytes());
        }
        m.extend_from_slice(&((PROC_EVENT_HEADER + data.len() * 4) as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&what.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u64.to_ne_bytes());
        for v in data {
            m.extend_from_slice(&v.to_ne_bytes());
        }
        m
    }

    #[test]
    fn events_parse_and_threads_are_left_out() {
        assert_eq!(
            parse(&message(PROC_EVENT_FORK, &[10, 10, 11, 11])),
            Some(ProcEvent::Fork {
                parent: 10,
                child: 11
            })
        );
        assert_eq!(
            parse(&message(PROC_EVENT_FORK, &[10, 10, 12, 10])),
            None,
            "a thread"
        );
        assert_eq!(
            parse(&message(PROC_EVENT_EXEC, &[11, 11])),
            Some(ProcEvent::Exec { pid: 11 })
        );
        assert_eq!(
            parse(&message(PROC_EVENT_EXIT, &[11, 11, 256, 17, 10, 10])),
            Some(ProcEvent::Exit {
                pid: 11,
                parent: 10,
                code: 256
            })
        );
        assert_eq!(
            parse(&message(PROC_EVENT_EXIT, &[12, 10, 0, 17, 10, 10])),
            None,
            "a thread"
        );
        assert_eq!(parse(&message(0x4, &[11, 11])), None, "uid change");
        assert_eq!(
            acknowledgement(&message(PROC_EVENT_NONE, &[1]), 8),
            Some(1),
            "ack is our nonce + 1"
        );
        assert_eq!(
            acknowledgement(&message(PROC_EVENT_NONE, &[0]), 9),
            None,
            "someone else's"
        );
    }
}
