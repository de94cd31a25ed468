//! Validation against the official ASC security message schemas in `schemas/asc/`, and
//! against the project's own schema for the event kinds ASC lacks.

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;
use std::path::PathBuf;

/// The official ASC message schemas, kept in the repository (`schemas/asc/`, MIT, Microsoft).
pub fn schema_dir() -> PathBuf {
    let dir = super::repo_root().join("schemas/asc");
    assert!(
        dir.join("messageRoot.json").exists(),
        "the ASC schemas are missing from {}",
        dir.display()
    );
    dir
}

/// Resolves the schemas' relative `$ref`s ("message_v1_0.json#") to the files beside them.
pub struct LocalSchemas(pub PathBuf);

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri
            .path()
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let text =
            std::fs::read_to_string(self.0.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// A validator for `messageRoot.json`, with formats (date-time, ipv4, ...) checked.
pub fn asc_validator() -> Validator {
    let dir = schema_dir();
    let root: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("messageRoot.json")).unwrap())
            .unwrap();
    jsonschema::options()
        .with_base_uri("json-schema:///messageRoot.json")
        .with_retriever(LocalSchemas(dir))
        .should_validate_formats(true)
        .build(&root)
        .expect("the official schema compiles")
}

/// A validator for the project's own message family, `schemas/edgeguard-message.json`.
pub fn edgeguard_validator() -> Validator {
    let path = super::repo_root().join("schemas/edgeguard-message.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schemas/edgeguard-message.json compiles")
}

/// Both message families, each checked against its own schema.
pub struct Validators {
    pub asc: Validator,
    pub edgeguard: Validator,
}

impl Validators {
    pub fn new() -> Validators {
        Validators {
            asc: asc_validator(),
            edgeguard: edgeguard_validator(),
        }
    }

    /// Validates a message against the schema its MessageSchemaVersion names.
    pub fn assert_valid(&self, message: &Value) {
        match message["MessageSchemaVersion"].as_str() {
            Some("1.0") => assert_valid(&self.asc, message),
            Some("edgeguard/1.0") => {
                check(&self.edgeguard, message, "schemas/edgeguard-message.json");
            }
            other => panic!("unknown MessageSchemaVersion {other:?} in {message}"),
        }
    }
}

impl Default for Validators {
    fn default() -> Self {
        Self::new()
    }
}

/// Panics with every validation error of `message`.
pub fn assert_valid(validator: &Validator, message: &Value) {
    check(validator, message, "messageRoot.json");
}

fn check(validator: &Validator, message: &Value, schema: &str) {
    let errors: Vec<String> = validator
        .iter_errors(message)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "message does not validate against {schema}:\n{}\n{}",
        errors.join("\n"),
        message
    );
}
