//! Where messages go in local mode: stdout or a file, one JSON message per line.

use serde_json::Value;
use std::path::Path;
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub struct Sink {
    out: Box<dyn AsyncWrite + Send + Unpin>,
    pub messages: u64,
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink { out: Box::new(tokio::io::stdout()), messages: 0 }
    }

    /// Appends to `path`, creating it if needed.
    pub async fn file(path: &Path) -> std::io::Result<Sink> {
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
        Ok(Sink { out: Box::new(file), messages: 0 })
    }

    /// Writes one message as a line and flushes it, so a reader sees whole messages.
    pub async fn send(&mut self, message: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line).await?;
        self.out.flush().await?;
        self.messages += 1;
        Ok(())
    }
}
