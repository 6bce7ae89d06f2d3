//! A serving certificate the apiserver manages itself, without cert-manager:
//! a CA and a certificate for the Service's DNS names kept in a Secret,
//! created when missing or near expiry, and the APIService's `caBundle` kept
//! equal to that CA. The Secret is watched: if an operator deletes or
//! replaces it, the new certificate is served at once and the APIService
//! follows, so rotation needs no reinstall. Replicas share the Secret: the
//! first to create it wins (the create is refused for the others, which read
//! the winner's).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// When the certificate in the Secret stops being used (RFC 3339), written
/// by us: a Secret without it, or close to it, is made again.
const NOT_AFTER_ANNOTATION: &str = "inventory.harvesterhci.io/not-after";
/// The DNS names it was made for, comma-separated.
const HOSTS_ANNOTATION: &str = "inventory.harvesterhci.io/hosts";
/// Certificates live a year and are made again a month before the end.
const LIFETIME_DAYS: i64 = 365;
const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the Secret's certificate is unusable: {0}")]
    Unusable(String),
}

/// The PEM of a CA and of a certificate it signed, with its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where the material lives, and what it must name.
pub struct SelfManaged {
    secrets: Api<Secret>,
    apiservices: Api<APIService>,
    secret: String,
    apiservice: String,
    hosts: Vec<String>,
}

impl SelfManaged {
    /// The Secret `namespace/secret`, for the Service `service` in the same
    /// namespace, registered as `apiservice`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        secret: &str,
        service: &str,
        apiservice: &str,
    ) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            apiservices: Api::all(client),
            secret: secret.to_owned(),
            apiservice: apiservice.to_owned(),
            hosts: vec![
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
                format!("{service}.{namespace}"),
                service.to_owned(),
            ],
        }
    }

    /// The material in the Secret, made (and the Secret created or
    /// replaced) when it is missing, for other names, or near expiry.
    pub async fn ensure(&self) -> Result<Material, CertError> {
        let existing = self.secrets.get_opt(&self.secret).await?;
        if let Some(material) = existing.as_ref().and_then(|s| self.usable(s)) {
            return Ok(material);
        }
        let (material, not_after) = generate(&self.hosts)?;
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                annotations: Some(BTreeMap::from([
                    (NOT_AFTER_ANNOTATION.to_owned(), not_after.to_string()),
                    (HOSTS_ANNOTATION.to_owned(), self.hosts.join(",")),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(BTreeMap::from([
                (
                    "ca.crt".to_owned(),
                    ByteString(material.ca_pem.clone().into_bytes()),
                ),
                (
                    "tls.crt".to_owned(),
                    ByteString(material.cert_pem.clone().into_bytes()),
                ),
                (
                    "tls.key".to_owned(),
                    ByteString(material.key_pem.clone().into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        let written = match existing {
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                self.secrets
                    .replace(&self.secret, &PostParams::default(), &secret)
                    .await
            }
            None => self.secrets.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %self.secret, "made a new serving certificate");
                Ok(material)
            }
            // Another replica wrote it first: use theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let secret = self.secrets.get(&self.secret).await?;
                self.usable(&secret)
                    .ok_or_else(|| CertError::Unusable("another replica wrote it".into()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The Secret's material if it is ours, for our names, and not near expiry.
    fn usable(&self, secret: &Secret) -> Option<Material> {
        let annotations = secret.metadata.annotations.as_ref()?;
        let not_after: Timestamp = annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?;
        let hosts = annotations.get(HOSTS_ANNOTATION)?;
        if *hosts != self.hosts.join(",")
            || not_after < Timestamp::now() + (RENEW_BEFORE_DAYS * 24).hours()
        {
            return None;
        }
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        Some(Material {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
        })
    }

    /// Sets the APIService's `caBundle` to `ca_pem` unless it is already.
    pub async fn publish(&self, ca_pem: &str) -> Result<(), CertError> {
        let current = self.apiservices.get_opt(&self.apiservice).await?;
        let Some(current) = current else {
            tracing::warn!(apiservice = %self.apiservice, "the APIService does not exist (yet); its caBundle is set once it does");
            return Ok(());
        };
        if current
            .spec
            .as_ref()
            .and_then(|s| s.ca_bundle.as_ref())
            .map(|b| b.0.as_slice())
            == Some(ca_pem.as_bytes())
        {
            return Ok(());
        }
        let patch =
            serde_json::json!({"spec": {"caBundle": ByteString(ca_pem.as_bytes().to_vec())}});
        self.apiservices
            .patch(
                &self.apiservice,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        tracing::info!(apiservice = %self.apiservice, "caBundle updated");
        Ok(())
    }

    /// Keeps the certificate served by `resolver` and the APIService current
    /// with the Secret, until the process ends: on every change of the
    /// Secret (and at least every `recheck`, for expiry and the APIService).
    pub async fn keep_current(
        self,
        resolver: Arc<Reloadable>,
        mut served: Material,
        recheck: Duration,
    ) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.secret));
        // Any event (changed, deleted, relisted) is a reason to look again.
        let mut events = watcher::watcher(self.secrets.clone(), config)
            .default_backoff()
            .boxed();
        loop {
            tokio::select! {
                _ = events.next() => {}
                () = tokio::time::sleep(recheck) => {}
            }
            let material = match self.ensure().await {
                Ok(material) => material,
                Err(error) => {
                    tracing::warn!(%error, "cannot read or renew the serving certificate");
                    continue;
                }
            };
            if material != served {
                match resolver.set(&material) {
                    Ok(()) => {
                        tracing::info!("serving the certificate now in the Secret");
                        served = material;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the Secret's certificate cannot be served");
                        continue;
                    }
                }
            }
            if let Err(error) = self.publish(&served.ca_pem).await {
                tracing::warn!(%error, "cannot update the APIService's caBundle");
            }
        }
    }
}

/// A new CA and a certificate it signed for `hosts`, and when they end.
fn generate(hosts: &[String]) -> Result<(Material, Timestamp), CertError> {
    let now = Timestamp::now();
    let not_after = now + (LIFETIME_DAYS * 24).hours();
    // Whole days (UTC), as rcgen takes dates.
    let day = |at: Timestamp| {
        let date = at.to_zoned(TimeZone::UTC).date();
        rcgen::date_time_ymd(
            i32::from(date.year()),
            u8::try_from(date.month()).unwrap_or(1),
            u8::try_from(date.day()).unwrap_or(1),
        )
    };
    let validity = |params: &mut CertificateParams| {
        params.not_before = day(now - 24.hours());
        params.not_after = day(not_after);
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "vm-migration inventory CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(hosts.to_vec())?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, hosts[0].as_str());
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut leaf);
    let cert = leaf.signed_by(&key, &issuer)?;
    let material = Material {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    Ok((material, not_after))
}

/// The serving certificate, replaceable while serving.
#[derive(Debug)]
pub struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    pub fn new(material: &Material) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(Self {
            current: RwLock::new(certified(material)?),
        }))
    }

    pub fn set(&self, material: &Material) -> Result<(), CertError> {
        let key = certified(material)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified(material: &Material) -> Result<Arc<CertifiedKey>, CertError> {
    crate::serve::certified_key(material.cert_pem.as_bytes(), material.key_pem.as_bytes())
        .map_err(|e| CertError::Unusable(e.to_string()))
}
