//! An Edge Hub test bed, honest to `edgehub-protocol.md`:
//!
//! - [`TestCa`]: a CA and server certificates made at test time (rcgen);
//! - [`Mosquitto`]: a real broker with a TLS listener (the module's) and a loopback plain one
//!   (the simulators'), with persistence so that a restart keeps queued messages;
//! - [`HubSimulator`]: the twin and direct-method side of edgeHub (§4, §9): answers twin GETs
//!   and reported PATCHes, pushes desired patches with `$version`, calls methods, and records
//!   the module's telemetry;
//! - [`Front`]: edgeHub's authenticator in front of mosquitto, which cannot check SAS tokens:
//!   it terminates TLS, checks the CONNECT's token as edgeHub does (§2.4, a real HMAC-SHA256),
//!   refuses with CONNACK 5 or relays to mosquitto's TLS listener.

use base64::Engine;
use hmac::{Hmac, Mac};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub struct TestCa {
    pub pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edgeguard test Edge CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A server certificate for `names`, issued by this CA: (certificate PEM, key PEM).
    pub fn server(&self, names: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(
            names
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS server configuration presenting a certificate for `names` from this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.server(names);
        let certs = rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        )
    }
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Mosquitto {
    pub tls_port: u16,
    pub plain_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto with a TLS listener whose certificate is issued by `ca` for `names`.
    pub fn start(ca: &TestCa, names: &[&str]) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("eg-mosquitto")
            .tempdir_in("/tmp")
            .unwrap();
        let (cert, key) = ca.server(names);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        let (tls_port, plain_port) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {d}/\nautosave_interval 1\n\
             log_dest file {d}/mosquitto.log\nlog_type all\nmax_packet_size 300000\n\
             listener {plain_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\ntls_version tlsv1.2\n"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut m = Mosquitto {
            tls_port,
            plain_port,
            dir,
            child: None,
        };
        m.start_again();
        m
    }

    fn binary() -> PathBuf {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("mosquitto is installed (cargo xtask test installs it)")
    }

    /// Starts the broker (again) on the same ports and state.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(Self::binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.plain_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.tls_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker the way a service manager does (SIGTERM: it saves its state).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One telemetry message as the broker delivered it.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub topic: String,
    pub properties: Vec<(String, String)>,
    pub body: Value,
}

impl Telemetry {
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Twin {
    desired: Map<String, Value>,
    desired_version: u64,
    reported: Map<String, Value>,
    reported_version: u64,
    gets: usize,
    patches: Vec<Value>,
}

/// The twin and method side of edgeHub, on the broker's plain listener.
/// Direct-method calls waiting for the module's answer (status, payload), by request id.
type PendingMethods = Arc<Mutex<HashMap<String, oneshot::Sender<(u16, Value)>>>>;

pub struct HubSimulator {
    client: AsyncClient,
    twin: Arc<Mutex<Twin>>,
    telemetry: Arc<Mutex<Vec<Telemetry>>>,
    responses: PendingMethods,
    task: tokio::task::JoinHandle<()>,
}

impl HubSimulator {
    /// Connects with a persistent session, so that telemetry published while it reconnects
    /// (e.g. across a broker restart) waits for it.
    pub async fn start(broker_port: u16, desired: Value) -> HubSimulator {
        // Its own client id: two clients with one id would take the session from each other.
        let mut options = MqttOptions::new(
            format!("iothub-simulator-{}", uuid::Uuid::new_v4().simple()),
            "127.0.0.1",
            broker_port,
        );
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(300_000, 300_000);
        let (client, mut events) = AsyncClient::new(options, 256);
        let twin = Arc::new(Mutex::new(Twin {
            desired: desired.as_object().cloned().unwrap_or_default(),
            desired_version: 1,
            ..Twin::default()
        }));
        let telemetry = Arc::new(Mutex::new(Vec::new()));
        let responses: PendingMethods = Arc::default();
        let (subscribed_tx, subscribed) = oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let (t, tel, resp, c) = (
            Arc::clone(&twin),
            Arc::clone(&telemetry),
            Arc::clone(&responses),
            client.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in [
                            "devices/+/modules/+/messages/events/#",
                            "$iothub/twin/GET/#",
                            "$iothub/twin/PATCH/properties/reported/#",
                            "$iothub/methods/res/#",
                        ] {
                            c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        handle(&c, &t, &tel, &resp, &p.topic, &p.payload).await;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("the hub simulator subscribed")
            .unwrap();
        HubSimulator {
            client,
            twin,
            telemetry,
            responses,
            task,
        }
    }

    pub fn telemetry(&self) -> Vec<Telemetry> {
        self.telemetry.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the telemetry received, or panics after `limit`.
    pub async fn wait_telemetry(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[Telemetry]) -> bool,
    ) -> Vec<Telemetry> {
        let deadline = Instant::now() + limit;
        loop {
            let all = self.telemetry();
            if pred(&all) {
                return all;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = all
                    .iter()
                    .flat_map(|m| {
                        m.body["Events"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|e| e["Name"].as_str().unwrap_or("?").to_owned())
                    })
                    .collect();
                panic!(
                    "{what}: not within {limit:?} ({} messages; events: {})",
                    all.len(),
                    names.join(" ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn reported(&self) -> Value {
        Value::Object(self.twin.lock().unwrap().reported.clone())
    }

    /// Every reported patch received, in order.
    pub fn reported_patches(&self) -> Vec<Value> {
        self.twin.lock().unwrap().patches.clone()
    }

    pub fn twin_gets(&self) -> usize {
        self.twin.lock().unwrap().gets
    }

    pub fn desired_version(&self) -> u64 {
        self.twin.lock().unwrap().desired_version
    }

    /// Waits until the reported properties satisfy `pred`.
    pub async fn wait_reported(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let reported = self.reported();
            if pred(&reported) {
                return reported;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; reported: {reported:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Changes the desired properties as the service does: merge, a new version, a patch to the
    /// module with that version.
    pub async fn patch_desired(&self, patch: Value) -> u64 {
        let version = {
            let mut twin = self.twin.lock().unwrap();
            merge(&mut twin.desired, patch.as_object().expect("an object"));
            twin.desired_version += 1;
            twin.desired_version
        };
        let mut body = patch;
        body["$version"] = json!(version);
        self.publish_desired(version, body.to_string().into_bytes())
            .await;
        version
    }

    /// Changes the desired properties without telling the module (a patch it missed).
    pub fn patch_desired_silently(&self, patch: Value) -> u64 {
        let mut twin = self.twin.lock().unwrap();
        merge(&mut twin.desired, patch.as_object().expect("an object"));
        twin.desired_version += 1;
        twin.desired_version
    }

    /// Publishes a desired patch as given (to test a module against bad input).
    pub async fn publish_desired(&self, version: u64, body: Vec<u8>) {
        self.client
            .publish(
                format!("$iothub/twin/PATCH/properties/desired/?$version={version}"),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await
            .unwrap();
    }

    /// Calls a direct method and waits for the module's answer.
    pub async fn invoke(&self, method: &str, payload: Value, limit: Duration) -> (u16, Value) {
        let rid = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.responses.lock().unwrap().insert(rid.clone(), tx);
        self.client
            .publish(
                format!("$iothub/methods/POST/{method}/?$rid={rid}"),
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
            )
            .await
            .unwrap();
        tokio::time::timeout(limit, rx)
            .await
            .unwrap_or_else(|_| panic!("method {method}: no answer within {limit:?}"))
            .unwrap()
    }
}

impl Drop for HubSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(inner) if target.get(k).is_some_and(Value::is_object) => {
                merge(target.get_mut(k).unwrap().as_object_mut().unwrap(), inner);
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// The query of a `…/?k=v&…` topic.
fn query(topic: &str) -> HashMap<String, String> {
    let bag = topic.rsplit_once('/').map_or("", |(_, b)| b);
    parse_bag(bag.trim_start_matches('?')).into_iter().collect()
}

pub fn parse_bag(bag: &str) -> Vec<(String, String)> {
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("percent-encoding"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

async fn handle(
    client: &AsyncClient,
    twin: &Mutex<Twin>,
    telemetry: &Mutex<Vec<Telemetry>>,
    responses: &Mutex<HashMap<String, oneshot::Sender<(u16, Value)>>>,
    topic: &str,
    payload: &[u8],
) {
    if topic.starts_with("devices/") {
        let (_, bag) = topic
            .split_once("/messages/events/")
            .expect("a telemetry topic");
        let body = serde_json::from_slice(payload).unwrap_or_else(|e| {
            panic!(
                "telemetry is not JSON ({e}): {}",
                String::from_utf8_lossy(payload)
            )
        });
        telemetry.lock().unwrap().push(Telemetry {
            topic: topic.to_owned(),
            properties: parse_bag(bag),
            body,
        });
    } else if topic.starts_with("$iothub/twin/GET/") {
        let rid = query(topic)["$rid"].clone();
        let body = {
            let mut t = twin.lock().unwrap();
            t.gets += 1;
            let mut desired = t.desired.clone();
            desired.insert("$version".into(), json!(t.desired_version));
            let mut reported = t.reported.clone();
            reported.insert("$version".into(), json!(t.reported_version));
            json!({ "desired": desired, "reported": reported })
        };
        client
            .publish(
                format!("$iothub/twin/res/200/?$rid={rid}"),
                QoS::AtMostOnce,
                false,
                body.to_string(),
            )
            .await
            .unwrap();
    } else if topic.starts_with("$iothub/twin/PATCH/properties/reported/") {
        let rid = query(topic)["$rid"].clone();
        let status = match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(patch)) => {
                let mut t = twin.lock().unwrap();
                merge(&mut t.reported, &patch);
                t.reported_version += 1;
                t.patches.push(Value::Object(patch));
                204
            }
            _ => 400,
        };
        client
            .publish(
                format!("$iothub/twin/res/{status}/?$rid={rid}"),
                QoS::AtMostOnce,
                false,
                Vec::new(),
            )
            .await
            .unwrap();
    } else if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
        let status: u16 = rest.split('/').next().unwrap().parse().expect("a status");
        let rid = query(topic)["$rid"].clone();
        let body = if payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(payload).expect("a JSON method response")
        };
        if let Some(tx) = responses.lock().unwrap().remove(&rid) {
            let _ = tx.send((status, body));
        }
    }
}

/// What edgeHub checks of a SAS token (`SharedAccessSignature.cs`,
/// `DeviceScopeTokenAuthenticator.cs`): fields split on `&` and `=` (names in any case); the
/// HMAC over the raw `sr`, a LF and `se`; the audience (hub or gateway host, then the device
/// and module of the connecting client); expiry with 5 minutes of allowed skew.
pub fn verify_sas(
    password: &str,
    key_base64: &str,
    hosts: &[&str],
    device: &str,
    module: &str,
    now_unix: u64,
) -> Result<u64, String> {
    let token = password
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let mut fields = HashMap::new();
    for part in token.split('&') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("field without `=`: {part}"))?;
        fields.insert(k.to_ascii_lowercase(), v.to_owned());
    }
    let sr_raw = fields.get("sr").ok_or("no sr")?;
    let sig = percent_decode(fields.get("sig").ok_or("no sig")?);
    let se_text = percent_decode(fields.get("se").ok_or("no se")?);
    let se: u64 = se_text
        .parse()
        .map_err(|_| format!("se `{se_text}` is not a number"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64)
        .map_err(|e| e.to_string())?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{sr_raw}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if expected != sig {
        return Err("signature mismatch".into());
    }
    if se + 300 < now_unix {
        return Err(format!("expired at {se}"));
    }
    let audience = percent_decode(sr_raw);
    let (host, path) = audience.split_once('/').ok_or("sr without a path")?;
    if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Err(format!(
            "audience host {host} is neither the hub nor the gateway"
        ));
    }
    if path != format!("devices/{device}/modules/{module}") {
        return Err(format!("audience {path} is not this module"));
    }
    Ok(se)
}

/// A CONNECT as the front saw it.
#[derive(Clone, Debug)]
pub struct ConnectRecord {
    pub client_id: String,
    pub username: String,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub protocol_level: u8,
    /// `se` of an accepted token, or why it was refused.
    pub verdict: Result<u64, String>,
}

pub struct Front {
    pub port: u16,
    connects: Arc<Mutex<Vec<ConnectRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    /// Listens with a certificate for `names` from `ca`; accepted clients are relayed to the
    /// broker's TLS listener at `broker_tls_port`.
    pub async fn start(
        ca: &TestCa,
        names: &[&str],
        broker_tls_port: u16,
        key_base64: &str,
        hosts: Vec<String>,
    ) -> Front {
        let server = ca.server_config(names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connects: Arc<Mutex<Vec<ConnectRecord>>> = Arc::default();
        let (records, key_base64) = (Arc::clone(&connects), key_base64.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, client, records, key, hosts) = (
                    acceptor.clone(),
                    Arc::clone(&client),
                    Arc::clone(&records),
                    key_base64.clone(),
                    hosts.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(packet) = read_packet(&mut tls).await else {
                        return;
                    };
                    let Some(mut record) = parse_connect(&packet) else {
                        return;
                    };
                    let (device, module) = record
                        .client_id
                        .split_once('/')
                        .unwrap_or((&record.client_id, ""));
                    let (device, module) = (device.to_owned(), module.to_owned());
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                    let password = connect_password(&packet).unwrap_or_default();
                    record.verdict = verify_sas(&password, &key, &hosts, &device, &module, now);
                    let accepted = record.verdict.is_ok();
                    records.lock().unwrap().push(record);
                    if !accepted {
                        let _ = tls.write_all(&[0x20, 0x02, 0x00, 0x05]).await; // CONNACK: not authorized
                        let _ = tls.shutdown().await;
                        return;
                    }
                    let Ok(tcp) =
                        tokio::net::TcpStream::connect(("127.0.0.1", broker_tls_port)).await
                    else {
                        return;
                    };
                    let connector = tokio_rustls::TlsConnector::from(client);
                    let Ok(mut upstream) = connector
                        .connect(
                            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                            tcp,
                        )
                        .await
                    else {
                        return;
                    };
                    if upstream.write_all(&packet).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Front {
            port,
            connects,
            task,
        }
    }

    pub fn connects(&self) -> Vec<ConnectRecord> {
        self.connects.lock().unwrap().clone()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One MQTT packet: fixed header, remaining length, body.
async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut packet = vec![stream.read_u8().await?];
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let byte = stream.read_u8().await?;
        packet.push(byte);
        length |= ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let start = packet.len();
    packet.resize(start + length, 0);
    stream.read_exact(&mut packet[start..]).await?;
    Ok(packet)
}

/// The fields of a CONNECT (MQTT 3.1.1 §3.1); the password stays out of the record.
fn parse_connect(packet: &[u8]) -> Option<ConnectRecord> {
    let fields = connect_fields(packet)?;
    Some(ConnectRecord {
        client_id: fields.client_id,
        username: fields.username.unwrap_or_default(),
        clean_session: fields.flags & 0x02 != 0,
        keep_alive: fields.keep_alive,
        protocol_level: fields.level,
        verdict: Err("unchecked".into()),
    })
}

fn connect_password(packet: &[u8]) -> Option<String> {
    connect_fields(packet)?.password
}

struct ConnectFields {
    level: u8,
    flags: u8,
    keep_alive: u16,
    client_id: String,
    username: Option<String>,
    password: Option<String>,
}

fn connect_fields(packet: &[u8]) -> Option<ConnectFields> {
    if packet.first()? >> 4 != 1 {
        return None;
    }
    let mut i = 1;
    while packet.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let string = |i: &mut usize| -> Option<String> {
        let len = u16::from_be_bytes([*packet.get(*i)?, *packet.get(*i + 1)?]) as usize;
        let s = String::from_utf8(packet.get(*i + 2..*i + 2 + len)?.to_vec()).ok()?;
        *i += 2 + len;
        Some(s)
    };
    let _protocol = string(&mut i)?;
    let level = *packet.get(i)?;
    let flags = *packet.get(i + 1)?;
    let keep_alive = u16::from_be_bytes([*packet.get(i + 2)?, *packet.get(i + 3)?]);
    i += 4;
    let client_id = string(&mut i)?;
    if flags & 0x04 != 0 {
        string(&mut i)?;
        string(&mut i)?;
    }
    let username = if flags & 0x80 != 0 {
        Some(string(&mut i)?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(string(&mut i)?)
    } else {
        None
    };
    Some(ConnectFields {
        level,
        flags,
        keep_alive,
        client_id,
        username,
        password,
    })
}

/// The environment edgeAgent would give the module, for a test bed.
pub fn module_environment(workload_uri: &str, gateway: &str) -> Vec<(String, String)> {
    [
        ("IOTEDGE_WORKLOADURI", workload_uri),
        ("IOTEDGE_MODULEID", MODULE),
        ("IOTEDGE_DEVICEID", DEVICE),
        ("IOTEDGE_IOTHUBHOSTNAME", HUB),
        ("IOTEDGE_GATEWAYHOSTNAME", gateway),
        ("IOTEDGE_MODULEGENERATIONID", "638000000000000000"),
        ("IOTEDGE_AUTHSCHEME", "sasToken"),
        ("IOTEDGE_APIVERSION", "2022-08-03"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub const DEVICE: &str = "edge-01";
pub const MODULE: &str = "edgeguard";
pub const HUB: &str = "myhub.azure-devices.net";
/// The azure_iot_sdk test key the reference's vectors use.
pub const MODULE_KEY: &str = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
