//! A collector written against `edgeguard:collector@0.1.0` as released (its WIT is frozen in
//! `wit/` beside this file), straight on wit-bindgen. The versioning rule says every 0.1.x host
//! loads it; the test suite holds the host to that.

wit_bindgen::generate!({ world: "collector", path: "wit" });

use edgeguard::collector::types::{CollectError, Event, PluginInfo, PriorityGroup};
use exports::edgeguard::collector::plugin::Guest;

struct Compat;

impl Guest for Compat {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "compat".into(),
            version: "0.1.0".into(),
            events: vec!["Heartbeat".into()],
            capabilities: vec!["log".into()],
            default_group: PriorityGroup::Low,
            description: "built against edgeguard:collector@0.1.0".into(),
        }
    }

    fn init(_config: String) -> Result<(), CollectError> {
        Ok(())
    }

    fn collect(_max_events: u32) -> Result<Vec<Event>, CollectError> {
        edgeguard::collector::log::log(
            edgeguard::collector::log::Level::Info,
            "collecting under the 0.1.0 contract",
        );
        Ok(vec![Event::Heartbeat])
    }

    fn save_state() -> Option<Vec<u8>> {
        None
    }

    fn restore_state(_state: Vec<u8>) -> Result<(), CollectError> {
        Ok(())
    }
}

export!(Compat);
