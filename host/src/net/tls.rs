//! TLS client configurations (rustls on ring): what the Edge Hub link and https plugin sources
//! trust.

use std::sync::Arc;

/// rustls trusting exactly the certificates of `pem` (`what` names it in errors): the workload
/// API's trust bundle here, the https roots of plugin sources elsewhere.
pub fn client_config(pem: &str, what: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("{what} has an unreadable certificate: {e}"))?;
        // A system bundle may hold a certificate rustls cannot use; the others still count.
        match roots.add(cert) {
            Ok(()) => count += 1,
            Err(e) => tracing::debug!("{what}: skipping an unusable certificate: {e}"),
        }
    }
    if count == 0 {
        return Err(format!("{what} holds no usable certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
