//! The local configuration file (TOML). Everything has a default, so an empty file is valid;
//! unknown keys and bad values are refused with the key's name ([`Invalid`]).
//!
//! Each section's struct, defaults and checks live beside the code that uses it, and are
//! re-exported here: `[agent]` below, `[schedule]` in [`crate::scheduler`], `[limits]` in
//! [`crate::runtime::limits`], `[[plugin]]` and `[remote]` in [`crate::fleet::config`],
//! `[pipeline]`, `[events]` and `[asc]` in [`crate::pipeline::config`], `[output]` in
//! [`crate::output::config`], `[edge]` in [`crate::edge::config`].

use crate::capabilities::{AuditMode, HostOptions};
use crate::fleet::spec::{self, CollectorSpec};
use crate::pipeline::asc_config::AgentConfiguration;
use crate::pipeline::settings::Settings;
use crate::runtime::CompileBounds;
use crate::units::{Bytes, Invalid, Span};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::edge::config::EdgeConfig;
pub use crate::fleet::config::{PluginConfig, RemoteConfig, SignatureConfig};
pub use crate::output::config::{OutputConfig, SinkKind};
pub use crate::pipeline::config::{EventConfig, PipelineConfig};
pub use crate::runtime::limits::{LimitOverrides, Limits};
pub use crate::scheduler::{Group, ScheduleConfig};

/// The configuration compiled into the binary: every built-in plugin, local output.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/edgeguard.toml");

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[agent]`: where the host, the plugins and the caches are.
    #[serde(default)]
    pub agent: AgentConfig,
    /// `[schedule]`: the priority groups' intervals.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Defaults for every plugin; each plugin may override any of them.
    #[serde(default)]
    pub limits: Limits,
    /// `[[plugin]]`: the collectors of the file.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// The ASC agent configuration object, keys as in the module twin; a value may be given
    /// bare or wrapped as `{ value = ... }`.
    #[serde(default)]
    pub asc: toml::Table,
    /// `[pipeline]`: state directory, sync pace, in-flight messages, window size.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Per event kind: priority and aggregation of the project's own kinds, identities of all.
    #[serde(default)]
    pub events: BTreeMap<String, EventConfig>,
    /// `[output]`: the sink.
    #[serde(default)]
    pub output: OutputConfig,
    /// `[edge]`: the connection to edgeHub.
    #[serde(default)]
    pub edge: EdgeConfig,
    /// `[remote]`: trust in plugins from the twin and from URLs.
    #[serde(default)]
    pub remote: RemoteConfig,
}

/// Command-line settings that win over the configuration file (also after a reload).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--plugin-dir`.
    pub plugin_dir: Option<PathBuf>,
    /// `--host-root`.
    pub host_root: Option<PathBuf>,
    /// `--docker-socket`.
    pub docker_socket: Option<PathBuf>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    /// Sets in `config` what was given on the command line.
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

/// The `[agent]` section.
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
    /// The whole command line of every exec from the kernel's audit records: `off`, `follow`
    /// (read the records the rules in force make, beside an auditd) or `manage` (also add an
    /// `execve` rule, enable auditing and stand in for a missing audit daemon, each undone on
    /// exit).
    #[serde(default)]
    pub audit: AuditMode,
    /// What compiling one plugin may use in memory (the compiler process's heap).
    #[serde(default = "default_compile_memory")]
    pub compile_memory: Bytes,
    /// How long compiling one plugin may take (wall and CPU time); past it, it is refused.
    #[serde(default = "default_compile_time")]
    pub compile_time: Span,
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
            audit: AuditMode::default(),
            compile_memory: default_compile_memory(),
            compile_time: default_compile_time(),
        }
    }
}

impl AgentConfig {
    /// The Docker daemon's socket, resolved.
    pub fn docker_socket(&self) -> PathBuf {
        if self.docker_socket.as_os_str().is_empty() {
            self.host_root.join("var/run/docker.sock")
        } else {
            self.docker_socket.clone()
        }
    }

    /// What compiling one plugin may take.
    pub fn compile_bounds(&self) -> CompileBounds {
        CompileBounds {
            memory: self.compile_memory,
            time: self.compile_time.0,
        }
    }

    /// How the capabilities reach the host.
    pub fn host_options(&self) -> HostOptions {
        HostOptions {
            docker_socket: self.docker_socket(),
            kernel_events: self.kernel_events,
            event_buffer: self.event_buffer,
            kernel_buffer: self.kernel_buffer.0 as usize,
            audit: self.audit,
        }
    }
}

impl AgentConfig {
    /// Refuses buffers too small to be useful or too large to bound the agent.
    fn check(&self) -> Result<(), Invalid> {
        if !(4 << 10..=1 << 30).contains(&self.kernel_buffer.0) {
            return Err(Invalid::new(
                "agent.kernel_buffer",
                format!("{} is outside 4KiB..1GiB", self.kernel_buffer),
            ));
        }
        if !(16 << 20..=64 << 30).contains(&self.compile_memory.0) {
            return Err(Invalid::new(
                "agent.compile_memory",
                format!("{} is outside 16MiB..64GiB", self.compile_memory),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.compile_time.0) {
            return Err(Invalid::new(
                "agent.compile_time",
                format!("{} is outside 1s..1h", self.compile_time),
            ));
        }
        if !(16..=1 << 20).contains(&self.event_buffer) {
            return Err(Invalid::new(
                "agent.event_buffer",
                format!("{} is outside 16..1048576 events", self.event_buffer),
            ));
        }
        Ok(())
    }
}

fn default_event_buffer() -> usize {
    HostOptions::DEFAULT_EVENT_BUFFER
}

fn default_compile_memory() -> Bytes {
    CompileBounds::DEFAULT.memory
}

fn default_compile_time() -> Span {
    Span(CompileBounds::DEFAULT.time)
}

fn default_kernel_buffer() -> Bytes {
    Bytes(HostOptions::DEFAULT_KERNEL_BUFFER as u64)
}

fn default_host_root() -> PathBuf {
    PathBuf::from("/")
}

fn yes() -> bool {
    true
}
/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of this shape.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or what stood for it.
        origin: String,
        /// The parser's words.
        message: String,
    },
    /// A value is refused.
    #[error("{origin}: {invalid}")]
    Invalid {
        /// The file, or what stood for it.
        origin: String,
        /// The key and why.
        invalid: Invalid,
    },
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The configuration compiled into the binary, parsed.
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
        config.validate().map_err(|invalid| ConfigError::Invalid {
            origin: origin.to_owned(),
            invalid,
        })?;
        Ok(config)
    }

    /// Each section checks its own values; the file checks what spans sections.
    fn validate(&self) -> Result<(), Invalid> {
        self.schedule.check()?;
        self.limits.check("limits")?;
        self.agent.check()?;
        self.pipeline_settings()?;
        self.output.check()?;
        self.edge.check()?;
        self.remote.check()?;
        let plugin_dir = self.plugin_dir();
        let mut names = HashSet::new();
        for (i, p) in self.plugins.iter().enumerate() {
            let at = format!("plugin[{i}]");
            p.check(&at)?;
            if !names.insert(&p.name) {
                return Err(Invalid::new(
                    format!("{at}.name"),
                    format!("`{}` is used by two plugins", p.name),
                ));
            }
            let (_, refused) = spec::from_local(p, &plugin_dir, &self.limits, &at);
            if let Some(first) = refused.into_iter().next() {
                return Err(first);
            }
        }
        Ok(())
    }

    /// The ASC configuration object of the `[asc]` table, as the twin carries it.
    pub fn asc_object(&self) -> serde_json::Value {
        crate::pipeline::config::asc_object(&self.asc)
    }

    /// The pipeline's settings, validated; errors name the key.
    pub fn pipeline_settings(&self) -> Result<Settings, Invalid> {
        let asc = AgentConfiguration::parse(&self.asc_object(), &AgentConfiguration::default())
            .map_err(|refused| {
                let first = &refused.issues[0];
                Invalid::new(format!("asc.{}", first.name), first.message.clone())
            })?;
        self.pipeline_settings_with(asc)
    }

    /// The pipeline's settings around a given ASC configuration (e.g. the module twin's).
    pub fn pipeline_settings_with(&self, asc: AgentConfiguration) -> Result<Settings, Invalid> {
        self.pipeline.settings(&self.events, asc)
    }

    /// The collectors of the file, as the fleet runs them.
    pub fn collectors(&self) -> Vec<CollectorSpec> {
        spec::local_set(&self.plugins, &self.plugin_dir(), &self.limits)
    }

    /// What the twin's collectors overlay.
    pub fn collectors_base(&self) -> spec::Local<'_> {
        spec::Local {
            plugin_dir: self.plugin_dir(),
            limits: &self.limits,
            twin_grants: &self.remote.twin_grants,
            twin_attests: &self.remote.twin_attests,
        }
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

    /// Where the component of `plugin` is.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
