//! Every way a plugin can misbehave, chosen by `mode` in its configuration:
//! `healthy` (one heartbeat per call), `trap`, `loop`, `memory`, `flood`, `file` (reads
//! `path`, /etc/hostname by default, through WASI), `processes` (uses the processes capability),
//! `bad-event` (emits a custom event whose payload is not JSON), `error` (returns an error),
//! `synthetic` (`count` realistic ProcessCreate events, for benchmarks; 0 for an empty call),
//! `sequence` (`count` custom `Sequence` events per call, numbered 0, 1, 2, ... across calls),
//! `log-flood` (`count` log lines per call, each trying to forge a host log line),
//! `state-trap` (hands over a state, and traps when given one back), `big-state` (hands over a
//! state of `count` bytes), `huge-event` (a heartbeat and a `Sequence` event of `count` bytes),
//! `forge` (what a plugin granted only `processes` and `log` might claim: a root login from
//! sshd, host diagnostics and statistics, custom events named as typed kinds, an undeclared
//! kind; and one ProcessCreate it may emit, with a forged origin), `host-loop` (`count`
//! process snapshots in one call: the host's work, not its own), `rows` (one `Sequence` event of
//! `count` empty payload rows: 8 bytes each in the plugin, 24 as the host holds them).

use edgeguard_sdk::CustomEvent;
use edgeguard_sdk::prelude::*;

struct Fault {
    mode: String,
    /// What the `file` mode reads.
    path: String,
    count: u64,
    calls: u64,
    sequence: u64,
}

impl Collector for Fault {
    fn describe() -> PluginInfo {
        PluginInfo::new("fault", "0.1.0")
            .emits([
                "Heartbeat",
                "Sequence",
                "FileRead",
                "ProcessCount",
                "ProcessCreate",
                // Declared, as a forger would: it still needs `logins` to emit one.
                "Login",
            ])
            .group(PriorityGroup::High)
            .about("misbehaves on purpose")
    }

    fn new(config: Config) -> Result<Self, CollectError> {
        let mode = config
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("healthy")
            .to_owned();
        let count = config.get("count").and_then(|c| c.as_u64()).unwrap_or(1);
        let path = config
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or("/etc/hostname")
            .to_owned();
        Ok(Fault {
            mode,
            path,
            count,
            calls: 0,
            sequence: 0,
        })
    }

    fn collect(&mut self, max_events: u32) -> Result<Vec<Event>, CollectError> {
        self.calls += 1;
        match self.mode.as_str() {
            "healthy" | "state-trap" | "big-state" => Ok(vec![Event::Heartbeat]),
            "trap" => panic!("fault plugin: deliberate panic on call {}", self.calls),
            "loop" => {
                let mut x: u64 = self.calls;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "memory" => {
                // Reserve without writing: the memory limit, not the CPU deadline, must stop it,
                // however loaded the machine is.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(4 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "flood" => Ok((0..=max_events).map(|_| Event::Heartbeat).collect()),
            "file" => match std::fs::read_to_string(&self.path) {
                Ok(text) => Ok(vec![custom(
                    "FileRead",
                    format!("{{\"Content\":{:?}}}", text.trim()),
                )]),
                Err(e) => Err(CollectError::Internal(format!(
                    "cannot read {}: {e}",
                    self.path
                ))),
            },
            "processes" => Ok(vec![custom(
                "ProcessCount",
                format!("{{\"Count\":{}}}", processes::snapshot()?.len()),
            )]),
            "bad-event" => Ok(vec![custom("Broken", "{not json".into()), Event::Heartbeat]),
            "error" => Err(CollectError::Internal("deliberate failure".into())),
            "log-flood" => {
                for i in 0..self.count {
                    edgeguard_sdk::info!(
                        "line {i}\n2026-12-01T00:00:00.000000Z ERROR edgeguard: forged by the plugin\r\x1b[2J"
                    );
                }
                Ok(vec![Event::Heartbeat])
            }
            "synthetic" => Ok((0..self.count as u32).map(synthetic_process).collect()),
            "forge" => Ok(forgeries()),
            "host-loop" => {
                let mut seen = 0;
                for _ in 0..self.count {
                    seen = processes::snapshot()?.len();
                }
                Ok(vec![custom(
                    "ProcessCount",
                    format!("{{\"Count\":{seen}}}"),
                )])
            }
            "rows" => Ok(vec![Event::Custom(CustomEvent {
                name: "Sequence".into(),
                periodic: false,
                payload_json: vec![String::new(); self.count as usize],
            })]),
            "huge-event" => Ok(vec![
                Event::Heartbeat,
                custom(
                    "Sequence",
                    format!(
                        "{{\"N\":0,\"Blob\":\"{}\"}}",
                        "x".repeat(self.count as usize)
                    ),
                ),
            ]),
            "balloon" => {
                // One burst, on the second call of its life (the count is in the state, so a
                // renewed instance does not burst again): `count` MiB the allocator frees at
                // once and wasm memory keeps.
                if self.sequence == 1 {
                    let mut burst = vec![0u8; (self.count as usize) << 20];
                    burst.iter_mut().step_by(4096).for_each(|b| *b = 1);
                    std::hint::black_box(&burst);
                }
                let n = self.sequence;
                self.sequence += 1;
                Ok(vec![custom("Sequence", format!("{{\"N\":{n}}}"))])
            }
            "sequence" => {
                let start = self.sequence;
                self.sequence += self.count;
                Ok((start..self.sequence)
                    .map(|n| custom("Sequence", format!("{{\"N\":{n}}}")))
                    .collect())
            }
            other => Err(CollectError::config(
                "mode",
                format!("unknown mode `{other}`"),
            )),
        }
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        match self.mode.as_str() {
            "state-trap" => Some(b"poison".to_vec()),
            "big-state" => Some(vec![7; self.count as usize]),
            "balloon" => Some(self.sequence.to_le_bytes().to_vec()),
            _ => None,
        }
    }

    fn restore_state(&mut self, state: Vec<u8>) -> Result<(), CollectError> {
        if self.mode == "state-trap" {
            panic!("fault plugin: cannot take a state of {} bytes", state.len());
        }
        if self.mode == "balloon" {
            let bytes = <[u8; 8]>::try_from(state.as_slice())
                .map_err(|_| CollectError::InvalidState("balloon: 8 bytes".into()))?;
            self.sequence = u64::from_le_bytes(bytes);
        }
        Ok(())
    }
}

fn synthetic_process(i: u32) -> Event {
    Event::ProcessCreate(edgeguard_sdk::ProcessCreate {
        executable: "/usr/bin/python3.11".into(),
        process_id: 4000 + i,
        parent_process_id: 1,
        user_id: 1000,
        user_name: Some("edge".into()),
        command_line: format!("/usr/bin/python3 /opt/app/worker.py --queue telemetry --shard {i}"),
        extra: vec![("Name".into(), "python3".into())],
    })
}

fn forgeries() -> Vec<Event> {
    let mut allowed = synthetic_process(0);
    if let Event::ProcessCreate(p) = &mut allowed {
        p.extra.push(("Plugin".into(), "process".into()));
    }
    vec![
        Event::Login(edgeguard_sdk::Login {
            operation: "login".into(),
            result: edgeguard_sdk::LoginResult::Success,
            user_name: Some("root".into()),
            user_id: Some(0),
            remote_address: Some("203.0.113.7".into()),
            remote_port: Some(52144),
            local_port: Some(22),
            executable: "/usr/sbin/sshd".into(),
            process_id: 812,
            extra: vec![],
        }),
        custom(
            "Diagnostic",
            r#"{"Severity":"Error","Message":"all is well"}"#.into(),
        ),
        custom("ConfigurationError", r#"{"ConfigurationName":"x"}"#.into()),
        custom("DroppedEventsStatistics", r#"{"Queue":"High"}"#.into()),
        custom("MessageStatistics", r#"{"MessagesSent":0}"#.into()),
        custom("ProcessCreate", r#"{"Executable":"/bin/sh"}"#.into()),
        custom("Heartbeat", r#"{"Beat":1}"#.into()),
        custom("Undeclared", r#"{"N":1}"#.into()),
        allowed,
        Event::Heartbeat,
    ]
}

fn custom(name: &str, json: String) -> Event {
    Event::Custom(CustomEvent {
        name: name.into(),
        periodic: false,
        payload_json: vec![json],
    })
}

edgeguard_sdk::export_collector!(Fault);
