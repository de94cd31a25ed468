//! What should be in force, and making it so without a restart. The wanted configuration is
//! the local file (reloaded on SIGHUP or when it changes) overlaid by the module twin's desired
//! properties (as a module). Each change is resolved whole: if any part is refused, nothing
//! changes and the refusal is reported; otherwise the pipeline, the group intervals and the
//! collector set follow.

use crate::config::{Config, Overrides};
pub mod wanted;

use crate::events::{SecurityEvent, Severity};
use crate::fleet;
use crate::pipeline::asc_config::ConfigIssue;
use crate::pipeline::{self, Command};
use crate::scheduler;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use wanted::Wanted;

/// Holds what is wanted and what is in force, and makes the pipeline, the schedule and the fleet follow.
pub struct Controller {
    local: Config,
    /// The twin's desired document; empty without a twin.
    desired: Map<String, Value>,
    in_force: Wanted,
    pipeline: mpsc::Sender<Command>,
    scheduler: scheduler::Control,
    fleet: watch::Sender<Arc<fleet::Wanted>>,
}

/// The result of resolving the wanted configuration.
pub enum Applied {
    /// In force now; the pipeline's warnings about it when its settings changed.
    Applied(Option<Vec<ConfigIssue>>),
    /// Refused whole, for these reasons; what was in force stays.
    Refused(Vec<ConfigIssue>),
}

impl Controller {
    /// `in_force`: what the agent started with; the fleet follows `fleet`.
    pub fn new(
        local: Config,
        in_force: Wanted,
        pipeline: mpsc::Sender<Command>,
        scheduler: scheduler::Control,
        fleet: watch::Sender<Arc<fleet::Wanted>>,
    ) -> Controller {
        Controller {
            local,
            desired: Map::new(),
            in_force,
            pipeline,
            scheduler,
            fleet,
        }
    }

    /// The local file as last read.
    pub fn local(&self) -> &Config {
        &self.local
    }

    /// What is in force now.
    pub fn in_force(&self) -> &Wanted {
        &self.in_force
    }

    /// The pipeline's command channel.
    pub fn pipeline(&self) -> mpsc::Sender<Command> {
        self.pipeline.clone()
    }

    /// The twin's desired document, as last read or patched.
    pub fn set_desired(&mut self, desired: Map<String, Value>) {
        self.desired = desired;
    }

    /// A new local file. Returns the settings it changes that only a restart applies.
    pub fn set_local(&mut self, config: Config) -> Vec<&'static str> {
        let restart = self.local.restart_only_changes(&config);
        self.local = config;
        restart
    }

    /// Resolves and applies what is wanted now. `recheck`: have the fleet look at its plugins
    /// again even if the set is unchanged (a file may have been replaced on disk).
    pub async fn apply(&mut self, recheck: bool) -> Applied {
        let wanted = match wanted::resolve(&self.local, &self.desired, &self.in_force) {
            Ok(wanted) => wanted,
            Err(issues) => {
                let events: Vec<SecurityEvent> = issues.iter().map(ConfigIssue::to_event).collect();
                let _ = self.pipeline.send(Command::Accept(events)).await;
                return Applied::Refused(issues);
            }
        };
        let mut warnings = None;
        if wanted.settings != self.in_force.settings {
            let (tx, rx) = oneshot::channel();
            if self
                .pipeline
                .send(Command::Reconfigure(Box::new(wanted.settings.clone()), tx))
                .await
                .is_ok()
            {
                warnings = Some(rx.await.unwrap_or_default());
            }
        }
        if wanted.schedule != self.in_force.schedule {
            self.scheduler.set_intervals(&wanted.schedule);
        }
        if recheck || wanted.fleet != self.in_force.fleet {
            self.fleet.send_replace(Arc::new(wanted.fleet.clone()));
        }
        self.in_force = wanted;
        Applied::Applied(warnings)
    }

    /// Takes a reloaded local file (or why it could not be read) and applies it.
    pub async fn reload(&mut self, reloaded: Result<Config, String>) -> Option<Applied> {
        let config = match reloaded {
            Ok(config) => config,
            Err(message) => {
                let message = format!("{message}; the configuration in force stays");
                tracing::error!("configuration reload refused: {message}");
                let _ = self
                    .pipeline
                    .send(Command::Accept(vec![pipeline::diagnostic(
                        Severity::Error,
                        &message,
                    )]))
                    .await;
                return None;
            }
        };
        for setting in self.set_local(config) {
            tracing::warn!(
                "configuration reload: `{setting}` changed; it takes effect at the next start"
            );
        }
        let applied = self.apply(true).await;
        match &applied {
            Applied::Applied(_) => tracing::info!("configuration reloaded"),
            Applied::Refused(issues) => {
                for i in issues {
                    tracing::error!("configuration reload refused: {i}");
                }
            }
        }
        Some(applied)
    }
}

/// How often the configuration file is looked at for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Reads `path` again on SIGHUP and whenever it changes (any editor's way of saving: in place
/// or by rename), applying the command line's `overrides`. Each reading is sent, good or bad.
pub fn watch_config(path: PathBuf, overrides: Overrides) -> mpsc::Receiver<Result<Config, String>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "cannot handle SIGHUP ({e}); the configuration file is still watched"
                );
                None
            }
        };
        let mut seen = fingerprint(&path);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = async { hangup.as_mut().expect("checked").recv().await }, if hangup.is_some() => "SIGHUP",
                _ = tick.tick() => {
                    let now = fingerprint(&path);
                    if now == seen {
                        continue;
                    }
                    "the file changed"
                }
            };
            seen = fingerprint(&path);
            tracing::info!(file = %path.display(), "reloading the configuration: {why}");
            let reading = Config::load(&path).map(|mut c| {
                overrides.apply(&mut c);
                c
            });
            if tx.send(reading.map_err(|e| e.to_string())).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// What tells a file changed: its inode, size and modification time.
fn fingerprint(path: &Path) -> Option<(u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}
