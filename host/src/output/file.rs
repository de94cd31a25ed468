//! Messages as JSON lines in a file that rotates: past `max_size` the file becomes `FILE.1`,
//! `FILE.1` becomes `FILE.2`, and so on; the oldest beyond `keep` rotated files is deleted. The
//! disk used is bounded by about `(keep + 1) * max_size`.

use super::{Message, Sending, Sink, acknowledged};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Messages appended to a file, one per line, rotated by size.
pub struct FileSink {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: tokio::fs::File,
    size: u64,
}

impl FileSink {
    /// Appends to `path`, creating it if needed.
    pub async fn open(path: &Path, max_size: u64, keep: u32) -> std::io::Result<FileSink> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(FileSink {
            path: path.to_owned(),
            max_size: max_size.max(1),
            keep,
            file,
            size,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush().await?;
        if self.keep == 0 {
            tokio::fs::remove_file(&self.path).await?;
        } else {
            let _ = tokio::fs::remove_file(self.rotated(self.keep)).await;
            for n in (1..self.keep).rev() {
                match tokio::fs::rename(self.rotated(n), self.rotated(n + 1)).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            tokio::fs::rename(&self.path, self.rotated(1)).await?;
        }
        self.file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        self.size = 0;
        Ok(())
    }
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn send(&mut self, mut message: Message) -> Sending<'_> {
        Box::pin(async move {
            message.body.push(b'\n');
            let len = message.body.len() as u64;
            if self.size > 0 && self.size + len > self.max_size {
                self.rotate().await?;
            }
            self.file.write_all(&message.body).await?;
            self.file.flush().await?;
            self.size += len;
            Ok(acknowledged())
        })
    }
}
