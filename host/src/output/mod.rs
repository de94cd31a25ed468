//! Where messages go. Every sink follows one contract, send then acknowledge: `send` returns
//! once the sink has taken the message (backpressure), with an [`Acknowledgement`] that
//! resolves when the message is safe at its destination. The pipeline forgets cached events
//! only on acknowledgement, so a sink that fails, or a process that dies, loses nothing.

pub mod config;
pub mod envelope;
mod file;
mod stdout;

pub use envelope::agent_id_from_host;
pub use file::FileSink;
pub use stdout::StdoutSink;

use crate::events::Family;
use crate::events::Priority;
use std::future::Future;
use std::pin::Pin;

/// One message, serialized.
#[derive(Clone, Debug)]
pub struct Message {
    /// Unique per message (the MQTT message id on edgeHub).
    pub id: uuid::Uuid,
    /// The schema family of every event in it.
    pub family: Family,
    /// The queue that triggered the send (`MessagePriority` property of the ASC C# agent).
    pub priority: Priority,
    /// The message, JSON.
    pub body: Vec<u8>,
    /// Events in it.
    pub events: usize,
}

/// Why a sink did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The destination said no.
    #[error("{0}")]
    Refused(String),
    /// The destination is gone for good.
    #[error("the sink went away before acknowledging")]
    Gone,
}

/// Resolves when the message is delivered (Ok) or known lost (Err).
pub type Acknowledgement = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// A send under way: resolves once the sink has taken the message, to its acknowledgement.
pub type Sending<'a> =
    Pin<Box<dyn Future<Output = Result<Acknowledgement, SinkError>> + Send + 'a>>;

/// Where messages go. The pipeline forgets a message's events only once its acknowledgement resolves.
pub trait Sink: Send {
    /// For logs: where messages go.
    fn describe(&self) -> String;
    /// Hands a message over; see the module documentation.
    fn send(&mut self, message: Message) -> Sending<'_>;
}

/// An acknowledgement that is already in: the message is written.
pub fn acknowledged() -> Acknowledgement {
    Box::pin(std::future::ready(Ok(())))
}
