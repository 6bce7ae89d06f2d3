//! The one error type of the Harvester client. Every message says what to
//! fix; none carries a token or a kubeconfig.

use vmm_core::{ProviderError, Reason};

/// What went wrong talking to another Harvester cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarvesterError {
    #[error(
        "invalid Harvester endpoint {url:?}: {detail}; use the remote cluster's Kubernetes API URL, https://HOST[:PORT]"
    )]
    InvalidEndpoint { url: String, detail: String },

    #[error(
        "invalid CA bundle for {url}: {detail}; give the PEM certificate(s) of the CA that signed the API server's certificate"
    )]
    InvalidCaBundle { url: String, detail: String },

    #[error(
        "the kubeconfig in the source's Secret cannot be used: {detail}; export one with `kubectl config view --minify --raw` for a user with a token or client certificate"
    )]
    InvalidKubeconfig { detail: String },

    #[error(
        "a Harvester source needs a kubeconfig or a token; the credentials given are {given}: put `kubeconfig` or `token` in the source's Secret"
    )]
    UnsupportedCredentials { given: &'static str },

    #[error(
        "{url} is unreachable: {detail}; check the URL (host and port), DNS, routing and firewalls, and that the API server is running"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "the TLS certificate of {url} is not trusted: {detail}; put the CA that signed it in the source's CA bundle (or, for tests only, allow insecure connections)"
    )]
    CertificateUntrusted { url: String, detail: String },

    #[error(
        "the API server at {url} rejected the credentials (401): the token has expired or was revoked, or the kubeconfig's user is unknown there; put a valid token or kubeconfig in the source's Secret"
    )]
    Unauthorized { url: String },

    #[error(
        "the cluster at {url} does not serve kubevirt.io/v1: it is not a Harvester (or KubeVirt) cluster, or KubeVirt is not installed; point the source at a Harvester cluster's API server"
    )]
    KubeVirtNotServed { url: String },

    #[error(
        "the cluster at {url} does not serve export.kubevirt.io: its KubeVirt has no VM export API (KubeVirt 0.55 or newer, Harvester 1.2 or newer, has it); upgrade the remote cluster or enable its VMExport feature gate"
    )]
    ExportApiNotServed { url: String },

    #[error(
        "the credentials may not {verb} {resource} in {scope} at {url}: bind the user or ServiceAccount to a role that may get, list and watch them (and create virtualmachineexports to import)"
    )]
    Forbidden {
        url: String,
        verb: &'static str,
        resource: &'static str,
        scope: String,
    },

    #[error(
        "the credentials may not {verb} {resource} in namespace {namespace} at {url}, which an import needs: bind the user or ServiceAccount to a role that may also patch virtualmachines, get, watch and delete virtualmachineinstances, and create, get, watch and delete virtualmachineexports and secrets (docs/harvester-source.md)"
    )]
    ImportForbidden {
        url: String,
        verb: &'static str,
        resource: &'static str,
        namespace: String,
    },

    #[error(
        "VirtualMachineExport {export} at {url} is not ready after {waited}s ({reason}: {message}); it is checked again, and the same export is used when it is"
    )]
    ExportNotReady {
        url: String,
        export: String,
        waited: u64,
        reason: String,
        message: String,
    },

    #[error(
        "VirtualMachineExport {export} at {url} has no external link, so it cannot be read from outside the remote cluster: give KubeVirt's export proxy an Ingress there (an Ingress for Service virt-exportproxy in KubeVirt's namespace, with a host and TLS), as KubeVirt's VM export documentation describes"
    )]
    ExportUnreachable { url: String, export: String },

    #[error(
        "VirtualMachineExport {export} serves volume {volume} only as {formats}: archives of a filesystem volume's files, not a disk; import VMs whose volumes are block devices or KubeVirt disk images"
    )]
    ExportFormatUnsupported {
        export: String,
        volume: String,
        formats: String,
    },

    #[error(
        "VM {id} does not exist at {url} (it was deleted or renamed): look it up again by name"
    )]
    VmNotFound { url: String, id: String },

    #[error("{call} at {url} failed: {detail}")]
    Api {
        url: String,
        call: String,
        status: u16,
        detail: String,
    },
}

impl HarvesterError {
    /// True for the errors that a retry with backoff may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::ExportNotReady { .. } => true,
            Self::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// The condition reason of each error, and whether a retry may cure it.
impl From<HarvesterError> for ProviderError {
    fn from(error: HarvesterError) -> Self {
        use HarvesterError as E;
        let reason = match &error {
            E::InvalidEndpoint { .. } => Reason::InvalidEndpoint,
            E::InvalidCaBundle { .. } => Reason::InvalidCaBundle,
            E::InvalidKubeconfig { .. } | E::UnsupportedCredentials { .. } => Reason::SecretInvalid,
            E::Unreachable { .. } => Reason::EndpointUnreachable,
            E::CertificateUntrusted { .. } => Reason::CertificateUntrusted,
            E::Unauthorized { .. } => Reason::AuthenticationFailed,
            E::KubeVirtNotServed { .. } => Reason::KubeVirtNotServed,
            E::ExportApiNotServed { .. } => Reason::ExportApiNotServed,
            E::Forbidden { .. } | E::ImportForbidden { .. } => Reason::PermissionDenied,
            E::ExportNotReady { .. } => Reason::ExportNotReady,
            E::ExportUnreachable { .. } => Reason::ExportUnreachable,
            E::ExportFormatUnsupported { .. } => Reason::ExportFormatUnsupported,
            E::VmNotFound { .. } | E::Api { .. } => Reason::EndpointError,
        };
        if error.is_transient() {
            ProviderError::transient(reason, error.to_string())
        } else {
            ProviderError::permanent(reason, error.to_string())
        }
    }
}

/// Classifies a failed call `call` to `url`: the API's answer, or no
/// answer at all (a TLS failure told apart).
pub(crate) fn classify(url: &str, call: &str, error: &kube::Error) -> HarvesterError {
    let url = url.to_owned();
    match error {
        kube::Error::Api(status) if status.code == 401 => HarvesterError::Unauthorized { url },
        kube::Error::Api(status) => HarvesterError::Api {
            url,
            call: call.to_owned(),
            status: status.code,
            detail: status.message.clone(),
        },
        other => {
            let detail = vmm_core::tls::chain(other);
            if vmm_core::tls::is_untrusted_certificate(other) {
                HarvesterError::CertificateUntrusted { url, detail }
            } else {
                HarvesterError::Unreachable { url, detail }
            }
        }
    }
}
