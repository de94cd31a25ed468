//! HTTP/1.1 client requests over any stream (a Unix socket, TCP, TLS), as the workload API and
//! plugin downloads use them, and the percent-encoding their paths and tokens need.

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::fmt::Write as _;

/// Sends one request on a fresh connection over `stream`; `what` names the connection in the
/// debug log when it ends badly.
pub async fn send<S, B>(
    stream: S,
    request: Request<B>,
    what: &'static str,
) -> hyper::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("{what} connection: {e}");
        }
    });
    sender.send_request(request).await
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
