//! An OpenStack source's test world: the real Keystone and Glance from PyPI
//! (pinned in `test/peers/openstack/requirements.txt`), each served by uWSGI on
//! a free loopback port with SQLite and a run dir of its own.
//!
//! `VMM_OPENSTACK_DIR` names the built entry when set; otherwise
//! `<repo>/hack/build-openstack.sh` runs once per process (a warm run takes a
//! quarter of a second) and the last line of its stdout is the directory. The
//! entry holds the venv and a seed (databases after `db_sync` and Keystone's
//! `bootstrap`, fernet and credential keys) that each start copies, so a
//! Keystone is up in about 2 s and a Glance after it in about 2 s more.
//!
//! What the world looks like (see [`keystone`] and [`glance`] for the details):
//! user `admin` with role `admin` on project `admin` (domain `Default`), region
//! `RegionOne`, the `identity` and `image` services with `public` and
//! `internal` endpoints there, and Glance's own service user (role `service`
//! on project `service`) that its `auth_token` middleware validates tokens with.
//!
//! uWSGI runs as one process without a master (`--processes 1 --threads 8`,
//! `--die-on-term`): it reloads on SIGTERM otherwise, and a master's workers
//! would not get the parent-death signal every peer has. Every response says
//! `Connection: close`: uWSGI's HTTP socket closes kept-alive connections
//! without telling, and a client that reuses one gets a reset on its next POST
//! (keystonemiddleware did, after its version discovery).
//!
//! ```no_run
//! use vmm_testkit::openstack::OpenStack;
//! # async fn example() -> anyhow::Result<()> {
//! let os = OpenStack::shared().await; // Keystone + Glance, once per test binary
//! let user = os.keystone.create_project_user("Default", "team-a", "alice", "member").await?;
//! let token = os.keystone.authenticate(&user.password_auth()).await?;
//! let image = os.glance.create_image(&token, "disk-0", "raw", vec![0; 4096]).await?;
//! assert_eq!(os.glance.image_sha256(&token, &image.id).await?.len(), 64);
//! # Ok(()) }
//! ```

pub mod cloud;
pub mod glance;
pub mod keystone;
pub mod project;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::peers::run_build_script;
use crate::process::{ManagedProcess, ProcessBuilder, free_port};

pub use cloud::{Cloud, ServerSeed};
pub use glance::{Glance, Image};
pub use keystone::REGION;
pub use keystone::{
    ApplicationCredential, Auth, CatalogService, Endpoint, Keystone, ProjectUser,
    RegisteredService, Token,
};

/// Environment variable naming a ready entry of `hack/build-openstack.sh`.
pub const OPENSTACK_DIR_ENV: &str = "VMM_OPENSTACK_DIR";

/// How long a uWSGI may take to answer its first request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Keystone, Glance and the stand-in for Nova, Cinder and Neutron, all
/// registered in Keystone's catalog in [`REGION`]; [`COMPUTE_ONLY_REGION`]
/// offers compute alone (a catalog missing services).
pub struct OpenStack {
    pub keystone: Keystone,
    pub glance: Glance,
    pub cloud: Cloud,
}

/// A second region, where only compute is registered.
pub const COMPUTE_ONLY_REGION: &str = "ComputeOnly";

impl OpenStack {
    /// The world shared by the tests of this binary, started on first use.
    /// Tests make their own domains, projects and users in it.
    pub async fn shared() -> &'static OpenStack {
        static SHARED: tokio::sync::OnceCell<Result<OpenStack, String>> =
            tokio::sync::OnceCell::const_new();
        let world = SHARED
            .get_or_init(|| async {
                OpenStack::start()
                    .await
                    .map_err(|e| format!("the shared OpenStack world did not start: {e:#}"))
            })
            .await;
        match world {
            Ok(world) => world,
            Err(e) => panic!("{e}"),
        }
    }

    /// A world of the caller's own.
    pub async fn start() -> Result<OpenStack> {
        let keystone = Keystone::start().await?;
        let glance = Glance::start(&keystone).await?;
        let admin = keystone.authenticate(&keystone.admin_auth()).await?;
        let cloud = Cloud::start(&keystone.url(), &admin.id, &glance.url())?;
        let compute = cloud.compute_url();
        for (kind, name, url) in [
            ("compute", "nova", compute.clone()),
            ("volumev3", "cinderv3", cloud.volume_url_template()),
            ("network", "neutron", cloud.network_url()),
        ] {
            keystone
                .register_service(kind, name, REGION, &url, &url)
                .await?;
        }
        keystone
            .register_service("compute", "nova", COMPUTE_ONLY_REGION, &compute, &compute)
            .await?;
        Ok(OpenStack {
            keystone,
            glance,
            cloud,
        })
    }
}

/// The entry `hack/build-openstack.sh` builds: `venv/`, `seed/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStackBuild {
    dir: PathBuf,
}

impl OpenStackBuild {
    /// The entry of this process: found (or built) on first use.
    pub fn get() -> Result<&'static OpenStackBuild> {
        static BUILD: OnceLock<Result<OpenStackBuild, String>> = OnceLock::new();
        BUILD
            .get_or_init(|| Self::locate().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("the OpenStack test world is unavailable: {e}"))
    }

    /// `VMM_OPENSTACK_DIR`, or the output of `hack/build-openstack.sh`.
    pub fn locate() -> Result<OpenStackBuild> {
        if let Some(dir) = std::env::var_os(OPENSTACK_DIR_ENV).filter(|d| !d.is_empty()) {
            return Self::from_dir(PathBuf::from(dir))
                .with_context(|| format!("{OPENSTACK_DIR_ENV} does not name a built entry"));
        }
        Self::from_dir(run_build_script("hack/build-openstack.sh", &[])?)
    }

    /// An entry, checked for what the harness uses.
    pub fn from_dir(dir: PathBuf) -> Result<OpenStackBuild> {
        let build = OpenStackBuild { dir };
        let missing: Vec<_> = [
            ".complete",
            "venv/bin/uwsgi",
            "venv/etc/glance/glance-api-paste.ini",
            "seed/keystone.db",
            "seed/glance.db",
            "seed/fernet-keys",
            "seed/credential-keys",
            "seed/admin-password",
            "seed/placeholder-url",
        ]
        .into_iter()
        .filter(|f| !build.dir.join(f).exists())
        .collect();
        if !missing.is_empty() {
            bail!("{} lacks {}", build.dir.display(), missing.join(", "));
        }
        Ok(build)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn venv(&self) -> PathBuf {
        self.dir.join("venv")
    }

    /// `venv/bin/<name>`: `uwsgi`, `keystone-manage`, `openstack`, …
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv().join("bin").join(name)
    }

    /// `seed/<name>`.
    pub fn seed(&self, name: &str) -> PathBuf {
        self.dir.join("seed").join(name)
    }

    /// A line of a seed file (`admin-password`, `placeholder-url`).
    fn seed_line(&self, name: &str) -> Result<String> {
        let path = self.seed(name);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_owned())
    }
}

/// The entry, built off the async runtime when it is not yet.
async fn build() -> Result<&'static OpenStackBuild> {
    tokio::task::spawn_blocking(OpenStackBuild::get).await?
}

/// A client for plain-HTTP loopback calls. One per call: uWSGI closes every
/// connection, so there is nothing to pool, and a client never outlives the
/// test runtime that made it.
fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(crate::tls::client_config(&[], None)?)
        .timeout(Duration::from_secs(300))
        .build()
        .context("build HTTP client")
}

/// An authenticated client of one OpenStack API: its base URL and a token.
#[derive(Debug, Clone)]
pub struct Session {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Session {
    /// `base` without a trailing slash, e.g. `http://127.0.0.1:5000/v3`.
    pub fn new(base: impl Into<String>, token: &Token) -> Result<Session> {
        Ok(Session {
            http: http()?,
            base: base.into().trim_end_matches('/').to_owned(),
            token: token.id.clone(),
        })
    }

    /// `base + path` with the token in `X-Auth-Token`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token)
    }

    /// Sends a request with an optional JSON body; its JSON answer (`Null`
    /// when empty). Fails on a status that is not a success, quoting the body.
    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let what = format!("{method} {}{path}", self.base);
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_answer(request, &what).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(Method::GET, path, None).await
    }

    /// `GET path?query` (encoded).
    pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))?;
        url.query_pairs_mut().extend_pairs(query);
        let what = format!("GET {url}");
        let request = self.http.get(url).header("X-Auth-Token", &self.token);
        json_answer(request, &what).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.json(Method::POST, path, Some(body)).await
    }
}

/// The JSON answer of a request that must succeed.
async fn json_answer(request: RequestBuilder, what: &str) -> Result<Value> {
    let response = request.send().await.with_context(|| what.to_owned())?;
    let status = response.status();
    let text = response.text().await.with_context(|| what.to_owned())?;
    if !status.is_success() {
        bail!("{what}: {status}: {}", text.trim());
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: parse {text:?}"))
}

/// A string field of a JSON object, for ids in answers.
fn str_at(value: &Value, pointer: &str) -> Result<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {pointer} in {value}"))
}

/// Hex of `n` random bytes (passwords, unique names).
fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a uWSGI serving `module` of the entry's venv on a free loopback
/// port, with `env` set and `extra` flags, and waits until `GET ready_path`
/// answers. A port taken between the choice and the bind is retried.
async fn start_uwsgi(
    dir: &Path,
    name: &str,
    module: &str,
    env: (&str, &Path),
    extra: &[&str],
    ready_path: &str,
) -> Result<(ManagedProcess, u16)> {
    let build = build().await?;
    for attempt in 1.. {
        let port = free_port()?;
        let log = dir.join(format!("{name}.log"));
        let mut process = ProcessBuilder::new(name, build.bin("uwsgi"))
            .arg("--http-socket")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--module")
            .arg(module)
            .arg("--virtualenv")
            .arg(build.venv())
            .args(["--need-app", "--die-on-term", "--processes", "1"])
            .args(["--threads", "8", "--buffer-size", "65535"])
            .args(["--add-header", "Connection: close"])
            .args(extra)
            .env(env.0, env.1)
            .current_dir(dir)
            .log_file(&log)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}{ready_path}");
        match wait_answering(&mut process, &url).await {
            Ok(()) => return Ok((process, port)),
            Err(_) if attempt < 3 && process.log_tail(200).contains("Address already in use") => {
                tracing::info!(name, port, "port taken; starting again on another");
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// Polls `url` until it answers 2xx or 300 (Glance's version list), failing
/// when the process exits or [`READY_TIMEOUT`] passes.
async fn wait_answering(process: &mut ManagedProcess, url: &str) -> Result<()> {
    let http = http()?;
    let start = Instant::now();
    let mut last;
    loop {
        process
            .check_running()
            .with_context(|| format!("{} died before {url} answered", process.name()))?;
        match http.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::MULTIPLE_CHOICES => {
                tracing::debug!(name = process.name(), elapsed = ?start.elapsed(), "ready");
                return Ok(());
            }
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!(
                "{} did not answer {url} within {READY_TIMEOUT:?} (last: {last}); last lines of {}:\n{}",
                process.name(),
                process.log_path().display(),
                process.log_tail(crate::process::LOG_TAIL_LINES)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies a seed file or directory (one level: the key repositories) into `dir`.
fn copy_seed(build: &OpenStackBuild, name: &str, dir: &Path) -> Result<()> {
    let from = build.seed(name);
    let to = dir.join(name);
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))
    };
    if from.is_dir() {
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(&from)? {
            let entry = entry?;
            copy(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        copy(&from, &to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_dir_names_what_is_missing() {
        let dir = crate::process::run_dir().unwrap();
        std::fs::create_dir_all(dir.join("seed/fernet-keys")).unwrap();
        std::fs::write(dir.join("seed/keystone.db"), "").unwrap();
        let err = OpenStackBuild::from_dir(dir).unwrap_err().to_string();
        assert!(err.contains("venv/bin/uwsgi"), "{err}");
        assert!(err.contains(".complete"), "{err}");
        assert!(err.contains("seed/glance.db"), "{err}");
        assert!(!err.contains("seed/keystone.db"), "{err}");
        assert!(!err.contains("seed/fernet-keys"), "{err}");
    }

    #[test]
    fn random_hex_has_two_digits_a_byte() {
        let a = random_hex(8);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(8));
    }
}
