//! From events to bytes somewhere: message envelopes and sinks.

mod message;
mod sink;

pub use message::{MessageBuilder, agent_id_from_host};
pub use sink::Sink;
