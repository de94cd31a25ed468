//! A plain HTTP/1.1 file server on loopback, serving bytes put into it by path (404 for the
//! rest) and counting requests: where the hot-swap tests publish plugin versions.

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
    pub async fn start() -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = Arc::new(Mutex::new(Files::default()));
        let served = Arc::clone(&files);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let files = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
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
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        FileServer { port, files, task }
    }

    /// Serves `bytes` at `/name`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().bytes.insert(format!("/{name}"), bytes);
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// How many times `/name` was asked for.
    pub fn requests(&self, name: &str) -> usize {
        self.files.lock().unwrap().requests.get(&format!("/{name}")).copied().unwrap_or(0)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
