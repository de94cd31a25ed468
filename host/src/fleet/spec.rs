//! The collector set as configured: each collector's source, pinned digest, signature,
//! schedule, grants, limits and plugin configuration. The local file gives the base set; the
//! module twin's `edgeguard.collectors` overlays it by name (replace a source, change a
//! schedule, add a collector, remove one).

use super::source::Source;
use crate::capabilities::Capability;
use crate::config::{Config, Group, LimitOverrides, Limits, SignatureConfig, is_sha256};
use crate::pipeline::asc_config::{ConfigIssue, ErrorType};
use crate::units::Span;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct CollectorSpec {
    pub name: String,
    pub source: Source,
    pub sha256: Option<String>,
    pub signature: Option<SignatureConfig>,
    /// None: the plugin's own choice.
    pub group: Option<Group>,
    /// None: the group's interval.
    pub interval: Option<Duration>,
    pub grants: Vec<Capability>,
    pub dirs: Vec<PathBuf>,
    pub limits: Limits,
    pub config: Value,
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
            && self.limits == other.limits
            && self.config == other.config
    }
}

/// The local file's set (enabled or not; a disabled collector is loaded and idle).
pub fn local_set(config: &Config) -> Vec<CollectorSpec> {
    let plugin_dir = config.plugin_dir();
    config
        .plugins
        .iter()
        .map(|p| CollectorSpec {
            name: p.name.clone(),
            source: Source::local(&p.file, &plugin_dir),
            sha256: p.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            signature: p.signature.clone(),
            group: p.group,
            interval: p.interval.map(|s| s.0),
            grants: p
                .grants
                .iter()
                .filter_map(|g| Capability::from_name(g))
                .collect(),
            dirs: p.dirs.clone(),
            limits: config.limits.with(&p.limits),
            config: p.config.clone(),
            enabled: p.enabled,
            from_twin: false,
        })
        .collect()
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
    local: &Config,
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
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
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
    local: &Config,
    at: &str,
    issue: &mut dyn FnMut(String, String),
) -> Option<CollectorSpec> {
    let field = |f: &str| format!("{at}.{f}");
    let new_source = match &e.source {
        Some(text) => match Source::remote(text, &local.plugin_dir()) {
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
    if let Some(sha) = &e.sha256
        && !is_sha256(sha)
    {
        issue(
            field("sha256"),
            format!("`{sha}` is not a SHA-256 (64 hex digits)"),
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
        if span.0 < Duration::from_millis(10) {
            issue(
                field("interval"),
                format!("interval {span} is too short (at least 10ms)"),
            );
        }
        spec.interval = Some(span.0);
    }
    if let Some(grants) = e.grants {
        spec.grants.clear();
        for g in grants {
            match Capability::from_name(&g) {
                None => issue(
                    field("grants"),
                    format!(
                        "unknown capability `{g}` (known: {})",
                        Capability::names().join(", ")
                    ),
                ),
                Some(_) if !local.remote.twin_grants.contains(&g) => issue(
                    field("grants"),
                    format!(
                        "`{g}` may not be granted from the twin (the local [remote] twin_grants allows: {})",
                        local.remote.twin_grants.join(", ")
                    ),
                ),
                Some(c) if spec.grants.contains(&c) => {
                    issue(field("grants"), format!("`{g}` is granted twice"))
                }
                Some(c) => spec.grants.push(c),
            }
        }
    }
    if let Some(dirs) = e.dirs {
        if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
            issue(
                field("dirs"),
                format!("`{}` must be an absolute path", d.display()),
            );
        }
        spec.dirs = dirs;
    }
    if !spec.dirs.is_empty() && !spec.grants.contains(&Capability::Filesystem) {
        issue(
            field("dirs"),
            "directories are given but `filesystem` is not granted".into(),
        );
    }
    if let Some(overrides) = e.limits {
        spec.limits = spec.limits.with(&overrides);
        if let Err((key, message)) = crate::config::check_limits(&field("limits"), &spec.limits) {
            issue(key, message);
        }
    }
    if let Some(config) = e.config {
        if !config.is_object() {
            issue(field("config"), format!("must be an object, not {config}"));
        }
        spec.config = config;
    }
    if let Some(enabled) = e.enabled {
        spec.enabled = enabled;
    }
    Some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn local() -> Config {
        Config::parse(
            "[agent]\nplugin_dir = \"/p\"\n[[plugin]]\nname = \"process\"\nfile = \"process.wasm\"\ngrants = [\"processes\", \"log\"]\n\
             [[plugin]]\nname = \"system\"\nfile = \"system.wasm\"\ngrants = [\"system\"]\n",
            "test",
        )
        .unwrap()
    }

    fn resolve(twin: Value) -> Result<Vec<CollectorSpec>, Vec<String>> {
        let local = local();
        overlay(local_set(&local), &twin, &local, "edgeguard.collectors").map_err(|i| {
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
        assert!(adjusted[0].same_instance(&local_set(&local())[0]));
        assert!(!adjusted[0].enabled);
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
