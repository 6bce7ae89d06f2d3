//! Logging in to a source with the Secret it names, in its own namespace;
//! what goes wrong comes back as a condition reason and a message that names
//! the fix (never a credential). Shared by the source checks and the jobs.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use vmm_api::source::{Connection, SourceKind};
use vmm_providers::Credentials;
use vmm_providers::vsphere::{VsphereClient, VsphereError};

/// Why a source cannot be used: a condition reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

impl Refused {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Logs in to the vCenter of a source in `namespace`.
pub async fn vsphere(
    client: &kube::Client,
    namespace: &str,
    connection: &Connection,
) -> Result<VsphereClient, Refused> {
    let credentials = credentials(client, namespace, SourceKind::Vsphere, connection).await?;
    VsphereClient::connect(
        &connection.endpoint,
        &credentials,
        connection.ca_bundle.as_deref(),
        connection.insecure_skip_verify.unwrap_or(false),
    )
    .await
    .map_err(|error| vsphere_refused(&error))
}

/// A vSphere error as the reason a source or job cannot go on.
pub fn vsphere_refused(error: &VsphereError) -> Refused {
    let reason = match error {
        VsphereError::InvalidEndpoint { .. } => "InvalidEndpoint",
        VsphereError::InvalidCaBundle { .. } => "InvalidCaBundle",
        VsphereError::UnsupportedCredentials { .. } => "SecretInvalid",
        VsphereError::Unreachable { .. } => "EndpointUnreachable",
        VsphereError::CertificateUntrusted { .. } => "CertificateUntrusted",
        VsphereError::AuthenticationFailed { .. } => "AuthenticationFailed",
        _ => "EndpointError",
    };
    Refused::new(reason, error.to_string())
}

/// The credentials in the source's Secret, from the source's own namespace
/// (the API has no field to name another).
pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    kind: SourceKind,
    connection: &Connection,
) -> Result<Credentials, Refused> {
    let name = &connection.credentials.name;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| {
            Refused::new(
                "SecretUnreadable",
                format!("cannot read Secret {namespace}/{name}: {error}"),
            )
        })?
        .ok_or_else(|| {
            Refused::new(
                "SecretNotFound",
                format!(
                    "Secret {namespace}/{name} does not exist: create it in the source's namespace with the credentials of the source"
                ),
            )
        })?;
    Credentials::from_secret(kind, name, &secret.data.unwrap_or_default())
        .map_err(|error| Refused::new("SecretInvalid", error.to_string()))
}
