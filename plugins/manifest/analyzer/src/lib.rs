//! Security analysis of Azure IoT Edge deployment manifests: the judgement shared by the
//! `manifest` collector plugin (built for wasm32-wasip2) and `edgeguard check-manifest`
//! (native). Pure functions over JSON: no I/O here.
//!
//! Each finding names its severity, the module, the offending field's path in the manifest, and
//! a remediation. The ASC service's recommendation type is given where one applies.

pub mod container;
pub mod edge_agent;

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

/// Analyses a deployment manifest: `{"modulesContent": {"$edgeAgent": ..., "$edgeHub": ...}}`,
/// or the `modulesContent` object itself.
pub fn analyze(manifest: &Value) -> Result<Vec<Finding>, Invalid> {
    let (content, base) = match manifest.get("modulesContent") {
        Some(c) => (c, "modulesContent"),
        None if manifest.get("$edgeAgent").is_some() => (manifest, ""),
        None => {
            return Err(invalid(
                "",
                "no `modulesContent` (is this a deployment manifest?)",
            ));
        }
    };
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            format!("{a}.{b}")
        }
    };
    let agent_path = join(base, "$edgeAgent.properties.desired");
    let agent = content
        .pointer("/$edgeAgent/properties.desired")
        .ok_or_else(|| {
            invalid(
                &agent_path,
                "missing: a manifest needs the edgeAgent's desired properties",
            )
        })?;
    if !agent.is_object() {
        return Err(invalid(&agent_path, "must be an object"));
    }
    let mut findings = Vec::new();

    // Registry credentials in clear text.
    if let Some(creds) = agent
        .pointer("/runtime/settings/registryCredentials")
        .and_then(Value::as_object)
    {
        for (name, c) in creds {
            if c.get("password")
                .and_then(Value::as_str)
                .is_some_and(|p| !p.is_empty() && !p.starts_with("$"))
            {
                findings.push(Finding {
                    severity: Severity::Medium,
                    code: "registry-password",
                    module: "$edgeAgent".into(),
                    path: format!("{agent_path}.runtime.settings.registryCredentials.{name}.password"),
                    message: format!("registry `{name}` has its password in clear text in the manifest"),
                    remediation: "use a service principal or a token with pull-only scope, and keep secrets out of source control (deployment templates with $CONTAINER_REGISTRY_PASSWORD style variables)",
                    recommendation: Some("IoT_ACRAuthentication"),
                });
            }
        }
    }

    let mut modules: Vec<(String, String, &Value)> = Vec::new();
    for (group, key) in [("systemModules", "systemModules"), ("modules", "modules")] {
        match agent.get(key) {
            None if group == "systemModules" => {
                return Err(invalid(
                    join(&agent_path, key),
                    "missing: edgeAgent and edgeHub must be declared",
                ));
            }
            None => {}
            Some(Value::Object(map)) => {
                for (name, module) in map {
                    modules.push((name.clone(), format!("{agent_path}.{key}.{name}"), module));
                }
            }
            Some(_) => return Err(invalid(join(&agent_path, key), "must be an object")),
        }
    }
    findings.extend(analyze_modules(&modules)?);

    // Routes.
    let hub_path = join(base, "$edgeHub.properties.desired");
    match content.pointer("/$edgeHub/properties.desired/routes") {
        None => {
            return Err(invalid(
                format!("{hub_path}.routes"),
                "missing: edgeHub needs its routes",
            ));
        }
        Some(Value::Object(routes)) => {
            for (name, route) in routes {
                let text = match route {
                    Value::String(s) => s.as_str(),
                    Value::Object(o) => {
                        o.get("route").and_then(Value::as_str).ok_or_else(|| {
                            invalid(
                                format!("{hub_path}.routes.{name}.route"),
                                "missing: a route object needs `route`",
                            )
                        })?
                    }
                    _ => {
                        return Err(invalid(
                            format!("{hub_path}.routes.{name}"),
                            "must be a route string or object",
                        ));
                    }
                };
                check_route(
                    name,
                    &format!("{hub_path}.routes.{name}"),
                    text,
                    &mut findings,
                )?;
            }
        }
        Some(_) => return Err(invalid(format!("{hub_path}.routes"), "must be an object")),
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.module.cmp(&b.module))
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(findings)
}

/// Analyses modules in the manifest's shape (`{settings: {image, createOptions...}, env}`), each
/// given with its name and its path in the document: the modules of a manifest, or the running
/// modules reconstructed from the containers edgeAgent created.
pub fn analyze_modules(modules: &[(String, String, &Value)]) -> Result<Vec<Finding>, Invalid> {
    let mut findings = Vec::new();
    let mut hub_env: Option<(&Value, String)> = None;
    let mut hub_ports: Vec<String> = Vec::new();
    for (name, path, module) in modules {
        if !module.is_object() {
            return Err(invalid(path, "must be an object"));
        }
        let image = module
            .pointer("/settings/image")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                invalid(
                    format!("{path}.settings.image"),
                    "missing: every module needs an image",
                )
            })?;
        if let Some(issue) = container::check_image(image) {
            findings.push(place(issue, name, format!("{path}.settings.image")));
        }
        let options = create_options(module, path)?;
        let options_path = format!("{path}.settings.createOptions");
        for issue in container::check(&container::Settings::from_create_options(&options)) {
            let at = format!("{options_path}.{}", issue.field);
            findings.push(place(issue, name, at));
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
    if let Some((_, hub_path, _)) = modules.iter().find(|(n, _, _)| n == "edgeHub") {
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
                    path: hub_env.as_ref().map_or_else(|| format!("{hub_path}.env.{env_key}"), |(_, p)| format!("{p}.{env_key}")),
                    message: format!("the {head} protocol head is enabled but its port ({port}) is not published: nothing downstream can use it"),
                    remediation: "set the edgeHub environment variable to false, which saves memory and attack surface (IoT Edge production checklist)",
                    recommendation: Some("IoT_EdgeHubMemOptimize"),
                });
            }
        }
    }
    sort(&mut findings);
    Ok(findings)
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.module.cmp(&b.module))
            .then_with(|| a.path.cmp(&b.path))
    });
}

fn place(issue: container::Issue, module: &str, path: String) -> Finding {
    Finding {
        severity: issue.severity,
        code: issue.code,
        module: module.to_owned(),
        path,
        message: issue.message,
        remediation: issue.remediation,
        recommendation: issue.recommendation,
    }
}

/// `createOptions`, `createOptions01`, ... joined in order, then parsed (edgeAgent's chunking).
fn create_options(module: &Value, path: &str) -> Result<Value, Invalid> {
    let Some(settings) = module.get("settings") else {
        return Ok(Value::Null);
    };
    let mut text = String::new();
    match settings.get("createOptions") {
        None => return Ok(Value::Null),
        Some(Value::String(s)) => text.push_str(s),
        // Some tools write the object itself; edgeAgent takes it as is.
        Some(v @ Value::Object(_)) => return Ok(v.clone()),
        Some(_) => {
            return Err(invalid(
                format!("{path}.settings.createOptions"),
                "must be a string of JSON",
            ));
        }
    }
    for i in 1..100 {
        match settings.get(format!("createOptions{i:02}")) {
            Some(Value::String(s)) => text.push_str(s),
            Some(_) => {
                return Err(invalid(
                    format!("{path}.settings.createOptions{i:02}"),
                    "must be a string",
                ));
            }
            None => break,
        }
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        invalid(
            format!("{path}.settings.createOptions"),
            format!("not JSON once its chunks are joined: {e}"),
        )
    })
}

fn finding(
    severity: Severity,
    code: &'static str,
    module: &str,
    path: String,
    message: String,
    remediation: &'static str,
    recommendation: Option<&'static str>,
) -> Finding {
    Finding {
        severity,
        code,
        module: module.to_owned(),
        path,
        message,
        remediation,
        recommendation,
    }
}

fn check_route(name: &str, path: &str, route: &str, out: &mut Vec<Finding>) -> Result<(), Invalid> {
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
        out.push(finding(Severity::Low, "route-everything-upstream", "$edgeHub", path.to_owned(), format!("route `{name}` sends every message from every module to IoT Hub ({source})"),
            "route only the outputs the cloud needs (FROM /messages/modules/<m>/outputs/<o> INTO $upstream), or filter with WHERE", None));
    }
    Ok(())
}
