//! The `[edge]` section: the IoT Edge module's connection to edgeHub (the rest comes from the
//! `IOTEDGE_*` variables).

use crate::units::{Invalid, Span};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `[edge]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// edgeHub's MQTT-over-TLS port on IOTEDGE_GATEWAYHOSTNAME.
    pub port: u16,
    /// The MQTT keep-alive: a link silent this long is taken for dead.
    pub keep_alive: Span,
    /// Lifetime of each SAS token; a fresh one is used (reconnecting) at 80% of it.
    pub token_ttl: Span,
    /// Pace of the collector status in the twin's reported properties (changes of the
    /// configuration are reported at once).
    pub status_interval: Span,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            port: 8883,
            keep_alive: Span(Duration::from_secs(60)),
            token_ttl: Span(Duration::from_secs(3600)),
            status_interval: Span(Duration::from_secs(300)),
        }
    }
}

impl EdgeConfig {
    /// Refuses a keep-alive IoT Hub does not accept and paces too fast to be useful.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.keep_alive.0 < Duration::from_secs(1)
            || self.keep_alive.0 > Duration::from_secs(1177)
        {
            return Err(Invalid::new(
                "edge.keep_alive",
                format!("{} is outside 1s..1177s (IoT Hub's limit)", self.keep_alive),
            ));
        }
        if self.token_ttl.0 < Duration::from_secs(5) {
            return Err(Invalid::new(
                "edge.token_ttl",
                format!("{} is too short (at least 5s)", self.token_ttl),
            ));
        }
        if self.status_interval.0 < Duration::from_secs(1) {
            return Err(Invalid::new(
                "edge.status_interval",
                format!("{} is too short (at least 1s)", self.status_interval),
            ));
        }
        Ok(())
    }
}
