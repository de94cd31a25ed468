//! The crate edgeguard collector plugins depend on.
//!
//! A collector is a type implementing [`Collector`], exported with [`export_collector!`] and
//! built with `cargo build --target wasm32-wasip2`. One instance lives across collections, so a
//! collector keeps whatever state it needs (the previous snapshot, a cursor) in `self`.
//!
//! ```ignore
//! use edgeguard_sdk::prelude::*;
//!
//! struct Beat;
//! impl Collector for Beat {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("beat", "1.0.0").emits(["Heartbeat"]).group(PriorityGroup::Low)
//!     }
//!     fn new(_config: Config) -> Result<Self, CollectError> { Ok(Beat) }
//!     fn collect(&mut self, _max: u32) -> Result<Vec<Event>, CollectError> {
//!         Ok(vec![Event::Heartbeat])
//!     }
//! }
//! edgeguard_sdk::export_collector!(Beat);
//! ```

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "collector",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_collector_bindings",
        default_bindings_module: "edgeguard_sdk::bindings",
        generate_all,
    });
}

pub use bindings::edgeguard::collector::types::{
    CollectError, ConnectionCreate, CustomEvent, Direction, Event, HostError, ListeningPort,
    LocalUser, Login, LoginResult, PluginInfo, PriorityGroup, ProcessCreate, ProcessTerminate,
    Protocol, SystemInformation,
};

/// Host capabilities. Each is usable only when the plugin's configuration grants it; a plugin
/// that uses one it was not granted is refused before it runs.
pub mod host {
    pub use crate::bindings::edgeguard::collector::clock;
    pub use crate::bindings::edgeguard::collector::containers;
    pub use crate::bindings::edgeguard::collector::log;
    pub use crate::bindings::edgeguard::collector::logins;
    pub use crate::bindings::edgeguard::collector::processes;
    pub use crate::bindings::edgeguard::collector::sockets;
    pub use crate::bindings::edgeguard::collector::system;
}

/// The plugin's configuration: the JSON object the host passes to `init`.
pub type Config = serde_json::Map<String, serde_json::Value>;

// What collectors and analyzers share, beside their bindings (`sdk-analyzer` includes it too).
#[path = "common.rs"]
mod common;
pub use common::{config_bool, config_keys, fingerprint, rfc3339};

/// Everything a collector needs in one import.
pub mod prelude {
    pub use crate::host::{clock, containers, log, logins, processes, sockets, system};
    pub use crate::{
        CollectError, Collector, Config, CustomEvent, Event, HostError, PluginInfo, PriorityGroup,
        ProcessCreate, ProcessTerminate,
    };
    pub use crate::{debug, info, warn};
}

/// What a plugin implements. `new`, `collect` and `describe` are required; state hand-over on
/// hot-swap is optional.
pub trait Collector: Sized + 'static {
    /// Self-description. Called before any capability is granted: it must not use one.
    fn describe() -> PluginInfo;

    /// Builds the instance from its configuration (an empty map when none is configured).
    fn new(config: Config) -> Result<Self, CollectError>;

    /// One collection: at most `max_events` events; keep the rest for the next call.
    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError>;

    /// State for the next version of this plugin on a planned swap.
    fn save_state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Takes over the state the previous version saved.
    fn restore_state(&mut self, _state: Vec<u8>) -> Result<(), CollectError> {
        Ok(())
    }
}

impl PluginInfo {
    /// A description with no events, no capabilities and the Medium group; refine it with the builders.
    pub fn new(name: &str, version: &str) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            events: Vec::new(),
            capabilities: Vec::new(),
            default_group: PriorityGroup::Medium,
            description: String::new(),
        }
    }
    /// The event kinds the plugin emits.
    pub fn emits<I: IntoIterator<Item = S>, S: Into<String>>(mut self, events: I) -> Self {
        self.events.extend(events.into_iter().map(Into::into));
        self
    }
    /// The capabilities the plugin needs (its configuration must grant them).
    pub fn needs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, capabilities: I) -> Self {
        self.capabilities
            .extend(capabilities.into_iter().map(Into::into));
        self
    }
    /// The priority group the plugin runs in unless its configuration says otherwise.
    pub fn group(mut self, group: PriorityGroup) -> Self {
        self.default_group = group;
        self
    }
    /// A one-line description.
    pub fn about(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }
}

/// A host source a collector can do without (the kernel's events, say): that it is unavailable
/// is logged once, with what the collector does instead, and so is its return; not at every
/// collection.
#[derive(Default)]
pub struct Availability {
    unavailable: Option<String>,
}

impl Availability {
    /// `result` of a call to the source: Some when it answered; None when it is unavailable
    /// (logged as `{why}: {instead}` when that is news); other errors pass through.
    pub fn check<T>(
        &mut self,
        result: Result<T, HostError>,
        instead: &str,
        back: &str,
    ) -> Result<Option<T>, HostError> {
        match result {
            Ok(answer) => {
                if self.unavailable.take().is_some() {
                    crate::info!("{back}");
                }
                Ok(Some(answer))
            }
            Err(HostError::Unavailable(why)) => {
                if self.unavailable.as_ref() != Some(&why) {
                    crate::info!("{why}: {instead}");
                    self.unavailable = Some(why);
                }
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// The source answered the last call (or was not called yet).
    pub fn answered(&self) -> bool {
        self.unavailable.is_none()
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;

    /// The one live instance of a component. A component instance is single-threaded, so a
    /// thread-local cell is the whole synchronisation story.
    pub struct Slot<T>(RefCell<Option<T>>);

    impl<T: Collector> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T: Collector> Slot<T> {
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
        pub fn init(&self, config: String) -> Result<(), CollectError> {
            *self.0.borrow_mut() = Some(T::new(crate::common::parse_config(&config)?)?);
            Ok(())
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
            self.0
                .borrow()
                .as_ref()
                .and_then(super::Collector::save_state)
        }
    }
}

/// Exports a [`Collector`] implementation as the component's `plugin` interface.
#[macro_export]
macro_rules! export_collector {
    ($collector:ty) => {
        const _: () = {
            use $crate::bindings::exports::edgeguard::collector::plugin::Guest;
            use $crate::{CollectError, Collector, Event, PluginInfo};

            struct Export;
            thread_local! {
                static SLOT: $crate::__private::Slot<$collector> = const { $crate::__private::Slot::new() };
            }

            impl Guest for Export {
                fn describe() -> PluginInfo {
                    <$collector as Collector>::describe()
                }
                fn init(config: String) -> Result<(), CollectError> {
                    SLOT.with(|s| s.init(config))
                }
                fn collect(max_events: u32) -> Result<Vec<Event>, CollectError> {
                    SLOT.with(|s| s.with(|c| c.collect(max_events)))
                }
                fn save_state() -> Option<Vec<u8>> {
                    SLOT.with(|s| s.save())
                }
                fn restore_state(state: Vec<u8>) -> Result<(), CollectError> {
                    SLOT.with(|s| s.with(|c| c.restore_state(state)))
                }
            }

            $crate::bindings::__export_collector_bindings!(Export with_types_in $crate::bindings);
        };
    };
}
