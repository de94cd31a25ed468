//! Every way a plugin can misbehave, chosen by `mode` in its configuration:
//! `healthy` (one heartbeat per call), `trap`, `loop`, `memory`, `flood`, `file` (reads
//! /etc/hostname through WASI), `processes` (uses the processes capability),
//! `bad-event` (emits a custom event whose payload is not JSON), `error` (returns an error).

use edgeguard_sdk::prelude::*;
use edgeguard_sdk::CustomEvent;

struct Fault {
    mode: String,
    calls: u64,
}

impl Collector for Fault {
    fn describe() -> PluginInfo {
        PluginInfo::new("fault", "0.1.0").emits(["Heartbeat"]).group(PriorityGroup::High).about("misbehaves on purpose")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        let mode = config.get("mode").and_then(|m| m.as_str()).unwrap_or("healthy").to_owned();
        Ok(Fault { mode, calls: 0 })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        self.calls += 1;
        match self.mode.as_str() {
            "healthy" => Ok(vec![Event::Heartbeat]),
            "trap" => panic!("fault plugin: deliberate panic on call {}", self.calls),
            "loop" => {
                let mut x: u64 = self.calls;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "flood" => Ok((0..=max_events).map(|_| Event::Heartbeat).collect()),
            "file" => match std::fs::read_to_string("/etc/hostname") {
                Ok(text) => Ok(vec![custom("FileRead", format!("{{\"Content\":{:?}}}", text.trim()))]),
                Err(e) => Err(CollectError::Internal(format!("cannot read /etc/hostname: {e}"))),
            },
            "processes" => Ok(vec![custom("ProcessCount", format!("{{\"Count\":{}}}", processes::snapshot()?.len()))]),
            "bad-event" => Ok(vec![custom("Broken", "{not json".into()), Event::Heartbeat]),
            "error" => Err(CollectError::Internal("deliberate failure".into())),
            other => Err(CollectError::config("mode", format!("unknown mode `{other}`"))),
        }
    }
}

fn custom(name: &str, json: String) -> Event {
    Event::Custom(CustomEvent { name: name.into(), periodic: false, payload_json: vec![json] })
}

edgeguard_sdk::export_collector!(Fault);
