//! The collector set as configured: each collector's source, pinned digest, signature,
//! schedule, grants, limits and plugin configuration. The local file gives the base set; the
//! module twin's `edgeguard.collectors` overlays it by name (replace a source, change a
//! schedule, add a collector, remove one).

use super::config::{
    PluginConfig, SignatureConfig, is_collector_name, is_sha256, unknown_capability,
};
use super::source::Source;
use crate::capabilities::Capability;
use crate::pipeline::asc_config::{ConfigIssue, ErrorType};
use crate::runtime::limits::{LimitOverrides, Limits};
use crate::scheduler::Group;
use crate::units::{Invalid, Span};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One collector as configured, wherever it was described.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectorSpec {
    /// Its unique name.
    pub name: String,
    /// Where its component comes from.
    pub source: Source,
    /// The pinned digest, lower case.
    pub sha256: Option<String>,
    /// The signature over its bytes.
    pub signature: Option<SignatureConfig>,
    /// None: the plugin's own choice.
    pub group: Option<Group>,
    /// None: the group's interval.
    pub interval: Option<Duration>,
    /// What it may import.
    pub grants: Vec<Capability>,
    /// The read-only host directories it sees with `filesystem`.
    pub dirs: Vec<PathBuf>,
    /// Typed kinds it may emit without the capability that observes them.
    pub attests: Vec<String>,
    /// Its sandbox limits.
    pub limits: Limits,
    /// Its configuration, a JSON object.
    pub config: Value,
    /// False: loaded and idle.
    pub enabled: bool,
    /// Set by the module twin (else by the local file only).
    pub from_twin: bool,
}

impl CollectorSpec {
    /// True when `other` is the same plugin built the same way (only the schedule or the
    /// enablement may differ), so no new instance is needed.
    pub fn same_instance(&self, other: &CollectorSpec) -> bool {
        self.source == other.source
            && self.sha256 == other.sha256
            && self.signature == other.signature
            && self.grants == other.grants
            && self.dirs == other.dirs
            && self.attests == other.attests
            && self.limits == other.limits
            && self.config == other.config
    }

    /// Everything a collector must satisfy wherever it was described (the local file or the
    /// twin); `at` prefixes each key (`plugin[0]`, `edgeguard.collectors.process`).
    pub fn check(&self, at: &str) -> Vec<Invalid> {
        let field = |f: &str| format!("{at}.{f}");
        let mut refused = Vec::new();
        if let Some(sha) = &self.sha256
            && !is_sha256(sha)
        {
            refused.push(Invalid::new(
                field("sha256"),
                format!("`{sha}` is not a SHA-256 (64 hex digits)"),
            ));
        }
        if let Some(interval) = self.interval
            && interval < Duration::from_millis(10)
        {
            refused.push(Invalid::new(
                field("interval"),
                format!("interval {} is too short (at least 10ms)", Span(interval)),
            ));
        }
        if let Some(d) = self.dirs.iter().find(|d| !d.is_absolute()) {
            refused.push(Invalid::new(
                field("dirs"),
                format!("`{}` must be an absolute path", d.display()),
            ));
        }
        if !self.dirs.is_empty() && !self.grants.contains(&Capability::Filesystem) {
            refused.push(Invalid::new(
                field("dirs"),
                "directories are given but `filesystem` is not granted",
            ));
        }
        for (i, kind) in self.attests.iter().enumerate() {
            let problem = crate::scheduler::authority::attestable(kind)
                .err()
                .or_else(|| {
                    self.attests[..i]
                        .contains(kind)
                        .then(|| format!("`{kind}` is given twice"))
                });
            if let Some(reason) = problem {
                refused.push(Invalid::new(field("attests"), reason));
            }
        }
        if let Err(invalid) = self.limits.check(&field("limits")) {
            refused.push(invalid);
        }
        if !self.config.is_object() {
            refused.push(Invalid::new(
                field("config"),
                format!(
                    "must be an object (a table in the file), not {}",
                    self.config
                ),
            ));
        }
        refused
    }
}

/// The capabilities `names` grant, each known and given once; `twin_grants`: the names the
/// twin may grant, when the twin gives them. `at` is the collector's key.
pub fn parse_grants(
    names: &[String],
    at: &str,
    twin_grants: Option<&[String]>,
) -> (Vec<Capability>, Vec<Invalid>) {
    let key = format!("{at}.grants");
    let (mut grants, mut refused) = (Vec::new(), Vec::new());
    for g in names {
        match Capability::from_name(g) {
            None => refused.push(Invalid::new(&key, unknown_capability(g))),
            Some(_) if twin_grants.is_some_and(|allowed| !allowed.contains(g)) => {
                refused.push(Invalid::new(
                    &key,
                    format!(
                        "`{g}` may not be granted from the twin (the local [remote] twin_grants allows: {})",
                        twin_grants.unwrap_or_default().join(", ")
                    ),
                ));
            }
            Some(c) if grants.contains(&c) => {
                refused.push(Invalid::new(&key, format!("`{g}` is granted twice")));
            }
            Some(c) => grants.push(c),
        }
    }
    (grants, refused)
}

/// A collector of the local file, with every reason it is refused; `at` is its key.
pub fn from_local(
    p: &PluginConfig,
    plugin_dir: &Path,
    limits: &Limits,
    at: &str,
) -> (CollectorSpec, Vec<Invalid>) {
    let (grants, mut refused) = parse_grants(&p.grants, at, None);
    let spec = CollectorSpec {
        name: p.name.clone(),
        source: Source::local(&p.file, plugin_dir),
        sha256: p.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
        signature: p.signature.clone(),
        group: p.group,
        interval: p.interval.map(|s| s.0),
        grants,
        dirs: p.dirs.clone(),
        attests: p.attests.clone(),
        limits: limits.with(&p.limits),
        config: p.config.clone(),
        enabled: p.enabled,
        from_twin: false,
    };
    refused.extend(spec.check(at));
    (spec, refused)
}

/// The local file's set (enabled or not; a disabled collector is loaded and idle), as
/// validated with the file.
pub fn local_set(
    plugins: &[PluginConfig],
    plugin_dir: &Path,
    limits: &Limits,
) -> Vec<CollectorSpec> {
    plugins
        .iter()
        .enumerate()
        .map(|(i, p)| from_local(p, plugin_dir, limits, &format!("plugin[{i}]")).0)
        .collect()
}

/// What the twin's collectors overlay: the local file's set and the bounds it sets.
pub struct Local<'a> {
    /// The directory relative sources are under.
    pub plugin_dir: PathBuf,
    /// The limits of a collector the local file does not have.
    pub limits: &'a Limits,
    /// What the twin may grant (`[remote] twin_grants`).
    pub twin_grants: &'a [String],
    /// What the twin may let a collector attest (`[remote] twin_attests`).
    pub twin_attests: &'a [String],
}

/// A collector as the twin describes it; every field optional, overlaying the local entry of
/// the same name.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TwinEntry {
    source: Option<String>,
    sha256: Option<String>,
    signature: Option<SignatureConfig>,
    group: Option<Group>,
    interval: Option<Span>,
    grants: Option<Vec<String>>,
    dirs: Option<Vec<PathBuf>>,
    attests: Option<Vec<String>>,
    limits: Option<LimitOverrides>,
    config: Option<Value>,
    enabled: Option<bool>,
    /// Stops and unloads the collector (a local one too).
    remove: Option<bool>,
}

/// The set the twin asks for: `base` (the local set) overlaid with the twin's `collectors`
/// object. Every problem is named by its twin path; any problem refuses the whole section.
pub fn overlay(
    base: Vec<CollectorSpec>,
    collectors: &Value,
    local: &Local<'_>,
    at: &str,
) -> Result<Vec<CollectorSpec>, Vec<ConfigIssue>> {
    let issue = |name: String, message: String| ConfigIssue {
        name,
        error_type: ErrorType::TypeMismatch,
        used: "(in force)".into(),
        message,
    };
    let Some(entries) = collectors.as_object() else {
        return Err(vec![issue(
            at.into(),
            format!("must be an object of collectors by name, not {collectors}"),
        )]);
    };
    let mut set = base;
    let mut issues = Vec::new();
    for (name, value) in entries
        .iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
    {
        let at = format!("{at}.{name}");
        if !is_collector_name(name) {
            issues.push(issue(
                at,
                "a collector name uses only letters, digits, - and _".into(),
            ));
            continue;
        }
        let entry: TwinEntry = match serde_json::from_value(strip_metadata(value)) {
            Ok(e) => e,
            Err(e) => {
                issues.push(issue(at, e.to_string()));
                continue;
            }
        };
        let existing = set.iter().position(|c| &c.name == name);
        if entry.remove == Some(true) {
            if let Some(i) = existing {
                set.remove(i);
            }
            continue;
        }
        let before = issues.len();
        let spec = apply_entry(
            existing.map(|i| set[i].clone()),
            name,
            entry,
            local,
            &at,
            &mut |n, m| issues.push(issue(n, m)),
        );
        match (spec, existing) {
            (Some(spec), Some(i)) if issues.len() == before => set[i] = spec,
            (Some(spec), None) if issues.len() == before => set.push(spec),
            _ => {}
        }
    }
    if issues.is_empty() {
        Ok(set)
    } else {
        Err(issues)
    }
}

fn strip_metadata(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn apply_entry(
    base: Option<CollectorSpec>,
    name: &str,
    e: TwinEntry,
    local: &Local<'_>,
    at: &str,
    issue: &mut dyn FnMut(String, String),
) -> Option<CollectorSpec> {
    let field = |f: &str| format!("{at}.{f}");
    let new_source = match &e.source {
        Some(text) => match Source::remote(text, &local.plugin_dir) {
            Ok(s) => Some(s),
            Err(m) => {
                issue(field("source"), m);
                None
            }
        },
        None => None,
    };
    // A source from the twin is always pinned: the twin says which bytes, not just where.
    if e.source.is_some() && e.sha256.is_none() {
        issue(
            field("sha256"),
            "a source given by the twin needs its sha256".into(),
        );
    }
    if base.is_none() && e.source.is_none() {
        issue(
            field("source"),
            "a collector the local configuration does not have needs a source and its sha256"
                .into(),
        );
        return None;
    }
    let mut spec = base.unwrap_or_else(|| CollectorSpec {
        name: name.to_owned(),
        source: Source::File(PathBuf::new()),
        sha256: None,
        signature: None,
        group: None,
        interval: None,
        grants: Vec::new(),
        dirs: Vec::new(),
        attests: Vec::new(),
        limits: local.limits.clone(),
        config: Value::Object(Map::new()),
        enabled: true,
        from_twin: true,
    });
    spec.from_twin = true;
    if let Some(source) = new_source {
        // New bytes: the local pin and signature were for the old ones.
        spec.source = source;
        spec.signature = None;
    }
    if let Some(sha) = e.sha256 {
        spec.sha256 = Some(sha.to_ascii_lowercase());
    }
    if let Some(signature) = e.signature {
        spec.signature = Some(signature);
    }
    if let Some(group) = e.group {
        spec.group = Some(group);
    }
    if let Some(span) = e.interval {
        spec.interval = Some(span.0);
    }
    if let Some(names) = e.grants {
        let (grants, refused) = parse_grants(&names, at, Some(local.twin_grants));
        spec.grants = grants;
        for invalid in refused {
            issue(invalid.key, invalid.reason);
        }
    }
    if let Some(dirs) = e.dirs {
        spec.dirs = dirs;
    }
    if let Some(kinds) = e.attests {
        // Attesting is trust in the collector's evidence: rooted in the local file, as grants are.
        for kind in kinds.iter().filter(|k| !local.twin_attests.contains(k)) {
            issue(
                field("attests"),
                format!(
                    "`{kind}` may not be attested from the twin (the local [remote] twin_attests allows: {})",
                    if local.twin_attests.is_empty() {
                        "none".to_owned()
                    } else {
                        local.twin_attests.join(", ")
                    }
                ),
            );
        }
        spec.attests = kinds;
    }
    if let Some(overrides) = e.limits {
        spec.limits = spec.limits.with(&overrides);
    }
    if let Some(config) = e.config {
        spec.config = config;
    }
    if let Some(enabled) = e.enabled {
        spec.enabled = enabled;
    }
    for invalid in spec.check(at) {
        issue(invalid.key, invalid.reason);
    }
    Some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::fleet::config::RemoteConfig;

    /// The local file's collectors, with plugin_dir = "/p".
    fn local_specs() -> Vec<CollectorSpec> {
        #[derive(Deserialize)]
        struct File {
            plugin: Vec<PluginConfig>,
        }
        let file: File = toml::from_str(
            "[[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
             [[plugin]]\nname = \"system\"\nfile = \"system.wasm\"\ngrants = [\"system\"]\n",
        )
        .unwrap();
        local_set(&file.plugin, Path::new("/p"), &Limits::default())
    }

    fn resolve(twin: Value) -> Result<Vec<CollectorSpec>, Vec<String>> {
        let (limits, remote) = (Limits::default(), RemoteConfig::default());
        let local = Local {
            plugin_dir: "/p".into(),
            limits: &limits,
            twin_grants: &remote.twin_grants,
            twin_attests: &["Login".to_owned()],
        };
        overlay(local_specs(), &twin, &local, "edgeguard.collectors").map_err(|i| {
            i.iter()
                .map(|i| format!("{}: {}", i.name, i.message))
                .collect()
        })
    }

    #[test]
    fn the_twin_replaces_adds_adjusts_and_removes_by_name() {
        let sha = "ab".repeat(32);
        let set = resolve(json!({
            "process": {"source": "https://plugins.example/process-2.wasm", "sha256": sha, "signature": {"key": "release", "ed25519": "c2ln"}, "interval": "2s"},
            "system": {"remove": true},
            "beat": {"source": "beat.wasm", "sha256": sha.to_uppercase(), "group": "low", "grants": ["clock"], "config": {"x": 1}, "limits": {"memory": "8MiB", "callTimeout": "1s"}},
            "gone": null,
        }))
        .unwrap();
        let names: Vec<&str> = set.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["process", "beat"]);
        let p = &set[0];
        assert_eq!(
            p.source,
            Source::Url("https://plugins.example/process-2.wasm".into())
        );
        assert_eq!(
            p.grants,
            [Capability::Processes, Capability::Log],
            "local grants stay"
        );
        assert_eq!(p.interval, Some(Duration::from_secs(2)));
        assert!(p.from_twin);
        let b = &set[1];
        assert_eq!(b.source, Source::File("/p/beat.wasm".into()));
        assert_eq!(
            b.sha256.as_deref(),
            Some(sha.as_str()),
            "digests are kept in lower case"
        );
        assert_eq!(b.limits.memory.0, 8 << 20);
        assert_eq!(b.limits.call_timeout.0, Duration::from_secs(1));
        assert_eq!(b.group, Some(Group::Low));
        // Only the schedule changed: same instance.
        let adjusted = resolve(json!({"process": {"enabled": false, "group": "medium"}})).unwrap();
        assert!(adjusted[0].same_instance(&local_specs()[0]));
        assert!(!adjusted[0].enabled);
    }

    /// A typed kind may be attested by the local file; by the twin only as far as the local
    /// `[remote] twin_attests` allows (here: `Login`); never a host kind or a custom one.
    #[test]
    fn attesting_a_kind_is_rooted_in_the_local_file() {
        #[derive(Deserialize)]
        struct File {
            plugin: Vec<PluginConfig>,
        }
        let file: File = toml::from_str(
            "[[plugin]]\nname = \"auth\"\nfile = \"auth.wasm\"\ngrants = [\"filesystem\"]\n\
             dirs = [\"/var/log\"]\nattests = [\"Login\", \"Heartbeat\"]\n",
        )
        .unwrap();
        let (spec, refused) = from_local(
            &file.plugin[0],
            Path::new("/p"),
            &Limits::default(),
            "plugin[0]",
        );
        assert_eq!(spec.attests, ["Login", "Heartbeat"]);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].key, "plugin[0].attests");
        assert!(
            refused[0]
                .reason
                .contains("`Heartbeat` is not a typed kind a capability observes"),
            "{}",
            refused[0].reason
        );

        let set = resolve(json!({"process": {"attests": ["Login"]}})).unwrap();
        assert_eq!(set[0].attests, ["Login"]);
        assert!(
            !set[0].same_instance(&local_specs()[0]),
            "what it may say changed"
        );
        let errors = resolve(
            json!({"process": {"attests": ["ProcessCreate", "Diagnostic", "Login", "Login"]}}),
        )
        .unwrap_err()
        .join("\n");
        for needle in [
            "process.attests: `ProcessCreate` may not be attested from the twin (the local [remote] twin_attests allows: Login)",
            "process.attests: `Diagnostic` comes only from the host",
            "process.attests: `Login` is given twice",
        ] {
            assert!(errors.contains(needle), "{needle} in\n{errors}");
        }
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let errors = resolve(json!({
            "process": {"source": "../../bin/sh", "interval": "1ms", "grants": ["filesystem", "teleport"], "colour": "red"},
            "system": {"source": "system-2.wasm", "sha256": "xyz", "config": [1]},
            "new": {"group": "high"},
            "bad name": {},
        }))
        .unwrap_err();
        let joined = errors.join("\n");
        for needle in [
            "edgeguard.collectors.process: unknown field `colour`",
            "edgeguard.collectors.system.sha256: `xyz` is not a SHA-256",
            "edgeguard.collectors.system.config: must be an object",
            "edgeguard.collectors.new.source: a collector the local configuration does not have needs a source",
            "edgeguard.collectors.bad name: a collector name",
        ] {
            assert!(joined.contains(needle), "{needle} in\n{joined}");
        }
        let errors = resolve(json!({"process": {"source": "../../bin/sh", "interval": "1ms", "grants": ["filesystem", "teleport"]}})).unwrap_err().join("\n");
        for needle in [
            "process.source: `../../bin/sh` must be an http(s) URL or a relative path",
            "process.sha256: a source given by the twin needs its sha256",
            "process.interval: interval 1ms is too short",
            "process.grants: `filesystem` may not be granted from the twin",
            "process.grants: unknown capability `teleport`",
        ] {
            assert!(errors.contains(needle), "{needle} in\n{errors}");
        }
        assert!(
            resolve(json!(["process"])).unwrap_err()[0]
                .contains("must be an object of collectors by name")
        );
    }
}
