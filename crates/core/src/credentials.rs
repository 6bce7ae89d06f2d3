//! Credentials as each kind of source expects them in its Secret. Secret values
//! are wrapped so that no `Debug` or `Display` of ours can print them: they never
//! reach logs, events or status.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use vmm_api::SourceKind;

/// A secret value. Its `Debug` prints `<redacted>`; read it with [`expose`](Self::expose).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// vSphere, or OpenStack with a password (`userDomain` optional there).
    UsernamePassword {
        username: String,
        password: SecretString,
        user_domain: Option<String>,
    },
    /// OpenStack application credential: scoped and revocable, so preferred.
    ApplicationCredential { id: String, secret: SecretString },
    /// A remote Harvester reached with a whole kubeconfig.
    Kubeconfig(SecretString),
    /// A remote Harvester reached with a bearer token.
    Token(SecretString),
}

/// What is wrong with a Secret, phrased so that the message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("Secret {secret:?} has no {wanted}: add it (keys: {keys})")]
    Missing {
        secret: String,
        wanted: &'static str,
        keys: &'static str,
    },
    #[error("key {key:?} of Secret {secret:?} is not UTF-8 text")]
    NotText { secret: String, key: String },
    #[error("key {key:?} of Secret {secret:?} is empty")]
    Empty { secret: String, key: String },
}

impl Credentials {
    /// Reads the credentials a `kind` of source needs from its Secret's `data`.
    pub fn from_secret(
        kind: SourceKind,
        secret: &str,
        data: &BTreeMap<String, ByteString>,
    ) -> Result<Self, CredentialsError> {
        let fields = Fields { secret, data };
        match kind {
            SourceKind::Vsphere => Ok(Self::UsernamePassword {
                username: fields.required("username", VSPHERE_KEYS)?,
                password: SecretString(fields.required("password", VSPHERE_KEYS)?),
                user_domain: None,
            }),
            SourceKind::Openstack => {
                if let Some(id) = fields.optional("applicationCredentialId")? {
                    let secret = fields.required("applicationCredentialSecret", OPENSTACK_KEYS)?;
                    return Ok(Self::ApplicationCredential {
                        id,
                        secret: SecretString(secret),
                    });
                }
                Ok(Self::UsernamePassword {
                    username: fields.required("username", OPENSTACK_KEYS)?,
                    password: SecretString(fields.required("password", OPENSTACK_KEYS)?),
                    user_domain: fields.optional("userDomain")?,
                })
            }
            SourceKind::Harvester => {
                if let Some(kubeconfig) = fields.optional("kubeconfig")? {
                    return Ok(Self::Kubeconfig(SecretString(kubeconfig)));
                }
                match fields.optional("token")? {
                    Some(token) => Ok(Self::Token(SecretString(token))),
                    None => Err(CredentialsError::Missing {
                        secret: secret.to_owned(),
                        wanted: "kubeconfig or token",
                        keys: HARVESTER_KEYS,
                    }),
                }
            }
        }
    }
}

const VSPHERE_KEYS: &str = "username, password";
const OPENSTACK_KEYS: &str = "username and password (and userDomain), or applicationCredentialId and applicationCredentialSecret";
const HARVESTER_KEYS: &str = "kubeconfig, or token";

struct Fields<'a> {
    secret: &'a str,
    data: &'a BTreeMap<String, ByteString>,
}

impl Fields<'_> {
    fn optional(&self, key: &str) -> Result<Option<String>, CredentialsError> {
        let Some(ByteString(bytes)) = self.data.get(key) else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes.clone()).map_err(|_| CredentialsError::NotText {
            secret: self.secret.to_owned(),
            key: key.to_owned(),
        })?;
        // A trailing newline from `kubectl create secret --from-file` is never meant.
        let text = text.trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            return Err(CredentialsError::Empty {
                secret: self.secret.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(Some(text))
    }

    fn required(&self, key: &'static str, keys: &'static str) -> Result<String, CredentialsError> {
        self.optional(key)?
            .ok_or_else(|| CredentialsError::Missing {
                secret: self.secret.to_owned(),
                wanted: key,
                keys,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs<'a> = &'a [(&'a str, &'a [u8])];

    fn data(pairs: Pairs) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
            .collect()
    }

    fn secret(value: &str) -> SecretString {
        SecretString(value.to_owned())
    }

    #[test]
    fn reads_each_kind() {
        use Credentials::*;
        let cases: Vec<(SourceKind, Pairs, Result<Credentials, CredentialsError>)> = vec![
            (
                SourceKind::Vsphere,
                &[("username", b"admin"), ("password", b"pw\n")],
                Ok(UsernamePassword {
                    username: "admin".into(),
                    password: secret("pw"),
                    user_domain: None,
                }),
            ),
            (
                SourceKind::Vsphere,
                &[("username", b"admin")],
                Err(CredentialsError::Missing {
                    secret: "s".into(),
                    wanted: "password",
                    keys: VSPHERE_KEYS,
                }),
            ),
            (
                SourceKind::Vsphere,
                &[("username", b"admin"), ("password", b"")],
                Err(CredentialsError::Empty {
                    secret: "s".into(),
                    key: "password".into(),
                }),
            ),
            (
                SourceKind::Vsphere,
                &[("username", b"\xff"), ("password", b"pw")],
                Err(CredentialsError::NotText {
                    secret: "s".into(),
                    key: "username".into(),
                }),
            ),
            (
                SourceKind::Openstack,
                &[
                    ("applicationCredentialId", b"id"),
                    ("applicationCredentialSecret", b"sec"),
                ],
                Ok(ApplicationCredential {
                    id: "id".into(),
                    secret: secret("sec"),
                }),
            ),
            (
                SourceKind::Openstack,
                &[
                    ("username", b"u"),
                    ("password", b"p"),
                    ("userDomain", b"Default"),
                ],
                Ok(UsernamePassword {
                    username: "u".into(),
                    password: secret("p"),
                    user_domain: Some("Default".into()),
                }),
            ),
            (
                SourceKind::Harvester,
                &[("token", b"t0k3n")],
                Ok(Token(secret("t0k3n"))),
            ),
            (
                SourceKind::Harvester,
                &[],
                Err(CredentialsError::Missing {
                    secret: "s".into(),
                    wanted: "kubeconfig or token",
                    keys: HARVESTER_KEYS,
                }),
            ),
        ];
        for (kind, pairs, want) in cases {
            assert_eq!(
                Credentials::from_secret(kind, "s", &data(pairs)),
                want,
                "{kind:?} {pairs:?}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let creds = Credentials::from_secret(
            SourceKind::Vsphere,
            "s",
            &data(&[("username", b"admin"), ("password", b"hunter2")]),
        )
        .unwrap();
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
