//! Keystone 30 (OpenStack's identity service) with fernet tokens and SQLite.
//!
//! A start copies the entry's seed (database after `db_sync` and `bootstrap`,
//! fernet and credential keys) into a run dir, writes `keystone.conf`, serves
//! `keystone.wsgi.api:application` and rewrites the identity endpoints that
//! `bootstrap` registered at a placeholder URL to its own. Passwords are hashed
//! with bcrypt's fewest rounds (`password_hash_rounds = 4`) so authenticating
//! costs milliseconds.
//!
//! Application credentials, as Keystone 30 treats them (measured):
//! - `expires_at` in the past is refused at creation (400, "The 'expires_at'
//!   must not be before now"), so an expired one is made with an expiry two
//!   seconds ahead and waited out
//!   ([`create_expired_application_credential`](Keystone::create_expired_application_credential));
//!   authenticating with it then answers **401**.
//! - A deleted one answers **404** ("Could not find Application Credential"),
//!   not 401: a client must treat both as "the credential is no good".

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Session, build, copy_seed, http, random_hex, start_uwsgi, str_at};
use crate::process::{ManagedProcess, run_dir};

/// The region `bootstrap` creates; Glance is registered there.
pub const REGION: &str = "RegionOne";

/// A running Keystone.
#[derive(Debug)]
pub struct Keystone {
    process: ManagedProcess,
    port: u16,
    dir: PathBuf,
    admin_password: String,
}

/// How to authenticate (`POST /v3/auth/tokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A user's password, scoped to a project; domains by name.
    Password {
        user_domain: String,
        user: String,
        password: String,
        project_domain: String,
        project: String,
    },
    /// An application credential (scoped to the project it was made in).
    ApplicationCredential { id: String, secret: String },
}

impl Auth {
    /// The request body Keystone expects.
    pub fn body(&self) -> Value {
        match self {
            Auth::Password {
                user_domain,
                user,
                password,
                project_domain,
                project,
            } => json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"name": user_domain}, "password": password}}},
                "scope": {"project": {"name": project, "domain": {"name": project_domain}}},
            }}),
            Auth::ApplicationCredential { id, secret } => json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": id, "secret": secret},
            }}}),
        }
    }
}

/// A token and what Keystone said with it.
#[derive(Debug, Clone)]
pub struct Token {
    /// `X-Subject-Token`: what goes into `X-Auth-Token`.
    pub id: String,
    pub expires_at: String,
    pub user_id: String,
    /// The scope's project (`None` for an unscoped token).
    pub project_id: Option<String>,
    /// Role names on that project.
    pub roles: Vec<String>,
    pub catalog: Vec<CatalogService>,
}

/// A service in a token's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogService {
    pub id: String,
    #[serde(rename = "type")]
    pub service_type: String,
    #[serde(default)]
    pub name: String,
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a [`CatalogService`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoint {
    pub id: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    pub region_id: String,
    pub url: String,
}

impl Token {
    /// The URL of a service's endpoint by type, interface and region, as a
    /// client finds it in the catalog.
    pub fn endpoint(&self, service_type: &str, interface: &str, region: &str) -> Option<&str> {
        self.catalog
            .iter()
            .filter(|s| s.service_type == service_type)
            .flat_map(|s| &s.endpoints)
            .find(|e| e.interface == interface && e.region_id == region)
            .map(|e| e.url.as_str())
    }

    fn from_answer(id: String, body: &Value) -> Result<Token> {
        #[derive(Deserialize)]
        struct Named {
            id: String,
            #[serde(default)]
            name: String,
        }
        #[derive(Deserialize)]
        struct Body {
            expires_at: String,
            user: Named,
            project: Option<Named>,
            #[serde(default)]
            roles: Vec<Named>,
            #[serde(default)]
            catalog: Vec<CatalogService>,
        }
        let body: Body = serde_json::from_value(body["token"].clone())
            .with_context(|| format!("parse token {body}"))?;
        Ok(Token {
            id,
            expires_at: body.expires_at,
            user_id: body.user.id,
            project_id: body.project.map(|p| p.id),
            roles: body.roles.into_iter().map(|r| r.name).collect(),
            catalog: body.catalog,
        })
    }
}

/// A user with a role on a project, made by
/// [`create_project_user`](Keystone::create_project_user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectUser {
    pub domain_id: String,
    pub domain: String,
    pub project_id: String,
    pub project: String,
    pub user_id: String,
    pub user: String,
    pub password: String,
    pub role: String,
}

impl ProjectUser {
    /// The user's password, scoped to the project.
    pub fn password_auth(&self) -> Auth {
        Auth::Password {
            user_domain: self.domain.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            project_domain: self.domain.clone(),
            project: self.project.clone(),
        }
    }
}

/// An application credential and its secret (shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationCredential {
    pub id: String,
    pub name: String,
    pub secret: String,
    pub user_id: String,
    pub project_id: String,
    /// `2026-12-05T20:38:39.000000`, UTC, when it has one.
    pub expires_at: Option<String>,
}

impl ApplicationCredential {
    pub fn auth(&self) -> Auth {
        Auth::ApplicationCredential {
            id: self.id.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// What [`register_service`](Keystone::register_service) made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredService {
    pub id: String,
    pub public_endpoint_id: String,
    pub internal_endpoint_id: String,
}

impl Keystone {
    /// Copies the seed, serves it and points the identity endpoints at it.
    pub async fn start() -> Result<Keystone> {
        let build = build().await?;
        let dir = run_dir()?;
        for name in ["keystone.db", "fernet-keys", "credential-keys"] {
            copy_seed(build, name, &dir)?;
        }
        let conf = dir.join("keystone.conf");
        let d = dir.display();
        // [fernet_receipts] too: it defaults to /etc/keystone/fernet-keys/.
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nuse_stderr = true\n\
                 [database]\nconnection = sqlite:///{d}/keystone.db?timeout=60\n\
                 [token]\nprovider = fernet\n\
                 [fernet_tokens]\nkey_repository = {d}/fernet-keys\n\
                 [fernet_receipts]\nkey_repository = {d}/fernet-keys\n\
                 [credential]\nkey_repository = {d}/credential-keys\n\
                 [identity]\npassword_hash_rounds = 4\n"
            ),
        )?;
        let (process, port) = start_uwsgi(
            &dir,
            "keystone",
            "keystone.wsgi.api:application",
            ("OS_KEYSTONE_CONFIG_FILES", &conf),
            &[],
            "/v3",
        )
        .await?;
        let keystone = Keystone {
            process,
            port,
            dir,
            admin_password: build.seed_line("admin-password")?,
        };
        let placeholder = build.seed_line("placeholder-url")?;
        let admin = keystone.admin().await?;
        let endpoints = admin.get("/endpoints").await?;
        for endpoint in endpoints["endpoints"].as_array().into_iter().flatten() {
            if endpoint["url"] == placeholder.as_str() {
                let id = str_at(endpoint, "/id")?;
                let url = format!("{}/", keystone.url());
                admin
                    .json(
                        Method::PATCH,
                        &format!("/endpoints/{id}"),
                        Some(json!({"endpoint": {"url": url}})),
                    )
                    .await?;
            }
        }
        Ok(keystone)
    }

    /// `http://127.0.0.1:<port>/v3`: the auth URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The run dir: `keystone.conf`, `keystone.log`, the database.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The cloud admin: user `admin` on project `admin`, domain `Default`.
    pub fn admin_auth(&self) -> Auth {
        Auth::Password {
            user_domain: "Default".into(),
            user: "admin".into(),
            password: self.admin_password.clone(),
            project_domain: "Default".into(),
            project: "admin".into(),
        }
    }

    /// The answer to `POST /v3/auth/tokens`, whatever its status. A
    /// connection uWSGI closes before answering (seen once in CI, under
    /// load) is tried again, twice at most: issuing a token has no other
    /// effect.
    pub async fn token_response(&self, auth: &Auth) -> Result<reqwest::Response> {
        let url = format!("{}/auth/tokens", self.url());
        let http = http()?;
        let mut attempt = 1;
        loop {
            match http.post(&url).json(&auth.body()).send().await {
                Err(e) if e.is_request() && e.status().is_none() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                sent => return sent.with_context(|| format!("POST {url}")),
            }
        }
    }

    /// A token (201), or an error naming the status and Keystone's message.
    pub async fn authenticate(&self, auth: &Auth) -> Result<Token> {
        let response = self.token_response(auth).await?;
        let status = response.status();
        let id = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        match (status, id) {
            (StatusCode::CREATED, Some(id)) => {
                Token::from_answer(id, &serde_json::from_str(&text)?)
            }
            _ => bail!("authentication answered {status}: {}", text.trim()),
        }
    }

    /// A session of the identity API with `auth`'s token.
    pub async fn session(&self, auth: &Auth) -> Result<Session> {
        Session::new(self.url(), &self.authenticate(auth).await?)
    }

    /// A session of the identity API as the cloud admin.
    pub async fn admin(&self) -> Result<Session> {
        self.session(&self.admin_auth()).await
    }

    /// A region (no error when it exists).
    pub async fn create_region(&self, id: &str) -> Result<()> {
        let admin = self.admin().await?;
        let response = admin
            .request(Method::POST, "/regions")
            .json(&json!({"region": {"id": id}}))
            .send()
            .await?;
        let status = response.status();
        ensure!(
            status.is_success() || status == StatusCode::CONFLICT,
            "create region {id}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// A service with a `public` and an `internal` endpoint in `region`
    /// (created when missing), as a cloud's operator registers one: what a
    /// client then discovers in its token's catalog.
    pub async fn register_service(
        &self,
        service_type: &str,
        name: &str,
        region: &str,
        public_url: &str,
        internal_url: &str,
    ) -> Result<RegisteredService> {
        self.create_region(region).await?;
        let admin = self.admin().await?;
        let service = admin
            .post(
                "/services",
                json!({"service": {"type": service_type, "name": name, "enabled": true}}),
            )
            .await?;
        let id = str_at(&service, "/service/id")?;
        let mut endpoint_ids = Vec::new();
        for (interface, url) in [("public", public_url), ("internal", internal_url)] {
            let endpoint = admin
                .post(
                    "/endpoints",
                    json!({"endpoint": {"service_id": id, "interface": interface,
                        "url": url, "region_id": region}}),
                )
                .await?;
            endpoint_ids.push(str_at(&endpoint, "/endpoint/id")?);
        }
        let [public_endpoint_id, internal_endpoint_id] =
            <[String; 2]>::try_from(endpoint_ids).map_err(|_| anyhow::anyhow!("two endpoints"))?;
        Ok(RegisteredService {
            id,
            public_endpoint_id,
            internal_endpoint_id,
        })
    }

    /// A user with a random password and `role` (`member`, `reader`, …) on
    /// `project` in `domain`; the domain and the project are created when
    /// missing (`Default` exists). User names must be new in their domain.
    pub async fn create_project_user(
        &self,
        domain: &str,
        project: &str,
        user: &str,
        role: &str,
    ) -> Result<ProjectUser> {
        let admin = self.admin().await?;
        let domain_id = get_or_create(&admin, "domains", domain, json!({})).await?;
        let project_id =
            get_or_create(&admin, "projects", project, json!({"domain_id": domain_id})).await?;
        let password = random_hex(12);
        let created = admin
            .post(
                "/users",
                json!({"user": {"name": user, "domain_id": domain_id, "password": password,
                    "default_project_id": project_id}}),
            )
            .await?;
        let user_id = str_at(&created, "/user/id")?;
        let roles = admin.get_query("/roles", &[("name", role)]).await?;
        let role_id = str_at(&roles, "/roles/0/id").with_context(|| format!("role {role}"))?;
        admin
            .json(
                Method::PUT,
                &format!("/projects/{project_id}/users/{user_id}/roles/{role_id}"),
                None,
            )
            .await?;
        Ok(ProjectUser {
            domain_id,
            domain: domain.into(),
            project_id,
            project: project.into(),
            user_id,
            user: user.into(),
            password,
            role: role.into(),
        })
    }

    /// An application credential of `user` on its project, with all its roles
    /// and no expiry. Made by the user itself (Keystone lets no one else).
    pub async fn create_application_credential(
        &self,
        user: &ProjectUser,
        name: &str,
    ) -> Result<ApplicationCredential> {
        self.application_credential(user, name, None).await
    }

    /// An application credential of `user` that has expired: Keystone refuses
    /// an `expires_at` in the past, so it is made to expire in two seconds,
    /// then waited for until authenticating with it answers 401.
    pub async fn create_expired_application_credential(
        &self,
        user: &ProjectUser,
        name: &str,
    ) -> Result<ApplicationCredential> {
        use k8s_openapi::jiff::{Timestamp, ToSpan};
        let expires = (Timestamp::now() + 2.seconds())
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let credential = self
            .application_credential(user, name, Some(expires))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let status = self.token_response(&credential.auth()).await?.status();
            if status == StatusCode::UNAUTHORIZED {
                return Ok(credential);
            }
            ensure!(
                Instant::now() < deadline,
                "application credential {name} still answers {status} 30 s after it expired"
            );
        }
    }

    /// Deletes (revokes) an application credential, as its user. Keystone then
    /// answers 404 to it, not 401.
    pub async fn delete_application_credential(
        &self,
        user: &ProjectUser,
        credential: &ApplicationCredential,
    ) -> Result<()> {
        let session = self.session(&user.password_auth()).await?;
        session
            .json(
                Method::DELETE,
                &format!(
                    "/users/{}/application_credentials/{}",
                    user.user_id, credential.id
                ),
                None,
            )
            .await?;
        Ok(())
    }

    async fn application_credential(
        &self,
        user: &ProjectUser,
        name: &str,
        expires_at: Option<String>,
    ) -> Result<ApplicationCredential> {
        let session = self.session(&user.password_auth()).await?;
        // The role the user was given, named: left out, Keystone takes the
        // token's roles, implied ones included (`reader` under `member`),
        // and then may refuse them as not assigned.
        let answer = session
            .post(
                &format!("/users/{}/application_credentials", user.user_id),
                json!({"application_credential": {"name": name, "expires_at": expires_at,
                    "roles": [{"name": user.role}]}}),
            )
            .await?;
        let credential = &answer["application_credential"];
        Ok(ApplicationCredential {
            id: str_at(credential, "/id")?,
            name: name.into(),
            secret: str_at(credential, "/secret")?,
            user_id: user.user_id.clone(),
            project_id: str_at(credential, "/project_id")?,
            expires_at: credential["expires_at"].as_str().map(str::to_owned),
        })
    }
}

/// The id of the domain or project (`kind`) named `name`, created with
/// `extra` fields when there is none.
async fn get_or_create(admin: &Session, kind: &str, name: &str, extra: Value) -> Result<String> {
    let mut query = vec![("name", name)];
    if let Some(domain) = extra["domain_id"].as_str() {
        query.push(("domain_id", domain));
    }
    let found = admin.get_query(&format!("/{kind}"), &query).await?;
    if let Some(id) = found[kind][0]["id"].as_str() {
        return Ok(id.to_owned());
    }
    let singular = kind.trim_end_matches('s');
    let mut body = extra;
    body["name"] = name.into();
    let created = admin
        .post(&format!("/{kind}"), json!({ singular: body }))
        .await?;
    str_at(&created, &format!("/{singular}/id"))
}
