//! `log`: plugin logs into the host's `tracing`, tagged with the plugin's name, bounded, and
//! escaped: a plugin's message is one line of text whatever it contains, so it can never forge
//! a host log line (a newline, a carriage return, terminal escapes).

use super::HostState;
use crate::wit::edgeguard::collector::log::{Host, Level};

/// Longer messages are cut: a plugin must not be able to flood the host's log with one line.
const MAX_MESSAGE: usize = 4096;

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        if !self.guard.allow_log_line() {
            return;
        }
        let message = escaped(&message, MAX_MESSAGE);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}

/// `message` on one line, at most about `max` bytes: control characters (C0, DEL, C1) and the
/// Unicode line and paragraph separators become escapes (`\n`, `\u{1b}`); a backslash is
/// doubled so an escape can not be faked; a longer message is cut and ends with `…`.
fn escaped(message: &str, max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(message.len().min(max) + 8);
    for c in message.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn a_message_stays_one_line_and_cannot_fake_an_escape() {
        let forged = "ok\n2026-12-01T00:00:00Z ERROR edgeguard: host compromised\r\x1b[2J\u{2028}\\n";
        let line = escaped(forged, 4096);
        assert!(!line.chars().any(|c| c.is_control() || c == '\u{2028}'), "{line}");
        assert_eq!(
            line,
            "ok\\n2026-12-01T00:00:00Z ERROR edgeguard: host compromised\\r\\u{1b}[2J\\u{2028}\\\\n"
        );
    }

    #[test]
    fn a_long_message_is_cut_on_a_character() {
        let line = escaped(&"é".repeat(5000), 4096);
        assert!(line.len() <= 4096 + 3 + 2, "{}", line.len());
        assert!(line.ends_with('…'));
        assert_eq!(escaped("short", 4096), "short");
    }
}
