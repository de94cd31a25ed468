//! What the kernel tells as it happens, for what polling would miss: netlink sockets
//! ([`netlink`]), the process events connector ([`proc_connector`]), the audit records of
//! execs with their whole command line ([`audit`]), the socket destroy
//! notifications ([`sock_destroy`]) and the socket descriptions they share with the socket
//! table's dump ([`inet_diag`]), and the bounded, counted
//! fan-out of a kernel source to the plugins that follow it ([`feed`]). The capabilities turn
//! these raw events into what plugins see.

pub mod audit;
pub mod feed;
pub mod inet_diag;
pub mod netlink;
pub mod proc_connector;
pub mod sock_destroy;
