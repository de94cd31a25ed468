//! The message envelope: `{"AgentVersion", "AgentId", "MessageSchemaVersion", "Events": [...]}`.
//! Events are queued already serialized; a message is the envelope's prefix, the events joined
//! by commas, and the suffix, so its size on the wire is known exactly while it is packed.

use crate::events::Family;
use std::path::Path;

/// The envelope schema version of the project's own message family (event kinds ASC lacks;
/// `schemas/edgeguard-message.json`).
pub const EDGEGUARD_SCHEMA_VERSION: &str = "edgeguard/1.0";

/// What closes a message after its events.
pub const SUFFIX: &[u8] = b"]}";

/// Room a message's envelope ([`prefix`] and [`SUFFIX`]) takes at most: an event larger than a
/// message less this can never be sent.
pub const MAX_ENVELOPE_BYTES: usize = 256;

/// Everything before the first event.
pub fn prefix(agent_id: &str, family: Family) -> Vec<u8> {
    let version = match family {
        Family::Asc => "1.0",
        Family::Edgeguard => EDGEGUARD_SCHEMA_VERSION,
    };
    let head = serde_json::json!({
        "AgentVersion": crate::AGENT_VERSION,
        "AgentId": agent_id,
        "MessageSchemaVersion": version,
    });
    let mut bytes = serde_json::to_vec(&head).expect("JSON");
    bytes.pop(); // the closing brace
    bytes.extend_from_slice(b",\"Events\":[");
    bytes
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
