//! The crate edgeguard analyzer plugins depend on.
//!
//! An analyzer is a type implementing [`Analyzer`], exported with [`export_analyzer!`] and
//! built with `cargo build --target wasm32-wasip2`. The host hands it the events it wants as
//! they enter the pipeline, in batches, and takes back findings: alerts and recommendations.
//! One instance lives across calls, so it keeps its windows and counters in `self`; a planned
//! swap hands them to the next version through [`Analyzer::save_state`].
//!
//! ```ignore
//! use edgeguard_analyzer_sdk::prelude::*;
//!
//! struct Root;
//! impl Analyzer for Root {
//!     fn describe() -> AnalyzerInfo {
//!         AnalyzerInfo::new("root-logins", "1.0.0").wants(["Login"])
//!     }
//!     fn new(_config: Config) -> Result<Self, CollectError> { Ok(Root) }
//!     fn rules(&self) -> Vec<RuleStatus> { vec![RuleStatus::on("RootLogin", "")] }
//!     fn analyze(&mut self, events: Vec<Observed>, _now_ms: u64, _max: u32) -> Result<Vec<Finding>, CollectError> {
//!         Ok(events.iter()
//!             .filter(|e| e.items.iter().any(|i| i.field("UserName") == Some("root")))
//!             .map(|e| Finding::alert("RootLogin", Severity::High, "root logged in").cites(&e.id))
//!             .collect())
//!     }
//! }
//! edgeguard_analyzer_sdk::export_analyzer!(Root);
//! ```

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "analyzer-plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_analyzer_bindings",
        default_bindings_module: "edgeguard_analyzer_sdk::bindings",
        generate_all,
    });
}

pub use bindings::edgeguard::collector::analysis::{
    AnalyzerInfo, Entities, Finding, FindingKind, Observed, Origin, RuleStatus, Severity,
};
pub use bindings::edgeguard::collector::types::{CollectError, HostError};

/// Host capabilities. Each is usable only when the analyzer's configuration grants it.
pub mod host {
    pub use crate::bindings::edgeguard::collector::clock;
    pub use crate::bindings::edgeguard::collector::log;
}

/// The analyzer's configuration: the JSON object the host passes to `init`.
pub type Config = serde_json::Map<String, serde_json::Value>;

// What collectors and analyzers share, beside their bindings.
#[path = "../../sdk-plugin/src/common.rs"]
mod common;
pub use common::{config_bool, config_keys, fingerprint, rfc3339};

pub mod known;
pub mod tuning;

/// Everything an analyzer needs in one import.
pub mod prelude {
    pub use crate::host::{clock, log};
    pub use crate::tuning::{Quiet, Switch, Tally, Tuning};
    pub use crate::{
        Analyzer, AnalyzerInfo, CollectError, Config, Entities, Fields, Finding, FindingKind,
        Observed, RuleStatus, Severity, cap_findings,
    };
    pub use crate::{debug, info, warn};
}

/// What an analyzer implements. State hand-over on a swap is optional.
pub trait Analyzer: Sized + 'static {
    /// Self-description. Called before any capability is granted: it must not use one.
    fn describe() -> AnalyzerInfo;

    /// Builds the instance from its configuration (an empty map when none is configured).
    fn new(config: Config) -> Result<Self, CollectError>;

    /// The rules as the configuration leaves them, for the device's reported properties.
    fn rules(&self) -> Vec<RuleStatus>;

    /// Events in the order they entered the pipeline (none: a tick, for windows to close),
    /// the host's time, and at most `max_findings` findings to return.
    fn analyze(
        &mut self,
        events: Vec<Observed>,
        now_ms: u64,
        max_findings: u32,
    ) -> Result<Vec<Finding>, CollectError>;

    /// State for the next version on a planned swap.
    fn save_state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Takes over the state the previous version saved.
    fn restore_state(&mut self, _state: Vec<u8>) -> Result<(), CollectError> {
        Ok(())
    }
}

/// Keeps the first `max_findings` of `findings` (the most a call may return), logging how many
/// more there were.
pub fn cap_findings(findings: &mut Vec<Finding>, max_findings: u32) {
    let max = max_findings as usize;
    if findings.len() > max {
        warn!(
            "{} findings in one call, more than the host takes ({max}): the rest are dropped",
            findings.len()
        );
        findings.truncate(max);
    }
}

/// Reading a payload item's fields by name.
pub trait Fields {
    /// The value of field `name`, if the item has it.
    fn field(&self, name: &str) -> Option<&str>;
}

impl Fields for [(String, String)] {
    fn field(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Fields for Vec<(String, String)> {
    fn field(&self, name: &str) -> Option<&str> {
        self.as_slice().field(name)
    }
}

impl AnalyzerInfo {
    /// A description wanting no events and needing no capability; refine it with the builders.
    pub fn new(name: &str, version: &str) -> Self {
        AnalyzerInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            wants: Vec::new(),
            capabilities: Vec::new(),
            description: String::new(),
        }
    }
    /// The event kinds it is handed.
    pub fn wants<I: IntoIterator<Item = S>, S: Into<String>>(mut self, events: I) -> Self {
        self.wants.extend(events.into_iter().map(Into::into));
        self
    }
    /// The capabilities it needs (its configuration must grant them).
    pub fn needs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, capabilities: I) -> Self {
        self.capabilities
            .extend(capabilities.into_iter().map(Into::into));
        self
    }
    /// A one-line description.
    pub fn about(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }
}

impl RuleStatus {
    /// An enabled rule and its settings in one line.
    pub fn on(name: &str, detail: impl Into<String>) -> Self {
        RuleStatus {
            name: name.to_owned(),
            enabled: true,
            detail: detail.into(),
        }
    }
    /// A rule its configuration turned off.
    pub fn off(name: &str) -> Self {
        RuleStatus {
            name: name.to_owned(),
            enabled: false,
            detail: String::new(),
        }
    }
}

impl Entities {
    /// Nothing named yet.
    pub fn none() -> Self {
        Entities {
            user_name: None,
            user_id: None,
            process_id: None,
            executable: None,
            command_line: None,
            remote_address: None,
            remote_port: None,
            local_port: None,
            container: None,
            module: None,
            file: None,
        }
    }
}

impl Finding {
    fn new(kind: FindingKind, name: &str, severity: Severity, title: &str) -> Self {
        Finding {
            kind,
            name: name.to_owned(),
            severity,
            title: title.to_owned(),
            description: String::new(),
            remediation: String::new(),
            techniques: Vec::new(),
            entities: Entities::none(),
            evidence: Vec::new(),
            extra: Vec::new(),
        }
    }
    /// An alert from rule `name`.
    pub fn alert(name: &str, severity: Severity, title: &str) -> Self {
        Finding::new(FindingKind::Alert, name, severity, title)
    }
    /// A recommendation from rule `name`.
    pub fn recommendation(name: &str, severity: Severity, title: &str) -> Self {
        Finding::new(FindingKind::Recommendation, name, severity, title)
    }
    /// What was seen.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
    /// What to do about it.
    pub fn remediation(mut self, text: impl Into<String>) -> Self {
        self.remediation = text.into();
        self
    }
    /// MITRE ATT&CK technique ids.
    pub fn techniques<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.techniques.extend(ids.into_iter().map(Into::into));
        self
    }
    /// Cites an observed event as evidence, by its Id.
    pub fn cites(mut self, id: &str) -> Self {
        self.evidence.push(id.to_owned());
        self
    }
    /// Cites several observed events.
    pub fn cites_all<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.evidence.extend(ids.into_iter().map(Into::into));
        self
    }
    /// What it is about.
    pub fn entities(mut self, entities: Entities) -> Self {
        self.entities = entities;
        self
    }
    /// A detail beside it.
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.extra.push((key.to_owned(), value.into()));
        self
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;

    /// The one live instance of a component (single-threaded, as a component instance is).
    pub struct Slot<T>(RefCell<Option<T>>);

    impl<T: Analyzer> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T: Analyzer> Slot<T> {
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
        pub fn init(&self, config: String) -> Result<Vec<RuleStatus>, CollectError> {
            let instance = T::new(crate::common::parse_config(&config)?)?;
            let rules = instance.rules();
            *self.0.borrow_mut() = Some(instance);
            Ok(rules)
        }
        pub fn with<R>(
            &self,
            f: impl FnOnce(&mut T) -> Result<R, CollectError>,
        ) -> Result<R, CollectError> {
            match self.0.borrow_mut().as_mut() {
                Some(instance) => f(instance),
                None => Err(CollectError::Internal("called before init".into())),
            }
        }
        pub fn save(&self) -> Option<Vec<u8>> {
            self.0.borrow().as_ref().and_then(Analyzer::save_state)
        }
    }
}

/// Exports an [`Analyzer`] implementation as the component's `analyzer` interface.
#[macro_export]
macro_rules! export_analyzer {
    ($analyzer:ty) => {
        const _: () = {
            use $crate::bindings::exports::edgeguard::collector::analyzer::Guest;
            use $crate::{Analyzer, AnalyzerInfo, CollectError, Finding, Observed, RuleStatus};

            struct Export;
            thread_local! {
                static SLOT: $crate::__private::Slot<$analyzer> = const { $crate::__private::Slot::new() };
            }

            impl Guest for Export {
                fn describe() -> AnalyzerInfo {
                    <$analyzer as Analyzer>::describe()
                }
                fn init(config: String) -> Result<Vec<RuleStatus>, CollectError> {
                    SLOT.with(|s| s.init(config))
                }
                fn analyze(
                    events: Vec<Observed>,
                    now_ms: u64,
                    max_findings: u32,
                ) -> Result<Vec<Finding>, CollectError> {
                    SLOT.with(|s| s.with(|a| a.analyze(events, now_ms, max_findings)))
                }
                fn save_state() -> Option<Vec<u8>> {
                    SLOT.with(|s| s.save())
                }
                fn restore_state(state: Vec<u8>) -> Result<(), CollectError> {
                    SLOT.with(|s| s.with(|a| a.restore_state(state)))
                }
            }

            $crate::bindings::__export_analyzer_bindings!(Export with_types_in $crate::bindings);
        };
    };
}
