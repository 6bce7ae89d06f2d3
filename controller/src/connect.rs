//! Logging in to a source with the Secret it names, in its own namespace,
//! through the provider of its kind. What goes wrong is a [`ProviderError`]:
//! a condition reason and a message that names the fix (never a credential).
//! Shared by the source checks and the jobs.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use vmm_api::source::{Connection, SourceKind, SourceSpec};
use vmm_core::{Credentials, ProviderError, Reason, Session};

use crate::context::Context;

/// Why a job cannot go on: a condition reason and a message.
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

impl From<&ProviderError> for Refused {
    fn from(error: &ProviderError) -> Self {
        Self::new(error.reason().as_str(), error.message())
    }
}

/// Logs in to a source of `kind` in `namespace`.
pub async fn session(
    ctx: &Context,
    namespace: &str,
    kind: SourceKind,
    spec: &SourceSpec,
) -> Result<Arc<dyn Session>, ProviderError> {
    let provider = (ctx.providers)(kind).ok_or_else(|| {
        let supported: Vec<&str> = SourceKind::ALL
            .into_iter()
            .filter(|other| (ctx.providers)(*other).is_some())
            .map(SourceKind::as_str)
            .collect();
        ProviderError::permanent(
            Reason::KindNotSupported,
            format!(
                "this version of vm-migration cannot connect to {kind} sources yet; it connects to {}",
                supported.join(", ")
            ),
        )
    })?;
    let credentials = credentials(ctx, namespace, kind, &spec.connection).await?;
    provider.connect(spec, &credentials).await
}

/// The credentials in the source's Secret, from the source's own namespace
/// (the API has no field to name another).
async fn credentials(
    ctx: &Context,
    namespace: &str,
    kind: SourceKind,
    connection: &Connection,
) -> Result<Credentials, ProviderError> {
    let data = secret_data(ctx, namespace, connection).await?;
    Credentials::from_secret(kind, &connection.credentials.name, &data)
        .map_err(|error| ProviderError::permanent(Reason::SecretInvalid, error.to_string()))
}

/// The data of the source's Secret (a transfer worker gets a copy).
pub async fn secret_data(
    ctx: &Context,
    namespace: &str,
    connection: &Connection,
) -> Result<BTreeMap<String, ByteString>, ProviderError> {
    let name = &connection.credentials.name;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| match error {
            // Transient: it heals as soon as someone binds the role.
            kube::Error::Api(status) if status.code == 403 => ProviderError::transient(
                Reason::SecretForbidden,
                format!(
                    "the controller may not read Secrets in namespace {namespace} ({}): bind the ClusterRole {role} there with a RoleBinding for the controller's and the inventory apiserver's ServiceAccounts, or add {namespace} to the chart's value credentials.namespaces (docs/install.md)",
                    status.message,
                    role = ctx.credentials_role,
                ),
            ),
            error => ProviderError::transient(
                Reason::SecretUnreadable,
                format!("cannot read Secret {namespace}/{name}: {error}"),
            ),
        })?
        .ok_or_else(|| {
            ProviderError::permanent(
                Reason::SecretNotFound,
                format!(
                    "Secret {namespace}/{name} does not exist: create it in the source's namespace with the credentials of the source"
                ),
            )
        })?;
    Ok(secret.data.unwrap_or_default())
}
