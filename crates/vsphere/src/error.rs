//! The one error type of the vSphere provider. Every message says what to fix;
//! none carries a password (details from the wire are scrubbed of it).

use vmm_core::{ProviderError, Reason};

/// What went wrong talking to a vCenter.
#[derive(Debug, thiserror::Error)]
pub enum VsphereError {
    #[error("invalid vSphere endpoint {url:?}: {detail}; use https://HOST[:PORT]/sdk")]
    InvalidEndpoint { url: String, detail: String },

    #[error(
        "invalid CA bundle for {url}: {detail}; give the PEM certificate(s) of the CA that signed vCenter's certificate"
    )]
    InvalidCaBundle { url: String, detail: String },

    #[error(
        "vSphere needs a username and password; the credentials given are {given}: put username and password keys in the source's Secret"
    )]
    UnsupportedCredentials { given: &'static str },

    #[error(
        "vSphere endpoint {url} is unreachable: {detail}; check the URL (host and port), DNS, routing and firewalls, and that vCenter is running"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "the TLS certificate of {url} is not trusted: {detail}; put the CA that signed vCenter's certificate in the source's CA bundle (or, for tests only, allow insecure connections)"
    )]
    CertificateUntrusted { url: String, detail: String },

    #[error(
        "vCenter {url} rejected the login of user {username:?}: check the username and password in the source's Secret (and that the account is not locked)"
    )]
    AuthenticationFailed { url: String, username: String },

    #[error("the vCenter session at {url} ended ({detail}): the provider must log in again")]
    SessionLost { url: String, detail: String },

    #[error("vSphere call {call} to {url} failed: {detail}")]
    Fault {
        url: String,
        call: &'static str,
        detail: String,
    },

    #[error(
        "VM {vm} does not exist on {url} (deleted, or re-registered under a new id): look the VM up again by name"
    )]
    VmNotFound { url: String, vm: String },

    #[error(
        "VM {vm} on {url} cannot shut down its guest: VMware Tools is not running in it; start VMware Tools in the guest, shut the guest down from inside, or allow a forced power-off"
    )]
    ToolsUnavailable { url: String, vm: String },

    #[error("{call} on VM {vm} at {url} needs the VM {required}, but it is {actual}: {fix}")]
    InvalidPowerState {
        url: String,
        vm: String,
        call: &'static str,
        /// e.g. `powered off`.
        required: &'static str,
        /// e.g. `poweredOn`, as vSphere reports it.
        actual: String,
        fix: &'static str,
    },

    #[error(
        "VM {vm} on {url} was still {state} after waiting {waited:?} for it to power off: check why the guest does not shut down, or allow a forced power-off"
    )]
    PowerOffTimeout {
        url: String,
        vm: String,
        state: String,
        waited: std::time::Duration,
    },

    #[error("export lease {lease} of VM {vm} on {url} failed: {detail}; start a new export")]
    LeaseFailed {
        url: String,
        lease: String,
        vm: String,
        detail: String,
    },

    #[error(
        "export lease {lease} on {url} is gone: vCenter no longer knows it (it ended, or vCenter restarted); start a new export"
    )]
    LeaseNotFound { url: String, lease: String },

    #[error(
        "export lease {lease} of VM {vm} on {url} was not ready after {waited:?} (still {state}); the lease was aborted: check the VM's tasks in vCenter, then retry"
    )]
    LeaseNotReady {
        url: String,
        lease: String,
        vm: String,
        state: String,
        waited: std::time::Duration,
    },

    #[error("download of {url} failed: {detail}")]
    Download {
        /// The URL without its ticket (see `download::redact_url`).
        url: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        detail: String,
    },

    #[error(
        "{url} ignored the Range request for offset {offset} and sent the whole file: resume is not possible here, download it again from offset 0"
    )]
    RangeIgnored { url: String, offset: u64 },
}

impl VsphereError {
    /// True for the errors that a retry with backoff may cure (as opposed to
    /// configuration that a person must fix).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::SessionLost { .. } | Self::Fault { .. } => true,
            // No status: the connection failed or broke; 5xx and 429: the server is busy.
            Self::Download { status, .. } => {
                status.is_none_or(|s| s >= 500 || s == 408 || s == 429)
            }
            _ => false,
        }
    }
}

/// The condition reason of each error, and whether a retry may cure it.
impl From<VsphereError> for ProviderError {
    fn from(error: VsphereError) -> Self {
        let reason = match &error {
            VsphereError::InvalidEndpoint { .. } => Reason::InvalidEndpoint,
            VsphereError::InvalidCaBundle { .. } => Reason::InvalidCaBundle,
            VsphereError::UnsupportedCredentials { .. } => Reason::SecretInvalid,
            VsphereError::Unreachable { .. } => Reason::EndpointUnreachable,
            VsphereError::CertificateUntrusted { .. } => Reason::CertificateUntrusted,
            VsphereError::AuthenticationFailed { .. } => Reason::AuthenticationFailed,
            VsphereError::ToolsUnavailable { .. } => Reason::GuestShutdownUnavailable,
            VsphereError::PowerOffTimeout { .. } => Reason::PowerOffTimedOut,
            _ => Reason::EndpointError,
        };
        if error.is_transient() {
            ProviderError::transient(reason, error.to_string())
        } else {
            ProviderError::permanent(reason, error.to_string())
        }
    }
}

/// Classifies an error of a vim_rs call. `secret` (the password) is removed
/// from any text that reaches the message.
pub(crate) fn classify(
    url: &str,
    call: &'static str,
    err: &vim_rs::core::client::Error,
    secret: Option<&str>,
) -> VsphereError {
    use vim_rs::core::client::Error as E;
    let url = url.to_owned();
    match err {
        E::ReqwestError(e) => classify_transport(url, call, e, secret),
        E::MethodFault(fault) => {
            let kind = fault
                .type_
                .map(|t| t.as_str().to_owned())
                .unwrap_or_else(|| "MethodFault".to_owned());
            let message = fault.fault_message.as_ref().map(|m| {
                m.iter()
                    .filter_map(|m| m.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            let detail = match message {
                Some(m) if !m.is_empty() => format!("{kind}: {m}"),
                _ => kind.clone(),
            };
            let detail = scrub(detail, secret);
            if kind == "NotAuthenticated" {
                VsphereError::SessionLost { url, detail }
            } else {
                VsphereError::Fault { url, call, detail }
            }
        }
        E::MissingOrInvalidSessionKey => VsphereError::SessionLost {
            url,
            detail: "missing or invalid session key".into(),
        },
        other => VsphereError::Fault {
            url,
            call,
            detail: scrub(other.to_string(), secret),
        },
    }
}

fn classify_transport(
    url: String,
    call: &'static str,
    err: &reqwest::Error,
    secret: Option<&str>,
) -> VsphereError {
    let detail = scrub(vmm_core::tls::chain(err), secret);
    if err.is_connect() && vmm_core::tls::is_untrusted_certificate(err) {
        return VsphereError::CertificateUntrusted { url, detail };
    }
    if err.is_status() {
        if err.status().is_some_and(|s| s.as_u16() == 401) {
            return VsphereError::SessionLost { url, detail };
        }
        return VsphereError::Fault { url, call, detail };
    }
    if err.is_decode() || err.is_body() || err.is_builder() || err.is_redirect() {
        return VsphereError::Fault { url, call, detail };
    }
    // Connect failures, timeouts and connections lost mid-request.
    VsphereError::Unreachable { url, detail }
}

pub(crate) fn scrub(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && text.contains(s) => text.replace(s, "<redacted>"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_secret() {
        assert_eq!(
            scrub("login as u with hunter2 failed".into(), Some("hunter2")),
            "login as u with <redacted> failed"
        );
        assert_eq!(scrub("x".into(), Some("")), "x");
        assert_eq!(scrub("x".into(), None), "x");
    }

    #[test]
    fn messages_name_the_fix() {
        let e = VsphereError::AuthenticationFailed {
            url: "https://vc/sdk".into(),
            username: "admin".into(),
        };
        assert!(e.to_string().contains("check the username and password"));
        assert!(!e.is_transient());
    }
}
