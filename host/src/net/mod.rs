//! Client-side networking shared by the layers above: TLS configurations, HTTP/1 requests.

pub mod http;
pub mod tls;
