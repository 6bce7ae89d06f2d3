//! HTTPS for the inventory API: the serving certificate, an optional client
//! certificate verified against the request-header CA, and the connection's
//! verified peer handed to the router with every request (axum's own server
//! cannot tell handlers who the TLS peer is). Serving itself is
//! `vmm_runtime::tls`, shared with the controller's disk endpoint.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::authn::PeerCertificate;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no certificate in the request-header CA PEM")]
    NoClientCa,
    #[error("invalid PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The verified client certificate of the connection a request came on.
#[derive(Clone, Debug, Default)]
pub struct ConnectionPeer(pub Option<PeerCertificate>);

/// A TLS configuration that serves what `certificate` resolves to and
/// accepts, but does not require, client certificates signed by
/// `client_ca_pem`.
pub fn tls_config(
    certificate: Arc<dyn ResolvesServerCert>,
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem) {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err(Error::NoClientCa);
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; each
/// connection is accepted with the TLS configuration `tls` holds then, and
/// its requests carry the connection's verified client certificate.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    vmm_runtime::tls::serve_tls(listener, tls, app, shutdown, |connection| {
        ConnectionPeer(
            connection
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| PeerCertificate::from_der(cert)),
        )
    })
    .await;
}
