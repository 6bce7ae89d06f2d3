//! The front proxy's trust, kept current. kube-apiserver rewrites
//! `kube-system/extension-apiserver-authentication` when its request-header
//! CA or allowed names change (it re-reads `--requestheader-client-ca-file`
//! and its proxy client certificate while running), so a CA rotation would
//! otherwise lock every user out of this server until it restarted. As kube's
//! own aggregated servers do, the ConfigMap is watched and both the header
//! rules and the TLS client verifier follow it; a ConfigMap that is deleted or
//! unreadable leaves the last good trust in place.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustls::server::ResolvesServerCert;
use tokio::sync::watch;

use super::{CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, Error, RequestHeaderConfig};
use crate::serve;

/// What the server trusts of the front proxy, as it is now.
#[derive(Clone)]
pub struct FrontProxyTrust {
    /// How to read the identity headers.
    pub requestheader: watch::Receiver<Arc<RequestHeaderConfig>>,
    /// The TLS configuration whose client verifier trusts the proxy's CA.
    pub tls: watch::Receiver<Arc<rustls::ServerConfig>>,
}

/// Feeds [`FrontProxyTrust`] from the ConfigMap: see [`Self::run`].
pub struct FrontProxyWatch {
    configmaps: Api<ConfigMap>,
    certificate: Arc<dyn ResolvesServerCert>,
    requestheader: watch::Sender<Arc<RequestHeaderConfig>>,
    tls: watch::Sender<Arc<rustls::ServerConfig>>,
}

impl FrontProxyTrust {
    /// Reads the ConfigMap once (an error here names the fix and stops the
    /// server), and returns the trust with the watch that keeps it current.
    pub async fn load(
        client: Client,
        certificate: Arc<dyn ResolvesServerCert>,
    ) -> Result<(Self, FrontProxyWatch), Error> {
        let configmaps = Api::<ConfigMap>::namespaced(client, CONFIGMAP_NAMESPACE);
        let configmap = configmaps.get(CONFIGMAP_NAME).await.map_err(Error::Read)?;
        Self::from_configmap(configmaps, certificate, configmap)
    }

    fn from_configmap(
        configmaps: Api<ConfigMap>,
        certificate: Arc<dyn ResolvesServerCert>,
        configmap: ConfigMap,
    ) -> Result<(Self, FrontProxyWatch), Error> {
        let config = RequestHeaderConfig::from_data(&configmap.data.unwrap_or_default())?;
        let tls = serve::tls_config(certificate.clone(), config.client_ca_pem.as_bytes())?;
        let (requestheader_tx, requestheader) = watch::channel(Arc::new(config));
        let (tls_tx, tls) = watch::channel(tls);
        let trust = Self { requestheader, tls };
        let keeper = FrontProxyWatch {
            configmaps,
            certificate,
            requestheader: requestheader_tx,
            tls: tls_tx,
        };
        Ok((trust, keeper))
    }
}

impl FrontProxyWatch {
    /// Follows the ConfigMap until the process ends.
    pub async fn run(self) {
        let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
        let mut changes = watcher::watcher(self.configmaps.clone(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(change) = changes.next().await {
            match change {
                Ok(configmap) => self.apply(&configmap),
                Err(error) => tracing::warn!(%error, "watching the front proxy's ConfigMap"),
            }
        }
    }

    /// Trusts what `configmap` says, if it differs and is usable.
    fn apply(&self, configmap: &ConfigMap) {
        let data = configmap.data.clone().unwrap_or_default();
        let config = match RequestHeaderConfig::from_data(&data) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%error, "the front proxy's ConfigMap changed to something unusable; keeping the last trust");
                return;
            }
        };
        if **self.requestheader.borrow() == config {
            return;
        }
        let ca_changed = self.requestheader.borrow().client_ca_pem != config.client_ca_pem;
        if ca_changed {
            match serve::tls_config(self.certificate.clone(), config.client_ca_pem.as_bytes()) {
                Ok(tls) => {
                    self.tls.send_replace(tls);
                }
                Err(error) => {
                    tracing::warn!(%error, "the front proxy's new CA is unusable; keeping the last trust");
                    return;
                }
            }
        }
        self.requestheader.send_replace(Arc::new(config));
        tracing::info!(
            ca_changed,
            "the front proxy's trust changed (extension-apiserver-authentication): following it"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::StatusCode;
    use rcgen::{CertificateParams, IsCa, KeyPair};
    use rustls::server::ClientHello;
    use rustls::sign::CertifiedKey;

    use super::*;
    use crate::authn::fake_apiserver;

    #[derive(Debug)]
    struct NoCertificate;

    impl ResolvesServerCert for NoCertificate {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            None
        }
    }

    fn ca_pem() -> String {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    }

    fn configmap(ca: &str, allowed: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("requestheader-client-ca-file".to_owned(), ca.to_owned()),
                ("requestheader-allowed-names".to_owned(), allowed.to_owned()),
                (
                    "requestheader-username-headers".to_owned(),
                    r#"["X-Remote-User"]"#.to_owned(),
                ),
            ])),
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn follows_a_rotated_ca_and_keeps_the_last_good_trust() {
        let unused = fake_apiserver(|_, _| Err(StatusCode::INTERNAL_SERVER_ERROR));
        let first_ca = ca_pem();
        let (trust, watch) = FrontProxyTrust::from_configmap(
            Api::namespaced(unused, CONFIGMAP_NAMESPACE),
            Arc::new(NoCertificate),
            configmap(&first_ca, r#"["front-proxy-client"]"#),
        )
        .unwrap();
        let first_tls = trust.tls.borrow().clone();

        // Only the allowed names change: the TLS configuration stays.
        watch.apply(&configmap(&first_ca, r#"["front-proxy-client","other"]"#));
        assert_eq!(trust.requestheader.borrow().allowed_names.len(), 2);
        assert!(Arc::ptr_eq(&first_tls, &trust.tls.borrow()));

        // The CA rotates: a new verifier, and the headers' rules follow.
        let second_ca = format!("{first_ca}{}", ca_pem());
        watch.apply(&configmap(&second_ca, r#"["front-proxy-client"]"#));
        assert_eq!(trust.requestheader.borrow().client_ca_pem, second_ca);
        let second_tls = trust.tls.borrow().clone();
        assert!(!Arc::ptr_eq(&first_tls, &second_tls));

        // Unusable changes leave the last good trust in place.
        for bad in [
            configmap("", r#"["front-proxy-client"]"#),
            configmap("not a PEM", r#"["front-proxy-client"]"#),
            configmap(&first_ca, "front-proxy-client"),
            ConfigMap::default(),
        ] {
            watch.apply(&bad);
            assert_eq!(trust.requestheader.borrow().client_ca_pem, second_ca);
            assert!(Arc::ptr_eq(&second_tls, &trust.tls.borrow()));
        }
    }
}
