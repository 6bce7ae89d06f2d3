//! A serving certificate the apiserver manages itself, without cert-manager:
//! a CA and a certificate for the Service's DNS names kept in a Secret,
//! created when missing or near expiry, and the APIService's `caBundle` kept
//! equal to that CA. The Secret is watched: if an operator deletes or
//! replaces it, the new certificate is served at once and the APIService
//! follows, so rotation needs no reinstall. Replicas share the Secret: the
//! first to create it wins (the create is refused for the others, which read
//! the winner's). A certificate is made again once two thirds of its
//! lifetime have passed (cert-manager's default), at that moment, not at the
//! next periodic check, signed by the same CA (kept in the Secret, living ten
//! certificate lifetimes), so the caBundle does not change and no request
//! fails while the replicas switch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// When the certificate in the Secret stops being used (RFC 3339), written
/// by us: a Secret without it, or close to it, is made again.
const NOT_AFTER_ANNOTATION: &str = "inventory.harvesterhci.io/not-after";
/// When the CA in the Secret ends (RFC 3339).
const CA_NOT_AFTER_ANNOTATION: &str = "inventory.harvesterhci.io/ca-not-after";
/// The DNS names it was made for, comma-separated.
const HOSTS_ANNOTATION: &str = "inventory.harvesterhci.io/hosts";
/// The soonest a failed renewal is tried again.
const RETRY_FLOOR: Duration = Duration::from_secs(5);
/// A CA outlives the certificates it signs this many times over.
const CA_LIFETIMES: u32 = 10;
/// How long the certificates it makes are valid, unless told otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far before its start a certificate is valid: clocks of the cluster's
/// nodes may disagree that much.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the Secret's certificate is unusable: {0}")]
    Unusable(String),
    /// The Secret is made owned by the APIService, so that it goes with it;
    /// made before, it could outlive an uninstall.
    #[error(
        "the APIService {0} does not exist (yet): the serving Secret is made once it does, owned by it"
    )]
    NotRegistered(String),
}

/// The PEM of a CA and of a certificate it signed, with its key, and when
/// that certificate ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

/// Where the material lives, and what it must name.
pub struct SelfManaged {
    secrets: Api<Secret>,
    apiservices: Api<APIService>,
    secret: String,
    apiservice: String,
    hosts: Vec<String>,
    lifetime: Duration,
}

impl SelfManaged {
    /// The Secret `namespace/secret`, for the Service `service` in the same
    /// namespace, registered as `apiservice`; certificates are made to last
    /// [`DEFAULT_LIFETIME`] unless [`Self::lifetime`] says otherwise.
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
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// Makes certificates that last `lifetime`.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// When a certificate that ends at `not_after` is made again: once two
    /// thirds of its lifetime have passed.
    fn renew_at(&self, not_after: Timestamp) -> Timestamp {
        not_after - self.lifetime / 3
    }

    /// The material in the Secret, made (and the Secret created or
    /// replaced) when it is missing, for other names, or near expiry.
    pub async fn ensure(&self) -> Result<Material, CertError> {
        let existing = self.secrets.get_opt(&self.secret).await?;
        if let Some(material) = existing.as_ref().and_then(|s| self.usable(s)) {
            return Ok(material);
        }
        // Renewal keeps the CA (so the APIService's caBundle stays and no
        // request fails while replicas switch); a new CA only when there is
        // none, or it would end before the new certificate.
        let owner = match &existing {
            Some(old) => old.metadata.owner_references.clone(),
            None => {
                // Never recreate the Secret of an APIService that is gone
                // (an uninstall deletes the APIService, then the pods).
                let apiservice = self.apiservices.get_opt(&self.apiservice).await?;
                let owner = apiservice.and_then(|a| a.owner_ref(&()));
                Some(vec![owner.ok_or_else(|| {
                    CertError::NotRegistered(self.apiservice.clone())
                })?])
            }
        };
        let kept_ca = existing.as_ref().and_then(|s| self.reusable_ca(s));
        let renewal = kept_ca.is_some();
        let ca = match kept_ca {
            Some(ca) => ca,
            None => new_ca(self.lifetime * CA_LIFETIMES)?,
        };
        let material = issue(&ca, &self.hosts, self.lifetime)?;
        let text = |pem: &str| ByteString(pem.as_bytes().to_vec());
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                annotations: Some(BTreeMap::from([
                    (
                        NOT_AFTER_ANNOTATION.to_owned(),
                        material.not_after.to_string(),
                    ),
                    (CA_NOT_AFTER_ANNOTATION.to_owned(), ca.not_after.to_string()),
                    (HOSTS_ANNOTATION.to_owned(), self.hosts.join(",")),
                ])),
                owner_references: owner,
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(BTreeMap::from([
                ("ca.crt".to_owned(), text(&ca.cert_pem)),
                ("ca.key".to_owned(), text(&ca.key_pem)),
                ("tls.crt".to_owned(), text(&material.cert_pem)),
                ("tls.key".to_owned(), text(&material.key_pem)),
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
                if renewal {
                    tracing::info!(secret = %self.secret, not_after = %material.not_after, "renewed the serving certificate (same CA)");
                } else {
                    tracing::info!(secret = %self.secret, not_after = %material.not_after, "made a new CA and serving certificate");
                }
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

    /// The Secret's CA, if it can sign a certificate that ends before it does.
    fn reusable_ca(&self, secret: &Secret) -> Option<CaMaterial> {
        let annotations = secret.metadata.annotations.as_ref()?;
        let not_after: Timestamp = annotations.get(CA_NOT_AFTER_ANNOTATION)?.parse().ok()?;
        if not_after <= Timestamp::now() + self.lifetime {
            return None;
        }
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        Some(CaMaterial {
            cert_pem: text("ca.crt")?,
            key_pem: text("ca.key")?,
            not_after,
        })
    }

    /// The Secret's material if it is ours, for our names, and not near expiry.
    fn usable(&self, secret: &Secret) -> Option<Material> {
        let annotations = secret.metadata.annotations.as_ref()?;
        let not_after: Timestamp = annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?;
        let hosts = annotations.get(HOSTS_ANNOTATION)?;
        if *hosts != self.hosts.join(",") || self.renew_at(not_after) <= Timestamp::now() {
            return None;
        }
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        Some(Material {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
            not_after,
        })
    }

    /// Sets the APIService's `caBundle` to `ca_pem` unless it is already.
    pub async fn publish(&self, ca_pem: &str) -> Result<(), CertError> {
        let current = self.apiservices.get_opt(&self.apiservice).await?;
        let Some(current) = current else {
            tracing::warn!(apiservice = %self.apiservice, "the APIService does not exist (yet); its caBundle is set once it does");
            return Ok(());
        };
        self.adopt_secret(&current).await?;
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

    /// Makes the APIService the Secret's owner, so the Secret goes when the
    /// APIService does (`helm uninstall` of the chart that made it); a Secret
    /// made by a version that set no owner is adopted here.
    async fn adopt_secret(&self, apiservice: &APIService) -> Result<(), CertError> {
        let Some(owner) = apiservice.owner_ref(&()) else {
            return Ok(());
        };
        let Some(secret) = self.secrets.get_opt(&self.secret).await? else {
            return Ok(());
        };
        if secret.owner_references().iter().any(|o| o.uid == owner.uid) {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        self.secrets
            .patch(&self.secret, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(secret = %self.secret, apiservice = %self.apiservice, "the Secret is now the APIService's");
        Ok(())
    }

    /// Keeps the certificate served by `resolver` and the APIService current
    /// with the Secret, until the process ends: on every change of the
    /// Secret, when the served certificate is due for renewal, and at least
    /// every `recheck` (for the APIService).
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
            let until_renewal =
                Duration::try_from(self.renew_at(served.not_after) - Timestamp::now())
                    .unwrap_or_default()
                    .max(RETRY_FLOOR);
            tokio::select! {
                _ = events.next() => {}
                () = tokio::time::sleep(recheck.min(until_renewal)) => {}
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

/// A CA: what signs the serving certificates, and what the APIService trusts.
struct CaMaterial {
    cert_pem: String,
    key_pem: String,
    not_after: Timestamp,
}

/// `[now - CLOCK_SKEW, now + lifetime]` as rcgen takes it, and its end.
fn validity(lifetime: Duration) -> Result<(OffsetDateTime, OffsetDateTime, Timestamp), CertError> {
    let now = Timestamp::now();
    let not_after = now + lifetime;
    let moment = |at: Timestamp| {
        OffsetDateTime::from_unix_timestamp(at.as_second())
            .map_err(|e| CertError::Unusable(format!("a validity date out of range: {e}")))
    };
    Ok((moment(now - CLOCK_SKEW)?, moment(not_after)?, not_after))
}

/// A new self-signed CA valid for `lifetime`.
fn new_ca(lifetime: Duration) -> Result<CaMaterial, CertError> {
    let (not_before, end, not_after) = validity(lifetime)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "vm-migration inventory CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = end;
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A certificate for `hosts` signed by `ca`, valid from now for `lifetime`.
fn issue(ca: &CaMaterial, hosts: &[String], lifetime: Duration) -> Result<Material, CertError> {
    let (not_before, end, not_after) = validity(lifetime)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
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
    leaf.not_before = not_before;
    leaf.not_after = end;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Material {
        ca_pem: ca.cert_pem.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// The serving certificate, replaceable while serving.
#[derive(Debug)]
pub struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    /// Serves the certificate chain `cert_pem` with its key `key_pem`.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(Self {
            current: RwLock::new(certified(cert_pem, key_pem)?),
        }))
    }

    /// Serves `material`'s certificate from the next handshake on.
    pub fn set(&self, material: &Material) -> Result<(), CertError> {
        let key = certified(&material.cert_pem, &material.key_pem)?;
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

fn certified(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, CertError> {
    vmm_runtime::tls::certified_key(cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| CertError::Unusable(e.to_string()))
}
