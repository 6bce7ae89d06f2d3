//! Keystone v3 login: the request for each kind of credential and scope,
//! and the token it answers (the catalog, the project, when it expires).

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use vmm_api::source::OpenstackSettings;
use vmm_core::{Credentials, SecretString};

use crate::catalog::Service;

/// The domain a user or project is in when the source names none.
pub const DEFAULT_DOMAIN: &str = "Default";

/// How to log in: the credentials and, for a password, the project to scope
/// to. An application credential carries its own scope.
#[derive(Clone, Debug)]
pub(crate) enum Login {
    Password {
        username: String,
        password: SecretString,
        user_domain: String,
        project: String,
        project_domain: String,
    },
    ApplicationCredential {
        id: String,
        secret: SecretString,
    },
}

impl Login {
    /// The login for `credentials` with a source's `settings`; `Err` says
    /// what to set.
    pub fn new(credentials: &Credentials, settings: &OpenstackSettings) -> Result<Self, String> {
        let domain = settings.domain.as_deref().unwrap_or(DEFAULT_DOMAIN);
        match credentials {
            Credentials::ApplicationCredential { id, secret } => Ok(Self::ApplicationCredential {
                id: id.clone(),
                secret: secret.clone(),
            }),
            Credentials::UsernamePassword {
                username,
                password,
                user_domain,
            } => {
                let project = settings.project.clone().ok_or(
                    "a password login needs a project to scope to: set spec.project (or use an application credential, which carries its own)",
                )?;
                Ok(Self::Password {
                    username: username.clone(),
                    password: password.clone(),
                    user_domain: user_domain.clone().unwrap_or_else(|| domain.to_owned()),
                    project,
                    project_domain: domain.to_owned(),
                })
            }
            Credentials::Kubeconfig(_) => Err("a kubeconfig".into()),
            Credentials::Token(_) => Err("a bearer token".into()),
        }
    }

    /// The body of `POST /v3/auth/tokens`; `scoped: false` leaves the
    /// project out (to tell a wrong password from a wrong project).
    pub fn body(&self, scoped: bool) -> Value {
        match self {
            Self::ApplicationCredential { id, secret } => json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": id, "secret": secret.expose()}
            }}}),
            Self::Password {
                username,
                password,
                user_domain,
                project,
                project_domain,
            } => {
                let mut body = json!({"auth": {"identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": username,
                        "domain": {"name": user_domain},
                        "password": password.expose()
                    }}
                }}});
                if scoped {
                    body["auth"]["scope"] =
                        json!({"project": {"name": project, "domain": {"name": project_domain}}});
                }
                body
            }
        }
    }
}

/// What a token answer carries that the client uses.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenBody {
    pub token: TokenInfo,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenInfo {
    pub expires_at: Timestamp,
    #[serde(default)]
    pub project: Option<Named>,
    #[serde(default)]
    pub catalog: Vec<Service>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Named {
    pub name: String,
}

/// A token and when to stop using it.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: SecretString,
    pub expires_at: Timestamp,
}

impl Token {
    /// Whether the token should be renewed now: it expires within `margin`.
    pub fn expires_within(&self, now: Timestamp, margin: std::time::Duration) -> bool {
        let margin = k8s_openapi::jiff::SignedDuration::try_from(margin).unwrap_or_default();
        now.saturating_add(margin)
            .is_ok_and(|soon| soon >= self.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vmm_core::Credentials;

    fn settings(project: Option<&str>, domain: Option<&str>) -> OpenstackSettings {
        OpenstackSettings {
            project: project.map(Into::into),
            domain: domain.map(Into::into),
            ..Default::default()
        }
    }

    fn password() -> Credentials {
        let data = [("username", "u"), ("password", "pw")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect();
        Credentials::from_secret(vmm_api::SourceKind::Openstack, "s", &data).unwrap()
    }

    #[test]
    fn login_bodies() {
        let login = Login::new(&password(), &settings(Some("demo"), Some("Lab"))).unwrap();
        assert_eq!(
            login.body(true),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "u", "domain": {"name": "Lab"}, "password": "pw"}}},
                "scope": {"project": {"name": "demo", "domain": {"name": "Lab"}}}
            }})
        );
        assert!(login.body(false)["auth"].get("scope").is_none());
        let error = Login::new(&password(), &settings(None, None)).unwrap_err();
        assert!(error.contains("set spec.project"), "{error}");
    }

    #[test]
    fn tokens_renew_before_they_expire() {
        let now: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        let token = Token {
            value: SecretString::from("t".to_owned()),
            expires_at: "2026-12-05T10:04:00.000000Z".parse().unwrap(),
        };
        assert!(token.expires_within(now, Duration::from_secs(300)));
        assert!(!token.expires_within(now, Duration::from_secs(60)));
    }
}
