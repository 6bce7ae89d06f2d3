//! A client of another Harvester cluster's Kubernetes API for what the
//! Harvester provider needs:
//!
//! - [`HarvesterClient::connect`]: a kubeconfig (its token or client
//!   certificate only: never a command to run or a file to read) or a
//!   bearer token, against the source's endpoint and CA bundle; then proof
//!   that the cluster serves `kubevirt.io/v1` and `export.kubevirt.io` and
//!   that the credentials may list VirtualMachines, each failure named;
//! - the inventory (`watch`): VirtualMachines, the claims of their volumes
//!   and NetworkAttachmentDefinitions, kept by watches, as specs (`model`);
//! - an import's calls: whether the credentials may make them (`access`),
//!   stopping a VM (`power`) and reading its volumes through a
//!   VirtualMachineExport (`export`).
#![forbid(unsafe_code)]

mod access;
mod error;
mod export;
mod model;
mod power;
mod vms;
mod watch;

use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use vmm_core::Credentials;

pub use error::HarvesterError;
pub use export::{ExportedVolume, ReadyExport, TOKEN_HEADER};

/// How long a connection to the API server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A logged-in client of a remote Harvester cluster.
#[derive(Clone)]
pub struct HarvesterClient {
    client: kube::Client,
    url: String,
    /// The namespaces to read; every namespace when empty.
    namespaces: Vec<String>,
    version: String,
    /// The source's CA bundle and whether it may skip verification: also
    /// for an export's links when the export publishes no CA of its own.
    ca_pem: Option<String>,
    insecure: bool,
}

impl HarvesterClient {
    /// Connects to the API server at `endpoint` with `credentials`, trusting
    /// `ca_pem` (or, without it, a kubeconfig's CA, else the platform's
    /// roots), or anything when `insecure`; then checks that the cluster is
    /// one the provider can work with (see the crate's documentation).
    /// `namespaces` limits what is read (all when empty).
    pub async fn connect(
        endpoint: &str,
        credentials: &Credentials,
        ca_pem: Option<&str>,
        insecure: bool,
        namespaces: Vec<String>,
    ) -> Result<Self, HarvesterError> {
        let config = config(endpoint, credentials, ca_pem, insecure).await?;
        let url = endpoint.trim_end_matches('/').to_owned();
        let client =
            kube::Client::try_from(config).map_err(|e| HarvesterError::InvalidEndpoint {
                url: url.clone(),
                detail: vmm_core::tls::chain(&e),
            })?;
        let info = client
            .apiserver_version()
            .await
            .map_err(|e| error::classify(&url, "GET /version", &e))?;
        let mut harvester = Self {
            client,
            url,
            namespaces,
            version: format!("Kubernetes {}", info.git_version),
            ca_pem: ca_pem.map(str::to_owned),
            insecure,
        };
        harvester.check_apis().await?;
        harvester.check_access().await?;
        Ok(harvester)
    }

    /// `Kubernetes v1.36.3, KubeVirt export API v1beta1`, for the source's
    /// status.
    pub fn endpoint_version(&self) -> String {
        self.version.clone()
    }

    /// Whether `kubevirt.io/v1` and an `export.kubevirt.io` version are
    /// served; the export API's version is noted.
    async fn check_apis(&mut self) -> Result<(), HarvesterError> {
        let groups = self
            .client
            .list_api_groups()
            .await
            .map_err(|e| error::classify(&self.url, "GET /apis", &e))?;
        let versions = |name: &str| -> Vec<String> {
            groups
                .groups
                .iter()
                .filter(|group| group.name == name)
                .flat_map(|group| group.versions.iter().map(|v| v.version.clone()))
                .collect()
        };
        if !versions("kubevirt.io").iter().any(|v| v == "v1") {
            return Err(HarvesterError::KubeVirtNotServed {
                url: self.url.clone(),
            });
        }
        let Some(export) = versions("export.kubevirt.io").into_iter().next() else {
            return Err(HarvesterError::ExportApiNotServed {
                url: self.url.clone(),
            });
        };
        self.version = format!("{}, KubeVirt export API {export}", self.version);
        Ok(())
    }

    /// Whether the credentials may list VirtualMachines where the source
    /// reads them: a list of one item (the API server says 403 otherwise).
    async fn check_access(&self) -> Result<(), HarvesterError> {
        for (api, scope) in self.apis(&model::virtual_machines()) {
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    return Err(HarvesterError::Forbidden {
                        url: self.url.clone(),
                        verb: "list",
                        resource: "virtualmachines.kubevirt.io",
                        scope,
                    });
                }
                Err(e) => return Err(error::classify(&self.url, "list virtualmachines", &e)),
            }
        }
        Ok(())
    }

    /// The namespace and name of an id `namespace/name`.
    fn split_id<'a>(&self, id: &'a str) -> Result<(&'a str, &'a str), HarvesterError> {
        id.split_once('/')
            .ok_or_else(|| HarvesterError::VmNotFound {
                url: self.url.clone(),
                id: id.to_owned(),
            })
    }

    /// A failed call an import makes: [`HarvesterError::ImportForbidden`]
    /// for a 403, naming what is missing.
    fn refused(
        &self,
        error: &kube::Error,
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
    ) -> HarvesterError {
        match error {
            kube::Error::Api(status) if status.code == 403 => HarvesterError::ImportForbidden {
                url: self.url.clone(),
                verb,
                resource,
                namespace: namespace.to_owned(),
            },
            other => error::classify(&self.url, &format!("{verb} {resource}"), other),
        }
    }

    /// `resource`'s API for each namespace read, or for all namespaces, and
    /// how to name it in a message.
    fn apis(&self, resource: &ApiResource) -> Vec<(Api<DynamicObject>, String)> {
        if self.namespaces.is_empty() {
            return vec![(
                Api::all_with(self.client.clone(), resource),
                "all namespaces".to_owned(),
            )];
        }
        self.namespaces
            .iter()
            .map(|ns| {
                (
                    Api::namespaced_with(self.client.clone(), ns, resource),
                    format!("namespace {ns}"),
                )
            })
            .collect()
    }
}

/// The client configuration: the source's endpoint and trust, with the
/// kubeconfig's user or the token.
async fn config(
    endpoint: &str,
    credentials: &Credentials,
    ca_pem: Option<&str>,
    insecure: bool,
) -> Result<Config, HarvesterError> {
    let invalid = |detail: String| HarvesterError::InvalidEndpoint {
        url: endpoint.to_owned(),
        detail,
    };
    let url: http::Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
    if !matches!(url.scheme_str(), Some("https" | "http")) || url.host().is_none() {
        return Err(invalid("not an http(s) URL with a host".into()));
    }
    let mut config = match credentials {
        Credentials::Kubeconfig(text) => {
            let kubeconfig = Kubeconfig::from_yaml(text.expose()).map_err(|e| {
                HarvesterError::InvalidKubeconfig {
                    detail: e.to_string(),
                }
            })?;
            refuse_outside_references(&kubeconfig)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| HarvesterError::InvalidKubeconfig {
                    detail: vmm_core::tls::chain(&e),
                })?
        }
        Credentials::Token(token) => {
            let mut config = Config::new(url.clone());
            config.auth_info.token = Some(token.expose().to_owned().into());
            config
        }
        Credentials::UsernamePassword { .. } => {
            return Err(HarvesterError::UnsupportedCredentials {
                given: "a username and password",
            });
        }
        Credentials::ApplicationCredential { .. } => {
            return Err(HarvesterError::UnsupportedCredentials {
                given: "an OpenStack application credential",
            });
        }
    };
    config.cluster_url = url;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    if let Some(pem) = ca_pem {
        config.root_cert = Some(ca_certificates(endpoint, pem)?);
    }
    config.accept_invalid_certs = insecure;
    Ok(config)
}

/// A kubeconfig from a Secret may carry only data: a command to run
/// (`exec`, `auth-provider`) or a file to read would run or read on the
/// servers' pods, as whoever wrote the Secret wished.
fn refuse_outside_references(kubeconfig: &Kubeconfig) -> Result<(), HarvesterError> {
    let refuse = |what: &str| {
        Err(HarvesterError::InvalidKubeconfig {
            detail: format!(
                "it uses {what}, which would run a command or read a file on this cluster's pods; use a token or embedded client certificate data instead"
            ),
        })
    };
    for user in kubeconfig
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
    {
        if user.exec.is_some() {
            return refuse("an exec credential plugin");
        }
        if user.auth_provider.is_some() {
            return refuse("an auth-provider");
        }
        if user.token_file.is_some()
            || user.client_certificate.is_some()
            || user.client_key.is_some()
        {
            return refuse("a file path (tokenFile, client-certificate or client-key)");
        }
    }
    for cluster in kubeconfig
        .clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref())
    {
        if cluster.certificate_authority.is_some() {
            return refuse("a file path (certificate-authority)");
        }
    }
    Ok(())
}

/// The DER certificates of a PEM CA bundle.
fn ca_certificates(url: &str, pem: &str) -> Result<Vec<Vec<u8>>, HarvesterError> {
    let invalid = |detail: String| HarvesterError::InvalidCaBundle {
        url: url.to_owned(),
        detail,
    };
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|cert| cert.map(|c| c.to_vec()).map_err(|e| invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if certificates.is_empty() {
        return Err(invalid("no certificate in the PEM text".into()));
    }
    Ok(certificates)
}

/// The API resource of a KubeVirt or NAD kind.
fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}
