//! What a plugin may say, and the mark of who said it.
//!
//! Analysis judges evidence, so where each event came from must be certain. A plugin may emit
//! only the kinds its self-description declares; a typed ASC kind only with the capability
//! that observes it (a `Login` needs `logins`: a plugin granted `log` alone cannot report a
//! root login from sshd); never the host's operational kinds (diagnostics and the statistics
//! that report drops, which have a share of the cache of their own); and a custom event never
//! takes the name of a typed kind. Every event it may emit is marked with the plugin it came
//! from, in its ExtraDetails: the configured name, the version it describes, and the digest of
//! its component, the one thing about it no plugin can choose.
//!
//! A custom collector may observe a typed kind some other way (logins from an auth log it reads
//! with `filesystem`): its configuration can say it attests that kind ([`attestable`]), and then
//! it needs no capability for it. Strict by default: nothing is attested unless configured.

use crate::capabilities::Capability;
use crate::events::PROVENANCE_KEYS;
use crate::pipeline::asc_config::OPERATIONAL_EVENTS;
use crate::sandbox::LoadedPlugin;
use crate::wit::edgeguard::collector::types::Event;
use serde_json::Value;

/// The typed kinds and the capability that observes each.
const OBSERVED_BY: [(&str, Capability); 7] = [
    ("ProcessCreate", Capability::Processes),
    ("ProcessTerminate", Capability::Processes),
    ("ConnectionCreate", Capability::Sockets),
    ("ListeningPorts", Capability::Sockets),
    ("Login", Capability::Logins),
    ("LocalUsers", Capability::System),
    ("SystemInformation", Capability::System),
];

/// Kinds only the host emits: its diagnostics and the ASC operational events.
fn host_only(name: &str) -> bool {
    name == "Diagnostic" || OPERATIONAL_EVENTS.contains(&name)
}

/// The name an event has, and whether it is a custom one.
fn kind(event: &Event) -> (&str, bool) {
    match event {
        Event::ProcessCreate(_) => ("ProcessCreate", false),
        Event::ProcessTerminate(_) => ("ProcessTerminate", false),
        Event::ConnectionCreate(_) => ("ConnectionCreate", false),
        Event::ListeningPorts(_) => ("ListeningPorts", false),
        Event::Login(_) => ("Login", false),
        Event::LocalUsers(_) => ("LocalUsers", false),
        Event::SystemInformation(_) => ("SystemInformation", false),
        Event::Heartbeat => ("Heartbeat", false),
        Event::Custom(c) => (c.name.as_str(), true),
    }
}

/// Whether a collector may be configured to attest `name` without the capability that
/// observes it: only the typed kinds a capability observes can be.
pub fn attestable(name: &str) -> Result<(), String> {
    if host_only(name) {
        return Err(format!(
            "`{name}` comes only from the host and no collector can attest it"
        ));
    }
    if OBSERVED_BY.iter().any(|(k, _)| *k == name) {
        return Ok(());
    }
    let kinds: Vec<&str> = OBSERVED_BY.iter().map(|(k, _)| *k).collect();
    Err(format!(
        "`{name}` is not a typed kind a capability observes (one of {}); custom kinds need no attestation",
        kinds.join(", ")
    ))
}

/// Why `plugin` may not emit `event`, if it may not; `attests`: the typed kinds its
/// configuration lets it emit without the capability that observes them.
pub fn refusal(plugin: &LoadedPlugin, attests: &[String], event: &Event) -> Option<String> {
    let (name, custom) = kind(event);
    if host_only(name) {
        return Some(format!("{name} events come only from the host"));
    }
    let typed = name == "Heartbeat" || OBSERVED_BY.iter().any(|(k, _)| *k == name);
    if custom && typed {
        return Some(format!(
            "a custom event may not be named {name}, a typed kind of the contract"
        ));
    }
    if !plugin.info.events.iter().any(|e| e == name) {
        return Some(format!(
            "{} is not among the kinds its self-description declares",
            crate::events::shown_name(name)
        ));
    }
    if let Some((_, needed)) = OBSERVED_BY.iter().find(|(k, _)| *k == name)
        && !plugin.grants.contains(needed)
        && !attests.iter().any(|a| a == name)
    {
        return Some(format!(
            "{name} needs the `{}` capability, which observes it, and the plugin is neither granted it nor configured to attest {name}",
            needed.name()
        ));
    }
    None
}

/// Marks every payload item of an event with the plugin it came from; what the plugin put
/// under the same keys is replaced.
pub fn mark(plugin: &LoadedPlugin, payload: &mut [Value]) {
    let digest = &plugin.sha256[..plugin.sha256.len().min(16)];
    let values = [plugin.name.as_ref(), plugin.info.version.as_str(), digest];
    for item in payload {
        let Value::Object(item) = item else { continue };
        let details = item.entry("ExtraDetails").or_insert_with(|| {
            Value::Object(serde_json::Map::with_capacity(PROVENANCE_KEYS.len()))
        });
        if let Value::Object(details) = details {
            for (key, value) in PROVENANCE_KEYS.iter().zip(values) {
                details.insert((*key).to_owned(), Value::from(value));
            }
        }
    }
}
