//! Who is asking. kube-apiserver proxies each request with its front-proxy client
//! certificate and names the user in `X-Remote-*` headers; we trust the headers
//! only when the TLS peer proved it is that proxy (a certificate signed by the
//! request-header CA, with an allowed common name). Everything else is 401.
//!
//! The CA, allowed names and header names come from the ConfigMap
//! `kube-system/extension-apiserver-authentication`, which kube-apiserver
//! publishes; [`FrontProxyTrust`] follows it when it changes.
//!
//! A request without that identity may still carry a bearer token, which
//! [`TokenAuthenticator`] checks by TokenReview; [`authenticate_request`] tries
//! both in that order.

pub mod cache;
#[cfg(test)]
mod fake;
mod front_proxy;
mod token;

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use crate::status::ApiError;

#[cfg(test)]
pub(crate) use fake::fake_apiserver;
pub use front_proxy::{FrontProxyTrust, FrontProxyWatch};
pub use token::{DEFAULT_TOKEN_CACHE_TTL, TOKEN_CACHE_CAPACITY, TokenAuthenticator, bearer_token};

const CONFIGMAP_NAMESPACE: &str = "kube-system";
const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {0} (the server needs the role extension-apiserver-authentication-reader in kube-system)"
    )]
    Read(#[source] kube::Error),
    #[error(
        "ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} has no requestheader-client-ca-file: start kube-apiserver with --requestheader-client-ca-file"
    )]
    NoRequestHeaderCa,
    #[error(
        "key {key} of ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} is not a JSON list of strings: {source}"
    )]
    BadList {
        key: &'static str,
        source: serde_json::Error,
    },
    #[error("the request-header CA cannot verify client certificates: {0}")]
    Tls(#[from] crate::serve::Error),
}

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// How to read the front proxy's identity headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// PEM of the CA that signs the front proxy's client certificate.
    pub client_ca_pem: String,
    /// Common names the proxy certificate may carry; any when empty.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_header_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, Error> {
        let list = |key: &'static str| -> Result<Vec<String>, Error> {
            data.get(key).map_or(Ok(Vec::new()), |text| {
                serde_json::from_str(text).map_err(|source| Error::BadList { key, source })
            })
        };
        Ok(Self {
            client_ca_pem: data
                .get("requestheader-client-ca-file")
                .filter(|pem| !pem.trim().is_empty())
                .ok_or(Error::NoRequestHeaderCa)?
                .clone(),
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_header_prefixes: list("requestheader-extra-headers-prefix")?,
        })
    }
}

/// The verified front-proxy certificate of a connection, if it presented one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    pub common_name: Option<String>,
}

impl PeerCertificate {
    /// Reads the subject's common name of a certificate rustls already verified.
    pub fn from_der(der: &[u8]) -> Self {
        let common_name = x509_parser::parse_x509_certificate(der)
            .ok()
            .and_then(|(_, cert)| {
                cert.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(str::to_owned)
            });
        Self { common_name }
    }
}

/// The authenticated user, as SubjectAccessReview wants it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    /// Set by TokenReview (service accounts); the front-proxy headers carry none.
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Authenticates a request from its connection's peer certificate and headers.
pub fn authenticate(
    config: &RequestHeaderConfig,
    peer: Option<&PeerCertificate>,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let Some(peer) = peer else {
        return Err(ApiError::unauthorized());
    };
    let allowed = config.allowed_names.is_empty()
        || peer
            .common_name
            .as_ref()
            .is_some_and(|cn| config.allowed_names.contains(cn));
    if !allowed {
        return Err(ApiError::unauthorized());
    }
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let name = config
        .username_headers
        .iter()
        .flat_map(|h| values(h))
        .find(|v| !v.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let mut groups: Vec<String> = config
        .group_headers
        .iter()
        .flat_map(|h| values(h))
        .collect();
    // As kube-apiserver's own authenticators do: every authenticated user is in
    // system:authenticated, which RBAC's system:discovery role relies on (the
    // aggregator's own identity sends no groups).
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in headers {
        let header = header.as_str();
        let Some(key) = config
            .extra_header_prefixes
            .iter()
            .find_map(|prefix| strip_prefix_ignore_case(header, prefix))
        else {
            continue;
        };
        if let Ok(value) = value.to_str() {
            extra
                .entry(unescape_extra_key(key))
                .or_default()
                .push(value.to_owned());
        }
    }
    Ok(UserInfo {
        name,
        uid: None,
        groups,
        extra,
    })
}

/// The front proxy's word first ([`authenticate`]); without it, the request's
/// bearer token ([`TokenAuthenticator`]). 401 when neither names a user.
pub async fn authenticate_request(
    config: &RequestHeaderConfig,
    peer: Option<&PeerCertificate>,
    headers: &HeaderMap,
    tokens: &TokenAuthenticator,
) -> Result<UserInfo, ApiError> {
    match authenticate(config, peer, headers) {
        Ok(user) => Ok(user),
        Err(refused) if bearer_token(headers).is_none() => Err(refused),
        Err(_) => tokens.authenticate_bearer(headers).await,
    }
}

fn strip_prefix_ignore_case<'a>(header: &'a str, prefix: &str) -> Option<&'a str> {
    let head = header.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &header[prefix.len()..])
}

/// Extra keys travel lowercased and percent-encoded in header names.
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn config() -> RequestHeaderConfig {
        let data = BTreeMap::from(
            [
                ("requestheader-client-ca-file", "PEM"),
                ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
                ("requestheader-username-headers", r#"["X-Remote-User"]"#),
                ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
                (
                    "requestheader-extra-headers-prefix",
                    r#"["X-Remote-Extra-"]"#,
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        RequestHeaderConfig::from_data(&data).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn proxy(cn: &str) -> PeerCertificate {
        PeerCertificate {
            common_name: Some(cn.to_owned()),
        }
    }

    #[test]
    fn trusts_headers_only_from_the_front_proxy() {
        let alice = headers(&[
            ("x-remote-user", "alice"),
            ("x-remote-group", "team-a"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-scopes", "view"),
            ("x-remote-extra-acme.com%2fproject", "p1"),
        ]);
        let user = authenticate(&config(), Some(&proxy("front-proxy-client")), &alice).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["team-a", "system:authenticated"]);
        let aggregator = headers(&[("x-remote-user", "system:aggregator")]);
        let aggregator =
            authenticate(&config(), Some(&proxy("front-proxy-client")), &aggregator).unwrap();
        assert_eq!(
            aggregator.groups,
            ["system:authenticated"],
            "every user is authenticated"
        );
        assert_eq!(user.extra["scopes"], ["view"]);
        assert_eq!(user.extra["acme.com/project"], ["p1"]);

        let refused = [
            (None, alice.clone()),
            (Some(proxy("someone-else")), alice.clone()),
            (Some(PeerCertificate::default()), alice.clone()),
            (
                Some(proxy("front-proxy-client")),
                headers(&[("x-remote-group", "g")]),
            ),
            (
                Some(proxy("front-proxy-client")),
                headers(&[("x-remote-user", "")]),
            ),
        ];
        for (peer, headers) in refused {
            let error = authenticate(&config(), peer.as_ref(), &headers).unwrap_err();
            assert_eq!(error, ApiError::unauthorized(), "{peer:?} {headers:?}");
        }
    }

    #[test]
    fn configmap_errors_name_the_fix() {
        let empty = RequestHeaderConfig::from_data(&BTreeMap::new()).unwrap_err();
        assert!(
            empty.to_string().contains("--requestheader-client-ca-file"),
            "{empty}"
        );
        let data = BTreeMap::from([
            ("requestheader-client-ca-file".to_owned(), "PEM".to_owned()),
            (
                "requestheader-allowed-names".to_owned(),
                "front-proxy-client".to_owned(),
            ),
        ]);
        let bad = RequestHeaderConfig::from_data(&data).unwrap_err();
        assert!(
            bad.to_string().contains("requestheader-allowed-names"),
            "{bad}"
        );
    }
}
