//! edgeguard: a privileged host that runs sandboxed WebAssembly collector plugins on a schedule
//! and ships what they collect as Azure Security Center for IoT security messages.
//!
//! Data flows one way: host sources → [`capabilities`] (WIT imports) → plugin ([`runtime`]) →
//! [`events`] → [`pipeline`] (priorities, aggregation, durable queues, message packing) →
//! [`output`] (sinks). The [`scheduler`] decides when each plugin runs; [`config`] decides
//! which plugins run, with what grants and limits, and how the pipeline queues and sends.

pub mod app;
pub mod capabilities;
pub mod config;
pub mod edge;
pub mod events;
pub mod output;
pub mod pipeline;
pub mod runtime;
pub mod scheduler;
pub mod units;

/// The agent version written into every message.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
