//! An OpenStack client for the OpenStack provider
//! (`crates/providers/src/openstack.rs`): Keystone v3 login and its service
//! catalog (`auth`, `catalog`), then Nova servers, Cinder volumes and
//! Neutron networks and ports read with the response types of
//! `openstack_types` over our own reqwest client, whose TLS is rustls with
//! ring and trusts exactly the source's CA (`vmm_core::tls`).
//!
//! - [`OpenstackClient::connect`] logs in, chooses the endpoints of the
//!   region and interface asked for, and reads the compute API's version.
//! - [`OpenstackClient::watch`] (`watch`) polls the inventory: Nova's
//!   `changes-since` for servers, full lists for volumes, networks and
//!   ports, and reports only what changed.
//! - `servers` finds servers and stops them.
//!
//! Tokens are renewed before they expire and once more when a service
//! answers 401 (a token revoked early).

#![forbid(unsafe_code)]

mod auth;
mod catalog;
mod error;
mod export;
mod model;
mod servers;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;
use vmm_api::source::OpenstackSettings;
use vmm_core::Credentials;

use auth::{Login, Token, TokenBody};
pub use catalog::{Endpoints, ServiceKind};
pub use error::OpenstackError;
pub use export::{EXPORT_METADATA, ExportedDisk};
pub use model::{Inventory, Server};

/// The compute microversion the client speaks: 2.47 embeds the flavor in
/// the server (Nova Pike, 2017, and newer).
pub const COMPUTE_MICROVERSION: &str = "2.47";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Renew a token this long before Keystone says it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// A logged-in client of one project of an OpenStack cloud. Cheap to clone.
#[derive(Clone)]
pub struct OpenstackClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Image downloads: the same TLS, no overall request timeout.
    transfer: reqwest::Client,
    /// Keystone's v3 URL, e.g. `https://keystone.example.com:5000/v3`.
    auth_url: String,
    login: Login,
    token: Mutex<Token>,
    endpoints: Endpoints,
    project: String,
    compute_version: String,
}

impl std::fmt::Debug for OpenstackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenstackClient")
            .field("auth_url", &self.inner.auth_url)
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl OpenstackClient {
    /// Logs in at Keystone `endpoint` (`https://HOST[:PORT][/PATH]`, `/v3`
    /// added when missing) with `credentials`, scoped and placed by
    /// `settings`. `ca_pem` is the only trust anchor when given; `insecure`
    /// accepts any certificate (tests and labs only).
    pub async fn connect(
        endpoint: &str,
        credentials: &Credentials,
        settings: &OpenstackSettings,
        ca_pem: Option<&str>,
        insecure: bool,
    ) -> Result<Self, OpenstackError> {
        let auth_url = auth_url(endpoint)?;
        let login = Login::new(credentials, settings).map_err(|problem| match credentials {
            Credentials::Kubeconfig(_) => OpenstackError::UnsupportedCredentials {
                given: "a kubeconfig",
            },
            Credentials::Token(_) => OpenstackError::UnsupportedCredentials {
                given: "a bearer token",
            },
            _ => OpenstackError::InvalidSettings(problem),
        })?;
        let tls = vmm_core::tls::client_config(ca_pem, insecure).map_err(|e| {
            OpenstackError::InvalidCaBundle {
                url: auth_url.clone(),
                detail: e.0,
            }
        })?;
        let build = |timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                .connect_timeout(CONNECT_TIMEOUT);
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            builder
                .build()
                .map_err(|e| OpenstackError::InvalidEndpoint {
                    url: auth_url.clone(),
                    detail: e.to_string(),
                })
        };
        let http = build(Some(REQUEST_TIMEOUT))?;
        let transfer = build(None)?;
        let (token, info) = authenticate(&http, &auth_url, &login).await?;
        let interface = settings.interface.unwrap_or_default();
        let endpoints = catalog::select(&info.catalog, settings.region.as_deref(), interface)
            .map_err(|missing| match missing {
                catalog::Missing::Region { available } => OpenstackError::RegionNotFound {
                    url: auth_url.clone(),
                    region: settings.region.clone().unwrap_or_default(),
                    available: if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    },
                },
                catalog::Missing::Service { service, region } => {
                    OpenstackError::ServiceNotInCatalog {
                        url: auth_url.clone(),
                        service: service.describe(),
                        interface: interface.as_str(),
                        region,
                        fix: "choose the region (spec.region) and interface (spec.interface) where the cloud offers it, or ask the cloud's operators to register it",
                    }
                }
            })?;
        let project = info.project.map(|p| p.name).unwrap_or_default();
        let mut client = Self {
            inner: Arc::new(Inner {
                http,
                transfer,
                auth_url,
                login,
                token: Mutex::new(token),
                endpoints,
                project,
                compute_version: String::new(),
            }),
        };
        let version = client.compute_version().await?;
        Arc::get_mut(&mut client.inner)
            .expect("not shared yet")
            .compute_version = version;
        Ok(client)
    }

    /// Cloud, region and compute API version, for a source's
    /// `status.endpointVersion`: `OpenStack compute 2.1–2.96, region
    /// RegionOne, project demo`.
    pub fn endpoint_version(&self) -> String {
        format!(
            "OpenStack compute {}, region {}, project {}",
            self.inner.compute_version, self.inner.endpoints.region, self.inner.project
        )
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// The microversions the compute API offers; an error when it cannot
    /// speak [`COMPUTE_MICROVERSION`].
    async fn compute_version(&self) -> Result<String, OpenstackError> {
        #[derive(serde::Deserialize)]
        struct VersionDoc {
            version: Version,
        }
        #[derive(serde::Deserialize)]
        struct Version {
            #[serde(default)]
            version: String,
            #[serde(default)]
            min_version: String,
        }
        let doc: VersionDoc = self
            .get(ServiceKind::Compute, "", "GET compute version")
            .await?;
        let Version {
            version,
            min_version,
        } = doc.version;
        if microversion(&version) < microversion(COMPUTE_MICROVERSION) {
            return Err(OpenstackError::Api {
                url: self.inner.endpoints.url(ServiceKind::Compute).to_owned(),
                call: "GET compute version".into(),
                status: 200,
                detail: format!(
                    "the compute API offers microversions up to {version:?}; the provider needs {COMPUTE_MICROVERSION} (Nova Pike or newer)"
                ),
            });
        }
        Ok(format!("{min_version}–{version}"))
    }

    /// `GET` of `path` under `service`'s endpoint, read as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        service: ServiceKind,
        path: &str,
        call: &str,
    ) -> Result<T, OpenstackError> {
        let response = self.send(Method::GET, service, path, None, call).await?;
        let url = response.url().to_string();
        let body = response
            .bytes()
            .await
            .map_err(|e| error::transport(&url, &e))?;
        serde_json::from_slice(&body).map_err(|e| OpenstackError::Malformed {
            url,
            call: call.to_owned(),
            detail: e.to_string(),
        })
    }

    /// `POST` of `body` to `path` under `service`; the answer's JSON body
    /// (`null` when it has none).
    pub(crate) async fn post(
        &self,
        service: ServiceKind,
        path: &str,
        body: &Value,
        call: &str,
    ) -> Result<Value, OpenstackError> {
        let response = self
            .send(Method::POST, service, path, Some(body), call)
            .await?;
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| error::transport(&url, &e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| OpenstackError::Malformed {
            url,
            call: call.to_owned(),
            detail: e.to_string(),
        })
    }

    /// `DELETE` of `path`; one already gone (404) is fine.
    pub(crate) async fn delete(
        &self,
        service: ServiceKind,
        path: &str,
        call: &str,
    ) -> Result<(), OpenstackError> {
        match self.send(Method::DELETE, service, path, None, call).await {
            Ok(_) | Err(OpenstackError::Api { status: 404, .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Sends a request with the token and the microversion, renewing the
    /// token first when it is about to expire and once more when the
    /// service answers 401. Any answer other than 2xx is an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        service: ServiceKind,
        path: &str,
        body: Option<&Value>,
        call: &str,
    ) -> Result<reqwest::Response, OpenstackError> {
        self.send_on(Request {
            http: &self.inner.http,
            method,
            service,
            path,
            body,
            call,
            version: None,
        })
        .await
    }

    /// A `GET` as [`send`](Self::send) makes it, asking for the
    /// microversion `version` (`volume 3.60`) when given.
    pub(crate) async fn send_get(
        &self,
        service: ServiceKind,
        path: &str,
        call: &str,
        version: Option<&str>,
    ) -> Result<reqwest::Response, OpenstackError> {
        self.send_on(Request {
            http: &self.inner.http,
            method: Method::GET,
            service,
            path,
            body: None,
            call,
            version,
        })
        .await
    }

    /// [`send`](Self::send) on the client without a request timeout, for
    /// downloads that take as long as they take.
    pub(crate) async fn send_transfer(
        &self,
        service: ServiceKind,
        path: &str,
        call: &str,
    ) -> Result<reqwest::Response, OpenstackError> {
        self.send_on(Request {
            http: &self.inner.transfer,
            method: Method::GET,
            service,
            path,
            body: None,
            call,
            version: None,
        })
        .await
    }

    async fn send_on(&self, request: Request<'_>) -> Result<reqwest::Response, OpenstackError> {
        let Request {
            http,
            method,
            service,
            path,
            body,
            call,
            version,
        } = request;
        let url = join(self.inner.endpoints.url(service), path);
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            let mut request = http
                .request(method.clone(), &url)
                .header("X-Auth-Token", token.expose())
                .header("Accept", "application/json");
            if service == ServiceKind::Compute {
                request = request
                    .header(
                        "OpenStack-API-Version",
                        format!("compute {COMPUTE_MICROVERSION}"),
                    )
                    .header("X-OpenStack-Nova-API-Version", COMPUTE_MICROVERSION);
            }
            if let Some(version) = version {
                request = request.header("OpenStack-API-Version", version);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| error::transport(&url, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED {
                return Err(OpenstackError::TokenRejected { url });
            }
            return Err(OpenstackError::Api {
                url,
                call: call.to_owned(),
                status: status.as_u16(),
                detail: error::body_message(&text),
            });
        }
    }

    /// The current token, renewed when it expires soon or `force`.
    async fn token(&self, force: bool) -> Result<vmm_core::SecretString, OpenstackError> {
        let mut token = self.inner.token.lock().await;
        if force || token.expires_within(Timestamp::now(), RENEW_MARGIN) {
            let (fresh, _) =
                authenticate(&self.inner.http, &self.inner.auth_url, &self.inner.login).await?;
            tracing::debug!(auth_url = %self.inner.auth_url, expires_at = %fresh.expires_at, "renewed the Keystone token");
            *token = fresh;
        }
        Ok(token.value.clone())
    }
}

/// A request to one of the cloud's services.
struct Request<'a> {
    http: &'a reqwest::Client,
    method: Method,
    service: ServiceKind,
    path: &'a str,
    body: Option<&'a Value>,
    /// What the call does, for errors.
    call: &'a str,
    /// An `OpenStack-API-Version` besides compute's, e.g. `volume 3.60`.
    version: Option<&'a str>,
}

/// Keystone's v3 URL for a source's `endpoint`.
fn auth_url(endpoint: &str) -> Result<String, OpenstackError> {
    let invalid = |detail: &str| OpenstackError::InvalidEndpoint {
        url: endpoint.to_owned(),
        detail: detail.to_owned(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("not an http(s) URL with a host"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v3") {
        base.to_owned()
    } else {
        format!("{base}/v3")
    })
}

fn join(base: &str, path: &str) -> String {
    if path.is_empty() {
        return format!("{base}/");
    }
    format!("{base}/{}", path.trim_start_matches('/'))
}

/// `"2.47"` as `(2, 47)`; `(0, 0)` when unreadable.
fn microversion(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Logs in: a token, and what it carries. A refused login is told apart:
/// a wrong project from a wrong password by logging in unscoped.
async fn authenticate(
    http: &reqwest::Client,
    auth_url: &str,
    login: &Login,
) -> Result<(Token, auth::TokenInfo), OpenstackError> {
    let url = format!("{auth_url}/auth/tokens");
    let post = |scoped: bool| http.post(&url).json(&login.body(scoped)).send();
    let response = post(true).await.map_err(|e| error::transport(&url, &e))?;
    let status = response.status();
    if status == StatusCode::CREATED || status == StatusCode::OK {
        let token = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(|v| vmm_core::SecretString::from(v.to_owned()))
            .ok_or_else(|| OpenstackError::Malformed {
                url: url.clone(),
                call: "POST /v3/auth/tokens".into(),
                detail: "no X-Subject-Token header".into(),
            })?;
        let body: TokenBody = response
            .json()
            .await
            .map_err(|e| OpenstackError::Malformed {
                url: url.clone(),
                call: "POST /v3/auth/tokens".into(),
                detail: e.to_string(),
            })?;
        let token = Token {
            value: token,
            expires_at: body.token.expires_at,
        };
        return Ok((token, body.token));
    }
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND);
    match login {
        Login::ApplicationCredential { id, .. } if refused => {
            Err(OpenstackError::ApplicationCredentialRefused {
                url: auth_url.to_owned(),
                id: id.clone(),
            })
        }
        Login::Password {
            username,
            user_domain,
            project,
            project_domain,
            ..
        } if refused => {
            let unscoped = post(false).await.map_err(|e| error::transport(&url, &e))?;
            if unscoped.status().is_success() {
                Err(OpenstackError::ProjectNotFound {
                    url: auth_url.to_owned(),
                    username: username.clone(),
                    project: project.clone(),
                    domain: project_domain.clone(),
                })
            } else {
                Err(OpenstackError::PasswordRefused {
                    url: auth_url.to_owned(),
                    username: username.clone(),
                    domain: user_domain.clone(),
                })
            }
        }
        _ => {
            let text = response.text().await.unwrap_or_default();
            Err(OpenstackError::Api {
                url,
                call: "POST /v3/auth/tokens".into(),
                status: status.as_u16(),
                detail: error::body_message(&text),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_urls() {
        for (given, want) in [
            ("https://k:5000", "https://k:5000/v3"),
            ("https://k:5000/v3/", "https://k:5000/v3"),
            ("http://k/identity", "http://k/identity/v3"),
        ] {
            assert_eq!(auth_url(given).unwrap(), want);
        }
        assert!(auth_url("k:5000").is_err());
        assert!(auth_url("ftp://k").is_err());
    }

    #[test]
    fn microversions() {
        assert!(microversion("2.96") > microversion("2.47"));
        assert!(microversion("2.9") < microversion("2.47"));
        assert_eq!(microversion("x"), (0, 0));
    }
}
