//! Where a plugin's bytes come from: a file of the plugin directory, or an http(s) URL. Fetched
//! components are kept by digest beside their compiled artifacts, so a pinned plugin is
//! downloaded once.

use super::config::is_url;
use crate::net::http;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, Uri};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where a plugin's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file of edgeguard's filesystem.
    File(PathBuf),
    /// An http(s) URL.
    Url(String),
}

impl Source {
    /// From the local configuration: a URL, or a path relative to the plugin directory (or absolute).
    pub fn local(text: &Path, plugin_dir: &Path) -> Source {
        let s = text.to_string_lossy();
        if is_url(&s) {
            Source::Url(s.into_owned())
        } else {
            Source::File(plugin_dir.join(text))
        }
    }

    /// From the module twin: a URL, or a path that stays inside the plugin directory.
    pub fn remote(text: &str, plugin_dir: &Path) -> Result<Source, String> {
        if is_url(text) {
            return text
                .parse::<Uri>()
                .map(|_| Source::Url(text.to_owned()))
                .map_err(|e| format!("`{text}` is not a valid URL: {e}"));
        }
        let path = Path::new(text);
        if text.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!(
                "`{text}` must be an http(s) URL or a relative path inside the plugin directory (no `..`, not absolute)"
            ));
        }
        Ok(Source::File(plugin_dir.join(path)))
    }

    /// Whether it is fetched over the network.
    pub fn is_url(&self) -> bool {
        matches!(self, Source::Url(_))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Url(url) => f.write_str(url),
        }
    }
}

/// Why a component could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The download failed.
    #[error("cannot fetch {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The component is larger than allowed.
    #[error("{origin} is larger than the {limit}-byte limit ([remote] max_plugin_size)")]
    TooLarge {
        /// The file or URL.
        origin: String,
        /// `[remote] max_plugin_size`.
        limit: u64,
    },
}

/// Downloads over http(s) with a size bound, a deadline and a few redirects.
pub struct Fetcher {
    /// The largest component accepted.
    pub max_size: u64,
    /// A download taking longer fails.
    pub timeout: Duration,
    /// PEM roots for https, read when first needed.
    pub ca_file: PathBuf,
    tls: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// A fetcher with these bounds, trusting the roots in `ca_file` for https.
    pub fn new(max_size: u64, timeout: Duration, ca_file: PathBuf) -> Fetcher {
        Fetcher {
            max_size,
            timeout,
            ca_file,
            tls: std::sync::OnceLock::new(),
        }
    }

    /// The bytes of `source`.
    pub async fn get(&self, source: &Source) -> Result<Vec<u8>, SourceError> {
        match source {
            Source::File(path) => {
                let read = |message: String| SourceError::Read {
                    path: path.clone(),
                    message,
                };
                let size = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| read(e.to_string()))?
                    .len();
                if size > self.max_size {
                    return Err(SourceError::TooLarge {
                        origin: path.display().to_string(),
                        limit: self.max_size,
                    });
                }
                tokio::fs::read(path).await.map_err(|e| read(e.to_string()))
            }
            Source::Url(url) => {
                let fail = |message: String| SourceError::Fetch {
                    url: url.clone(),
                    message,
                };
                match tokio::time::timeout(self.timeout, self.download(url)).await {
                    Ok(result) => result,
                    Err(_) => Err(fail(format!(
                        "no complete answer within {:?} ([remote] fetch_timeout)",
                        self.timeout
                    ))),
                }
            }
        }
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, SourceError> {
        let fail = |message: String| SourceError::Fetch {
            url: url.to_owned(),
            message,
        };
        let mut uri: Uri = url
            .parse()
            .map_err(|e| fail(format!("not a valid URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let response = self.request(&uri).await.map_err(fail)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| fail(format!("{status} without a Location")))?;
                uri = redirect(&uri, location).map_err(fail)?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(fail(format!("the server answered {status}")));
            }
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| fail(format!("the download broke off: {e}")))?;
                if let Some(chunk) = frame.data_ref() {
                    if (bytes.len() + chunk.len()) as u64 > self.max_size {
                        return Err(SourceError::TooLarge {
                            origin: url.to_owned(),
                            limit: self.max_size,
                        });
                    }
                    bytes.extend_from_slice(chunk);
                }
            }
            return Ok(bytes);
        }
        Err(fail(format!("more than {MAX_REDIRECTS} redirects")))
    }

    async fn request(&self, uri: &Uri) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let host = uri
            .host()
            .ok_or("the URL has no host")?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
        let request = Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("edgeguard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        if !https {
            return http::send(tcp, request, "plugin download")
                .await
                .map_err(|e| e.to_string());
        }
        let tls = self.tls.get_or_init(|| {
            let pem = std::fs::read_to_string(&self.ca_file).map_err(|e| {
                format!(
                    "cannot read the https roots {}: {e}",
                    self.ca_file.display()
                )
            })?;
            crate::net::tls::client_config(
                &pem,
                &format!("the https roots {}", self.ca_file.display()),
            )
        });
        let tls = tls.clone()?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("`{host}`: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        http::send(stream, request, "plugin download")
            .await
            .map_err(|e| e.to_string())
    }
}

/// The target of a redirect: absolute, or a path on the same server.
fn redirect(from: &Uri, location: &str) -> Result<Uri, String> {
    if is_url(location) {
        return location
            .parse()
            .map_err(|e| format!("bad redirect `{location}`: {e}"));
    }
    if !location.starts_with('/') {
        return Err(format!("unsupported relative redirect `{location}`"));
    }
    let mut parts = from.clone().into_parts();
    parts.path_and_query = Some(
        location
            .parse()
            .map_err(|e| format!("bad redirect `{location}`: {e}"))?,
    );
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_paths_stay_inside_the_plugin_directory() {
        let dir = Path::new("/opt/plugins");
        assert_eq!(
            Source::remote("process-v2.wasm", dir),
            Ok(Source::File(dir.join("process-v2.wasm")))
        );
        assert_eq!(
            Source::remote("v2/process.wasm", dir),
            Ok(Source::File(dir.join("v2/process.wasm")))
        );
        for bad in ["../etc/shadow", "/etc/passwd", "v2/../../x", "", "./x"] {
            assert!(
                Source::remote(bad, dir)
                    .unwrap_err()
                    .contains("inside the plugin directory"),
                "{bad}"
            );
        }
        assert_eq!(
            Source::remote("https://example.com/p.wasm", dir),
            Ok(Source::Url("https://example.com/p.wasm".into()))
        );
        assert_eq!(
            Source::local(Path::new("/abs/p.wasm"), dir),
            Source::File("/abs/p.wasm".into())
        );
    }

    #[test]
    fn redirects_resolve() {
        let from: Uri = "https://h:8443/a/b.wasm?x=1".parse().unwrap();
        assert_eq!(
            redirect(&from, "/c.wasm").unwrap().to_string(),
            "https://h:8443/c.wasm"
        );
        assert_eq!(
            redirect(&from, "http://o/d").unwrap().to_string(),
            "http://o/d"
        );
        assert!(redirect(&from, "e.wasm").is_err());
    }
}
