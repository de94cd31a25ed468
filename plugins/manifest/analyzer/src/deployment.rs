//! The shapes a deployment comes in, brought to one: the modules, routes and registry
//! credentials it asks for, each with its path in the document it came from.
//!
//! - A manifest: `{"modulesContent": {"$edgeAgent": {"properties.desired": ...}, ...}}`, or the
//!   `modulesContent` object alone; iotedgedev and VS Code templates add `$schema-template`
//!   beside it and may write createOptions as an object.
//! - The deployment JSON of `az iot edge deployment create|show`: `{"id", "priority",
//!   "targetCondition", "content": {"modulesContent": ...}}`.
//! - A layered deployment (`--layered`): instead of whole desired properties, keys that set
//!   one part each, `properties.desired.modules.<name>`, `properties.desired.routes.<name>`,
//!   `properties.desired.runtime.settings.registryCredentials.<name>`. It needs no system
//!   modules or routes of its own: it is applied over a base deployment.
//!
//! A part that is not what edgeAgent or edgeHub would take becomes a `manifest-error` finding
//! at its path; only a document that is no deployment at all is refused ([`Invalid`]).

use crate::{Finding, Invalid, Severity, invalid};
use serde_json::Value;

/// `$edgeAgent` desired schema versions edgeAgent accepts.
pub const AGENT_SCHEMAS: [&str; 4] = ["1.0", "1.1", "1.2", "1.3"];
/// `$edgeHub` desired schema versions edgeHub accepts.
pub const HUB_SCHEMAS: [&str; 3] = ["1.0", "1.1", "1.2"];

/// One part of a deployment: a module, a route or a registry's credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub name: String,
    /// Where it is in its document, keys joined by `.`.
    pub path: String,
    pub value: Value,
    /// Which of the documents given it came from (0 when one).
    pub source: usize,
}

/// A deployment as edgeAgent and edgeHub are asked for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployment {
    pub source: usize,
    /// Sets parts over a base deployment rather than the whole of it.
    pub layered: bool,
    /// The `priority` of an `az` deployment (0 when the document has none).
    pub priority: i64,
    /// `$edgeAgent`'s and `$edgeHub`'s `schemaVersion`, with their paths.
    pub agent_schema: Option<Part>,
    pub hub_schema: Option<Part>,
    pub system_modules: Vec<Part>,
    pub modules: Vec<Part>,
    pub routes: Vec<Part>,
    pub credentials: Vec<Part>,
    /// Parts that could not be read, as `manifest-error` findings.
    pub errors: Vec<Finding>,
}

/// A `manifest-error` finding: a part edgeAgent or edgeHub would refuse, which nothing else
/// could be said about.
pub fn error(
    source: usize,
    module: &str,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Finding {
    Finding {
        severity: Severity::Medium,
        code: "manifest-error",
        module: module.to_owned(),
        path: path.into(),
        message: message.into(),
        remediation: "fix the part so that edgeAgent accepts it: a deployment with it fails as a whole",
        recommendation: None,
        source,
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}.{b}")
    }
}

/// Reads `doc` (document number `source`) in whichever shape it has.
pub fn parse(doc: &Value, source: usize) -> Result<Deployment, Invalid> {
    let priority = doc.get("priority").and_then(Value::as_i64).unwrap_or(0);
    let (content, base) = if let Some(c) = doc.pointer("/content/modulesContent") {
        (c, "content.modulesContent")
    } else if let Some(c) = doc.get("modulesContent") {
        (c, "modulesContent")
    } else if doc.get("$edgeAgent").is_some() || doc.get("$edgeHub").is_some() {
        (doc, "")
    } else {
        return Err(invalid(
            "",
            "no `modulesContent` (is this a deployment manifest?)",
        ));
    };
    let Some(content) = content.as_object() else {
        return Err(invalid(base, "must be an object"));
    };
    if !content.contains_key("$edgeAgent") && !content.contains_key("$edgeHub") {
        return Err(invalid(
            base,
            "neither `$edgeAgent` nor `$edgeHub`: not a deployment",
        ));
    }
    let mut d = Deployment {
        source,
        priority,
        ..Deployment::default()
    };
    let mut whole = [false, false];
    for (i, key) in ["$edgeAgent", "$edgeHub"].into_iter().enumerate() {
        let path = join(base, key);
        match content.get(key) {
            None => {}
            Some(Value::Object(twin)) => {
                for (k, v) in twin {
                    let at = format!("{path}.{k}");
                    if k == "properties.desired" {
                        whole[i] = true;
                        match (i, v) {
                            (0, Value::Object(_)) => d.agent_desired(v, &at),
                            (1, Value::Object(_)) => d.hub_desired(v, &at),
                            _ => d.errors.push(error(source, key, at, "must be an object")),
                        }
                    } else if let Some(setting) = k.strip_prefix("properties.desired.") {
                        d.layered_key(i == 0, setting, v, &at);
                    }
                }
            }
            Some(_) => d.errors.push(error(source, key, path, "must be an object")),
        }
    }
    d.layered = !whole[0] && !whole[1];
    // A base deployment is the whole of what runs: it needs both system twins.
    if !d.layered {
        for (i, (key, what)) in [
            ("$edgeAgent", "the edgeAgent's desired properties"),
            ("$edgeHub", "the edgeHub's desired properties (its routes)"),
        ]
        .into_iter()
        .enumerate()
        {
            if !whole[i] {
                let at = format!("{}.properties.desired", join(base, key));
                d.errors.push(error(
                    source,
                    key,
                    at,
                    format!("missing: a base deployment needs {what}"),
                ));
            }
        }
    }
    Ok(d)
}

impl Deployment {
    fn part(&self, name: &str, path: String, value: &Value) -> Part {
        Part {
            name: name.to_owned(),
            path,
            value: value.clone(),
            source: self.source,
        }
    }

    /// The parts of a map (`modules`, `routes`...) at `path`.
    fn parts(
        &mut self,
        owner: &str,
        map: Option<&Value>,
        path: String,
        required: bool,
    ) -> Vec<Part> {
        match map {
            None if required => {
                self.errors.push(error(self.source, owner, path, "missing"));
                Vec::new()
            }
            None => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, v)| self.part(name, format!("{path}.{name}"), v))
                .collect(),
            Some(_) => {
                self.errors
                    .push(error(self.source, owner, path, "must be an object"));
                Vec::new()
            }
        }
    }

    fn agent_desired(&mut self, desired: &Value, path: &str) {
        if let Some(v) = desired.get("schemaVersion") {
            self.agent_schema =
                Some(self.part("schemaVersion", format!("{path}.schemaVersion"), v));
        }
        let system = self.parts(
            "$edgeAgent",
            desired.get("systemModules"),
            format!("{path}.systemModules"),
            true,
        );
        self.system_modules.extend(system);
        let modules = self.parts(
            "$edgeAgent",
            desired.get("modules"),
            format!("{path}.modules"),
            false,
        );
        self.modules.extend(modules);
        let creds = desired.pointer("/runtime/settings/registryCredentials");
        let creds = self.parts(
            "$edgeAgent",
            creds,
            format!("{path}.runtime.settings.registryCredentials"),
            false,
        );
        self.credentials.extend(creds);
    }

    fn hub_desired(&mut self, desired: &Value, path: &str) {
        if let Some(v) = desired.get("schemaVersion") {
            self.hub_schema = Some(self.part("schemaVersion", format!("{path}.schemaVersion"), v));
        }
        let routes = self.parts(
            "$edgeHub",
            desired.get("routes"),
            format!("{path}.routes"),
            true,
        );
        self.routes.extend(routes);
    }

    /// A layered deployment's `properties.desired.<setting>` key of `$edgeAgent` (`agent`) or
    /// `$edgeHub`. Settings that are not parts (a module's own twin, storeAndForward) are left.
    fn layered_key(&mut self, agent: bool, setting: &str, value: &Value, path: &str) {
        let (owner, list, name) = match (agent, setting.split_once('.')) {
            (true, Some(("modules", name))) => ("$edgeAgent", 0, name),
            (true, Some(("systemModules", name))) => ("$edgeAgent", 1, name),
            (true, Some((_, _))) => {
                match setting.strip_prefix("runtime.settings.registryCredentials.") {
                    Some(name) => ("$edgeAgent", 2, name),
                    None => return,
                }
            }
            (false, Some(("routes", name))) => ("$edgeHub", 3, name),
            (true, None) if setting == "schemaVersion" => {
                self.agent_schema = Some(self.part(setting, path.to_owned(), value));
                return;
            }
            (false, None) if setting == "schemaVersion" => {
                self.hub_schema = Some(self.part(setting, path.to_owned(), value));
                return;
            }
            _ => return,
        };
        if name.is_empty() || name.contains('.') {
            self.errors.push(error(
                self.source,
                owner,
                path,
                "a layered key names one part: properties.desired.<section>.<name>",
            ));
            return;
        }
        let part = self.part(name, path.to_owned(), value);
        match list {
            0 => self.modules.push(part),
            1 => self.system_modules.push(part),
            2 => self.credentials.push(part),
            _ => self.routes.push(part),
        }
    }
}

/// What one device runs when all of `deployments` target it: the base deployment of highest
/// priority, with the layered ones applied over it from the lowest priority to the highest,
/// each part replacing the one of the same name (at equal priority, the later given wins, as
/// the later created does on IoT Hub). Errors of the deployments applied are kept.
pub fn merge(deployments: Vec<Deployment>) -> Deployment {
    let mut bases: Vec<Deployment> = Vec::new();
    let mut layers: Vec<Deployment> = Vec::new();
    for d in deployments {
        if d.layered {
            layers.push(d);
        } else {
            bases.push(d);
        }
    }
    // The last of the highest priority wins: a stable sort keeps the given order among equals.
    bases.sort_by_key(|d| d.priority);
    let mut merged = bases.pop().unwrap_or(Deployment {
        layered: true,
        ..Deployment::default()
    });
    layers.sort_by_key(|d| d.priority);
    for layer in layers {
        for (into, from) in [
            (&mut merged.modules, layer.modules),
            (&mut merged.system_modules, layer.system_modules),
            (&mut merged.routes, layer.routes),
            (&mut merged.credentials, layer.credentials),
        ] {
            for part in from {
                match into.iter_mut().find(|p| p.name == part.name) {
                    Some(old) => *old = part,
                    None => into.push(part),
                }
            }
        }
        merged.errors.extend(layer.errors);
        merged.agent_schema = layer.agent_schema.or(merged.agent_schema);
        merged.hub_schema = layer.hub_schema.or(merged.hub_schema);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_az_deployment_json_and_a_bare_content_read_alike() {
        let content = json!({
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "systemModules": {"edgeAgent": {}, "edgeHub": {}}, "modules": {"m": {"settings": {"image": "x:1"}}}}},
            "$edgeHub": {"properties.desired": {"routes": {"r": "FROM /* INTO $upstream"}}}
        });
        let az = parse(
            &json!({"id": "d", "priority": 7, "content": {"modulesContent": content}}),
            0,
        )
        .unwrap();
        let bare = parse(&content, 0).unwrap();
        assert_eq!(az.priority, 7);
        assert_eq!(
            az.modules[0].path,
            "content.modulesContent.$edgeAgent.properties.desired.modules.m"
        );
        assert_eq!(
            bare.modules[0].path,
            "$edgeAgent.properties.desired.modules.m"
        );
        assert!(!az.layered && az.errors.is_empty() && bare.errors.is_empty());
        assert_eq!(az.routes.len(), 1);
    }

    #[test]
    fn a_layered_deployment_sets_parts_and_needs_no_system_modules() {
        let d = parse(&json!({"content": {"modulesContent": {
            "$edgeAgent": {"properties.desired.modules.sensor": {"settings": {"image": "s:1"}}, "properties.desired.runtime.settings.registryCredentials.acr": {"username": "u"}},
            "$edgeHub": {"properties.desired.routes.up": "FROM /messages/modules/sensor/* INTO $upstream"},
            "sensor": {"properties.desired": {"rate": 1}}
        }}}), 1).unwrap();
        assert!(d.layered && d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!((d.modules[0].name.as_str(), d.source), ("sensor", 1));
        assert_eq!(
            d.modules[0].path,
            "content.modulesContent.$edgeAgent.properties.desired.modules.sensor"
        );
        assert_eq!(d.routes[0].name, "up");
        assert_eq!(d.credentials[0].name, "acr");
    }

    #[test]
    fn a_base_without_system_modules_or_routes_is_an_error_not_a_refusal() {
        let d = parse(&json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {"m": {}}}}}}), 0).unwrap();
        let paths: Vec<&str> = d.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "modulesContent.$edgeAgent.properties.desired.systemModules",
                "modulesContent.$edgeHub.properties.desired"
            ]
        );
        assert_eq!(d.modules.len(), 1);
        assert!(parse(&json!({"name": "package.json"}), 0).is_err());
        assert!(parse(&json!({"modulesContent": {"other": 1}}), 0).is_err());
    }

    #[test]
    fn layers_apply_over_the_highest_base_in_priority_order() {
        let base = |p: i64, image: &str| {
            json!({"priority": p, "content": {"modulesContent": {
            "$edgeAgent": {"properties.desired": {"systemModules": {}, "modules": {"m": {"settings": {"image": image}}}}},
            "$edgeHub": {"properties.desired": {"routes": {}}}}}})
        };
        let layer = |p: i64, image: &str| {
            json!({"priority": p, "content": {"modulesContent": {
            "$edgeAgent": {"properties.desired.modules.m": {"settings": {"image": image}}}}}})
        };
        let all = [
            base(10, "base-high"),
            layer(30, "layer-30"),
            base(1, "base-low"),
            layer(20, "layer-20"),
        ];
        let merged = merge(
            all.iter()
                .enumerate()
                .map(|(i, d)| parse(d, i).unwrap())
                .collect(),
        );
        assert_eq!(merged.modules.len(), 1);
        assert_eq!(merged.modules[0].value["settings"]["image"], "layer-30");
        assert_eq!(merged.modules[0].source, 1);
        let only_bases = merge(vec![parse(&all[2], 2).unwrap(), parse(&all[0], 0).unwrap()]);
        assert_eq!(
            only_bases.modules[0].value["settings"]["image"],
            "base-high"
        );
    }
}
