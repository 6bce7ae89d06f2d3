//! The one error type of the OpenStack client. Every message says what to
//! fix; none carries a password, a secret or a token.

use vmm_core::{ProviderError, Reason};

/// What went wrong talking to an OpenStack cloud.
#[derive(Debug, thiserror::Error)]
pub enum OpenstackError {
    #[error(
        "invalid OpenStack endpoint {url:?}: {detail}; use Keystone's v3 URL, https://HOST[:PORT]/v3"
    )]
    InvalidEndpoint { url: String, detail: String },

    #[error(
        "invalid CA bundle for {url}: {detail}; give the PEM certificate(s) of the CA that signed Keystone's certificate"
    )]
    InvalidCaBundle { url: String, detail: String },

    #[error("{0}")]
    InvalidSettings(String),

    #[error(
        "OpenStack needs a username and password or an application credential; the credentials given are {given}: put those keys in the source's Secret"
    )]
    UnsupportedCredentials { given: &'static str },

    #[error(
        "{url} is unreachable: {detail}; check the URL (host and port), DNS, routing and firewalls, and that the service is running"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "the TLS certificate of {url} is not trusted: {detail}; put the CA that signed it in the source's CA bundle (or, for tests only, allow insecure connections)"
    )]
    CertificateUntrusted { url: String, detail: String },

    #[error(
        "Keystone at {url} rejected the password of user {username:?} in domain {domain:?}: check username, password and userDomain in the source's Secret (and that the user is enabled)"
    )]
    PasswordRefused {
        url: String,
        username: String,
        domain: String,
    },

    #[error(
        "Keystone at {url} refused application credential {id}: it has expired, was deleted (revoked), or its secret is wrong; create a new application credential and put its id and secret in the source's Secret"
    )]
    ApplicationCredentialRefused { url: String, id: String },

    #[error(
        "user {username:?} cannot work in project {project:?} of domain {domain:?} at {url}: the project does not exist there or the user has no role on it; fix spec.project and spec.domain, or give the user a role on the project"
    )]
    ProjectNotFound {
        url: String,
        username: String,
        project: String,
        domain: String,
    },

    #[error(
        "the service catalog of {url} has no region {region:?}; it has {available}: fix spec.region"
    )]
    RegionNotFound {
        url: String,
        region: String,
        available: String,
    },

    #[error(
        "the service catalog of {url} has no {service} service with a {interface} endpoint in region {region}: {fix}"
    )]
    ServiceNotInCatalog {
        url: String,
        /// e.g. `compute (Nova)`.
        service: &'static str,
        interface: &'static str,
        region: String,
        fix: &'static str,
    },

    #[error("the token for {url} expired or was revoked: the client must log in again")]
    TokenRejected { url: String },

    #[error("{call} at {url} answered {status}: {detail}")]
    Api {
        url: String,
        call: String,
        status: u16,
        detail: String,
    },

    #[error(
        "the image of {disk} vanished or failed at {url} while it was being made ({detail}); the export makes it again"
    )]
    ImageLost {
        url: String,
        disk: String,
        detail: String,
    },

    #[error("{call} at {url} answered what the client cannot read: {detail}")]
    Malformed {
        url: String,
        call: String,
        detail: String,
    },

    #[error("server {server} does not exist at {url} (it was deleted): look it up again by name")]
    ServerNotFound { url: String, server: String },

    #[error(
        "server {server} at {url} was still {status} after waiting {waited:?} for it to stop: check why the guest does not shut down"
    )]
    StopTimeout {
        url: String,
        server: String,
        status: String,
        waited: std::time::Duration,
    },
}

impl OpenstackError {
    /// True for the errors that a retry with backoff may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::TokenRejected { .. } | Self::ImageLost { .. } => true,
            Self::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// The condition reason of each error, and whether a retry may cure it.
impl From<OpenstackError> for ProviderError {
    fn from(error: OpenstackError) -> Self {
        use OpenstackError as E;
        let reason = match &error {
            E::InvalidEndpoint { .. } | E::InvalidSettings(_) => Reason::InvalidEndpoint,
            E::InvalidCaBundle { .. } => Reason::InvalidCaBundle,
            E::UnsupportedCredentials { .. } => Reason::SecretInvalid,
            E::Unreachable { .. } => Reason::EndpointUnreachable,
            E::CertificateUntrusted { .. } => Reason::CertificateUntrusted,
            E::PasswordRefused { .. } => Reason::AuthenticationFailed,
            E::ApplicationCredentialRefused { .. } => Reason::ApplicationCredentialRefused,
            E::ProjectNotFound { .. } => Reason::ProjectNotFound,
            E::RegionNotFound { .. } => Reason::RegionNotFound,
            E::ServiceNotInCatalog { .. } => Reason::ServiceNotInCatalog,
            E::StopTimeout { .. } => Reason::PowerOffTimedOut,
            _ => Reason::EndpointError,
        };
        if error.is_transient() {
            ProviderError::transient(reason, error.to_string())
        } else {
            ProviderError::permanent(reason, error.to_string())
        }
    }
}

/// Classifies a failed request to `url`: no answer at all, or a TLS failure.
pub(crate) fn transport(url: &str, error: &reqwest::Error) -> OpenstackError {
    let url = url.to_owned();
    let detail = vmm_core::tls::chain(error);
    if vmm_core::tls::is_untrusted_certificate(error) {
        return OpenstackError::CertificateUntrusted { url, detail };
    }
    OpenstackError::Unreachable { url, detail }
}

/// The message of an OpenStack error body, whatever the service's shape:
/// Keystone `{"error": {"message"}}`, Nova `{"itemNotFound": {"message"}}`,
/// Neutron `{"NeutronError": {"message"}}`, Cinder like Nova.
pub(crate) fn body_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|value| {
        let object = value.as_object()?;
        object
            .values()
            .find_map(|inner| inner.get("message")?.as_str())
            .or_else(|| object.get("message")?.as_str())
    });
    match message {
        Some(message) => message.to_owned(),
        None => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_each_service() {
        let cases = [
            (
                r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#,
                "The request you have made requires authentication.",
            ),
            (
                r#"{"itemNotFound": {"code": 404, "message": "Instance x could not be found."}}"#,
                "Instance x could not be found.",
            ),
            (
                r#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network n could not be found.", "detail": ""}}"#,
                "Network n could not be found.",
            ),
            ("<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        ];
        for (body, want) in cases {
            assert_eq!(body_message(body), want);
        }
    }

    #[test]
    fn reasons() {
        let refused = OpenstackError::ApplicationCredentialRefused {
            url: "u".into(),
            id: "i".into(),
        };
        let error = ProviderError::from(refused);
        assert_eq!(error.reason(), Reason::ApplicationCredentialRefused);
        assert!(
            error
                .message()
                .contains("create a new application credential")
        );
        let busy = OpenstackError::Api {
            url: "u".into(),
            call: "c".into(),
            status: 503,
            detail: "d".into(),
        };
        assert!(ProviderError::from(busy).is_transient());
    }
}
