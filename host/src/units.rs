//! The value types of the configuration: human-friendly durations ("10s", "1m30s", "250ms"),
//! byte sizes ("32MiB", "512KiB", 4096), and [`Invalid`], the error of a value that is refused,
//! naming its key. Every section of the configuration validates into it.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A refused value: the key at fault (`limits.memory`, `plugin[2].grants`, a twin path) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct Invalid {
    /// The key at fault.
    pub key: String,
    /// Why it is refused.
    pub reason: String,
}

impl Invalid {
    /// `key` refused for `reason`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A wait that doubles with each consecutive failure, from `first` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `first` to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after `failures` consecutive failures: `min(first * 2^(failures-1), max)`
    /// (`first` for the first failure, and for none).
    pub fn after(self, failures: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// The same with up to a quarter more at random, so that peers failing together (devices
    /// restarted at once, collectors of one daemon) do not retry in step.
    pub fn after_with_jitter(self, failures: u32) -> Duration {
        self.after(failures).mul_f64(1.0 + fastrand::f64() * 0.25)
    }
}

/// A duration written as a sequence of `<number><unit>` with units ms, s, m, h, d.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// Parses `10s`, `1m30s`, `250ms`, `1h`, `2d`.
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty duration".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "`{text}` is not a duration (expected e.g. 10s, 5m, 250ms)"
                ));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("`{text}`: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86400)),
                "" => return Err(format!("`{text}`: missing unit (ms, s, m, h or d)")),
                other => {
                    return Err(format!(
                        "`{text}`: unknown unit `{other}` (ms, s, m, h or d)"
                    ));
                }
            };
            total = total.saturating_add(unit);
            rest = &rest[unit_len..];
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Span::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A byte count: an integer, or a string with a unit B, KiB, MiB, GiB (or KB, MB, GB as powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Parses `4096`, `512KiB`, `32MiB`, `1GiB` (and KB, MB, GB as powers of ten).
    pub fn parse(text: &str) -> Result<Bytes, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if split == 0 {
            return Err(format!(
                "`{text}` is not a size (expected e.g. 32MiB or 65536)"
            ));
        }
        let n: u64 = text[..split]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        let factor: u64 = match text[split..].trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        n.checked_mul(factor)
            .map(Bytes)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n != 0 && n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            n if n != 0 && n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            n if n != 0 && n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            n => write!(f, "{n}B"),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count such as 33554432 or \"32MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
                u64::try_from(v)
                    .map(Bytes)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                Bytes::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_doubles_from_its_first_wait_to_its_ceiling() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let waits: Vec<u64> = [0, 1, 2, 3, 7, 8, 40]
            .iter()
            .map(|n| b.after(*n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 250, 500, 1000, 16_000, 30_000, 30_000]);
        for n in 1..10 {
            let d = b.after_with_jitter(n);
            assert!(
                d >= b.after(n) && d <= b.after(n).mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
    }

    #[test]
    fn spans() {
        assert_eq!(Span::parse("10s").unwrap().0, Duration::from_secs(10));
        assert_eq!(Span::parse("1m30s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Span::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Span::parse("2h").unwrap().to_string(), "2h");
        assert!(Span::parse("10").unwrap_err().contains("missing unit"));
        assert!(Span::parse("5x").unwrap_err().contains("unknown unit"));
        assert!(Span::parse("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(Bytes::parse("32MiB").unwrap().0, 32 << 20);
        assert_eq!(Bytes::parse("4096").unwrap().0, 4096);
        assert_eq!(Bytes::parse("2KB").unwrap().0, 2000);
        assert_eq!(Bytes(64 << 20).to_string(), "64MiB");
        assert!(Bytes::parse("12 parsecs").is_err());
        assert!(Bytes::parse("99999999999GiB").is_err());
    }
}
