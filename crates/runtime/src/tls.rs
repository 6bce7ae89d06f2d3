//! HTTPS at the binaries' edge: an axum router served over rustls with the
//! configuration current at each connection, and a certificate read from
//! PEM files that is read again when they change (a mounted Secret that
//! cert-manager or an operator renews: the kubelet swaps the files in place).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the serving certificate PEM")]
    NoServingCertificate,
    #[error("invalid PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate chain and its key, ready to serve.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(TlsError::NoServingCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

/// A TLS configuration without client certificates that serves what
/// `certificate` resolves to, over HTTP/1.1 only: our clients are Go's HTTP
/// clients pulling one large body per connection, which HTTP/2's per-stream
/// flow control only slows.
pub fn server_config(
    certificate: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A serving certificate kept in two PEM files, served as last read.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    loaded: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The files' contents when they were read: a change is a reload.
    pem: (Vec<u8>, Vec<u8>),
    key: Arc<CertifiedKey>,
}

impl CertFiles {
    /// Reads the certificate chain at `cert` and its key at `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let pem = read_pair(cert, key)?;
        let loaded = Loaded {
            key: certified_key(&pem.0, &pem.1)?,
            pem,
        };
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: RwLock::new(loaded),
        }))
    }

    /// Reads the files again and serves what they hold from the next
    /// handshake on if it differs; true when it did. A pair that does not
    /// read or does not match (caught between two writes) leaves the served
    /// certificate as it was.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let pem = read_pair(&self.cert, &self.key)?;
        if self.loaded.read().unwrap_or_else(|e| e.into_inner()).pem == pem {
            return Ok(false);
        }
        let key = certified_key(&pem.0, &pem.1)?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded { pem, key };
        Ok(true)
    }

    /// Reloads every `period`, for ever, logging what changed or failed.
    pub async fn keep_current(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "serving certificate files unusable; the last one is still served")
                }
            }
        }
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.loaded
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; each
/// connection is accepted with the configuration `tls` holds then, and
/// every request on it carries what `peer` makes of the connection (e.g.
/// its verified client certificate) as an extension.
pub async fn serve_tls<L, P>(
    mut listener: L,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    peer: impl Fn(&ServerConnection) -> P + Send + Sync + 'static,
) where
    L: Listener<Addr = SocketAddr>,
    P: Clone + Send + Sync + 'static,
{
    let peer = Arc::new(peer);
    tokio::pin!(shutdown);
    loop {
        // The listener retries failed accepts itself (axum's, logged).
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let (app, peer) = (app.clone(), peer.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
            };
            let extension = peer(stream.get_ref().1);
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(extension.clone());
                    app.clone().oneshot(request.map(Body::new))
                });
            if let Err(error) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn served_der(files: &CertFiles) -> Vec<u8> {
        files.loaded.read().unwrap().key.cert[0].to_vec()
    }

    /// A renewed Secret is served from the next handshake on; a half-written
    /// pair keeps the one served.
    #[test]
    fn the_files_are_served_as_last_read_and_a_broken_pair_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = self_signed("a.example");
        std::fs::write(&cert, &first.0).unwrap();
        std::fs::write(&key, &first.1).unwrap();
        let files = CertFiles::load(&cert, &key).unwrap();
        let served = served_der(&files);
        assert!(!files.reload().unwrap(), "unchanged files are no reload");

        let second = self_signed("b.example");
        std::fs::write(&cert, &second.0).unwrap();
        assert!(files.reload().is_err(), "a certificate without its key");
        assert_eq!(served_der(&files), served);

        std::fs::write(&key, &second.1).unwrap();
        assert!(files.reload().unwrap());
        assert_ne!(served_der(&files), served);
    }
}
