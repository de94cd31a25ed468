//! The `[output]` section: which sink, and the file sink's file and rotation.

use crate::units::{Bytes, Invalid};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where messages go.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// edgeHub when the IoT Edge environment is present, else stdout.
    #[default]
    Auto,
    /// One JSON message per line on stdout.
    Stdout,
    /// Appended to a file, rotated by size.
    File,
    /// edgeHub, as module telemetry.
    EdgeHub,
}

/// The `[output]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Which sink.
    pub sink: SinkKind,
    /// For `file`: where messages are appended, one JSON message per line.
    pub file: PathBuf,
    /// For `file`: past this size the file rotates.
    pub max_file_size: Bytes,
    /// For `file`: rotated files kept (FILE.1 ... FILE.n).
    pub max_files: u32,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            sink: SinkKind::Auto,
            file: PathBuf::new(),
            max_file_size: Bytes(16 << 20),
            max_files: 4,
        }
    }
}

impl OutputConfig {
    /// Refuses a file sink without a file and a file too small to hold a message.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.sink == SinkKind::File && self.file.as_os_str().is_empty() {
            return Err(Invalid::new("output.file", "the file sink needs a file"));
        }
        if self.max_file_size.0 < 4096 {
            return Err(Invalid::new(
                "output.max_file_size",
                format!("{} is too small (at least 4KiB)", self.max_file_size),
            ));
        }
        Ok(())
    }
}
