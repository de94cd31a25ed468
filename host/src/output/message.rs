//! The ASC security message envelope: AgentVersion, AgentId, MessageSchemaVersion, Events.

use crate::events::{Family, SecurityEvent};
use serde_json::{Value, json};
use std::path::Path;

/// The envelope schema version of the project's own message family (event kinds ASC lacks).
pub const EDGEGUARD_SCHEMA_VERSION: &str = "edgeguard/1.0";

pub struct MessageBuilder {
    agent_id: String,
}

impl MessageBuilder {
    pub fn new(agent_id: String) -> MessageBuilder {
        MessageBuilder { agent_id }
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// One message per family present in `events`, ASC first; none for no events.
    pub fn build(&self, events: &[SecurityEvent]) -> Vec<Value> {
        [(Family::Asc, "1.0"), (Family::Edgeguard, EDGEGUARD_SCHEMA_VERSION)]
            .into_iter()
            .filter_map(|(family, version)| {
                let items: Vec<Value> = events.iter().filter(|e| e.family == family).map(SecurityEvent::to_json).collect();
                (!items.is_empty()).then(|| {
                    json!({
                        "AgentVersion": crate::AGENT_VERSION,
                        "AgentId": self.agent_id,
                        "MessageSchemaVersion": version,
                        "Events": items,
                    })
                })
            })
            .collect()
    }
}

/// The host's machine-id as a GUID (the ASC AgentId is a 36-character GUID), so the same
/// device keeps the same id across reinstalls of the agent.
pub fn agent_id_from_host(host_root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(host_root.join("etc/machine-id")).ok()?;
    let hex = text.trim();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(uuid::Uuid::parse_str(hex).ok()?.hyphenated().to_string())
}
