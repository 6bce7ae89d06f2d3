//! rustls (ring) client configurations and reqwest clients that trust given
//! PEM roots, optionally presenting a client certificate.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ring crypto provider (the workspace never uses aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse PEM certificates")?;
    if certs.is_empty() {
        bail!("no certificate in PEM text");
    }
    Ok(certs)
}

/// A rustls client configuration trusting exactly `roots_pem` (one or more PEM
/// texts), presenting `client` (certificate chain PEM, private key PEM) if given.
pub fn client_config(
    roots_pem: &[&str],
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        for cert in certs_from_pem(pem)? {
            roots.add(cert).context("add trust root")?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                certs_from_pem(chain)?,
                PrivateKeyDer::from_pem_slice(key.as_bytes()).context("parse PEM private key")?,
            )
            .context("client certificate")?,
    })
}

/// A reqwest client over [`client_config`].
pub fn reqwest_client(roots_pem: &[&str], client: Option<(&str, &str)>) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(roots_pem, client)?)
        .build()
        .context("build reqwest client")
}

/// The certificate a TLS server at `addr` serves for `server_name`, if it
/// verifies against `roots_pem` now (so an expired one is an error).
pub async fn served_certificate(
    addr: std::net::SocketAddr,
    server_name: &str,
    roots_pem: &[&str],
) -> Result<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots_pem, None)?));
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_owned()).context("server name")?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector.connect(name, tcp).await?;
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no certificate served")?;
    Ok(leaf.to_vec())
}
