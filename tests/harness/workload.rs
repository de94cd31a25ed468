//! A simulator of the IoT Edge security daemon's workload API, as `edgehub-protocol.md` §2
//! describes it: HTTP/1.1 on a Unix socket; `api-version` mandatory and checked against the
//! versions the daemon knows (400 with its messages); a request body only as JSON (415, 422);
//! `sign` computes a real HMAC-SHA256 with the module's key over the base64-decoded data, for
//! its own module only (403, where the daemon checks the caller's container); `trust-bundle`
//! returns PEM text, or 404 when there is none. Faults can be switched on to test clients.

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// api-version values the daemon knows (`edgelet-http/src/version.rs`).
const KNOWN_VERSIONS: [&str; 7] = [
    "2018-06-28",
    "2019-01-30",
    "2019-10-22",
    "2019-11-05",
    "2020-07-07",
    "2021-12-07",
    "2022-08-03",
];

/// What the simulator answers besides the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every request gets this status with an error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// `sign` answers a digest that is not an HMAC-SHA256 (16 bytes).
    ShortDigest,
}

struct State {
    module_id: String,
    key: Vec<u8>,
    trust_bundle: Option<String>,
    fault: Fault,
}

pub struct WorkloadSimulator {
    pub socket: PathBuf,
    state: Arc<Mutex<State>>,
    signs: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl WorkloadSimulator {
    /// Serves module `module_id` whose primary key is `key_base64`, on a fresh socket.
    pub fn start(
        module_id: &str,
        key_base64: &str,
        trust_bundle: Option<String>,
    ) -> WorkloadSimulator {
        let dir = tempfile::Builder::new()
            .prefix("eg-workload")
            .tempdir_in("/tmp")
            .unwrap();
        let socket = dir.path().join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_base64)
            .expect("a base64 module key");
        let state = Arc::new(Mutex::new(State {
            module_id: module_id.to_owned(),
            key,
            trust_bundle,
            fault: Fault::None,
        }));
        let signs = Arc::new(AtomicUsize::new(0));
        let (served_state, served_signs) = (Arc::clone(&state), Arc::clone(&signs));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, signs) = (Arc::clone(&served_state), Arc::clone(&served_signs));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (state, signs) = (Arc::clone(&state), Arc::clone(&signs));
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(&state, &signs, request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        WorkloadSimulator {
            socket,
            state,
            signs,
            _dir: dir,
            task,
        }
    }

    /// `unix://…`, as `IOTEDGE_WORKLOADURI` carries it.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Successful `sign` requests so far.
    pub fn signs(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }
}

impl Drop for WorkloadSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "message": message }))
}

async fn answer(
    state: &Mutex<State>,
    signs: &AtomicUsize,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let fault = state.lock().unwrap().fault.clone();
    match fault {
        Fault::Status(code) => {
            return error(
                StatusCode::from_u16(code).unwrap(),
                "simulated failure of the security daemon",
            );
        }
        Fault::Garbage => {
            return Response::new(Full::new(Bytes::from_static(
                b"<html>502 Bad Gateway</html>",
            )));
        }
        Fault::None | Fault::ShortDigest => {}
    }
    let query = request.uri().query().unwrap_or_default().to_owned();
    let version = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="));
    match version {
        None => return error(StatusCode::BAD_REQUEST, "api-version not specified"),
        Some(v) if !KNOWN_VERSIONS.contains(&v) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid api-version {v:?}"),
            );
        }
        Some(_) => {}
    }
    if let Some(content_type) = request.headers().get("content-type") {
        let media = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if media != "application/json" {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request body must be application/json",
            );
        }
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["trust-bundle"]) => match &state.lock().unwrap().trust_bundle {
            Some(pem) => json(StatusCode::OK, serde_json::json!({ "certificate": pem })),
            None => error(StatusCode::NOT_FOUND, "trust bundle not found"),
        },
        ("POST", ["modules", module, "genid", _generation, "sign"]) => {
            let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON");
            };
            let state = state.lock().unwrap();
            let module = percent_decode(module);
            if module != state.module_id {
                return error(
                    StatusCode::FORBIDDEN,
                    &format!("the caller is not module {module}"),
                );
            }
            let Some(data) = request
                .get("data")
                .and_then(|d| d.as_str())
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "data must be base64");
            };
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&state.key).unwrap();
            mac.update(&data);
            let mut digest = mac.finalize().into_bytes().to_vec();
            if state.fault == Fault::ShortDigest {
                digest.truncate(16);
            }
            signs.fetch_add(1, Ordering::SeqCst);
            json(
                StatusCode::OK,
                serde_json::json!({ "digest": base64::engine::general_purpose::STANDARD.encode(digest) }),
            )
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no route {method} {path}")),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
