//! The one error every provider call returns. Each provider maps its own
//! errors onto it (its `From` impl is where that mapping lives), so the
//! binaries decide what to do by [`Reason`] and [`ProviderError::is_transient`]
//! alone, never by a vendor's error type.

/// What a provider call failed with: the condition reason a user sees, a
/// message that names the fix (never a credential, never a URL's ticket), and
/// whether trying again later may work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    reason: Reason,
    message: String,
    transient: bool,
}

impl ProviderError {
    /// An error a person must fix (configuration, the VM's state, ...).
    pub fn permanent(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            transient: false,
        }
    }

    /// An error a retry with backoff may cure (the source is unreachable or
    /// busy, the session expired).
    pub fn transient(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::permanent(reason, message)
        }
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// Why a source, or a step of an import, cannot go on. [`Reason::as_str`] is
/// the `reason` of the `Ready` condition of a source or a failed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The endpoint URL is malformed or of the wrong form for the kind.
    InvalidEndpoint,
    /// `spec.caBundle` holds no usable certificate.
    InvalidCaBundle,
    /// The source's Secret does not exist in its namespace.
    SecretNotFound,
    /// The source's Secret could not be read (the Kubernetes API failed).
    SecretUnreadable,
    /// The controller may not read Secrets in the source's namespace: the
    /// chart's credentials ClusterRole is not bound there.
    SecretForbidden,
    /// The Secret's keys do not fit the kind of source.
    SecretInvalid,
    /// No connection: DNS, routing, firewall, or the endpoint is down.
    EndpointUnreachable,
    /// The endpoint's TLS certificate is not signed by a trusted CA.
    CertificateUntrusted,
    /// The endpoint refused the credentials.
    AuthenticationFailed,
    /// An OpenStack application credential was refused: expired, deleted
    /// (revoked), or its secret is wrong.
    ApplicationCredentialRefused,
    /// The project to scope to does not exist, or the user has no role on it.
    ProjectNotFound,
    /// The service catalog has no endpoints in the region asked for.
    RegionNotFound,
    /// A service the provider needs is missing from the catalog (in the
    /// region and interface asked for).
    ServiceNotInCatalog,
    /// The remote cluster does not serve KubeVirt's `kubevirt.io/v1`.
    KubeVirtNotServed,
    /// The remote cluster's KubeVirt has no `export.kubevirt.io` API.
    ExportApiNotServed,
    /// The credentials are valid but may not do what the provider needs.
    PermissionDenied,
    /// No provider serves this kind of source yet.
    KindNotSupported,
    /// The guest cannot be asked to shut down (no guest agent running).
    GuestShutdownUnavailable,
    /// The guest did not power off within the time it was given.
    PowerOffTimedOut,
    /// The source's export of a VM is not ready to be read yet.
    ExportNotReady,
    /// The source's export of a VM has no link this cluster can reach.
    ExportUnreachable,
    /// The source serves a disk only in a format that is not a disk image.
    ExportFormatUnsupported,
    /// Anything else the endpoint answered or failed with.
    EndpointError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEndpoint => "InvalidEndpoint",
            Self::InvalidCaBundle => "InvalidCaBundle",
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretUnreadable => "SecretUnreadable",
            Self::SecretForbidden => "SecretForbidden",
            Self::SecretInvalid => "SecretInvalid",
            Self::EndpointUnreachable => "EndpointUnreachable",
            Self::CertificateUntrusted => "CertificateUntrusted",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::ApplicationCredentialRefused => "ApplicationCredentialRefused",
            Self::ProjectNotFound => "ProjectNotFound",
            Self::RegionNotFound => "RegionNotFound",
            Self::ServiceNotInCatalog => "ServiceNotInCatalog",
            Self::KubeVirtNotServed => "KubeVirtNotServed",
            Self::ExportApiNotServed => "ExportApiNotServed",
            Self::PermissionDenied => "PermissionDenied",
            Self::KindNotSupported => "KindNotSupported",
            Self::GuestShutdownUnavailable => "GuestShutdownUnavailable",
            Self::PowerOffTimedOut => "PowerOffTimedOut",
            Self::ExportNotReady => "ExportNotReady",
            Self::ExportUnreachable => "ExportUnreachable",
            Self::ExportFormatUnsupported => "ExportFormatUnsupported",
            Self::EndpointError => "EndpointError",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_what_displays() {
        let e = ProviderError::transient(Reason::EndpointUnreachable, "vc is down: check it");
        assert_eq!(e.to_string(), "vc is down: check it");
        assert_eq!(e.reason().as_str(), "EndpointUnreachable");
        assert!(e.is_transient());
        assert!(!ProviderError::permanent(Reason::SecretInvalid, "x").is_transient());
    }
}
