//! The module twin's desired properties: the document kept in step with edgeHub (`$version`
//! tracking, JSON merge of patches). What it asks for is resolved by
//! [`crate::control::wanted`].

use serde_json::{Map, Value};

/// The project's own section, in desired and reported properties.
pub const SECTION: &str = "edgeguard";

/// The desired properties as last read, with their version.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The desired properties, `$` metadata left out.
    pub doc: Map<String, Value>,
    /// Their `$version`.
    pub version: u64,
}

/// What a desired patch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Patched {
    /// Merged into the document.
    Applied,
    /// Not newer than the document (a repeat after a reconnect): ignored.
    Stale,
    /// Versions were skipped: the full twin must be read again.
    Gap,
}

impl Desired {
    /// From a twin GET's body, `{"desired": {...}, "reported": {...}}`.
    pub fn from_twin(twin: &Value) -> Result<Desired, String> {
        let desired = twin
            .get("desired")
            .ok_or("the twin has no `desired` section")?;
        let doc = desired
            .as_object()
            .ok_or("the twin's `desired` section is not an object")?;
        let version = doc.get("$version").and_then(Value::as_u64).unwrap_or(0);
        let mut clean = Map::new();
        merge(&mut clean, doc);
        Ok(Desired {
            doc: clean,
            version,
        })
    }

    /// Applies a patch. Its version comes from the topic, else from its own `$version`.
    pub fn patch(&mut self, topic_version: Option<u64>, patch: &Value) -> Result<Patched, String> {
        let patch = patch
            .as_object()
            .ok_or("a desired patch must be a JSON object")?;
        let version = topic_version.or_else(|| patch.get("$version").and_then(Value::as_u64));
        if let Some(v) = version {
            if v <= self.version {
                return Ok(Patched::Stale);
            }
            if v > self.version + 1 {
                return Ok(Patched::Gap);
            }
            self.version = v;
        }
        merge(&mut self.doc, patch);
        Ok(Patched::Applied)
    }
}

/// JSON merge patch as the twin service applies it: null deletes, objects merge key by key,
/// anything else replaces. Twin metadata (`$` keys) is not configuration and is left out.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                merge(slot.as_object_mut().expect("an object"), inner);
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patches_merge_in_version_order_and_a_gap_asks_for_the_whole_twin() {
        let mut d = Desired::from_twin(&json!({"desired": {"a": {"x": 1, "y": 2}, "$version": 4, "$metadata": {}}, "reported": {}})).unwrap();
        assert_eq!(d.version, 4);
        assert_eq!(
            d.doc,
            json!({"a": {"x": 1, "y": 2}}).as_object().unwrap().clone()
        );
        assert_eq!(
            d.patch(
                Some(5),
                &json!({"a": {"x": null, "z": 3}, "b": true, "$version": 5})
            )
            .unwrap(),
            Patched::Applied
        );
        assert_eq!(
            Value::Object(d.doc.clone()),
            json!({"a": {"y": 2, "z": 3}, "b": true})
        );
        assert_eq!(
            d.patch(Some(5), &json!({"b": false})).unwrap(),
            Patched::Stale
        );
        assert_eq!(
            d.patch(None, &json!({"b": false, "$version": 3})).unwrap(),
            Patched::Stale
        );
        assert_eq!(
            d.patch(Some(7), &json!({"b": false})).unwrap(),
            Patched::Gap
        );
        assert_eq!(d.version, 5);
        assert!(d.patch(Some(6), &json!([1])).is_err());
    }
}
