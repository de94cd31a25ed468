//! An HTTP/1.1 file server on loopback, plain or over TLS with a certificate of the test CA,
//! serving bytes put into it by path (404 for the rest) and counting requests: where the
//! hot-swap tests publish plugin versions.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Files {
    bytes: HashMap<String, Vec<u8>>,
    requests: HashMap<String, usize>,
}

pub struct FileServer {
    pub port: u16,
    files: Arc<Mutex<Files>>,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Plain HTTP.
    pub async fn start() -> FileServer {
        Self::serve(None).await
    }

    /// HTTPS, with this TLS configuration (see [`crate::edgehub::TestCa::server_config`]).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> FileServer {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = Arc::new(Mutex::new(Files::default()));
        let served = Arc::clone(&files);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (files, tls) = (Arc::clone(&served), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => answer(stream, files).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, files).await;
                            }
                        }
                    }
                });
            }
        });
        FileServer { port, files, task }
    }

    /// Serves `bytes` at `/name`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .unwrap()
            .bytes
            .insert(format!("/{name}"), bytes);
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// The URL with TLS, by a name the test certificate carries.
    pub fn https_url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.port)
    }

    /// How many times `/name` was asked for.
    pub fn requests(&self, name: &str) -> usize {
        self.files
            .lock()
            .unwrap()
            .requests
            .get(&format!("/{name}"))
            .copied()
            .unwrap_or(0)
    }
}

async fn answer<S>(stream: S, files: Arc<Mutex<Files>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let files = Arc::clone(&files);
            async move {
                let path = request.uri().path().to_owned();
                let mut files = files.lock().unwrap();
                *files.requests.entry(path.clone()).or_default() += 1;
                let response = match files.bytes.get(&path) {
                    Some(b) => Response::new(Full::new(Bytes::from(b.clone()))),
                    None => {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    }
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
