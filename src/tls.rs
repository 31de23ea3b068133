//! TLS for the few requests sitio makes itself (webhooks today): rustls with
//! the Mozilla root store built in (no system files needed, so it works in the
//! `FROM scratch` image), plus the private CAs of `SITIO_CA_FILE`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

/// `SITIO_CA_FILE`: PEM certificates trusted besides the public roots, read
/// and checked when the settings are parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CaFile {
    /// Where they were read from.
    pub path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

impl CaFile {
    /// The certificates, DER-encoded.
    pub(crate) fn certificates(&self) -> impl Iterator<Item = &[u8]> {
        self.certs.iter().map(|c| c.as_ref())
    }
}

/// Parses `SITIO_CA_FILE`: a readable PEM file holding at least one certificate.
pub(crate) fn parse_ca_file(s: &str) -> Result<CaFile, String> {
    let path = PathBuf::from(s.trim());
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("expected a readable PEM file of CA certificates: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("expected PEM certificates in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "expected at least one certificate in {}",
            path.display()
        ));
    }
    Ok(CaFile { path, certs })
}

/// A connector trusting the public roots and `extra`'s certificates.
pub(crate) fn connector(extra: Option<&CaFile>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra.iter().flat_map(|f| f.certs.iter()) {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(error = %e, "SITIO_CA_FILE: a certificate was not usable as a CA");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(config) => TlsConnector::from(Arc::new(config)),
        // The ring provider supports the default versions; this cannot happen.
        Err(e) => unreachable!("rustls refused its own defaults: {e}"),
    }
}

/// A TLS connection to `host` over `tcp`, the certificate checked for `host`.
pub(crate) async fn handshake(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    connector.connect(name, tcp).await
}
