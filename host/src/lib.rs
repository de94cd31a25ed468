//! edgeguard: a privileged host that runs sandboxed WebAssembly collector plugins on a schedule
//! and ships what they collect as Azure Security Center for IoT security messages.
//!
//! Data flows one way: host sources (files, and the [`kernel`]'s event sources) → [`capabilities`] (WIT imports) → plugin ([`runtime`]) →
//! [`events`] → [`pipeline`] (priorities, aggregation, durable queues, message packing) →
//! [`output`] (sinks). The [`scheduler`] decides when each plugin runs; the [`fleet`] which
//! plugins run and which versions, swapping them while running; [`config`] (reloadable) and the
//! module twin ([`edge`]) what is wanted, through the [`control`] that applies it.

pub mod app;
pub mod capabilities;
pub mod config;
pub mod control;
pub mod edge;
pub mod events;
pub mod fleet;
pub mod footprint;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod runtime;
pub mod scheduler;
pub mod units;

/// The agent version written into every message.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
