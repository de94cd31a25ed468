//! `containers`: the Docker Engine API on the host's Unix socket, read-only.
//!
//! The host speaks to the daemon (bollard, with the API version negotiated, so an old engine
//! such as Debian's 20.10 works) and hands plugins plain records; the plugin judges. Calls are
//! bounded by the plugin's call deadline so that a daemon that hangs costs the plugin an error,
//! not a timeout fault. Lifecycle events are streamed by a task per plugin instance into a
//! bounded buffer that the plugin drains at each collection; the task ends with the instance.

use super::{HostContext, HostState, SocketSource as Preference, read_sockets};
use crate::units::Backoff;
use crate::wit::edgeguard::collector::containers::{
    Container, ContainerEvent, DaemonInfo, EventBatch, Host, Mount, PortBinding,
};
use crate::wit::edgeguard::collector::sockets::SocketState;
use crate::wit::edgeguard::collector::types::{HostError, Protocol};
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lifecycle events kept for a plugin between two of its collections; past this, counted as lost.
const EVENT_BUFFER: usize = 8192;
/// Inspections in flight at once during `list`.
const INSPECT_CONCURRENCY: usize = 8;
/// Attributes of an event's actor that are not the container's labels.
const EVENT_ATTRIBUTES: [&str; 5] = ["name", "image", "exitCode", "signal", "execDuration"];

/// The daemon as the host reaches it: one socket, one negotiated client, shared by all plugins.
pub(crate) struct Engine {
    socket: PathBuf,
    client: tokio::sync::Mutex<Option<Docker>>,
    /// `Config.User` of each image, by image id (ids are content digests: never stale).
    image_users: Mutex<HashMap<String, String>>,
}

impl Engine {
    pub(crate) fn new(socket: PathBuf) -> Engine {
        Engine {
            socket,
            client: tokio::sync::Mutex::new(None),
            image_users: Mutex::default(),
        }
    }

    /// The connected client, negotiating the API version on first use.
    async fn client(&self) -> Result<Docker, HostError> {
        let mut cached = self.client.lock().await;
        if let Some(docker) = cached.as_ref() {
            return Ok(docker.clone());
        }
        let path = self.socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&path, 30, bollard::API_DEFAULT_VERSION)
            .map_err(|e| self.error(e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| self.error(e))?;
        tracing::debug!(socket = %path, api = %docker.client_version(), "connected to the Docker daemon");
        *cached = Some(docker.clone());
        Ok(docker)
    }

    /// Forgets the client after a failure, so that the next call reconnects (the daemon may
    /// have restarted, the socket may have been replaced).
    async fn reset(&self) {
        *self.client.lock().await = None;
    }

    fn error(&self, e: bollard::errors::Error) -> HostError {
        use bollard::errors::Error as E;
        let socket = self.socket.display();
        match e {
            E::SocketNotFoundError(_) => {
                HostError::Unavailable(format!("no Docker daemon: {socket} does not exist"))
            }
            E::IOError { err } if err.kind() == std::io::ErrorKind::PermissionDenied => {
                HostError::PermissionDenied(format!("cannot connect to {socket}: {err}"))
            }
            E::IOError { err } if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                HostError::Unavailable(format!("no Docker daemon listens on {socket}"))
            }
            other => HostError::Io(format!("Docker daemon at {socket}: {other}")),
        }
    }

    /// One call to the daemon, bounded by `deadline`; a failure drops the cached client.
    async fn call<T>(
        &self,
        deadline: Duration,
        what: &str,
        f: impl AsyncFnOnce(Docker) -> Result<T, bollard::errors::Error>,
    ) -> Result<T, HostError> {
        let outcome = tokio::time::timeout(deadline, async {
            let docker = self.client().await?;
            f(docker).await.map_err(|e| self.error(e))
        })
        .await
        .unwrap_or_else(|_| {
            Err(HostError::Unavailable(format!(
                "the Docker daemon at {} did not answer {what} within {deadline:?}",
                self.socket.display()
            )))
        });
        if outcome.is_err() {
            self.reset().await;
        }
        outcome
    }

    async fn image_user(&self, docker: &Docker, image_id: &str) -> String {
        if let Some(user) = self.image_users.lock().unwrap().get(image_id) {
            return user.clone();
        }
        // A missing image (removed since) leaves the user unknown, which reads as root: the
        // plugin then errs on the side of reporting.
        let user = docker
            .inspect_image(image_id)
            .await
            .ok()
            .and_then(|i| i.config?.user)
            .unwrap_or_default();
        let mut users = self.image_users.lock().unwrap();
        if users.len() > 4096 {
            users.clear();
        }
        users.insert(image_id.to_owned(), user.clone());
        user
    }
}

/// The `containers` state of one plugin instance.
pub(crate) struct PluginContainers {
    /// When the instance was created: where an event watch starts by default.
    loaded_unix_nanos: u64,
    watch: Option<Watch>,
}

impl PluginContainers {
    pub(crate) fn new() -> PluginContainers {
        PluginContainers {
            loaded_unix_nanos: unix_nanos_now(),
            watch: None,
        }
    }
}

fn unix_nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Host for HostState {
    async fn daemon(&mut self) -> Result<DaemonInfo, HostError> {
        let engine = &self.host.containers;
        let deadline = self.guard.host_call_deadline();
        let (version, info) = engine
            .call(deadline, "/version and /info", async |d: Docker| {
                Ok((d.version().await?, d.info().await?))
            })
            .await?;
        let host = Arc::clone(&self.host);
        let (tcp_listeners, tls_verify) =
            self.blocking("socket scan", move || daemon_listeners(&host))
                .await?;
        Ok(DaemonInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            operating_system: info.operating_system.unwrap_or_default(),
            kernel_version: info.kernel_version.unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
            security_options: info.security_options.unwrap_or_default(),
            tcp_listeners,
            tls_verify,
        })
    }

    async fn inventory(&mut self) -> Result<Vec<Container>, HostError> {
        let host = Arc::clone(&self.host);
        let deadline = self.guard.host_call_deadline();
        self.host
            .containers
            .call(
                deadline,
                "the container list",
                async move |docker: Docker| {
                    let options = ListContainersOptions {
                        all: true,
                        ..Default::default()
                    };
                    let summaries = docker.list_containers(Some(options)).await?;
                    let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
                    let inspected: Vec<_> = futures_util::stream::iter(ids)
                        .map(|id| {
                            let docker = docker.clone();
                            async move {
                                docker
                                    .inspect_container(&id, None::<InspectContainerOptions>)
                                    .await
                            }
                        })
                        .buffered(INSPECT_CONCURRENCY)
                        .collect()
                        .await;
                    let mut containers = Vec::with_capacity(inspected.len());
                    for result in inspected {
                        match result {
                            Ok(c) => {
                                let image_user = host
                                    .containers
                                    .image_user(&docker, c.image.as_deref().unwrap_or_default())
                                    .await;
                                containers.push(container(c, image_user));
                            }
                            // Removed between the list and its inspection.
                            Err(bollard::errors::Error::DockerResponseServerError {
                                status_code: 404,
                                ..
                            }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    // A stable order, so that plugins can compare one inventory with the next.
                    containers.sort_by(|a, b| a.name.cmp(&b.name));
                    Ok(containers)
                },
            )
            .await
    }

    async fn events(&mut self, since_unix_nanos: u64, max: u32) -> Result<EventBatch, HostError> {
        // The plugin's `since` is its last event, already delivered: start just after it.
        let start = if since_unix_nanos == 0 {
            self.containers.loaded_unix_nanos
        } else {
            since_unix_nanos + 1
        };
        let host = Arc::clone(&self.host);
        let watch = self
            .containers
            .watch
            .get_or_insert_with(|| Watch::start(host, start));
        let mut buffer = watch.buffer.lock().unwrap();
        let take = buffer.events.len().min(max as usize);
        let events = buffer.events.drain(..take).collect();
        Ok(EventBatch {
            events,
            lost: std::mem::take(&mut buffer.lost),
            watching: buffer.watching,
        })
    }
}

fn container(c: ContainerInspectResponse, image_user: String) -> Container {
    let config = c.config.unwrap_or_default();
    let host = c.host_config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let log = host.log_config.unwrap_or_default();
    let mut ports: Vec<PortBinding> = host
        .port_bindings
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(container_port, bindings)| {
            bindings
                .unwrap_or_default()
                .into_iter()
                .map(move |b| PortBinding {
                    container_port: container_port.clone(),
                    host_ip: b.host_ip.unwrap_or_default(),
                    host_port: b.host_port.unwrap_or_default(),
                })
        })
        .collect();
    ports.sort_by(|a, b| {
        (&a.container_port, &a.host_ip, &a.host_port).cmp(&(
            &b.container_port,
            &b.host_ip,
            &b.host_port,
        ))
    });
    // The daemon lists mounts in no particular order.
    let mut mounts: Vec<Mount> = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| Mount {
            kind: m.typ.unwrap_or_default(),
            source: m
                .source
                .filter(|s| !s.is_empty())
                .or(m.name)
                .unwrap_or_default(),
            destination: m.destination.unwrap_or_default(),
            read_only: !m.rw.unwrap_or(true),
        })
        .collect();
    mounts.sort_by(|a, b| a.destination.cmp(&b.destination));
    Container {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        image_id: c.image.unwrap_or_default(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        created: c.created.unwrap_or_default(),
        pid: state.pid.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
        exit_code: state
            .exit_code
            .unwrap_or(0)
            .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        user: config.user.unwrap_or_default(),
        image_user,
        privileged: host.privileged.unwrap_or(false),
        cap_add: host.cap_add.unwrap_or_default(),
        cap_drop: host.cap_drop.unwrap_or_default(),
        network_mode: host.network_mode.unwrap_or_default(),
        pid_mode: host.pid_mode.unwrap_or_default(),
        ipc_mode: host.ipc_mode.unwrap_or_default(),
        userns_mode: host.userns_mode.unwrap_or_default(),
        security_opt: host.security_opt.unwrap_or_default(),
        readonly_rootfs: host.readonly_rootfs.unwrap_or(false),
        mounts,
        devices: host
            .devices
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.path_on_host)
            .collect(),
        ports,
        log_driver: log.typ.unwrap_or_default(),
        log_options: sorted(log.config.unwrap_or_default()),
        restart_policy: host
            .restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        labels: sorted(config.labels.unwrap_or_default()),
        env: config.env.unwrap_or_default(),
    }
}

fn sorted(map: HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}

/// TCP listeners held by a `dockerd` process of the host, and whether each such daemon demands
/// client certificates. Read from the socket table rather than the daemon's flags or
/// daemon.json: it is what is actually open, however it was configured.
fn daemon_listeners(host: &HostContext) -> Result<(Vec<String>, bool), HostError> {
    let table = read_sockets(host, Preference::Auto)?;
    let mut listeners = Vec::new();
    let mut tls_verify = true;
    for socket in table.sockets {
        let Some(owner) = socket.owner else { continue };
        let is_dockerd = Path::new(&owner.executable)
            .file_name()
            .is_some_and(|n| n == "dockerd");
        if is_dockerd && socket.protocol == Protocol::Tcp && socket.state == SocketState::Listen {
            let address = if socket.local_address.contains(':') {
                format!("[{}]", socket.local_address)
            } else {
                socket.local_address
            };
            listeners.push(format!("{address}:{}", socket.local_port));
            tls_verify &= owner
                .command_line
                .split(' ')
                .any(|a| a == "--tlsverify" || a == "--tlsverify=true");
        }
    }
    listeners.sort();
    listeners.dedup();
    let tls_verify = tls_verify && !listeners.is_empty();
    Ok((listeners, tls_verify))
}

/// A plugin instance's subscription to the daemon's event stream.
struct Watch {
    buffer: Arc<Mutex<Buffer>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Buffer {
    events: VecDeque<ContainerEvent>,
    lost: u64,
    watching: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    fn start(host: Arc<HostContext>, since_unix_nanos: u64) -> Watch {
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let task = tokio::spawn(stream_events(host, since_unix_nanos, Arc::clone(&buffer)));
        Watch { buffer, task }
    }
}

/// Follows the daemon's container events for as long as the instance lives. After a broken
/// stream it reconnects with `since` at the last event seen, so events the daemon still holds
/// are not missed, and drops the ones already delivered.
async fn stream_events(host: Arc<HostContext>, mut since: u64, buffer: Arc<Mutex<Buffer>>) {
    // Events at exactly `since` already delivered, which a resumed stream replays.
    let mut delivered_at_since: HashSet<(String, String)> = HashSet::new();
    const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut failures = 0;
    let filters = HashMap::from([("type".to_owned(), vec!["container".to_owned()])]);
    loop {
        match host.containers.client().await {
            Ok(docker) => {
                let options = EventsOptions {
                    since: Some(format!(
                        "{}.{:09}",
                        since / 1_000_000_000,
                        since % 1_000_000_000
                    )),
                    filters: Some(filters.clone()),
                    ..Default::default()
                };
                let mut stream = docker.events(Some(options));
                buffer.lock().unwrap().watching = true;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(message) => {
                            failures = 0;
                            let Some(event) = container_event(message) else {
                                continue;
                            };
                            let at = event.time_unix_nanos;
                            let key = (event.id.clone(), event.action.clone());
                            if at < since || (at == since && delivered_at_since.contains(&key)) {
                                continue;
                            }
                            if at > since {
                                since = at;
                                delivered_at_since.clear();
                            }
                            delivered_at_since.insert(key);
                            let mut buffer = buffer.lock().unwrap();
                            if buffer.events.len() >= EVENT_BUFFER {
                                buffer.lost += 1;
                            } else {
                                buffer.events.push_back(event);
                            }
                        }
                        Err(e) => {
                            tracing::warn!("Docker event stream: {e}");
                            break;
                        }
                    }
                }
                buffer.lock().unwrap().watching = false;
                host.containers.reset().await;
            }
            Err(e) => tracing::debug!("Docker events: {e:?}"),
        }
        failures += 1;
        tokio::time::sleep(BACKOFF.after_with_jitter(failures)).await;
    }
}

fn container_event(message: EventMessage) -> Option<ContainerEvent> {
    let actor = message.actor?;
    let mut attributes = actor.attributes.unwrap_or_default();
    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
    let name = attributes.remove("name").unwrap_or_default();
    let image = attributes.remove("image").unwrap_or_default();
    attributes.retain(|k, _| !EVENT_ATTRIBUTES.contains(&k.as_str()));
    let time = message
        .time_nano
        .filter(|t| *t > 0)
        .or(message.time.map(|s| s * 1_000_000_000))
        .unwrap_or(0);
    Some(ContainerEvent {
        // Exec events read `exec_start: sh -c ...`; the action is the first word.
        action: message
            .action?
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned(),
        id: actor.id.unwrap_or_default(),
        name,
        image,
        exit_code,
        time_unix_nanos: time.max(0) as u64,
        labels: sorted(attributes),
    })
}
