//! The MQTT link to edgeHub: one task owns the connection and keeps it up (TLS trusting the
//! workload bundle, a fresh SAS token per CONNECT, CleanSession 0, backoff with jitter, token
//! renewal by reconnecting); everyone else publishes through a [`HubLink`] handle.
//!
//! A QoS 1 publish resolves on its PUBACK. rumqttc reports `Outgoing::Publish(pkid)` for each
//! request in the order it takes them from its channel, so publishes are queued in one order
//! (a lock) and matched to their packet ids as the event loop reports them. A new token means a
//! new event loop: what was not acknowledged on the old connection fails, and the pipeline
//! sends it again (at least once; receivers deduplicate by `$.mid`).

use super::EdgeEnvironment;
use super::sas;
use super::topics::{self, Inbound as Topic};
use super::workload::{WorkloadClient, WorkloadError};
use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// edgeHub's `MaxInboundMessageSize`; the topic and its property bag come on top.
const MAX_PACKET: usize = 262_144 + 4096;
/// The MQTT API version in the user name (what the Node SDK and the docs send).
const API_VERSION: &str = "2021-04-12";
/// How long a twin request waits for its response.
const TWIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a token renewal waits for the acknowledgements still due on the old connection.
const RENEWAL_DRAIN: Duration = Duration::from_secs(5);

/// How the link connects.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// edgeHub's MQTT port (8883).
    pub port: u16,
    /// The MQTT keep-alive.
    pub keep_alive: Duration,
    /// Lifetime of each SAS token.
    pub token_ttl: Duration,
    /// The backoff's first and longest waits between connection attempts.
    pub backoff: (Duration, Duration),
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            port: 8883,
            keep_alive: Duration::from_secs(60),
            token_ttl: sas::TOKEN_TTL,
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

/// Why a request over the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No session right now (the reason of the last loss).
    #[error("not connected to edgeHub ({0})")]
    NotConnected(String),
    /// The session ended before the answer came.
    #[error("the connection to edgeHub closed before an answer")]
    Closed,
    /// No answer in time.
    #[error("edgeHub did not answer the twin request within {0:?}")]
    Timeout(Duration),
    /// edgeHub refused the request.
    #[error("edgeHub answered the twin request with status {status}: {body}")]
    Status {
        /// Its status code.
        status: u16,
        /// Its answer.
        body: String,
    },
    /// An answer that is not JSON.
    #[error("edgeHub's twin document is not JSON: {0}")]
    Garbage(String),
}

/// What the link hands to the module: connections and requests from the cloud side.
#[derive(Debug)]
pub enum Inbound {
    /// A new connection is up (first or after a loss): the twin must be read again.
    Connected,
    /// A desired-properties patch.
    DesiredPatch {
        /// The twin version the topic names.
        version: Option<u64>,
        /// The patch, JSON.
        body: Bytes,
    },
    /// A direct method call, to be answered with the same `rid`.
    MethodCall {
        /// The method.
        name: String,
        /// The request id the answer must carry.
        rid: String,
        /// The payload, JSON.
        body: Bytes,
    },
}

/// The connection as `status` shows it.
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    /// Whether a session is up.
    pub connected: bool,
    /// Sessions opened since start.
    pub connections: u64,
    /// Why the last session ended or failed.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub token_expires_at: Option<u64>,
}

/// The MQTT link to edgeHub: keeps a session up, sends telemetry and twin requests, and hands over what arrives.
#[derive(Clone)]
pub struct HubLink {
    shared: Arc<Shared>,
}

struct Shared {
    env: EdgeEnvironment,
    session: Mutex<Option<Arc<Session>>>,
    twin_waiters: Mutex<HashMap<String, oneshot::Sender<(u16, Bytes)>>>,
    next_rid: AtomicU64,
    status: Mutex<LinkStatus>,
}

/// One connection's publishing side.
struct Session {
    client: AsyncClient,
    /// Held while a publish is queued, so queue order is the order in `waiting.queued`.
    order: tokio::sync::Mutex<()>,
    waiting: Mutex<Waiting>,
    /// Set while a token renewal lets the old connection drain: new publishes wait for the next.
    draining: AtomicBool,
}

#[derive(Default)]
struct Waiting {
    /// Publishes queued to rumqttc and not yet given a packet id: their acknowledgement
    /// senders (None for QoS 0).
    queued: VecDeque<Option<oneshot::Sender<()>>>,
    /// A publish whose packet id was still in use: it goes out when that one is acknowledged.
    collided: Option<Option<oneshot::Sender<()>>>,
    by_pkid: HashMap<u16, oneshot::Sender<()>>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.collided.is_none() && self.by_pkid.is_empty()
    }
}

impl HubLink {
    /// Starts the connection task. It runs until the returned handle and every clone are
    /// dropped and the inbound receiver is gone.
    pub fn start(env: EdgeEnvironment, options: HubOptions) -> (HubLink, mpsc::Receiver<Inbound>) {
        let shared = Arc::new(Shared {
            env,
            session: Mutex::new(None),
            twin_waiters: Mutex::new(HashMap::new()),
            next_rid: AtomicU64::new(1),
            status: Mutex::new(LinkStatus::default()),
        });
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        tokio::spawn(connection_task(
            Arc::downgrade(&shared),
            options,
            inbound_tx,
        ));
        (HubLink { shared }, inbound_rx)
    }

    /// The module's environment.
    pub fn environment(&self) -> &EdgeEnvironment {
        &self.shared.env
    }

    /// The link as `status` shows it.
    pub fn status(&self) -> LinkStatus {
        self.shared.status.lock().unwrap().clone()
    }

    /// Waits for a connection, up to `limit`; the error says why there is none.
    pub async fn wait_connected(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.status().connected {
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "no connection to edgeHub within {limit:?}: {}",
                    self.status()
                        .last_error
                        .unwrap_or_else(|| "still connecting".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn session(&self) -> Result<Arc<Session>, LinkError> {
        let session = self.shared.session.lock().unwrap().clone();
        match session {
            Some(s) if !s.draining.load(Ordering::Relaxed) => Ok(s),
            Some(_) => Err(LinkError::NotConnected(
                "reconnecting with a fresh token".into(),
            )),
            None => Err(LinkError::NotConnected(
                self.status()
                    .last_error
                    .unwrap_or_else(|| "connecting".into()),
            )),
        }
    }

    /// Queues a publish. With QoS 1 the receiver resolves on its PUBACK, and fails if the
    /// connection is lost first.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<Option<oneshot::Receiver<()>>, LinkError> {
        let session = self.session()?;
        let _order = session.order.lock().await;
        let (ack, receiver) = match qos {
            QoS::AtMostOnce => (None, None),
            _ => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        session.waiting.lock().unwrap().queued.push_back(ack);
        session
            .client
            .publish(topic, qos, false, payload)
            .await
            .map_err(|_| LinkError::Closed)?;
        Ok(receiver)
    }

    /// The full twin: `{"desired": {...}, "reported": {...}}`.
    pub async fn twin_get(&self) -> Result<serde_json::Value, LinkError> {
        let (status, body) = self.twin_request(topics::twin_get, Vec::new()).await?;
        if status != 200 {
            return Err(LinkError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| LinkError::Garbage(e.to_string()))
    }

    /// Sends a reported-properties patch (null deletes a key).
    pub async fn twin_report(&self, patch: &serde_json::Value) -> Result<(), LinkError> {
        let body = serde_json::to_vec(patch).expect("JSON");
        match self.twin_request(topics::twin_report, body).await? {
            (200..=204, _) => Ok(()),
            (status, body) => Err(LinkError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    async fn twin_request(
        &self,
        topic: fn(&str) -> String,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), LinkError> {
        let rid = self
            .shared
            .next_rid
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let (tx, rx) = oneshot::channel();
        self.shared
            .twin_waiters
            .lock()
            .unwrap()
            .insert(rid.clone(), tx);
        let sent = self.publish(topic(&rid), body, QoS::AtMostOnce).await;
        let answer = match sent {
            Ok(_) => tokio::time::timeout(TWIN_TIMEOUT, rx).await,
            Err(e) => {
                self.shared.twin_waiters.lock().unwrap().remove(&rid);
                return Err(e);
            }
        };
        self.shared.twin_waiters.lock().unwrap().remove(&rid);
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(LinkError::Closed),
            Err(_) => Err(LinkError::Timeout(TWIN_TIMEOUT)),
        }
    }

    /// Answers a direct method call.
    pub async fn respond(
        &self,
        rid: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), LinkError> {
        self.publish(
            topics::method_response(status, rid),
            serde_json::to_vec(body).expect("JSON"),
            QoS::AtMostOnce,
        )
        .await
        .map(|_| ())
    }
}

/// Why a connection ended.
enum End {
    Renew,
    Lost(String),
}

async fn connection_task(
    shared: std::sync::Weak<Shared>,
    options: HubOptions,
    inbound: mpsc::Sender<Inbound>,
) {
    let workload = match shared.upgrade() {
        Some(s) => WorkloadClient::new(&s.env),
        None => return,
    };
    let mut failures = 0u32;
    loop {
        let Some(link) = shared.upgrade() else { return };
        if inbound.is_closed() {
            return;
        }
        let end = connect_and_serve(&link, &workload, &options, &inbound).await;
        let connected = link.status.lock().unwrap().connected;
        drop_session(&link);
        let wait = match end {
            End::Renew => {
                failures = 0;
                tracing::info!("reconnecting to edgeHub with a fresh SAS token");
                Duration::ZERO
            }
            End::Lost(error) => {
                failures = if connected { 1 } else { failures + 1 };
                let wait = backoff(&options, failures);
                tracing::warn!(retry_in = ?wait, "edgeHub connection: {error}");
                link.status.lock().unwrap().last_error = Some(error);
                wait
            }
        };
        drop(link);
        tokio::time::sleep(wait).await;
    }
}

/// Exponential backoff with jitter, as the C SDK: `min(first * 2^(n-1), max)`, plus up to 25%
/// so that devices restarted together do not reconnect in step.
fn backoff(options: &HubOptions, failures: u32) -> Duration {
    let (first, max) = options.backoff;
    crate::units::Backoff::new(first, max).after_with_jitter(failures)
}

/// The session is gone: pending acknowledgements and twin requests fail now (their senders drop).
fn drop_session(link: &Shared) {
    link.session.lock().unwrap().take();
    link.twin_waiters.lock().unwrap().clear();
    link.status.lock().unwrap().connected = false;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The user name edgeHub parses: `{hub}/{device}/{module}/?api-version=…&DeviceClientType=…`.
pub fn username(env: &EdgeEnvironment) -> String {
    let client_type = format!("edgeguard/{}", crate::AGENT_VERSION);
    format!(
        "{}/{}/{}/?api-version={API_VERSION}&DeviceClientType={}",
        env.iothub_hostname,
        env.device_id,
        env.module_id,
        sas::percent_encode(&client_type)
    )
}

async fn connect_and_serve(
    link: &Arc<Shared>,
    workload: &WorkloadClient,
    options: &HubOptions,
    inbound: &mpsc::Sender<Inbound>,
) -> End {
    let env = &link.env;
    let describe = |e: WorkloadError| e.to_string();
    let bundle = match workload.trust_bundle().await {
        Ok(b) => b,
        Err(e) => return End::Lost(describe(e)),
    };
    let tls = match crate::net::tls::client_config(&bundle, "the trust bundle") {
        Ok(t) => t,
        Err(e) => return End::Lost(e),
    };
    let token = match sas::module_token(workload, env, unix_now(), options.token_ttl).await {
        Ok(t) => t,
        Err(e) => return End::Lost(describe(e)),
    };
    let mut mqtt = MqttOptions::new(
        format!("{}/{}", env.device_id, env.module_id),
        env.gateway_hostname.clone(),
        options.port,
    );
    mqtt.set_credentials(username(env), token.password.clone())
        .set_clean_session(false)
        .set_keep_alive(options.keep_alive)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
    let (client, mut events) = AsyncClient::new(mqtt, 64);
    match events.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {}
        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
            return End::Lost(format!("edgeHub refused the connection: {:?}", ack.code));
        }
        Ok(other) => return End::Lost(format!("expected CONNACK, got {other:?}")),
        Err(e) => return End::Lost(connection_error(&e, env)),
    }
    let session = Arc::new(Session {
        client: client.clone(),
        order: tokio::sync::Mutex::new(()),
        waiting: Mutex::new(Waiting::default()),
        draining: AtomicBool::new(false),
    });
    {
        let mut status = link.status.lock().unwrap();
        status.connected = true;
        status.connections += 1;
        status.last_error = None;
        status.token_expires_at = Some(token.expires_at);
    }
    tracing::info!(gateway = %env.gateway_hostname, port = options.port, client_id = %format!("{}/{}", env.device_id, env.module_id), "connected to edgeHub");
    // CleanSession 0 keeps the subscriptions, but the SDKs subscribe again anyway: harmless,
    // and right if edgeHub lost the session.
    let subscriptions = topics::SUBSCRIPTIONS
        .map(|t| rumqttc::SubscribeFilter::new(t.to_owned(), QoS::AtLeastOnce));
    if let Err(e) = client.subscribe_many(subscriptions).await {
        return End::Lost(format!("subscribing: {e}"));
    }
    *link.session.lock().unwrap() = Some(Arc::clone(&session));
    let _ = inbound.send(Inbound::Connected).await;
    serve(link, &session, &mut events, inbound, token.renew_at()).await
}

fn connection_error(e: &rumqttc::ConnectionError, env: &EdgeEnvironment) -> String {
    match e {
        rumqttc::ConnectionError::Tls(tls) => format!(
            "TLS with {} failed (is its certificate issued for that name by the trust bundle's CA?): {tls}",
            env.gateway_hostname
        ),
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            format!("edgeHub refused the connection: {code:?}")
        }
        other => format!("{}: {other}", env.gateway_hostname),
    }
}

/// Runs the event loop of a connected session until it breaks or the token is due.
async fn serve(
    link: &Shared,
    session: &Session,
    events: &mut EventLoop,
    inbound: &mpsc::Sender<Inbound>,
    renew_at: u64,
) -> End {
    let renew_in = Duration::from_secs(renew_at.saturating_sub(unix_now()));
    let renew = tokio::time::sleep(renew_in);
    tokio::pin!(renew);
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        if let Some(until) = drain_until
            && (session.waiting.lock().unwrap().is_empty() || tokio::time::Instant::now() >= until)
        {
            let _ = session.client.try_disconnect();
            // Let the DISCONNECT go out; the loop then reports the closed connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = events.poll().await {
                    if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
            return End::Renew;
        }
        let event = tokio::select! {
            event = events.poll() => event,
            _ = &mut renew, if drain_until.is_none() => {
                session.draining.store(true, Ordering::Relaxed);
                drain_until = Some(tokio::time::Instant::now() + RENEWAL_DRAIN);
                continue;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if drain_until.is_some() => continue,
        };
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut waiting = session.waiting.lock().unwrap();
                let ack = match waiting.collided.take() {
                    Some(ack) => ack,
                    None => waiting.queued.pop_front().flatten(),
                };
                if let Some(ack) = ack
                    && pkid != 0
                {
                    waiting.by_pkid.insert(pkid, ack);
                }
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(_))) => {
                let mut waiting = session.waiting.lock().unwrap();
                let ack = waiting.queued.pop_front().flatten();
                waiting.collided = Some(ack);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(tx) = session.waiting.lock().unwrap().by_pkid.remove(&ack.pkid) {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => dispatch(link, publish, inbound),
            Ok(_) => {}
            Err(e) => return End::Lost(format!("connection lost: {e}")),
        }
    }
}

/// Routes a message from edgeHub: twin responses to their waiters, the rest to the module.
fn dispatch(link: &Shared, publish: rumqttc::Publish, inbound: &mpsc::Sender<Inbound>) {
    match topics::parse(&publish.topic) {
        Some(Topic::TwinResponse { status, rid }) => {
            if let Some(waiter) = link.twin_waiters.lock().unwrap().remove(&rid) {
                let _ = waiter.send((status, publish.payload));
            }
        }
        // Never wait on the module here: it may itself be waiting for a twin response this task
        // has yet to read. A patch lost to a full queue shows as a version gap (the twin is
        // read again); a lost method call times out at the caller.
        Some(Topic::DesiredPatch { version }) => {
            if inbound
                .try_send(Inbound::DesiredPatch {
                    version,
                    body: publish.payload,
                })
                .is_err()
            {
                tracing::warn!(version = ?version, "a desired patch arrived while the module was busy; it is dropped and the twin will be read again");
            }
        }
        Some(Topic::MethodCall { name, rid }) => {
            if inbound
                .try_send(Inbound::MethodCall {
                    name: name.clone(),
                    rid,
                    body: publish.payload,
                })
                .is_err()
            {
                tracing::warn!(method = %name, "a direct method call arrived while the module was busy; it is dropped");
            }
        }
        None => tracing::debug!(topic = %publish.topic, "ignored a message on an unexpected topic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_name_is_what_edgehub_parses() {
        let env = EdgeEnvironment {
            workload_uri: "unix:///var/run/iotedge/workload.sock".into(),
            module_id: "filter".into(),
            device_id: "edge-01".into(),
            iothub_hostname: "myhub.azure-devices.net".into(),
            gateway_hostname: "edge-01.local".into(),
            generation_id: "1".into(),
            workload_api_version: "2018-06-28".into(),
        };
        assert_eq!(
            username(&env),
            format!(
                "myhub.azure-devices.net/edge-01/filter/?api-version=2021-04-12&DeviceClientType=edgeguard%2F{}",
                crate::AGENT_VERSION
            )
        );
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_with_bounded_jitter() {
        let options = HubOptions::default();
        for (n, base) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)] {
            let d = backoff(&options, n);
            assert!(
                d >= Duration::from_secs(base) && d <= Duration::from_secs(base).mul_f64(1.25),
                "{n}: {d:?}"
            );
        }
    }

    #[test]
    fn a_bundle_without_certificates_is_refused_by_name() {
        assert_eq!(
            crate::net::tls::client_config("not a pem", "the trust bundle").unwrap_err(),
            "the trust bundle holds no usable certificate"
        );
    }
}
