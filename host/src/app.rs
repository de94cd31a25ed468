//! `edgeguard run`: load the configured plugins, schedule them, and write their messages.

use crate::capabilities::{Capability, HostContext};
use crate::config::Config;
use crate::events::{SecurityEvent, Severity};
use crate::output::{MessageBuilder, Sink, agent_id_from_host};
use crate::runtime::{LoadedPlugin, Runtime};
use crate::scheduler::{Batch, PluginSpec, Running, Scheduler};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct RunOptions {
    pub config: Config,
    pub once: bool,
    pub output: Option<PathBuf>,
}

/// Loads every enabled plugin. A plugin that fails to load is reported and left out; the
/// others run.
pub async fn load_plugins(config: &Config, runtime: &Runtime) -> (Vec<PluginSpec>, Vec<SecurityEvent>) {
    let mut specs = Vec::new();
    let mut diagnostics = Vec::new();
    for plugin in config.plugins.iter().filter(|p| p.enabled) {
        let grants: Vec<Capability> = plugin.grants.iter().filter_map(|g| Capability::from_name(g)).collect();
        let path = config.plugin_path(plugin);
        let started = std::time::Instant::now();
        match LoadedPlugin::load_file(runtime, &plugin.name, &path, &grants, &plugin.dirs).await {
            Ok(loaded) => {
                let group = PluginSpec::group_for(&loaded, plugin.group);
                let interval = plugin.interval.map(|s| s.0).unwrap_or_else(|| config.schedule.interval(group));
                tracing::info!(
                    plugin = %plugin.name,
                    version = %loaded.info.version,
                    group = group.name(),
                    interval = ?interval,
                    cache = ?loaded.cache,
                    elapsed = ?started.elapsed(),
                    "plugin loaded"
                );
                specs.push(PluginSpec {
                    loaded: Arc::new(loaded),
                    group,
                    interval,
                    limits: config.limits.with(&plugin.limits),
                    config_json: plugin.config.to_string(),
                });
            }
            Err(e) => {
                tracing::error!("{e}");
                diagnostics.push(SecurityEvent::diagnostic(Severity::Error, &e.to_string(), &[("Plugin", plugin.name.clone())]));
            }
        }
    }
    (specs, diagnostics)
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let config = options.config;
    let runtime = Runtime::new(&config.cache_dir())?;
    let host = HostContext::new(&config.agent.host_root);
    let agent_id = if config.agent.id.is_empty() {
        agent_id_from_host(&config.agent.host_root).unwrap_or_else(|| {
            tracing::warn!("no usable machine-id under the host root; using a random AgentId for this run");
            uuid::Uuid::new_v4().to_string()
        })
    } else {
        config.agent.id.clone()
    };
    let builder = MessageBuilder::new(agent_id);
    let mut sink = match &options.output {
        Some(path) => Sink::file(path).await.with_context(|| format!("cannot open output file {}", path.display()))?,
        None => Sink::stdout(),
    };

    let (specs, load_failures) = load_plugins(&config, &runtime).await;
    if specs.is_empty() {
        anyhow::bail!("no plugin could be loaded (plugin directory: {})", config.plugin_dir().display());
    }

    let (tx, mut rx) = mpsc::channel::<Batch>(256);
    if !load_failures.is_empty() {
        tx.send(Batch { plugin: "edgeguard".into(), at: std::time::Instant::now(), events: load_failures }).await?;
    }
    let scheduler = Scheduler::new(host, config.schedule.clone(), tx);
    let running: Vec<Running> = specs.into_iter().map(|spec| scheduler.spawn(spec, options.once)).collect();
    drop(scheduler);
    tracing::info!(plugins = running.len(), agent_id = builder.agent_id(), "edgeguard running");

    let writer = async {
        while let Some(batch) = rx.recv().await {
            for message in builder.build(&batch.events) {
                sink.send(&message).await.context("writing a message")?;
            }
        }
        anyhow::Ok(())
    };

    if options.once {
        // Every actor ends after one collection and drops its sender; the writer then drains.
        writer.await?;
        for r in running {
            r.task.await.ok();
        }
    } else {
        tokio::select! {
            result = writer => result?,
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        for r in &running {
            r.task.abort();
        }
    }
    tracing::info!(messages = sink.messages, "edgeguard stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
