//! The fleet's sections of the file: `[[plugin]]` (each collector: its component, pin,
//! signature, grants, schedule, limits and configuration) and `[remote]` (where trust in
//! plugins from elsewhere is rooted).

use crate::capabilities::Capability;
use crate::runtime::limits::LimitOverrides;
use crate::scheduler::Group;
use crate::units::{Bytes, Invalid, Span};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One `[[plugin]]` of the file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name; events and diagnostics name the plugin by it.
    pub name: String,
    /// The component: a file, relative to the plugin directory unless absolute, or an
    /// http(s) URL (which needs `sha256`).
    #[serde(alias = "source")]
    pub file: PathBuf,
    /// The component's SHA-256 (hex); when given, other bytes are refused.
    pub sha256: Option<String>,
    /// An ed25519 signature over the component's bytes.
    pub signature: Option<SignatureConfig>,
    /// Capabilities the plugin may import (`log`, `clock`, `processes`, `filesystem`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Read-only directories of the host (under the host root) visible to a plugin granted `filesystem`.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// Typed kinds it may emit without the capability that observes them: a custom collector
    /// that observes logins another way (an auth log it reads) attests `Login`.
    #[serde(default)]
    pub attests: Vec<String>,
    /// Overrides the plugin's self-described priority group.
    pub group: Option<Group>,
    /// Overrides the group's interval for this plugin.
    pub interval: Option<Span>,
    /// False: loaded and idle.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides of the `[limits]` defaults.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Handed to the plugin's `init` as a JSON object.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

impl PluginConfig {
    /// What only the file can get wrong: the name, the file, a URL without its pin. The rest
    /// is checked on the collector it describes, as for the twin's ([`super::spec`]).
    pub fn check(&self, at: &str) -> Result<(), Invalid> {
        if !is_collector_name(&self.name) {
            return Err(Invalid::new(
                format!("{at}.name"),
                format!(
                    "`{}` must be non-empty and use only letters, digits, - and _",
                    self.name
                ),
            ));
        }
        if self.file.as_os_str().is_empty() {
            return Err(Invalid::new(
                format!("{at}.file"),
                "must name the plugin's component file",
            ));
        }
        if is_url(&self.file.to_string_lossy()) && self.sha256.is_none() {
            return Err(Invalid::new(
                format!("{at}.sha256"),
                "a plugin from a URL needs its sha256",
            ));
        }
        Ok(())
    }
}

/// A plugin signature: the name of the key (in `[remote] signing_keys`) and the signature.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// The name of the key in `[remote] signing_keys`.
    pub key: String,
    /// Base64 of the 64-byte ed25519 signature over the component's bytes.
    pub ed25519: String,
}

/// Plugins that come from elsewhere: the module twin's collector set and http(s) sources. The
/// trust in them is rooted here, in the local file: the twin can name a plugin and pin its
/// digest, never add a key or widen what it may grant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Ed25519 public keys (base64 of the 32 bytes) that may sign plugins, by name; a
    /// signature names the key it was made with.
    pub signing_keys: BTreeMap<String, String>,
    /// Accept an http(s) plugin without a signature (its sha256 is still checked).
    pub allow_unsigned: bool,
    /// The capabilities the module twin may grant a collector.
    pub twin_grants: Vec<String>,
    /// The typed kinds the module twin may let a collector attest (none: only this file can).
    pub twin_attests: Vec<String>,
    /// PEM file of the roots https sources are checked against; empty: the host's
    /// `etc/ssl/certs/ca-certificates.crt` under the host root.
    pub ca_file: PathBuf,
    /// Largest plugin component accepted from anywhere.
    pub max_plugin_size: Bytes,
    /// A download that takes longer fails.
    pub fetch_timeout: Span,
    /// Compiled plugins no collector uses that the cache keeps (most recent first), so that
    /// swapping back to one is instant.
    pub keep_unused: usize,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            signing_keys: BTreeMap::new(),
            allow_unsigned: false,
            twin_grants: Capability::twin_grantable()
                .map(|c| c.name().to_owned())
                .collect(),
            twin_attests: Vec::new(),
            ca_file: PathBuf::new(),
            max_plugin_size: Bytes(32 << 20),
            fetch_timeout: Span(Duration::from_secs(60)),
            keep_unused: 8,
        }
    }
}

impl RemoteConfig {
    /// Refuses a key that is not an ed25519 public key and a grant that names no capability.
    pub fn check(&self) -> Result<(), Invalid> {
        for (name, key) in &self.signing_keys {
            super::trust::public_key(key)
                .map_err(|m| Invalid::new(format!("remote.signing_keys.{name}"), m))?;
        }
        if let Some(g) = self
            .twin_grants
            .iter()
            .find(|g| Capability::from_name(g).is_none())
        {
            return Err(Invalid::new("remote.twin_grants", unknown_capability(g)));
        }
        for kind in &self.twin_attests {
            crate::scheduler::authority::attestable(kind)
                .map_err(|m| Invalid::new("remote.twin_attests", m))?;
        }
        Ok(())
    }
}

/// Letters, digits, `-` and `_`, and not empty: a collector's name is a file name and a key.
pub fn is_collector_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 64 hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An http or https URL.
pub fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

pub(crate) fn unknown_capability(name: &str) -> String {
    format!(
        "unknown capability `{name}` (known: {})",
        Capability::names().join(", ")
    )
}

fn yes() -> bool {
    true
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
