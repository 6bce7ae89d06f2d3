//! Glance 33 (OpenStack's image service) with one filesystem store and SQLite,
//! behind Keystone's `auth_token` middleware.
//!
//! A start makes Glance's service user in Keystone (role `service` on project
//! `service`, so the middleware may validate tokens), copies the seeded
//! database, writes `glance-api.conf` (`enabled_backends = fs:file`, the
//! staging and tasks stores in the run dir too: they default to
//! `/var/lib/glance`), serves `glance.wsgi.api:application` with chunked input
//! and raw bodies (image uploads), and registers the `image` service with
//! `public` and `internal` endpoints in `RegionOne`. Its log has errors about
//! the optional cinder store (`os_brick` is not installed): harmless.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::keystone::REGION;
use super::{Keystone, RegisteredService, Session, Token, build, copy_seed, start_uwsgi};
use crate::process::{ManagedProcess, run_dir};

/// A running Glance.
#[derive(Debug)]
pub struct Glance {
    process: ManagedProcess,
    port: u16,
    dir: PathBuf,
    service: RegisteredService,
}

/// An image as `GET /v2/images` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `queued`, `saving`, `active`, `killed`, `deleted`, …
    pub status: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub disk_format: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub visibility: Option<String>,
}

impl Glance {
    /// Starts a Glance that trusts `keystone` and registers it there.
    pub async fn start(keystone: &Keystone) -> Result<Glance> {
        let build = build().await?;
        let dir = run_dir()?;
        let user = format!("glance-{}", super::random_hex(4));
        let service_user = keystone
            .create_project_user("Default", "service", &user, "service")
            .await
            .context("Glance's service user")?;
        copy_seed(build, "glance.db", &dir)?;
        let d = dir.display();
        let k = keystone.url();
        let paste = build.venv().join("etc/glance/glance-api-paste.ini");
        // SQLite's writers wait up to `timeout` for its one lock (pysqlite's
        // default is 5 s): on two busy cores, eight threads' writes waited
        // longer, and Glance answered 500 `database is locked` to an upload's
        // last write (the stand-in then deleted the image, as Cinder does)
        // and to a DELETE. Keystone's database gets the same.
        std::fs::write(
            dir.join("glance-api.conf"),
            format!(
                "[DEFAULT]\nuse_stderr = true\nenabled_backends = fs:file\n\
                 node_staging_uri = file://{d}/staging\n\
                 [glance_store]\ndefault_backend = fs\n\
                 [fs]\nfilesystem_store_datadir = {d}/images\n\
                 [os_glance_staging_store]\nfilesystem_store_datadir = {d}/staging\n\
                 [os_glance_tasks_store]\nfilesystem_store_datadir = {d}/tasks\n\
                 [database]\nconnection = sqlite:///{d}/glance.db?timeout=60\n\
                 [keystone_authtoken]\nwww_authenticate_uri = {k}\nauth_url = {k}\n\
                 auth_type = password\nuser_domain_id = default\nproject_domain_id = default\n\
                 project_name = service\nusername = {user}\npassword = {password}\n\
                 [paste_deploy]\nflavor = keystone\nconfig_file = {paste}\n",
                password = service_user.password,
                paste = paste.display(),
            ),
        )?;
        let (process, port) = start_uwsgi(
            &dir,
            "glance",
            "glance.wsgi.api:application",
            ("OS_GLANCE_CONFIG_DIR", &dir),
            &["--http-chunked-input", "--http-raw-body"],
            "/",
        )
        .await?;
        let url = format!("http://127.0.0.1:{port}");
        let service = keystone
            .register_service("image", "glance", REGION, &url, &url)
            .await?;
        Ok(Glance {
            process,
            port,
            dir,
            service,
        })
    }

    /// `http://127.0.0.1:<port>` (the catalog's URL; the API is under `/v2`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `image` service and its endpoints in Keystone.
    pub fn service(&self) -> &RegisteredService {
        &self.service
    }

    /// The run dir: `glance-api.conf`, `glance.log`, `images/` (the store).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// A session of the image API with `token`.
    pub fn session(&self, token: &Token) -> Result<Session> {
        Session::new(self.url(), token)
    }

    /// An image of `token`'s project with these bytes (`disk_format` `raw`,
    /// `qcow2`, …; container `bare`), uploaded with `PUT /v2/images/<id>/file`;
    /// as Glance shows it afterwards (`active`).
    pub async fn create_image(
        &self,
        token: &Token,
        name: &str,
        disk_format: &str,
        data: Vec<u8>,
    ) -> Result<Image> {
        let session = self.session(token)?;
        let created = session
            .post(
                "/v2/images",
                json!({"name": name, "disk_format": disk_format, "container_format": "bare"}),
            )
            .await?;
        let id = super::str_at(&created, "/id")?;
        let path = format!("/v2/images/{id}/file");
        let response = session
            .request(Method::PUT, &path)
            .header("Content-Type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        let status = response.status();
        ensure!(
            status.is_success(),
            "PUT {path}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
        self.image(token, &id).await
    }

    /// One image.
    pub async fn image(&self, token: &Token, id: &str) -> Result<Image> {
        let value = self
            .session(token)?
            .get(&format!("/v2/images/{id}"))
            .await?;
        serde_json::from_value(value).context("parse image")
    }

    /// Every image `token` may see, following Glance's pages.
    pub async fn images(&self, token: &Token) -> Result<Vec<Image>> {
        #[derive(Deserialize)]
        struct Page {
            images: Vec<Image>,
            next: Option<String>,
        }
        let session = self.session(token)?;
        let mut images = Vec::new();
        let mut path = Some("/v2/images?limit=100".to_owned());
        while let Some(p) = path {
            let page: Page = serde_json::from_value(session.get(&p).await?)?;
            images.extend(page.images);
            path = page.next;
        }
        Ok(images)
    }

    /// An image's bytes (`GET /v2/images/<id>/file`).
    pub async fn image_bytes(&self, token: &Token, id: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.read_image(token, id, |chunk| data.extend_from_slice(chunk))
            .await?;
        Ok(data)
    }

    /// SHA-256 (lower-case hex) of an image's bytes, streamed.
    pub async fn image_sha256(&self, token: &Token, id: &str) -> Result<String> {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        self.read_image(token, id, |chunk| hash.update(chunk))
            .await?;
        Ok(hash
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    async fn read_image(&self, token: &Token, id: &str, mut sink: impl FnMut(&[u8])) -> Result<()> {
        let path = format!("/v2/images/{id}/file");
        let mut response = self
            .session(token)?
            .request(Method::GET, &path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        ensure!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("GET {path}: body"))?
        {
            sink(&chunk);
        }
        Ok(())
    }
}
