//! The local configuration file (TOML). Everything has a default, so an empty file is valid;
//! unknown keys and bad values are refused with the key's name.

use crate::capabilities::Capability;
use crate::pipeline::aggregation::Rule;
use crate::pipeline::asc_config::{AgentConfiguration, Priority};
use crate::pipeline::settings::{EventSettings, Settings};
use crate::units::{Bytes, Span};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration compiled into the binary: every built-in plugin, local output.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/edgeguard.toml");

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Defaults for every plugin; each plugin may override any of them.
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// The ASC agent configuration object, keys as in the module twin; a value may be given
    /// bare or wrapped as `{ value = ... }`.
    #[serde(default)]
    pub asc: toml::Table,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Per event kind: priority and aggregation of the project's own kinds, identities of all.
    #[serde(default)]
    pub events: BTreeMap<String, EventConfig>,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub edge: EdgeConfig,
    #[serde(default)]
    pub remote: RemoteConfig,
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
            // Everything but `filesystem`: the twin should not pick which host files a plugin reads.
            twin_grants: Capability::ALL
                .iter()
                .filter(|c| **c != Capability::Filesystem)
                .map(|c| c.name().to_owned())
                .collect(),
            ca_file: PathBuf::new(),
            max_plugin_size: Bytes(32 << 20),
            fetch_timeout: Span(Duration::from_secs(60)),
            keep_unused: 8,
        }
    }
}

/// Command-line settings that win over the configuration file (also after a reload).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub plugin_dir: Option<PathBuf>,
    pub host_root: Option<PathBuf>,
    pub docker_socket: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        let set = |slot: &mut PathBuf, value: &Option<PathBuf>| {
            if let Some(v) = value {
                *slot = v.clone();
            }
        };
        set(&mut config.agent.plugin_dir, &self.plugin_dir);
        set(&mut config.agent.host_root, &self.host_root);
        set(&mut config.agent.docker_socket, &self.docker_socket);
        set(&mut config.agent.cache_dir, &self.cache_dir);
        set(&mut config.pipeline.state_dir, &self.state_dir);
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Queued events, open aggregation windows, counters. Empty: /var/lib/edgeguard for root,
    /// else $XDG_STATE_HOME/edgeguard or ~/.local/state/edgeguard.
    pub state_dir: PathBuf,
    /// How often queued events are flushed to the device (fsync); a crash of the process loses
    /// nothing in between, a power cut may.
    pub sync_interval: Span,
    /// Messages handed to the sink and not yet acknowledged.
    pub max_in_flight: usize,
    /// Distinct events an aggregation window may hold before it closes early.
    pub aggregation_max_entries: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let d = Settings::default();
        PipelineConfig {
            state_dir: PathBuf::new(),
            sync_interval: Span(d.sync_interval),
            max_in_flight: d.max_in_flight,
            aggregation_max_entries: d.aggregation_max_entries,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// "High", "Low" or "Off" (any case); not for ASC event kinds (their priority is in [asc]).
    pub priority: Option<String>,
    pub aggregate: Option<bool>,
    pub aggregation_interval: Option<Span>,
    /// The fields that make two events identical: `Field`, `ExtraDetails.Key`, `Field when Other=Value`.
    pub aggregate_by: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// edgeHub when the IoT Edge environment is present, else stdout.
    #[default]
    Auto,
    Stdout,
    File,
    EdgeHub,
}

/// The IoT Edge module's connection to edgeHub (the rest comes from the IOTEDGE_* variables).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// edgeHub's MQTT-over-TLS port on IOTEDGE_GATEWAYHOSTNAME.
    pub port: u16,
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The AgentId of every message; empty: derived from the host's machine-id.
    #[serde(default)]
    pub id: String,
    /// Where the host's `/` is visible (e.g. `/host` in a container that binds it there).
    #[serde(default = "default_host_root")]
    pub host_root: PathBuf,
    /// Directory of plugin files; empty: `plugins/` beside the executable.
    #[serde(default)]
    pub plugin_dir: PathBuf,
    /// Compiled-plugin cache; empty: `/var/cache/edgeguard` for root, else `~/.cache/edgeguard`.
    #[serde(default)]
    pub cache_dir: PathBuf,
    /// The Docker daemon's socket, for plugins granted `containers`; a path of edgeguard's own
    /// filesystem. Empty: `var/run/docker.sock` under the host root.
    #[serde(default)]
    pub docker_socket: PathBuf,
    /// Follow the kernel's event sources (the proc connector, the socket destroy
    /// notifications) where it offers them, so that short-lived processes and connections are
    /// seen; false: collectors poll only.
    #[serde(default = "yes")]
    pub kernel_events: bool,
    /// Events kept per collector and event source between two of its collections; past half
    /// of it the collector is woken early, past all of it events are counted as lost.
    #[serde(default = "default_event_buffer")]
    pub event_buffer: usize,
    /// What the kernel may hold for each event source's socket before it drops events.
    #[serde(default = "default_kernel_buffer")]
    pub kernel_buffer: Bytes,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            id: String::new(),
            host_root: default_host_root(),
            plugin_dir: PathBuf::new(),
            cache_dir: PathBuf::new(),
            docker_socket: PathBuf::new(),
            kernel_events: true,
            event_buffer: default_event_buffer(),
            kernel_buffer: default_kernel_buffer(),
        }
    }
}

impl AgentConfig {
    pub fn docker_socket(&self) -> PathBuf {
        if self.docker_socket.as_os_str().is_empty() {
            self.host_root.join("var/run/docker.sock")
        } else {
            self.docker_socket.clone()
        }
    }

    /// How the capabilities reach the host.
    pub fn host_options(&self) -> crate::capabilities::HostOptions {
        crate::capabilities::HostOptions {
            docker_socket: self.docker_socket(),
            kernel_events: self.kernel_events,
            event_buffer: self.event_buffer,
            kernel_buffer: self.kernel_buffer.0 as usize,
        }
    }
}

fn default_event_buffer() -> usize {
    crate::capabilities::HostOptions::DEFAULT_EVENT_BUFFER
}

fn default_kernel_buffer() -> Bytes {
    Bytes(crate::capabilities::HostOptions::DEFAULT_KERNEL_BUFFER as u64)
}

fn default_host_root() -> PathBuf {
    PathBuf::from("/")
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default = "ScheduleConfig::default_high")]
    pub high: Span,
    #[serde(default = "ScheduleConfig::default_medium")]
    pub medium: Span,
    #[serde(default = "ScheduleConfig::default_low")]
    pub low: Span,
    /// Each plugin's first collection is delayed by a random fraction of this, so that a fleet
    /// of devices started together does not collect (and send) in lockstep.
    #[serde(default = "ScheduleConfig::default_jitter")]
    pub first_collection_jitter: Span,
    /// Collections running at once, across all plugins.
    #[serde(default = "ScheduleConfig::default_concurrency")]
    pub max_concurrent: usize,
}

impl ScheduleConfig {
    fn default_high() -> Span {
        Span(Duration::from_secs(10))
    }
    fn default_medium() -> Span {
        Span(Duration::from_secs(60))
    }
    fn default_low() -> Span {
        Span(Duration::from_secs(15 * 60))
    }
    fn default_jitter() -> Span {
        Span(Duration::from_secs(5))
    }
    fn default_concurrency() -> usize {
        4
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            high: Self::default_high(),
            medium: Self::default_medium(),
            low: Self::default_low(),
            first_collection_jitter: Self::default_jitter(),
            max_concurrent: Self::default_concurrency(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    High,
    Medium,
    Low,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::High, Group::Medium, Group::Low];
    pub fn name(self) -> &'static str {
        match self {
            Group::High => "high",
            Group::Medium => "medium",
            Group::Low => "low",
        }
    }
}

impl ScheduleConfig {
    pub fn interval(&self, group: Group) -> Duration {
        match group {
            Group::High => self.high.0,
            Group::Medium => self.medium.0,
            Group::Low => self.low.0,
        }
    }
}

/// Per-plugin sandbox limits. In the `[limits]` table every field is the default; in a plugin's
/// own `limits` table only the fields given override it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub memory: Option<Bytes>,
    // The module twin spells keys in camelCase, as it reports them.
    #[serde(alias = "callTimeout")]
    pub call_timeout: Option<Span>,
    #[serde(alias = "maxEventsPerCall")]
    pub max_events_per_call: Option<u32>,
    #[serde(alias = "restartBackoff")]
    pub restart_backoff: Option<Span>,
    #[serde(alias = "restartBackoffMax")]
    pub restart_backoff_max: Option<Span>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to.
    pub memory: Bytes,
    /// CPU (wall) time one call may take; past it the call is interrupted.
    pub call_timeout: Span,
    /// Events one `collect` may return; more is a fault.
    pub max_events_per_call: u32,
    /// First delay before a faulted plugin is re-instantiated; doubles per consecutive fault.
    pub restart_backoff: Span,
    pub restart_backoff_max: Span,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Bytes(32 << 20),
            call_timeout: Span(Duration::from_secs(2)),
            max_events_per_call: 5000,
            restart_backoff: Span(Duration::from_secs(1)),
            restart_backoff_max: Span(Duration::from_secs(300)),
        }
    }
}

impl Limits {
    pub fn with(&self, o: &LimitOverrides) -> Limits {
        Limits {
            memory: o.memory.unwrap_or(self.memory),
            call_timeout: o.call_timeout.unwrap_or(self.call_timeout),
            max_events_per_call: o.max_events_per_call.unwrap_or(self.max_events_per_call),
            restart_backoff: o.restart_backoff.unwrap_or(self.restart_backoff),
            restart_backoff_max: o.restart_backoff_max.unwrap_or(self.restart_backoff_max),
        }
    }
}

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
    /// Overrides the plugin's self-described priority group.
    pub group: Option<Group>,
    /// Overrides the group's interval for this plugin.
    pub interval: Option<Span>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Handed to the plugin's `init` as a JSON object.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

/// A plugin signature: the name of the key (in `[remote] signing_keys`) and the signature.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    pub key: String,
    /// Base64 of the 64-byte ed25519 signature over the component's bytes.
    pub ed25519: String,
}

fn yes() -> bool {
    true
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn embedded_default() -> Config {
        Self::parse(EMBEDDED_DEFAULT, "embedded default")
            .expect("the embedded default configuration is valid")
    }

    /// Parses and validates; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let s = &self.schedule;
        for (key, span) in [
            ("schedule.high", s.high),
            ("schedule.medium", s.medium),
            ("schedule.low", s.low),
        ] {
            if span.0 < Duration::from_millis(10) {
                return Err((
                    key.into(),
                    format!("interval {span} is too short (at least 10ms)"),
                ));
            }
        }
        if s.max_concurrent == 0 {
            return Err((
                "schedule.max_concurrent".into(),
                "must be at least 1".into(),
            ));
        }
        check_limits("limits", &self.limits)?;
        if !(4 << 10..=1 << 30).contains(&self.agent.kernel_buffer.0) {
            return Err((
                "agent.kernel_buffer".into(),
                format!("{} is outside 4KiB..1GiB", self.agent.kernel_buffer),
            ));
        }
        if !(16..=1 << 20).contains(&self.agent.event_buffer) {
            return Err((
                "agent.event_buffer".into(),
                format!("{} is outside 16..1048576 events", self.agent.event_buffer),
            ));
        }
        self.pipeline_settings()?;
        if self.output.sink == SinkKind::File && self.output.file.as_os_str().is_empty() {
            return Err(("output.file".into(), "the file sink needs a file".into()));
        }
        let e = &self.edge;
        if e.keep_alive.0 < Duration::from_secs(1) || e.keep_alive.0 > Duration::from_secs(1177) {
            return Err((
                "edge.keep_alive".into(),
                format!("{} is outside 1s..1177s (IoT Hub's limit)", e.keep_alive),
            ));
        }
        if e.token_ttl.0 < Duration::from_secs(5) {
            return Err((
                "edge.token_ttl".into(),
                format!("{} is too short (at least 5s)", e.token_ttl),
            ));
        }
        if e.status_interval.0 < Duration::from_secs(1) {
            return Err((
                "edge.status_interval".into(),
                format!("{} is too short (at least 1s)", e.status_interval),
            ));
        }
        for (name, key) in &self.remote.signing_keys {
            crate::fleet::trust::public_key(key)
                .map_err(|m| (format!("remote.signing_keys.{name}"), m))?;
        }
        if let Some(g) = self
            .remote
            .twin_grants
            .iter()
            .find(|g| Capability::from_name(g).is_none())
        {
            return Err((
                "remote.twin_grants".into(),
                format!(
                    "unknown capability `{g}` (known: {})",
                    Capability::names().join(", ")
                ),
            ));
        }
        if self.output.max_file_size.0 < 4096 {
            return Err((
                "output.max_file_size".into(),
                format!("{} is too small (at least 4KiB)", self.output.max_file_size),
            ));
        }

        let mut names = HashSet::new();
        for (i, p) in self.plugins.iter().enumerate() {
            let at = |field: &str| format!("plugin[{i}].{field}");
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    at("name"),
                    format!(
                        "`{}` must be non-empty and use only letters, digits, - and _",
                        p.name
                    ),
                ));
            }
            if !names.insert(&p.name) {
                return Err((at("name"), format!("`{}` is used by two plugins", p.name)));
            }
            if p.file.as_os_str().is_empty() {
                return Err((at("file"), "must name the plugin's component file".into()));
            }
            if let Some(sha) = &p.sha256
                && !is_sha256(sha)
            {
                return Err((
                    at("sha256"),
                    format!("`{sha}` is not a SHA-256 (64 hex digits)"),
                ));
            }
            if is_url(&p.file.to_string_lossy()) && p.sha256.is_none() {
                return Err((at("sha256"), "a plugin from a URL needs its sha256".into()));
            }
            let mut grants = HashSet::new();
            for g in &p.grants {
                if Capability::from_name(g).is_none() {
                    return Err((
                        at("grants"),
                        format!(
                            "unknown capability `{g}` (known: {})",
                            Capability::names().join(", ")
                        ),
                    ));
                }
                if !grants.insert(g) {
                    return Err((at("grants"), format!("`{g}` is granted twice")));
                }
            }
            if !p.dirs.is_empty() && !grants.contains(&"filesystem".to_string()) {
                return Err((
                    at("dirs"),
                    "directories are given but `filesystem` is not granted".into(),
                ));
            }
            if let Some(d) = p.dirs.iter().find(|d| !d.is_absolute()) {
                return Err((
                    at("dirs"),
                    format!("`{}` must be an absolute path", d.display()),
                ));
            }
            if let Some(span) = p.interval
                && span.0 < Duration::from_millis(10)
            {
                return Err((
                    at("interval"),
                    format!("interval {span} is too short (at least 10ms)"),
                ));
            }
            check_limits(&at("limits"), &self.limits.with(&p.limits))?;
            if !p.config.is_object() {
                return Err((at("config"), "must be a table".into()));
            }
        }
        Ok(())
    }

    /// The ASC configuration object as the twin carries it: every value `{"value": ...}`.
    pub fn asc_object(&self) -> serde_json::Value {
        let wrapped = self
            .asc
            .iter()
            .map(|(k, v)| {
                let v = serde_json::to_value(v).expect("TOML is JSON-compatible");
                let is_wrapped = v
                    .as_object()
                    .is_some_and(|o| o.len() == 1 && o.contains_key("value"));
                (
                    k.clone(),
                    if is_wrapped {
                        v
                    } else {
                        serde_json::json!({ "value": v })
                    },
                )
            })
            .collect();
        serde_json::Value::Object(wrapped)
    }

    /// The pipeline's settings, validated; errors name the key.
    pub fn pipeline_settings(&self) -> Result<Settings, (String, String)> {
        let asc = AgentConfiguration::parse(&self.asc_object(), &AgentConfiguration::default())
            .map_err(|refused| {
                let first = &refused.issues[0];
                (format!("asc.{}", first.name), first.message.clone())
            })?;
        self.pipeline_settings_with(asc)
    }

    /// The pipeline's settings around a given ASC configuration (e.g. the module twin's).
    pub fn pipeline_settings_with(
        &self,
        asc: AgentConfiguration,
    ) -> Result<Settings, (String, String)> {
        let p = &self.pipeline;
        if p.sync_interval.0 < Duration::from_millis(10) {
            return Err((
                "pipeline.sync_interval".into(),
                format!("{} is too short (at least 10ms)", p.sync_interval),
            ));
        }
        if p.max_in_flight == 0 {
            return Err(("pipeline.max_in_flight".into(), "must be at least 1".into()));
        }
        if p.aggregation_max_entries == 0 {
            return Err((
                "pipeline.aggregation_max_entries".into(),
                "must be at least 1".into(),
            ));
        }
        let mut events = BTreeMap::new();
        for (name, e) in &self.events {
            let at = |field: &str| format!("events.{name}.{field}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err((
                    format!("events.{name}"),
                    "an event name is ASCII letters and digits".into(),
                ));
            }
            let priority = match &e.priority {
                None => None,
                Some(text) => Some(Priority::parse(text).ok_or_else(|| {
                    (
                        at("priority"),
                        format!("`{text}`: expected High, Low or Off"),
                    )
                })?),
            };
            if let Some(span) = e.aggregation_interval
                && span.0.is_zero()
            {
                return Err((
                    at("aggregation_interval"),
                    "must be longer than zero".into(),
                ));
            }
            let aggregate_by = match &e.aggregate_by {
                None => None,
                Some(specs) => Some(Rule::parse(specs).map_err(|m| (at("aggregate_by"), m))?),
            };
            events.insert(
                name.clone(),
                EventSettings {
                    priority,
                    aggregate: e.aggregate,
                    aggregation_interval: e.aggregation_interval.map(|s| s.0),
                    aggregate_by,
                },
            );
        }
        let settings = Settings {
            asc,
            events,
            max_in_flight: p.max_in_flight,
            sync_interval: p.sync_interval.0,
            aggregation_max_entries: p.aggregation_max_entries,
        };
        settings
            .check_events()
            .map_err(|(name, message)| (format!("events.{name}"), message))?;
        Ok(settings)
    }

    /// The pipeline's state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        resolve_dir(
            &self.pipeline.state_dir,
            "/var/lib/edgeguard",
            "XDG_STATE_HOME",
            ".local/state",
            "edgeguard-state",
        )
    }

    /// The plugin directory, resolved.
    pub fn plugin_dir(&self) -> PathBuf {
        if !self.agent.plugin_dir.as_os_str().is_empty() {
            return self.agent.plugin_dir.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("plugins")))
            .unwrap_or_else(|| PathBuf::from("plugins"))
    }

    /// The compiled-artifact cache directory, resolved.
    pub fn cache_dir(&self) -> PathBuf {
        resolve_dir(
            &self.agent.cache_dir,
            "/var/cache/edgeguard",
            "XDG_CACHE_HOME",
            ".cache",
            "edgeguard-cache",
        )
    }

    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.plugin_dir().join(&plugin.file)
    }

    /// The settings a reload cannot change in a running agent (they hold open files, sockets
    /// and identities): the names of those that differ from `other`.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        fn json<T: Serialize>(value: &T) -> serde_json::Value {
            serde_json::to_value(value).unwrap_or_default()
        }
        let mut changed = Vec::new();
        for (name, a, b) in [
            ("agent", json(&self.agent), json(&other.agent)),
            ("output", json(&self.output), json(&other.output)),
            ("edge", json(&self.edge), json(&other.edge)),
            (
                "pipeline.state_dir",
                json(&self.pipeline.state_dir),
                json(&other.pipeline.state_dir),
            ),
            (
                "schedule.first_collection_jitter",
                json(&self.schedule.first_collection_jitter),
                json(&other.schedule.first_collection_jitter),
            ),
            (
                "schedule.max_concurrent",
                json(&self.schedule.max_concurrent),
                json(&other.schedule.max_concurrent),
            ),
        ] {
            if a != b {
                changed.push(name);
            }
        }
        changed
    }
}

pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn is_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}

/// A directory setting: as given; empty means the system place for root, else the XDG place
/// (`$<xdg_var>/edgeguard`, or `~/<home_default>/edgeguard`), else a temporary one.
fn resolve_dir(given: &Path, root: &str, xdg_var: &str, home_default: &str, temp: &str) -> PathBuf {
    if !given.as_os_str().is_empty() {
        return given.to_owned();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(root);
    }
    match std::env::var_os(xdg_var)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(home_default).into()))
    {
        Some(base) => Path::new(&base).join("edgeguard"),
        None => std::env::temp_dir().join(temp),
    }
}

pub(crate) fn check_limits(key: &str, l: &Limits) -> Result<(), (String, String)> {
    if l.memory.0 < (1 << 20) || l.memory.0 > (4 << 30) {
        return Err((
            format!("{key}.memory"),
            format!("{} is out of range (1MiB to 4GiB)", l.memory),
        ));
    }
    if l.call_timeout.0 < Duration::from_millis(10) {
        return Err((
            format!("{key}.call_timeout"),
            format!("{} is too short (at least 10ms)", l.call_timeout),
        ));
    }
    if l.max_events_per_call == 0 {
        return Err((
            format!("{key}.max_events_per_call"),
            "must be at least 1".into(),
        ));
    }
    if l.restart_backoff.0.is_zero() || l.restart_backoff_max < l.restart_backoff {
        return Err((
            format!("{key}.restart_backoff"),
            "must be positive and not above restart_backoff_max".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test").unwrap_err().to_string()
    }

    #[test]
    fn empty_and_embedded_are_valid() {
        let c = Config::parse("", "test").unwrap();
        assert_eq!(c.schedule.high.0, Duration::from_secs(10));
        assert!(c.plugins.is_empty());
        assert!(!Config::embedded_default().plugins.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[schedule]\nhihg = \"1s\"").contains("hihg"));
        assert!(err("[schedule]\nhigh = \"1 parsec\"").contains("high"));
        assert!(err("[schedule]\nhigh = \"1ms\"").contains("schedule.high"));
        assert!(err("[limits]\nmemory = \"12KiB\"").contains("limits.memory"));
        let p = "[[plugin]]\nname = \"a\"\nfile = \"a.wasm\"\n";
        assert!(err(&format!("{p}grants = [\"proc\"]")).contains("plugin[0].grants"));
        assert!(err(&format!("{p}{p}")).contains("plugin[1].name"));
        assert!(
            err(&format!("{p}limits = {{ max_events_per_call = 0 }}"))
                .contains("plugin[0].limits.max_events_per_call")
        );
        assert!(err(&format!("{p}dirs = [\"/etc\"]")).contains("plugin[0].dirs"));
        assert!(err(&format!("{p}group = \"urgent\"")).contains("group"));
    }
}
