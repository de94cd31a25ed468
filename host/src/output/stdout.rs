//! Messages as JSON lines on stdout.

use super::{Message, Sending, Sink, acknowledged};
use tokio::io::AsyncWriteExt;

/// One message per line on stdout.
pub struct StdoutSink {
    out: tokio::io::Stdout,
}

impl StdoutSink {
    /// A sink on this process's stdout.
    pub fn new() -> StdoutSink {
        StdoutSink {
            out: tokio::io::stdout(),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn describe(&self) -> String {
        "stdout".into()
    }

    fn send(&mut self, mut message: Message) -> Sending<'_> {
        Box::pin(async move {
            message.body.push(b'\n');
            self.out.write_all(&message.body).await?;
            self.out.flush().await?;
            Ok(acknowledged())
        })
    }
}
