//! The security daemon's workload API, as a module uses it: `sign` (HMAC-SHA256 with the
//! module's key) and `trust-bundle` (the CAs edgeHub's certificate chains to). HTTP/1.1 over
//! the Unix socket of `IOTEDGE_WORKLOADURI`, or plain HTTP to `host:port`.

use super::EdgeEnvironment;
use crate::net::http::percent_encode;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use std::path::PathBuf;
use std::time::Duration;

/// A workload answer is small (a digest, a few certificates); past this it is garbage.
const MAX_RESPONSE: usize = 1 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// A client of one module's workload API.
#[derive(Clone, Debug)]
pub struct WorkloadClient {
    endpoint: Endpoint,
    uri: String,
    api_version: String,
    module_id: String,
    generation_id: String,
}

/// Why a workload API call failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The API could not be reached or did not answer whole.
    #[error("workload API at {uri}: {message}")]
    Unreachable {
        /// The workload URI.
        uri: String,
        /// What went wrong.
        message: String,
    },
    /// The API answered with an error.
    #[error("workload API {what}: HTTP {status}: {message}")]
    Refused {
        /// The call (`sign`, `trust bundle`).
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("workload API {what}: unusable answer: {message}")]
    Garbage {
        /// The call.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl WorkloadClient {
    /// A client of the workload API `env` names.
    pub fn new(env: &EdgeEnvironment) -> WorkloadClient {
        let endpoint = match env.workload_uri.strip_prefix("unix://") {
            Some(path) => Endpoint::Unix(PathBuf::from(path)),
            None => Endpoint::Tcp(
                env.workload_uri
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned(),
            ),
        };
        WorkloadClient {
            endpoint,
            uri: env.workload_uri.clone(),
            api_version: env.workload_api_version.clone(),
            module_id: env.module_id.clone(),
            generation_id: env.generation_id.clone(),
        }
    }

    /// HMAC-SHA256 of `data` with the module's primary key: the 32-byte digest.
    pub async fn sign(&self, data: &[u8]) -> Result<Vec<u8>, WorkloadError> {
        const WHAT: &str = "sign";
        let path = format!(
            "/modules/{}/genid/{}/sign?api-version={}",
            percent_encode(&self.module_id),
            percent_encode(&self.generation_id),
            self.api_version
        );
        let body = serde_json::json!({ "keyId": "primary", "algo": "HMACSHA256", "data": base64::engine::general_purpose::STANDARD.encode(data) });
        let answer = self.json(WHAT, Method::POST, &path, Some(body)).await?;
        let digest = answer
            .get("digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| garbage(WHAT, "no `digest` string"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(digest)
            .map_err(|e| garbage(WHAT, format!("`digest` is not base64: {e}")))?;
        if bytes.len() != 32 {
            return Err(garbage(
                WHAT,
                format!("`digest` has {} bytes, an HMAC-SHA256 has 32", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// The PEM certificates to trust for edgeHub.
    pub async fn trust_bundle(&self) -> Result<String, WorkloadError> {
        const WHAT: &str = "trust-bundle";
        let path = format!("/trust-bundle?api-version={}", self.api_version);
        let answer = self.json(WHAT, Method::GET, &path, None).await?;
        let pem = answer
            .get("certificate")
            .and_then(|c| c.as_str())
            .ok_or_else(|| garbage(WHAT, "no `certificate` string"))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(garbage(WHAT, "`certificate` holds no PEM certificate"));
        }
        Ok(pem.to_owned())
    }

    /// One request, its JSON answer; a non-2xx status is an error with the server's message.
    async fn json(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, WorkloadError> {
        let (status, bytes) =
            tokio::time::timeout(REQUEST_TIMEOUT, self.request(method, path, body))
                .await
                .map_err(|_| self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        let value: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = value
                .as_ref()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(WorkloadError::Refused {
                what,
                status: status.as_u16(),
                message,
            });
        }
        value.ok_or_else(|| {
            garbage(
                what,
                format!(
                    "not JSON: {:?}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            )
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), WorkloadError> {
        let failed = |e: &dyn std::fmt::Display| self.unreachable(e.to_string());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "localhost");
        let body = match body {
            Some(json) => {
                request = request.header("Content-Type", "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|e| failed(&e))?;
        let response = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| failed(&e))?;
                crate::net::http::send(stream, request, "workload API").await
            }
            Endpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| failed(&e))?;
                crate::net::http::send(stream, request, "workload API").await
            }
        }
        .map_err(|e| failed(&e))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| failed(&format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, bytes))
    }

    fn unreachable(&self, message: String) -> WorkloadError {
        WorkloadError::Unreachable {
            uri: self.uri.clone(),
            message,
        }
    }
}

fn garbage(what: &'static str, message: impl Into<String>) -> WorkloadError {
    WorkloadError::Garbage {
        what,
        message: message.into(),
    }
}
