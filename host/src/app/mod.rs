//! `edgeguard run`: open the pipeline, load the configured plugins, schedule them, and ship what
//! they collect through the pipeline to the sink; as an IoT Edge module, follow the twin and
//! answer direct methods ([`module`]).

pub mod module;

use crate::capabilities::HostContext;
use crate::config::{Config, Overrides, SinkKind};
use crate::control::wanted::Wanted;
use crate::control::{self, Controller};
use crate::edge::EdgeEnvironment;
use crate::edge::hub::{HubLink, HubOptions};
use crate::edge::sink::EdgeHubSink;
use crate::events::Severity;
use crate::fleet::Fleet;
use crate::output::{FileSink, Sink, StdoutSink, agent_id_from_host};
use crate::pipeline::Batch;
use crate::pipeline::{self, Pipeline, StateDir};
use crate::runtime::{Compiler, Runtime};
use crate::scheduler::Scheduler;
use anyhow::Context;
use module::EdgeModule;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// How long `run --once` as a module waits for edgeHub before giving up.
const ONCE_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What `edgeguard run` is asked to do.
pub struct RunOptions {
    /// The configuration to start with (the file's, with the overrides applied).
    pub config: Config,
    /// The file `config` came from: reloaded on SIGHUP and when it changes. None: the
    /// embedded default.
    pub config_file: Option<PathBuf>,
    /// Command-line settings that win over the file, also after a reload.
    pub overrides: Overrides,
    /// Collect every plugin once, send everything and exit.
    pub once: bool,
    /// Write messages to this file instead of the configured sink.
    pub output: Option<PathBuf>,
    /// Run as an IoT Edge module whatever the configured sink.
    pub edge: bool,
    /// Compile plugins in child processes of this binary, bounded in time and memory by
    /// `[agent]` (it must be edgeguard's, answering `compile-plugin`); false: in this process.
    pub compile_in_children: bool,
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
    fn choose(
        output: &Option<PathBuf>,
        edge_flag: bool,
        config: &Config,
    ) -> anyhow::Result<Target> {
        let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
        let edge = || {
            EdgeEnvironment::from_vars(&vars)
                .map(Target::EdgeHub)
                .map_err(|e| anyhow::anyhow!("edge mode: {e}"))
        };
        match (output, edge_flag, config.output.sink) {
            (Some(path), _, _) => Ok(Target::File(path.clone())),
            (None, true, _) | (None, false, SinkKind::EdgeHub) => edge(),
            (None, false, SinkKind::Auto) if EdgeEnvironment::present(&vars) => edge(),
            (None, false, SinkKind::Auto | SinkKind::Stdout) => Ok(Target::Stdout),
            (None, false, SinkKind::File) => Ok(Target::File(config.output.file.clone())),
        }
    }
}

/// Runs the agent until a shutdown signal (or, with `once`, until one round is sent).
pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let config = options.config;
    let bounds = config.agent.compile_bounds();
    let compiler = if options.compile_in_children {
        Compiler::this_binary(bounds)
    } else {
        Compiler::InProcess { time: bounds.time }
    };
    let runtime = Runtime::with_compiler(&config.cache_dir(), compiler)?;
    let host = HostContext::with_options(&config.agent.host_root, config.agent.host_options());
    let agent_id = if config.agent.id.is_empty() {
        agent_id_from_host(&config.agent.host_root).unwrap_or_else(|| {
            tracing::warn!(
                "no usable machine-id under the host root; using a random AgentId for this run"
            );
            uuid::Uuid::new_v4().to_string()
        })
    } else {
        config.agent.id.clone()
    };
    let settings = config
        .pipeline_settings()
        .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
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
        let message = format!(
            "{} bytes of the event cache were torn or corrupt and were cut",
            resumed.discarded_bytes
        );
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

    let (tx, rx) = mpsc::channel::<Batch>(256);
    let kernel_sources = Arc::clone(&host);
    let scheduler = Scheduler::new(host, config.schedule.clone(), tx, pipeline.routing())
        .with_tap(pipeline.tap());
    let commands = pipeline.commands();
    let sink_name = sink.describe();
    // The pipeline runs from now on: each collector starts as soon as it is loaded, and its
    // events flow while another still compiles. With --once every actor ends after one
    // collection and drops its sender; the pipeline then closes its windows and drains.
    // Otherwise it runs until a signal.
    let once = options.once;
    let pipeline_task = tokio::spawn(async move {
        pipeline
            .run(rx, sink.as_mut(), once, shutdown_signal())
            .await
    });
    let control = scheduler.control();
    let in_force = Wanted::local(&config).map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let in_force = Wanted {
        settings: settings_in_force,
        ..in_force
    };
    let default_ca_file = config
        .agent
        .host_root
        .join("etc/ssl/certs/ca-certificates.crt");
    let mut fleet = Fleet::new(
        runtime,
        scheduler,
        state_dir.clone(),
        default_ca_file,
        options.once,
    );
    fleet.apply(&in_force.fleet).await;
    if fleet.running() == 0 {
        pipeline_task.abort();
        kernel_sources.close();
        anyhow::bail!(
            "no plugin could be loaded (plugin directory: {})",
            config.plugin_dir().display()
        );
    }
    let view = fleet.view();
    tracing::info!(plugins = fleet.running(), agent_id = %agent_id, sink = sink_name, "edgeguard running");

    // A single collection (--once) only delivers: no reloads, no twin, no swaps.
    let mut tasks = Vec::new();
    if options.once {
        drop(fleet);
        if let Some((link, mut inbound)) = edge {
            tokio::spawn(async move { while inbound.recv().await.is_some() {} });
            link.wait_connected(ONCE_CONNECT_WAIT).await?;
        }
    } else {
        tasks.push(tokio::spawn(release_after_loading(view.changes.clone())));
        let (wanted_tx, wanted_rx) = watch::channel(Arc::new(in_force.fleet.clone()));
        tasks.push(tokio::spawn(fleet.run(wanted_rx)));
        let controller = Controller::new(
            config.clone(),
            in_force,
            commands,
            control.clone(),
            wanted_tx,
        );
        let reloads = options
            .config_file
            .map(|path| control::watch_config(path, options.overrides));
        tasks.push(match edge {
            Some((link, inbound)) => tokio::spawn(
                EdgeModule::new(link, controller, control, view, &agent_id).run(inbound, reloads),
            ),
            None => tokio::spawn(follow_reloads(controller, reloads)),
        });
    }

    let pipeline = pipeline_task
        .await
        .map_err(|e| anyhow::anyhow!("the pipeline stopped: {e}"))??;
    for task in tasks {
        task.abort();
    }
    tokio::task::spawn_blocking(move || kernel_sources.close()).await?;
    let c = pipeline.statistics();
    tracing::info!(
        queued = pipeline.queued(),
        messages = c.messages_sent,
        failed = c.total_failed,
        "edgeguard stopped"
    );
    Ok(())
}

/// Once loading is done, and again once it has settled (the first collections made, or a
/// change of collectors done), hands loading's file pages back to the kernel (see
/// [`crate::footprint`]). The first time is at once: a burst in the first seconds (a flood a
/// local user starts while the agent restarts) must not find them still held.
async fn release_after_loading(mut changes: watch::Receiver<u64>) {
    // Each plugin is loaded and has made its first collection within the schedule's first
    // jitter and a few seconds more.
    const SETTLE: std::time::Duration = std::time::Duration::from_secs(20);
    let release = || async {
        let advised = tokio::task::spawn_blocking(crate::footprint::release_loading_pages)
            .await
            .unwrap_or(0);
        tracing::debug!(
            advised_bytes = advised,
            "loading's file pages handed back to the kernel"
        );
    };
    release().await;
    loop {
        tokio::time::sleep(SETTLE).await;
        release().await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Without a twin, the local file alone says what runs.
async fn follow_reloads(
    mut controller: Controller,
    reloads: Option<mpsc::Receiver<Result<Config, String>>>,
) {
    if let Some(mut reloads) = reloads {
        while let Some(reading) = reloads.recv().await {
            controller.reload(reading).await;
        }
    }
    // The controller holds the fleet's wanted set: dropping it would stop every collector.
    std::future::pending::<()>().await;
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
