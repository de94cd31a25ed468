//! What the collector and the analyzer SDKs share beside their bindings: configuration
//! readers, fingerprints, time formatting, and the log macros. Each SDK includes this file
//! (`#[path]`), so `crate::` names its own generated types.

use crate::{CollectError, Config, HostError};

impl CollectError {
    /// An `invalid-config` error naming the offending key.
    pub fn config(key: &str, problem: impl std::fmt::Display) -> Self {
        CollectError::InvalidConfig(format!("{key}: {problem}"))
    }
}

impl From<HostError> for CollectError {
    fn from(e: HostError) -> Self {
        CollectError::Host(e)
    }
}

/// Refuses a configuration with a key outside `known`, naming it and the keys that are.
pub fn config_keys(config: &Config, known: &[&str]) -> Result<(), CollectError> {
    match config.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(CollectError::config(
            key,
            format!("unknown key (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Reads an optional boolean from the configuration, with a clear error on a wrong type.
pub fn config_bool(config: &Config, key: &str, default: bool) -> Result<bool, CollectError> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(CollectError::config(
            key,
            format!("expected true or false, got {other}"),
        )),
    }
}

/// A 64-bit fingerprint of `value`, to tell whether something changed since a plugin last saw
/// it. Stable for a given build (std's `DefaultHasher` with its fixed keys), so it may be kept in
/// saved state; a plugin built by another Rust release may see a change once.
pub fn fingerprint(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A Unix time in nanoseconds as RFC 3339 UTC with microseconds (`2026-11-23T01:02:03.000004Z`),
/// without a date library in the plugin.
pub fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let micros = unix_nanos % 1_000_000_000 / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Logs through the host's `log` capability (the plugin must be granted `log`).
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::host::log::log($crate::host::log::Level::Info, &format!($($arg)*)) };
}
/// Logs at warn level through the host's `log` capability (the plugin must be granted `log`).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::host::log::log($crate::host::log::Level::Warn, &format!($($arg)*)) };
}
/// Logs at debug level through the host's `log` capability (the plugin must be granted `log`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::host::log::log($crate::host::log::Level::Debug, &format!($($arg)*)) };
}

/// The configuration `init` is given: a JSON object (null counts as empty).
pub fn parse_config(config: &str) -> Result<Config, CollectError> {
    match serde_json::from_str(config) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(serde_json::Value::Null) => Ok(Config::new()),
        Ok(other) => Err(CollectError::InvalidConfig(format!(
            "configuration must be an object, got {other}"
        ))),
        Err(e) => Err(CollectError::InvalidConfig(format!(
            "configuration is not JSON: {e}"
        ))),
    }
}
