//! edgeguard: a privileged host that runs sandboxed WebAssembly collector plugins on a schedule
//! and ships what they collect as Azure Security Center for IoT security messages.
//!
//! Data flows one way: host sources (files, and the [`kernel`]'s event sources) →
//! [`capabilities`] (WIT imports) → plugin (in its [`sandbox`]) → [`events`] → [`pipeline`]
//! (priorities, aggregation, durable queues, message packing) → [`output`] (sinks). The
//! [`scheduler`] decides when each plugin runs; the [`fleet`] which plugins run and which
//! versions, swapping them while running; [`config`] (reloadable) and the module twin
//! ([`edge`]) what is wanted, through the [`control`] that applies it; [`app`] wires it all.
//!
//! # Layers
//!
//! Modules import only from the layers below them, so the graph has no cycle. Bottom to top:
//!
//! | layer | modules | what it owns |
//! |---|---|---|
//! | foundation | [`units`], [`files`], [`net`], [`footprint`] | configuration value types and [`units::Invalid`]; atomic file writes; TLS and HTTP/1 clients; handing file pages back to the kernel |
//! | host sources | [`kernel`] | netlink: the proc connector, sock_diag, their bounded queues |
//! | contract | [`wit`], [`events`] | the WIT bindings; the ASC event model and [`events::Priority`] |
//! | sandbox | [`runtime`], [`capabilities`], [`sandbox`] | engine, compile cache and limits; the host side of each WIT interface and the capability table; loading a plugin against its grants and running it |
//! | delivery | [`output`], [`pipeline`] | sinks and the message envelope; priorities, aggregation, durable queues |
//! | orchestration | [`scheduler`], [`fleet`] | when each plugin runs; which plugins and versions run |
//! | IoT Edge | [`edge`] | environment, workload API, SAS, the MQTT link, twin documents |
//! | wanted state | [`config`], [`control`] | the file (each section lives with its owner above and is re-exported here); resolving the file and the twin into what is in force |
//! | entry | [`app`], [`cli`] | `edgeguard run`, locally and as an IoT Edge module; the commands that read files and print reports (`check-manifest`) |
//!
//! Within a row, a module may use the ones to its left. `cargo xtask layers` (run by the test
//! command) fails on any import that points up.

#![warn(missing_docs)]

pub mod app;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod control;
pub mod edge;
pub mod events;
pub(crate) mod files;
pub mod fleet;
pub mod footprint;
pub(crate) mod kernel;
pub(crate) mod net;
pub mod output;
pub mod pipeline;
pub mod runtime;
pub mod sandbox;
pub mod scheduler;
pub mod units;
pub mod wit;

/// The agent version written into every message.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
