//! Which Sigma rules edgeguard's events can answer, and how their fields are named here.
//!
//! A rule is evaluated against the events of its `logsource.category` (Linux or no product):
//! `process_creation` against ProcessCreate, `network_connection` against ConnectionCreate.
//! A rule that reads a field those events lack is skipped, and says which.

use crate::Rule;

/// The events a rule is evaluated against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// ProcessCreate.
    ProcessCreation,
    /// ConnectionCreate.
    NetworkConnection,
}

impl Source {
    /// The edgeguard event kind.
    pub fn event(self) -> &'static str {
        match self {
            Source::ProcessCreation => "ProcessCreate",
            Source::NetworkConnection => "ConnectionCreate",
        }
    }

    /// The Sigma fields it carries, each with the edgeguard field it is read from.
    pub fn fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Source::ProcessCreation => &[
                ("Image", "Executable"),
                ("CommandLine", "CommandLine"),
                ("User", "UserName"),
                ("ProcessId", "ProcessId"),
                ("ParentProcessId", "ParentProcessId"),
            ],
            Source::NetworkConnection => &[
                ("Image", "Executable"),
                ("DestinationIp", "RemoteAddress"),
                ("DestinationPort", "RemotePort"),
                ("SourceIp", "LocalAddress"),
                ("SourcePort", "LocalPort"),
                ("Protocol", "Protocol"),
                ("ProcessId", "ProcessId"),
                // Derived: `true` for an outbound connection.
                ("Initiated", "Direction"),
            ],
        }
    }

    /// The Sigma-named fields of an event item of this source.
    pub fn read(self, item: &[(String, String)]) -> crate::Fields {
        crate::Fields::new(self.fields().iter().filter_map(|(sigma, ours)| {
            let value = item
                .iter()
                .find(|(k, _)| k == ours)
                .map(|(_, v)| v.as_str())?;
            let value = match *sigma {
                "Initiated" => (value == "Out").to_string(),
                _ => value.to_owned(),
            };
            Some(((*sigma).to_owned(), value))
        }))
    }
}

/// Where edgeguard evaluates `rule`, or why it cannot.
pub fn source_of(rule: &Rule) -> Result<Source, String> {
    let ls = &rule.logsource;
    if let Some(product) = ls.product.as_deref().filter(|p| *p != "linux") {
        return Err(format!("for `{product}`, not Linux"));
    }
    if let Some(service) = &ls.service {
        return Err(format!(
            "reads the `{service}` log, which edgeguard does not collect"
        ));
    }
    let source = match ls.category.as_deref() {
        Some("process_creation") => Source::ProcessCreation,
        Some("network_connection") => Source::NetworkConnection,
        Some(other) => return Err(format!("category `{other}`: edgeguard has no such events")),
        None => return Err("no logsource category".into()),
    };
    let missing: Vec<&str> = rule
        .fields()
        .into_iter()
        .filter(|f| !source.fields().iter().any(|(s, _)| s == f))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "needs {} {}, which {} does not carry",
            if missing.len() == 1 {
                "the field"
            } else {
                "the fields"
            },
            missing.join(", "),
            source.event()
        ));
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn rule(category: &str, product: &str, field: &str) -> Rule {
        Rule::load_all(&format!(
            "title: t\nlogsource: {{category: {category}, product: {product}}}\ndetection: {{s: {{{field}: x}}, condition: s}}\n"
        ))
        .pop()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn rules_are_placed_or_skipped_with_the_reason() {
        assert_eq!(
            source_of(&rule("process_creation", "linux", "CommandLine")),
            Ok(Source::ProcessCreation)
        );
        assert_eq!(
            source_of(&rule("network_connection", "linux", "DestinationPort")),
            Ok(Source::NetworkConnection)
        );
        assert!(
            source_of(&rule("process_creation", "linux", "ParentImage"))
                .unwrap_err()
                .contains("ParentImage")
        );
        assert!(
            source_of(&rule("process_creation", "windows", "Image"))
                .unwrap_err()
                .contains("windows")
        );
        assert!(
            source_of(&rule("file_event", "linux", "TargetFilename"))
                .unwrap_err()
                .contains("file_event")
        );
    }

    #[test]
    fn events_are_read_under_sigma_names() {
        let item: Vec<(String, String)> = [
            ("Executable", "/usr/bin/nc"),
            ("Direction", "Out"),
            ("RemotePort", "4444"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = Source::NetworkConnection.read(&item);
        assert_eq!(f.field("Image").map(|(v, _)| v), Some("/usr/bin/nc"));
        assert_eq!(f.field("Initiated").map(|(v, _)| v), Some("true"));
        assert_eq!(f.field("DestinationPort").map(|(v, _)| v), Some("4444"));
        assert_eq!(f.field("SourceIp"), None);
    }
}
