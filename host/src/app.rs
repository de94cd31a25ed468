//! `edgeguard run`: open the pipeline, load the configured plugins, schedule them, and ship what
//! they collect through the pipeline to the sink.

use crate::capabilities::{Capability, HostContext};
use crate::config::{Config, SinkKind};
use crate::edge::hub::{HubLink, HubOptions};
use crate::edge::module::{Collector, EdgeModule};
use crate::edge::sink::EdgeHubSink;
use crate::edge::EdgeEnvironment;
use crate::events::{SecurityEvent, Severity};
use crate::output::{FileSink, Sink, StdoutSink, agent_id_from_host};
use crate::pipeline::{self, Pipeline, StateDir};
use crate::runtime::{LoadedPlugin, Runtime};
use crate::scheduler::{Batch, PluginSpec, Running, Scheduler};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How long `run --once` as a module waits for edgeHub before giving up.
const ONCE_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct RunOptions {
    pub config: Config,
    pub once: bool,
    pub output: Option<PathBuf>,
    /// Run as an IoT Edge module whatever the configured sink.
    pub edge: bool,
}

/// Where messages go.
enum Target {
    Stdout,
    File(PathBuf),
    EdgeHub(EdgeEnvironment),
}

impl Target {
    /// `--output` wins, then `--edge`, then the configured sink; `auto` is edgeHub when the
    /// IOTEDGE_* environment is there.
    fn choose(output: &Option<PathBuf>, edge_flag: bool, config: &Config) -> anyhow::Result<Target> {
        let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
        let edge = || EdgeEnvironment::from_vars(&vars).map(Target::EdgeHub).map_err(|e| anyhow::anyhow!("edge mode: {e}"));
        match (output, edge_flag, config.output.sink) {
            (Some(path), _, _) => Ok(Target::File(path.clone())),
            (None, true, _) | (None, false, SinkKind::EdgeHub) => edge(),
            (None, false, SinkKind::Auto) if EdgeEnvironment::present(&vars) => edge(),
            (None, false, SinkKind::Auto | SinkKind::Stdout) => Ok(Target::Stdout),
            (None, false, SinkKind::File) => Ok(Target::File(config.output.file.clone())),
        }
    }
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
                    own_interval: plugin.interval.is_some(),
                    limits: config.limits.with(&plugin.limits),
                    config_json: plugin.config.to_string(),
                    state_file: Some(config.state_dir().join("plugins").join(format!("{}.state", plugin.name))),
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
    let host = HostContext::with_docker_socket(&config.agent.host_root, &config.agent.docker_socket());
    let agent_id = if config.agent.id.is_empty() {
        agent_id_from_host(&config.agent.host_root).unwrap_or_else(|| {
            tracing::warn!("no usable machine-id under the host root; using a random AgentId for this run");
            uuid::Uuid::new_v4().to_string()
        })
    } else {
        config.agent.id.clone()
    };
    let settings = config.pipeline_settings().map_err(|(key, message)| anyhow::anyhow!("`{key}`: {message}"))?;
    let settings_in_force = settings.clone();
    let issues = settings.asc.check();
    let state_dir = config.state_dir();
    let (mut pipeline, resumed) = Pipeline::open(StateDir::open(&state_dir)?, settings, &agent_id)?;
    tracing::info!(
        state_dir = %state_dir.display(),
        queued = resumed.queued_events,
        aggregating = resumed.aggregating,
        "pipeline open"
    );
    if resumed.discarded_bytes > 0 {
        let message = format!("{} bytes of the event cache were torn or corrupt and were cut", resumed.discarded_bytes);
        tracing::warn!("{message}");
        pipeline.accept(vec![pipeline::diagnostic(Severity::Warning, &message)])?;
    }
    for issue in &issues {
        tracing::warn!("agent configuration: {issue}");
    }
    pipeline.accept(issues.iter().map(|i| i.to_event()).collect())?;

    let mut edge = None;
    let mut sink: Box<dyn Sink> = match Target::choose(&options.output, options.edge, &config)? {
        Target::File(path) => Box::new(file_sink(&path, &config).await?),
        Target::Stdout => Box::new(StdoutSink::new()),
        Target::EdgeHub(env) => {
            tracing::info!(device = %env.device_id, module = %env.module_id, gateway = %env.gateway_hostname, "IoT Edge module mode");
            let hub = HubOptions {
                port: config.edge.port,
                keep_alive: config.edge.keep_alive.0,
                token_ttl: config.edge.token_ttl.0,
                ..HubOptions::default()
            };
            let (link, inbound) = HubLink::start(env, hub);
            edge = Some((link.clone(), inbound));
            Box::new(EdgeHubSink::new(link))
        }
    };

    let (specs, load_failures) = load_plugins(&config, &runtime).await;
    if specs.is_empty() {
        anyhow::bail!("no plugin could be loaded (plugin directory: {})", config.plugin_dir().display());
    }
    pipeline.accept(load_failures)?;

    let (tx, rx) = mpsc::channel::<Batch>(256);
    let scheduler = Scheduler::new(host, config.schedule.clone(), tx, pipeline.routing());
    let mut collectors = Vec::new();
    let mut running: Vec<Running> = Vec::new();
    for spec in specs {
        let (loaded, group, interval, own_interval, limits) = (Arc::clone(&spec.loaded), spec.group, spec.interval, spec.own_interval, spec.limits.clone());
        let r = scheduler.spawn(spec, options.once);
        collectors.push(Collector { loaded, group, interval, own_interval, limits, status: Arc::clone(&r.status) });
        running.push(r);
    }
    let control = scheduler.control();
    drop(scheduler);
    tracing::info!(plugins = running.len(), agent_id = %agent_id, sink = sink.describe(), "edgeguard running");

    // The twin and direct methods, as a module. A single collection (--once) only delivers.
    let mut module_task = None;
    if let Some((link, mut inbound)) = edge {
        if options.once {
            tokio::spawn(async move { while inbound.recv().await.is_some() {} });
            link.wait_connected(ONCE_CONNECT_WAIT).await?;
        } else {
            let module = EdgeModule::new(link, config.clone(), settings_in_force, pipeline.commands(), control, collectors, &agent_id);
            module_task = Some(tokio::spawn(module.run(inbound)));
        }
    }

    // With --once every actor ends after one collection and drops its sender; the pipeline
    // then closes its windows and drains. Otherwise it runs until a signal.
    let pipeline = pipeline.run(rx, sink.as_mut(), options.once, shutdown_signal()).await?;
    for r in running {
        r.task.abort();
        let _ = r.task.await;
    }
    if let Some(task) = module_task {
        task.abort();
    }
    let c = pipeline.statistics();
    tracing::info!(queued = pipeline.queued(), messages = c.messages_sent, failed = c.total_failed, "edgeguard stopped");
    Ok(())
}

async fn file_sink(path: &std::path::Path, config: &Config) -> anyhow::Result<FileSink> {
    FileSink::open(path, config.output.max_file_size.0, config.output.max_files)
        .await
        .with_context(|| format!("cannot open output file {}", path.display()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
