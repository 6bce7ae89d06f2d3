//! A stand-in for Nova, Cinder and Neutron, written from the OpenStack API
//! reference: the calls the OpenStack provider makes, with the services'
//! error bodies, Nova's `changes-since` (deleted servers included) and
//! server stops that take a while, as a compute node's do. It serves HTTP on
//! loopback, checks every token with the real Keystone (as
//! keystonemiddleware does) and shows each project only its own resources.
//!
//! Volumes and snapshots hold real bytes (files in a run dir): uploading a
//! volume to an image writes them into the real Glance through Glance's API,
//! as Cinder does, at a rate tests may limit.
//!
//! Tests shape the cloud through [`Cloud`]'s methods (add a server, rename,
//! delete) and register its endpoints in Keystone's catalog:
//! [`Cloud::compute_url`], [`Cloud::volume_url_template`],
//! [`Cloud::network_url`].

mod compute;
mod network;
mod volume;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::process::run_dir;

/// The first group of each kind's ids.
const SERVER: u32 = 0x5e7e_5e7e;
const VOLUME: u32 = 0x0b01_0b01;
const SNAPSHOT: u32 = 0x5a95_5a95;
const NETWORK: u32 = 0x4e70_4e70;
const PORT: u32 = 0x9042_9042;

/// The highest compute microversion the stand-in answers to.
pub const MAX_MICROVERSION: &str = "2.96";

/// A server to create.
#[derive(Clone, Debug)]
pub struct ServerSeed {
    pub name: String,
    pub project_id: String,
    pub vcpus: i32,
    pub ram_mib: i32,
    pub flavor: String,
    /// Boot from this image (a local root disk of `root_gib`); volume-backed
    /// when `None`.
    pub image: Option<String>,
    pub root_gib: i32,
    pub ephemeral_gib: i32,
    pub swap_mib: i32,
    /// Volume ids, in device order (`vda`, `vdb`, ...).
    pub volumes: Vec<String>,
    /// `(network id, MAC)` per port, in order.
    pub ports: Vec<(String, String)>,
    pub running: bool,
}

impl ServerSeed {
    pub fn new(name: &str, project_id: &str) -> Self {
        Self {
            name: name.into(),
            project_id: project_id.into(),
            vcpus: 2,
            ram_mib: 2048,
            flavor: "m1.small".into(),
            image: None,
            root_gib: 20,
            ephemeral_gib: 0,
            swap_mib: 0,
            volumes: Vec::new(),
            ports: Vec::new(),
            running: true,
        }
    }
}

#[derive(Clone, Debug)]
struct ServerRecord {
    seed: ServerSeed,
    id: String,
    created: Timestamp,
    updated: Timestamp,
    /// `ACTIVE`, `SHUTOFF`, `DELETED`.
    status: &'static str,
    /// Set while an `os-stop` is in progress: when it completes.
    stopping_until: Option<Timestamp>,
}

impl ServerRecord {
    /// The id of the server's `index`th port: the port kind, the index and
    /// the server's number (the last group of its id), so ids never clash.
    fn port_id(&self, index: usize) -> String {
        let number = &self.id[self.id.len() - 12..];
        format!("{PORT:08x}-{index:04x}-4000-8000-{number}")
    }

    /// The address of the server's `index`th port.
    fn fixed_ip(&self, index: usize) -> String {
        let last = self.id.bytes().last().unwrap_or(0);
        format!("10.0.{index}.{}", 10 + last % 200)
    }
}

#[derive(Clone, Debug)]
struct VolumeRecord {
    id: String,
    name: String,
    project_id: String,
    size_gib: i64,
    bootable: bool,
    multiattach: bool,
    volume_type: String,
    updated: Timestamp,
    /// `creating`, `available` (or `in-use`, when attached), `uploading`.
    status: &'static str,
    /// The volume's bytes.
    data: PathBuf,
    snapshot_id: Option<String>,
    metadata: Value,
}

#[derive(Clone, Debug)]
struct SnapshotRecord {
    id: String,
    name: String,
    project_id: String,
    volume_id: String,
    size_gib: i64,
    /// `creating`, `available`.
    status: &'static str,
    data: PathBuf,
    metadata: Value,
    created: Timestamp,
}

#[derive(Clone, Debug)]
struct NetworkRecord {
    id: String,
    name: String,
    project_id: String,
    vlan: Option<i64>,
    updated: Timestamp,
    /// Neutron's `revision_number`: one more at each change.
    revision: u64,
}

#[derive(Default)]
struct CloudState {
    servers: BTreeMap<String, ServerRecord>,
    volumes: BTreeMap<String, VolumeRecord>,
    snapshots: BTreeMap<String, SnapshotRecord>,
    networks: BTreeMap<String, NetworkRecord>,
    next_id: u64,
    /// `(project id, "METHOD path?query")` of every request.
    requests: Vec<(String, String)>,
}

impl CloudState {
    /// A new UUID (v4-shaped, so clients that check ids accept it) whose
    /// first group tells the kind: `kind` is a hex word (`5e7e5e7e`).
    fn id(&mut self, kind: u32) -> String {
        self.next_id += 1;
        format!("{kind:08x}-0000-4000-8000-{:012x}", self.next_id)
    }

    /// Completes the stops that are due.
    fn advance(&mut self, now: Timestamp) {
        for server in self.servers.values_mut() {
            if let Some(until) = server.stopping_until.filter(|until| *until <= now) {
                server.stopping_until = None;
                server.status = "SHUTOFF";
                server.updated = until;
            }
        }
    }
}

/// The running stand-in.
#[derive(Clone)]
pub struct Cloud {
    state: Arc<Mutex<CloudState>>,
    addr: SocketAddr,
    settings: Arc<Mutex<Settings>>,
    /// Where Cinder and Nova write images: Glance's URL (`http://…:9292`).
    glance_url: String,
    http: reqwest::Client,
    /// The volumes' and snapshots' bytes.
    dir: PathBuf,
}

/// What tests may change while the stand-in runs.
struct Settings {
    /// How long an `os-stop` takes.
    stop_delay: Duration,
    /// Bytes per second of an upload to Glance; unlimited when `None`.
    upload_rate: Option<u64>,
    /// Volumes whose next upload to Glance fails once its image is made.
    failing_uploads: HashSet<String>,
    /// Projects whose DELETEs of volumes and snapshots Cinder answers 500.
    refusing_deletes: HashSet<String>,
}

/// What the stand-in asks Keystone about tokens with.
struct Validator {
    http: reqwest::Client,
    keystone_v3: String,
    service_token: String,
    /// Token → project id.
    known: Mutex<HashMap<String, String>>,
}

impl Cloud {
    /// Starts the stand-in on loopback, on a thread and runtime of its own
    /// (so it outlives the test that started it). `keystone_v3` is
    /// Keystone's v3 URL, `service_token` a token allowed to validate others
    /// (an admin's) and `glance_url` where images are written.
    pub fn start(keystone_v3: &str, service_token: &str, glance_url: &str) -> Result<Self> {
        // Plain HTTP on loopback; no request timeout, as uploads take long.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config(&[], None)?)
            .build()?;
        let validator = Arc::new(Validator {
            http: http.clone(),
            keystone_v3: keystone_v3.trim_end_matches('/').to_owned(),
            service_token: service_token.to_owned(),
            known: Mutex::default(),
        });
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("bind the OpenStack stand-in")?;
        listener.set_nonblocking(true)?;
        let cloud = Self {
            state: Arc::default(),
            addr: listener.local_addr()?,
            settings: Arc::new(Mutex::new(Settings {
                stop_delay: Duration::from_secs(3),
                upload_rate: None,
                failing_uploads: HashSet::new(),
                refusing_deletes: HashSet::new(),
            })),
            glance_url: glance_url.trim_end_matches('/').to_owned(),
            http,
            dir: run_dir()?,
        };
        let app = router(cloud.clone())
            .layer(middleware::from_fn_with_state(cloud.clone(), record))
            .layer(middleware::from_fn_with_state(validator, authenticate));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("openstack-stand-in".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, app).await
                })
            })?;
        Ok(cloud)
    }

    /// Nova's endpoint, as the catalog lists it.
    pub fn compute_url(&self) -> String {
        format!("http://{}/compute/v2.1", self.addr)
    }

    /// Cinder's endpoint as Keystone's catalog templates it (each token's
    /// catalog names its own project).
    pub fn volume_url_template(&self) -> String {
        format!("http://{}/volume/v3/$(project_id)s", self.addr)
    }

    pub fn network_url(&self) -> String {
        format!("http://{}/network", self.addr)
    }

    /// How long an `os-stop` takes from now on.
    pub fn set_stop_delay(&self, delay: Duration) {
        self.settings.lock().unwrap().stop_delay = delay;
    }

    /// Limits uploads to Glance to `bytes_per_second` from now on.
    pub fn set_upload_rate(&self, bytes_per_second: Option<u64>) {
        self.settings.lock().unwrap().upload_rate = bytes_per_second;
    }

    /// The next upload to Glance of a volume made from `volume_id` (an
    /// image named `…-<volume_id>`) fails once its image exists, and the
    /// image is deleted, as Cinder does after a failed upload.
    pub fn fail_next_upload_of(&self, volume_id: &str) {
        let mut settings = self.settings.lock().unwrap();
        settings.failing_uploads.insert(volume_id.to_owned());
    }

    /// While `refuse`, every DELETE of a volume or snapshot of `project_id`
    /// answers 500 (a Cinder whose backend is down).
    pub fn refuse_deletes(&self, project_id: &str, refuse: bool) {
        let refusing = &mut self.settings.lock().unwrap().refusing_deletes;
        if refuse {
            refusing.insert(project_id.to_owned());
        } else {
            refusing.remove(project_id);
        }
    }

    /// Whether `project_id`'s DELETEs are refused now; the answer if so.
    fn refused_delete(&self, project_id: &str) -> Option<Response> {
        let settings = self.settings.lock().unwrap();
        settings.refusing_deletes.contains(project_id).then(|| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "computeFault",
                "the volume backend is unavailable (a test's fault)".into(),
            )
        })
    }

    pub fn add_network(&self, name: &str, project_id: &str, vlan: Option<i64>) -> String {
        let mut state = self.state.lock().unwrap();
        let id = state.id(NETWORK);
        state.networks.insert(
            id.clone(),
            NetworkRecord {
                id: id.clone(),
                name: name.into(),
                project_id: project_id.into(),
                vlan,
                updated: Timestamp::now(),
                revision: 1,
            },
        );
        id
    }

    /// A volume of `size_gib` holding random bytes at its start, middle and
    /// end (zeros elsewhere, sparse on disk).
    pub fn add_volume(
        &self,
        name: &str,
        project_id: &str,
        size_gib: i64,
        bootable: bool,
    ) -> Result<String> {
        self.add_volume_filled(name, project_id, size_gib, bootable, volume::write_pattern)
    }

    /// A volume of `size_gib` whose file `fill` writes, given its path and
    /// size in bytes.
    pub fn add_volume_filled(
        &self,
        name: &str,
        project_id: &str,
        size_gib: i64,
        bootable: bool,
        fill: impl FnOnce(&Path, u64) -> Result<()>,
    ) -> Result<String> {
        let mut state = self.state.lock().unwrap();
        let id = state.id(VOLUME);
        let data = self.dir.join(&id);
        fill(&data, u64::try_from(size_gib).unwrap_or(0) << 30)?;
        state.volumes.insert(
            id.clone(),
            VolumeRecord {
                id: id.clone(),
                name: name.into(),
                project_id: project_id.into(),
                size_gib,
                bootable,
                multiattach: false,
                volume_type: "standard".into(),
                updated: Timestamp::now(),
                status: "available",
                data,
                snapshot_id: None,
                metadata: json!({}),
            },
        );
        Ok(id)
    }

    /// Renames a network, as `openstack network set --name` does.
    pub fn rename_network(&self, id: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        let network = state.networks.get_mut(id).expect("no such network");
        network.name = name.into();
        network.updated = Timestamp::now();
        network.revision += 1;
    }

    /// Deletes a network (Neutron lists it no more, and lists no deletion).
    pub fn delete_network(&self, id: &str) {
        self.state.lock().unwrap().networks.remove(id);
    }

    /// Extends a volume to `size_gib`, as `openstack volume set --size`
    /// does (the file grows with zeros).
    pub fn extend_volume(&self, id: &str, size_gib: i64) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        let volume = state.volumes.get_mut(id).context("no such volume")?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&volume.data)?
            .set_len(u64::try_from(size_gib)? << 30)?;
        volume.size_gib = size_gib;
        volume.updated = Timestamp::now();
        Ok(())
    }

    /// The requests made with `project_id`'s tokens so far, as `METHOD
    /// path?query`, oldest first.
    pub fn requests(&self, project_id: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|(project, _)| project == project_id)
            .map(|(_, request)| request.clone())
            .collect()
    }

    /// Removes a volume and its file at once (a benchmark's large volume).
    pub fn remove_volume(&self, id: &str) -> Result<()> {
        let volume = self.state.lock().unwrap().volumes.remove(id);
        let volume = volume.context("no such volume")?;
        std::fs::remove_file(&volume.data)
            .with_context(|| format!("remove {}", volume.data.display()))
    }

    /// The SHA-256 (hex) of a volume's bytes.
    pub fn volume_sha256(&self, id: &str) -> Result<String> {
        let path = self
            .state
            .lock()
            .unwrap()
            .volumes
            .get(id)
            .context("no such volume")?
            .data
            .clone();
        crate::vcsim::sha256_file(&path)
    }

    /// The SHA-256 (hex) of an image-backed server's root disk.
    pub fn root_disk_sha256(&self, server_id: &str) -> Result<String> {
        crate::vcsim::sha256_file(&self.root_disk(server_id))
    }

    /// The file of an image-backed server's local root disk.
    pub(super) fn root_disk(&self, server_id: &str) -> PathBuf {
        self.dir.join(format!("{server_id}-root"))
    }

    /// How many of `project_id`'s volumes are being uploaded to Glance now.
    pub fn uploads_in_progress(&self, project_id: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .volumes
            .values()
            .filter(|v| v.project_id == project_id && v.status == "uploading")
            .count()
    }

    /// Names of `project_id`'s snapshots and volumes now, to see what is
    /// left behind.
    pub fn snapshot_and_volume_names(&self, project_id: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .snapshots
            .values()
            .filter(|s| s.project_id == project_id)
            .map(|s| format!("snapshot {}", s.name))
            .chain(
                state
                    .volumes
                    .values()
                    .filter(|v| v.project_id == project_id)
                    .map(|v| format!("volume {}", v.name)),
            )
            .collect()
    }

    /// A server; an image-backed one gets a root disk of `root_gib`.
    pub fn add_server(&self, seed: ServerSeed) -> Result<String> {
        let mut state = self.state.lock().unwrap();
        let id = state.id(SERVER);
        if seed.image.is_some() {
            volume::write_pattern(
                &self.root_disk(&id),
                u64::try_from(seed.root_gib).unwrap_or(0) << 30,
            )?;
        }
        let now = Timestamp::now();
        state.servers.insert(
            id.clone(),
            ServerRecord {
                status: if seed.running { "ACTIVE" } else { "SHUTOFF" },
                seed,
                id: id.clone(),
                created: now,
                updated: now,
                stopping_until: None,
            },
        );
        Ok(id)
    }

    pub fn rename_server(&self, id: &str, name: &str) {
        self.edit_server(id, |server| server.seed.name = name.into());
    }

    /// Stops the server as `os-stop` does: it is `SHUTOFF` after the stop
    /// delay.
    pub fn stop_server(&self, id: &str) {
        let delay = self.settings.lock().unwrap().stop_delay;
        self.edit_server(id, |server| {
            let now = Timestamp::now();
            let delay = k8s_openapi::jiff::SignedDuration::try_from(delay).unwrap_or_default();
            server.stopping_until = Some(now.saturating_add(delay).unwrap_or(now));
        });
    }

    /// Deletes the server as Nova does: it stays listed, `DELETED`, under
    /// `changes-since`.
    pub fn delete_server(&self, id: &str) {
        self.edit_server(id, |server| server.status = "DELETED");
    }

    /// The server's status now: `ACTIVE`, `SHUTOFF` or `DELETED`.
    pub fn server_status(&self, id: &str) -> Option<&'static str> {
        let mut state = self.state.lock().unwrap();
        state.advance(Timestamp::now());
        state.servers.get(id).map(|s| s.status)
    }

    fn edit_server(&self, id: &str, edit: impl FnOnce(&mut ServerRecord)) {
        let mut state = self.state.lock().unwrap();
        let server = state.servers.get_mut(id).expect("no such server");
        edit(server);
        server.updated = Timestamp::now();
    }
}

fn router(cloud: Cloud) -> Router {
    Router::new()
        .route("/compute/v2.1/", get(compute::version))
        .route("/compute/v2.1/servers/detail", get(compute::list_servers))
        .route("/compute/v2.1/servers/{id}", get(compute::show_server))
        .route(
            "/compute/v2.1/servers/{id}/action",
            post(compute::server_action),
        )
        .route(
            "/volume/v3/{project}/volumes",
            get(volume::list_volume_summaries).post(volume::create_volume),
        )
        .route(
            "/volume/v3/{project}/volumes/detail",
            get(volume::list_volumes),
        )
        .route(
            "/volume/v3/{project}/volumes/{id}",
            get(volume::show_volume).delete(volume::delete_volume),
        )
        .route(
            "/volume/v3/{project}/volumes/{id}/action",
            post(volume::volume_action),
        )
        .route(
            "/volume/v3/{project}/snapshots",
            post(volume::create_snapshot),
        )
        .route(
            "/volume/v3/{project}/snapshots/detail",
            get(volume::list_snapshots),
        )
        .route(
            "/volume/v3/{project}/snapshots/{id}",
            get(volume::show_snapshot).delete(volume::delete_snapshot),
        )
        .route("/network/v2.0/networks", get(network::list_networks))
        .route("/network/v2.0/ports", get(network::list_ports))
        .with_state(cloud)
}

/// The project a request's token is scoped to, and the token (Cinder and
/// Nova write images to Glance with it).
#[derive(Clone)]
struct Project(String, String);

/// Keeps each request's method, path and query with its project (inside
/// [`authenticate`], which finds the project).
async fn record(State(cloud): State<Cloud>, request: Request, next: Next) -> Response {
    if let Some(Project(project, _)) = request.extensions().get::<Project>() {
        let line = format!("{} {}", request.method(), request.uri());
        cloud
            .state
            .lock()
            .unwrap()
            .requests
            .push((project.clone(), line));
    }
    next.run(request).await
}

/// Checks `X-Auth-Token` with Keystone (`GET /v3/auth/tokens`), as
/// keystonemiddleware does; 401 with Keystone's error body otherwise.
async fn authenticate(
    State(validator): State<Arc<Validator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = request
        .headers()
        .get("X-Auth-Token")
        .and_then(|t| t.to_str().ok())
        .map(str::to_owned)
    else {
        return unauthorized();
    };
    let cached = validator.known.lock().unwrap().get(&token).cloned();
    let project = match cached {
        Some(project) => project,
        None => {
            let answer = validator
                .http
                .get(format!("{}/auth/tokens", validator.keystone_v3))
                .header("X-Auth-Token", &validator.service_token)
                .header("X-Subject-Token", &token)
                .send()
                .await;
            let body: Option<Value> = match answer {
                Ok(answer) if answer.status().is_success() => answer.json().await.ok(),
                _ => None,
            };
            let Some(project) = body
                .as_ref()
                .and_then(|b| b["token"]["project"]["id"].as_str())
                .map(str::to_owned)
            else {
                return unauthorized();
            };
            validator
                .known
                .lock()
                .unwrap()
                .insert(token.clone(), project.clone());
            project
        }
    };
    request.extensions_mut().insert(Project(project, token));
    next.run(request).await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": 401, "title": "Unauthorized",
            "message": "The request you have made requires authentication."}})),
    )
        .into_response()
}

/// The error body Nova and Cinder answer with.
fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        Json(json!({kind: {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

/// As the services print times: seconds, `Z`.
fn rfc3339(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
