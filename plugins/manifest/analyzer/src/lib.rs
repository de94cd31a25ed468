//! Security analysis of Azure IoT Edge deployment manifests: the judgement shared by the
//! `manifest` collector plugin (built for wasm32-wasip2) and `edgeguard check-manifest`
//! (native). Pure functions over JSON: no I/O here.
//!
//! Each finding names its severity, the module, the offending field's path in the manifest, and
//! a remediation. The ASC service's recommendation type is given where one applies. A part that
//! cannot be read is a finding too (`manifest-error`), a template's placeholder another
//! (`template-placeholder`): one bad part never hides what the rest of a deployment asks for.

pub mod container;
pub mod deployment;
pub mod edge_agent;
pub mod locate;
pub mod template;

pub use deployment::{Deployment, Part};

use serde_json::Value;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn parse(text: &str) -> Option<Severity> {
        [Severity::Low, Severity::Medium, Severity::High]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable identifier of the kind of finding, e.g. `privileged`.
    pub code: &'static str,
    /// The module (`edgeAgent`, `edgeHub`, a custom module), or `$edgeAgent` / `$edgeHub` for
    /// deployment-wide settings.
    pub module: String,
    /// The offending field, as a path in the manifest.
    pub path: String,
    pub message: String,
    pub remediation: &'static str,
    /// The ASC recommendation type this corresponds to, if any.
    pub recommendation: Option<&'static str>,
    /// Which of the documents analysed together it is in (0 when one).
    pub source: usize,
}

/// A manifest that cannot be analysed, with what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for Invalid {}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Parses and analyses a manifest's text.
pub fn analyze_text(text: &str) -> Result<Vec<Finding>, Invalid> {
    let manifest: Value =
        serde_json::from_str(text).map_err(|e| invalid("", format!("not JSON: {e}")))?;
    analyze(&manifest)
}

/// Analyses a deployment in any of its shapes ([`deployment`]). Refused only when it is not a
/// deployment at all: a part that cannot be read is a `manifest-error` finding, and every
/// other part is analysed.
pub fn analyze(manifest: &Value) -> Result<Vec<Finding>, Invalid> {
    Ok(analyze_deployment(&deployment::parse(manifest, 0)?))
}

/// The findings of a deployment (one document, or several merged).
pub fn analyze_deployment(d: &Deployment) -> Vec<Finding> {
    let mut findings = d.errors.clone();
    for (schema, owner, known, what) in [
        (
            &d.agent_schema,
            "$edgeAgent",
            &deployment::AGENT_SCHEMAS[..],
            "edgeAgent knows 1.0 to 1.3",
        ),
        (
            &d.hub_schema,
            "$edgeHub",
            &deployment::HUB_SCHEMAS[..],
            "edgeHub knows 1.0 to 1.2",
        ),
    ] {
        let Some(p) = schema else { continue };
        match p.value.as_str() {
            Some(v) if known.contains(&v) => {}
            Some(v) if template::placeholder(v).is_some() => {
                findings.push(placeholder(p.source, owner, p.path.clone(), v));
            }
            _ => findings.push(deployment::error(
                p.source,
                owner,
                p.path.clone(),
                format!("schemaVersion {} is not one it takes: {what}", p.value),
            )),
        }
    }

    // Registry credentials in clear text (a placeholder is what templates should hold).
    for c in &d.credentials {
        if c.value
            .get("password")
            .and_then(Value::as_str)
            .is_some_and(|p| {
                !p.is_empty() && template::placeholder(p).is_none() && !p.starts_with('$')
            })
        {
            let name = &c.name;
            findings.push(Finding {
                severity: Severity::Medium,
                code: "registry-password",
                module: "$edgeAgent".into(),
                path: format!("{}.password", c.path),
                message: format!("registry `{name}` has its password in clear text in the manifest"),
                remediation: "use a service principal or a token with pull-only scope, and keep secrets out of source control (deployment templates with $CONTAINER_REGISTRY_PASSWORD style variables)",
                recommendation: Some("IoT_ACRAuthentication"),
                source: c.source,
            });
        }
    }

    let modules: Vec<Part> = d.system_modules.iter().chain(&d.modules).cloned().collect();
    findings.extend(analyze_parts(&modules));
    let hub_schema = d.hub_schema.as_ref().and_then(|p| p.value.as_str());
    for r in &d.routes {
        route(r, hub_schema, &mut findings);
    }
    sort(&mut findings);
    findings
}

/// Analyses modules in the manifest's shape (`{settings: {image, createOptions...}, env}`), each
/// given with its name and its path in the document: the modules of a manifest, or the running
/// modules reconstructed from the containers edgeAgent created.
pub fn analyze_modules(modules: &[(String, String, &Value)]) -> Vec<Finding> {
    let parts: Vec<Part> = modules
        .iter()
        .map(|(name, path, value)| Part {
            name: name.clone(),
            path: path.clone(),
            value: (*value).clone(),
            source: 0,
        })
        .collect();
    let mut findings = analyze_parts(&parts);
    sort(&mut findings);
    findings
}

fn analyze_parts(modules: &[Part]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut hub_env: Option<(&Value, String)> = None;
    let mut hub_ports: Vec<String> = Vec::new();
    for Part {
        name,
        path,
        value: module,
        source,
    } in modules
    {
        let source = *source;
        if !module.is_object() {
            findings.push(deployment::error(source, name, path, "must be an object"));
            continue;
        }
        let image_path = format!("{path}.settings.image");
        match module.pointer("/settings/image").and_then(Value::as_str) {
            None => findings.push(deployment::error(
                source,
                name,
                image_path,
                "missing: every module needs an image",
            )),
            Some(image) if template::placeholder(image).is_some() => {
                findings.push(placeholder(source, name, image_path, image));
            }
            Some(image) => {
                if let Some(issue) = container::check_image(image) {
                    findings.push(place(issue, name, image_path, source));
                }
            }
        }
        let options_path = format!("{path}.settings.createOptions");
        // Options that cannot be read say nothing of the container, not that it has none.
        let options = match create_options(module, &options_path) {
            Ok(options) => options,
            Err(Unread::Error(at, message)) => {
                findings.push(deployment::error(source, name, at, message));
                continue;
            }
            Err(Unread::Placeholder(text)) => {
                findings.push(placeholder(source, name, options_path.clone(), &text));
                continue;
            }
        };
        placeholders_in(&options, &options_path, &mut |at, text| {
            findings.push(placeholder(source, name, at, text));
        });
        for issue in container::check(&container::Settings::from_create_options(&options)) {
            let at = format!("{options_path}.{}", issue.field);
            findings.push(place(issue, name, at, source));
        }
        if name == "edgeHub" {
            hub_env = module.get("env").map(|e| (e, format!("{path}.env")));
            if let Some(bindings) = options
                .pointer("/HostConfig/PortBindings")
                .and_then(Value::as_object)
            {
                hub_ports = bindings.keys().cloned().collect();
            }
        }
    }

    // An edgeHub protocol head nothing can use: HTTPS serves only devices downstream (modules
    // speak MQTT or AMQP to the hub), so with its port unpublished it is memory and attack surface
    // for nobody. MQTT and AMQP heads may serve modules; which one they use is not in the manifest.
    if let Some(hub) = modules
        .iter()
        .find(|p| p.name == "edgeHub" && p.value.is_object())
    {
        let (head, port, env_key) = ("HTTPS", "443/tcp", "httpSettings__enabled");
        let disabled = hub_env
            .as_ref()
            .and_then(|(env, _)| env.get(env_key))
            .and_then(|v| v.get("value"))
            .is_some_and(|v| v == false || v == "false");
        if !disabled && !hub_ports.iter().any(|p| p == port) {
            findings.push(Finding {
                severity: Severity::Low,
                code: "edgehub-idle-protocol-head",
                module: "edgeHub".into(),
                path: hub_env.as_ref().map_or_else(|| format!("{}.env.{env_key}", hub.path), |(_, p)| format!("{p}.{env_key}")),
                message: format!("the {head} protocol head is enabled but its port ({port}) is not published: nothing downstream can use it"),
                remediation: "set the edgeHub environment variable to false, which saves memory and attack surface (IoT Edge production checklist)",
                recommendation: Some("IoT_EdgeHubMemOptimize"),
                source: hub.source,
            });
        }
    }
    findings
}

/// A `template-placeholder` finding: `text` holds a placeholder, so what it stands for is not
/// analysed.
fn placeholder(source: usize, module: &str, path: String, text: &str) -> Finding {
    let token = template::placeholder(text).unwrap_or(text);
    Finding {
        severity: Severity::Low,
        code: "template-placeholder",
        module: module.to_owned(),
        path,
        message: format!(
            "`{token}` is a template placeholder: what it stands for is known only once the template is built, and is not analysed here"
        ),
        remediation: "also check the deployment the template tools generate (iotedgedev genconfig, the VS Code command Generate Deployment Manifest)",
        recommendation: None,
        source,
    }
}

/// Calls `found` with the path and text of each string of `value` that holds a placeholder.
fn placeholders_in(value: &Value, path: &str, found: &mut dyn FnMut(String, &str)) {
    match value {
        Value::String(s) if template::placeholder(s).is_some() => found(path.to_owned(), s),
        Value::Object(map) => {
            for (k, v) in map {
                placeholders_in(v, &format!("{path}.{k}"), found);
            }
        }
        Value::Array(items) => {
            for v in items {
                placeholders_in(v, path, found);
            }
        }
        _ => {}
    }
}

/// One route: its placeholders, whether it parses, what it sends where.
fn route(r: &Part, hub_schema: Option<&str>, out: &mut Vec<Finding>) {
    let error = |at: String, message: String| deployment::error(r.source, "$edgeHub", at, message);
    let text = match &r.value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => {
            if hub_schema == Some("1.0") {
                out.push(error(r.path.clone(), "a route object (priority, timeToLiveSecs) needs the edgeHub schemaVersion 1.1 or later; 1.0 takes strings".into()));
            }
            match o.get("route").and_then(Value::as_str) {
                Some(text) => text,
                None => {
                    return out.push(error(
                        format!("{}.route", r.path),
                        "missing: a route object needs `route`".into(),
                    ));
                }
            }
        }
        _ => {
            return out.push(error(
                r.path.clone(),
                "must be a route string or object".into(),
            ));
        }
    };
    let templated = template::placeholder(text).is_some();
    if templated {
        out.push(placeholder(r.source, "$edgeHub", r.path.clone(), text));
    }
    if let Err(e) = check_route(&r.name, &r.path, text, r.source, out)
        && !templated
    {
        out.push(error(e.path, e.message));
    }
}
fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.module.cmp(&b.module))
            .then_with(|| a.path.cmp(&b.path))
    });
}

fn place(issue: container::Issue, module: &str, path: String, source: usize) -> Finding {
    Finding {
        source,
        severity: issue.severity,
        code: issue.code,
        module: module.to_owned(),
        path,
        message: issue.message,
        remediation: issue.remediation,
        recommendation: issue.recommendation,
    }
}

/// Why a module's createOptions could not be read.
enum Unread {
    /// Where, and what is wrong.
    Error(String, String),
    /// Not JSON because a placeholder stands where JSON is (the text).
    Placeholder(String),
}

/// `createOptions`, `createOptions01`, ... joined in order, then parsed (edgeAgent's chunking).
fn create_options(module: &Value, path: &str) -> Result<Value, Unread> {
    let Some(settings) = module.get("settings").and_then(Value::as_object) else {
        return Ok(Value::Null);
    };
    let mut text = String::new();
    match settings.get("createOptions") {
        None => return Ok(Value::Null),
        Some(Value::String(s)) => text.push_str(s),
        // Templates may write the object itself; the tools turn it into a string.
        Some(v @ Value::Object(_)) => return Ok(v.clone()),
        Some(_) => {
            return Err(Unread::Error(
                path.to_owned(),
                "must be a string of JSON".into(),
            ));
        }
    }
    let mut chunks = 0;
    for i in 1..100 {
        match settings.get(&format!("createOptions{i:02}")) {
            Some(Value::String(s)) => text.push_str(s),
            Some(_) => {
                return Err(Unread::Error(
                    format!("{path}{i:02}"),
                    "must be a string".into(),
                ));
            }
            None => break,
        }
        chunks = i;
    }
    // A chunk after a gap is one edgeAgent never joins: the options would be cut short.
    let stray = settings
        .keys()
        .filter_map(|k| k.strip_prefix("createOptions")?.parse::<u32>().ok())
        .filter(|n| *n > chunks)
        .min();
    if let Some(n) = stray {
        return Err(Unread::Error(
            format!("{path}{n:02}"),
            format!(
                "chunk {n:02} follows a missing chunk {:02}: edgeAgent joins createOptions01, 02, ... while they follow each other",
                chunks + 1
            ),
        ));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| match template::placeholder(&text) {
        Some(_) => Unread::Placeholder(text.clone()),
        None => Unread::Error(
            path.to_owned(),
            format!("not JSON once its chunks are joined: {e}"),
        ),
    })
}

fn check_route(
    name: &str,
    path: &str,
    route: &str,
    document: usize,
    out: &mut Vec<Finding>,
) -> Result<(), Invalid> {
    let upper = route.to_ascii_uppercase();
    let (Some(from), Some(into)) = (upper.find("FROM "), upper.rfind(" INTO ")) else {
        return Err(invalid(
            path,
            format!("`{route}` is not a route (FROM <source> [WHERE <condition>] INTO <sink>)"),
        ));
    };
    let source_and_where = route[from + 5..into].trim();
    let source = source_and_where.split_whitespace().next().unwrap_or("");
    let filtered = upper[from..into].contains(" WHERE ");
    let sink = route[into + 6..].trim();
    if sink == "$upstream"
        && !filtered
        && matches!(source, "/*" | "/messages/*" | "/messages/modules/*")
    {
        out.push(Finding {
            severity: Severity::Low,
            code: "route-everything-upstream",
            module: "$edgeHub".into(),
            path: path.to_owned(),
            message: format!("route `{name}` sends every message from every module to IoT Hub ({source})"),
            remediation: "route only the outputs the cloud needs (FROM /messages/modules/<m>/outputs/<o> INTO $upstream), or filter with WHERE",
            recommendation: None,
            source: document,
        });
    }
    Ok(())
}
