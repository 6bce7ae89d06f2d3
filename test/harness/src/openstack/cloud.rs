//! A stand-in for Nova, Cinder and Neutron, written from the OpenStack API
//! reference: the calls the OpenStack provider makes, with the services'
//! error bodies, Nova's `changes-since` (deleted servers included) and
//! server stops that take a while, as a compute node's do. It serves HTTP on
//! loopback, checks every token with the real Keystone (as
//! keystonemiddleware does) and shows each project only its own resources.
//!
//! Tests shape the cloud through [`Cloud`]'s methods (add a server, rename,
//! delete) and register its endpoints in Keystone's catalog:
//! [`Cloud::compute_url`], [`Cloud::volume_url`], [`Cloud::network_url`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

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
}

#[derive(Clone, Debug)]
struct NetworkRecord {
    id: String,
    name: String,
    project_id: String,
    vlan: Option<i64>,
}

#[derive(Default)]
struct CloudState {
    servers: BTreeMap<String, ServerRecord>,
    volumes: BTreeMap<String, VolumeRecord>,
    networks: BTreeMap<String, NetworkRecord>,
    next_id: u64,
}

impl CloudState {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // UUID-shaped, so clients that check ids accept them.
        format!("{prefix:0>8}-0000-4000-8000-{:012x}", self.next_id)
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
    stop_delay: Arc<Mutex<Duration>>,
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
    /// Starts the stand-in on loopback. `keystone_v3` is Keystone's v3 URL
    /// and `service_token` a token allowed to validate others (an admin's).
    pub async fn start(keystone_v3: &str, service_token: &str) -> Result<Self> {
        let state = Arc::new(Mutex::new(CloudState::default()));
        let stop_delay = Arc::new(Mutex::new(Duration::from_secs(3)));
        let validator = Arc::new(Validator {
            http: reqwest::Client::new(),
            keystone_v3: keystone_v3.trim_end_matches('/').to_owned(),
            service_token: service_token.to_owned(),
            known: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the OpenStack stand-in")?;
        let addr = listener.local_addr()?;
        let cloud = Self {
            state,
            addr,
            stop_delay,
        };
        let app = router(cloud.clone()).layer(middleware::from_fn_with_state(validator, authenticate));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(cloud)
    }

    /// Nova's endpoint, as the catalog lists it.
    pub fn compute_url(&self) -> String {
        format!("http://{}/compute/v2.1", self.addr)
    }

    /// Cinder's v3 endpoint for `project_id`.
    pub fn volume_url(&self, project_id: &str) -> String {
        format!("http://{}/volume/v3/{project_id}", self.addr)
    }

    /// Cinder's endpoint as Keystone's catalog templates it.
    pub fn volume_url_template(&self) -> String {
        format!("http://{}/volume/v3/%(project_id)s", self.addr)
    }

    pub fn network_url(&self) -> String {
        format!("http://{}/network", self.addr)
    }

    /// How long an `os-stop` takes from now on.
    pub fn set_stop_delay(&self, delay: Duration) {
        *self.stop_delay.lock().unwrap() = delay;
    }

    pub fn add_network(&self, name: &str, project_id: &str, vlan: Option<i64>) -> String {
        let mut state = self.state.lock().unwrap();
        let id = state.id("net");
        state.networks.insert(
            id.clone(),
            NetworkRecord {
                id: id.clone(),
                name: name.into(),
                project_id: project_id.into(),
                vlan,
            },
        );
        id
    }

    pub fn add_volume(&self, name: &str, project_id: &str, size_gib: i64, bootable: bool) -> String {
        let mut state = self.state.lock().unwrap();
        let id = state.id("vol");
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
            },
        );
        id
    }

    pub fn add_server(&self, seed: ServerSeed) -> String {
        let mut state = self.state.lock().unwrap();
        let id = state.id("srv");
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
        id
    }

    pub fn rename_server(&self, id: &str, name: &str) {
        self.edit_server(id, |server| server.seed.name = name.into());
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
        .route("/compute/v2.1/", get(compute_version))
        .route("/compute/v2.1/servers/detail", get(list_servers))
        .route("/compute/v2.1/servers/{id}", get(show_server))
        .route("/compute/v2.1/servers/{id}/action", post(server_action))
        .route("/volume/v3/{project}/volumes/detail", get(list_volumes))
        .route("/volume/v3/{project}/volumes/{id}", get(show_volume))
        .route("/network/v2.0/networks", get(list_networks))
        .route("/network/v2.0/ports", get(list_ports))
        .with_state(cloud)
}

/// The project a request's token is scoped to.
#[derive(Clone)]
struct Project(String);

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
            validator.known.lock().unwrap().insert(token, project.clone());
            project
        }
    };
    request.extensions_mut().insert(Project(project));
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

/// Nova's error body.
fn nova_error(status: StatusCode, kind: &str, message: String) -> Response {
    (status, Json(json!({kind: {"code": status.as_u16(), "message": message}}))).into_response()
}

/// The microversion header Nova answers with.
fn with_microversion(headers: &HeaderMap, body: Value) -> Response {
    let asked = headers
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("compute "))
        .unwrap_or("2.1")
        .to_owned();
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("compute {asked}")) {
        response.headers_mut().insert("OpenStack-API-Version", value);
    }
    response
}

async fn compute_version(State(cloud): State<Cloud>) -> Json<Value> {
    Json(json!({"version": {
        "id": "v2.1", "status": "CURRENT", "version": MAX_MICROVERSION, "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{}/", cloud.compute_url())}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]
    }}))
}

async fn list_servers(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let since = match param("changes-since").map(str::parse::<Timestamp>) {
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => {
            return nova_error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "Invalid input for query parameters changes-since.".into(),
            );
        }
        None => None,
    };
    // Nova matches `name` as a regular expression; anchored exact names are
    // what clients send, so the stand-in honours `^…$` and substrings.
    let name_filter = param("name").map(|n| unescape(n.trim_start_matches('^').trim_end_matches('$')));
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(1000).min(1000);
    let marker = param("marker");
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    let mut servers: Vec<&ServerRecord> = state
        .servers
        .values()
        .filter(|s| s.seed.project_id == project)
        .filter(|s| match since {
            Some(since) => s.updated >= since,
            None => s.status != "DELETED",
        })
        .filter(|s| name_filter.as_ref().is_none_or(|n| s.seed.name.contains(n.as_str())))
        .collect();
    servers.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
    if let Some(marker) = marker {
        match servers.iter().position(|s| s.id == marker) {
            Some(at) => servers.drain(..=at).for_each(drop),
            None => {
                return nova_error(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    format!("marker [{marker}] not found"),
                );
            }
        }
    }
    let more = servers.len() > limit;
    servers.truncate(limit);
    let mut body = json!({"servers": servers.iter().map(|s| server_view(&cloud, &state, s)).collect::<Vec<_>>()});
    if more {
        let last = &servers[servers.len() - 1].id;
        body["servers_links"] = json!([{"rel": "next",
            "href": format!("{}/servers/detail?limit={limit}&marker={last}", cloud.compute_url())}]);
    }
    with_microversion(&headers, body)
}

async fn show_server(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    match state.servers.get(&id).filter(|s| s.seed.project_id == project && s.status != "DELETED") {
        Some(server) => with_microversion(&headers, json!({"server": server_view(&cloud, &state, server)})),
        None => nova_error(StatusCode::NOT_FOUND, "itemNotFound", format!("Instance {id} could not be found.")),
    }
}

async fn server_action(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Path(id): Path<String>,
    Json(action): Json<Value>,
) -> Response {
    let delay = *cloud.stop_delay.lock().unwrap();
    let mut state = cloud.state.lock().unwrap();
    let now = Timestamp::now();
    state.advance(now);
    let Some(server) = state
        .servers
        .get_mut(&id)
        .filter(|s| s.seed.project_id == project && s.status != "DELETED")
    else {
        return nova_error(StatusCode::NOT_FOUND, "itemNotFound", format!("Instance {id} could not be found."));
    };
    if action.get("os-stop").is_some() {
        if server.status != "ACTIVE" || server.stopping_until.is_some() {
            let vm_state = if server.status == "SHUTOFF" { "stopped" } else { "active" };
            return nova_error(
                StatusCode::CONFLICT,
                "conflictingRequest",
                format!("Cannot 'stop' instance {id} while it is in vm_state {vm_state}"),
            );
        }
        let delay = SignedDuration::try_from(delay).unwrap_or_default();
        server.stopping_until = Some(now.saturating_add(delay).unwrap_or(now));
        server.updated = now;
        return StatusCode::ACCEPTED.into_response();
    }
    nova_error(
        StatusCode::BAD_REQUEST,
        "badRequest",
        "There is no such action in the stand-in".into(),
    )
}

/// A server as Nova 2.47 shows it.
fn server_view(cloud: &Cloud, state: &CloudState, server: &ServerRecord) -> Value {
    let seed = &server.seed;
    let (power_state, vm_state) = match server.status {
        "ACTIVE" => (1, "active"),
        "SHUTOFF" => (4, "stopped"),
        _ => (0, "deleted"),
    };
    let mut addresses: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (index, (network, mac)) in seed.ports.iter().enumerate() {
        let name = state.networks.get(network).map_or(network.clone(), |n| n.name.clone());
        addresses.entry(name).or_default().push(json!({
            "addr": fixed_ip(server, index), "version": 4,
            "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}));
    }
    json!({
        "id": server.id, "name": seed.name, "status": server.status,
        "tenant_id": seed.project_id, "user_id": "stand-in-user",
        "created": rfc3339(server.created), "updated": rfc3339(server.updated),
        "hostId": format!("{:056x}", 0xc0ffee), "addresses": addresses,
        "config_drive": "", "key_name": null, "locked": false, "description": null,
        "accessIPv4": "", "accessIPv6": "",
        "metadata": {}, "tags": [], "progress": 0,
        "links": [{"rel": "self", "href": format!("{}/servers/{}", cloud.compute_url(), server.id)}],
        "image": match &seed.image {
            Some(image) => json!({"id": image, "links": []}),
            None => json!(""),
        },
        "flavor": {"vcpus": seed.vcpus, "ram": seed.ram_mib, "disk": if seed.image.is_some() { seed.root_gib } else { 0 },
            "ephemeral": seed.ephemeral_gib, "swap": seed.swap_mib,
            "original_name": seed.flavor, "extra_specs": {}},
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-SRV-ATTR:host": "compute-0",
        "OS-EXT-SRV-ATTR:hypervisor_hostname": "compute-0.local",
        "OS-EXT-SRV-ATTR:instance_name": format!("instance-{:08x}", server.id.len()),
        "OS-EXT-STS:power_state": power_state,
        "OS-EXT-STS:task_state": if server.stopping_until.is_some() { json!("powering-off") } else { json!(null) },
        "OS-EXT-STS:vm_state": vm_state,
        "OS-SRV-USG:launched_at": rfc3339(server.created),
        "OS-SRV-USG:terminated_at": null,
        "os-extended-volumes:volumes_attached": seed.volumes.iter()
            .map(|v| json!({"id": v, "delete_on_termination": false})).collect::<Vec<_>>(),
        "security_groups": [{"name": "default"}],
        "host_status": "UP"
    })
}

fn fixed_ip(server: &ServerRecord, index: usize) -> String {
    let last = server.id.bytes().last().unwrap_or(0);
    format!("10.0.{index}.{}", 10 + last % 200)
}

/// Each volume with the servers it is attached to, by device.
fn volume_view(state: &CloudState, volume: &VolumeRecord) -> Value {
    let attachments: Vec<Value> = state
        .servers
        .values()
        .filter(|s| s.status != "DELETED")
        .filter_map(|s| {
            let index = s.seed.volumes.iter().position(|v| *v == volume.id)?;
            let device = format!("/dev/vd{}", (b'a' + index as u8) as char);
            Some(json!({"id": volume.id, "attachment_id": format!("att-{}-{}", s.id, index),
                "volume_id": volume.id, "server_id": s.id, "host_name": "compute-0",
                "device": device, "attached_at": rfc3339(s.created)}))
        })
        .collect();
    json!({
        "id": volume.id, "name": volume.name, "size": volume.size_gib,
        "status": if attachments.is_empty() { "available" } else { "in-use" },
        "bootable": volume.bootable.to_string(), "encrypted": false, "multiattach": volume.multiattach,
        "availability_zone": "nova", "volume_type": volume.volume_type,
        "user_id": "stand-in-user", "os-vol-tenant-attr:tenant_id": volume.project_id,
        "created_at": rfc3339(volume.updated), "updated_at": rfc3339(volume.updated),
        "replication_status": null, "consistencygroup_id": null, "snapshot_id": null,
        "source_volid": null, "description": null, "metadata": {},
        "attachments": attachments, "links": []
    })
}

async fn list_volumes(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Path(path_project): Path<String>,
) -> Response {
    if path_project != project {
        return forbidden_project();
    }
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    let volumes: Vec<Value> = state
        .volumes
        .values()
        .filter(|v| v.project_id == project)
        .map(|v| volume_view(&state, v))
        .collect();
    Json(json!({"volumes": volumes})).into_response()
}

async fn show_volume(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Path((path_project, id)): Path<(String, String)>,
) -> Response {
    if path_project != project {
        return forbidden_project();
    }
    let state = cloud.state.lock().unwrap();
    match state.volumes.get(&id).filter(|v| v.project_id == project) {
        Some(volume) => Json(json!({"volume": volume_view(&state, volume)})).into_response(),
        None => nova_error(StatusCode::NOT_FOUND, "itemNotFound", format!("Volume {id} could not be found.")),
    }
}

fn forbidden_project() -> Response {
    nova_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Policy doesn't allow this project's volumes to be listed.".into(),
    )
}

async fn list_networks(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let ids: Vec<&str> = query.iter().filter(|(k, _)| k == "id").map(|(_, v)| v.as_str()).collect();
    let state = cloud.state.lock().unwrap();
    let networks: Vec<Value> = state
        .networks
        .values()
        .filter(|n| n.project_id == project && (ids.is_empty() || ids.contains(&n.id.as_str())))
        .map(|n| json!({
            "id": n.id, "name": n.name, "tenant_id": n.project_id, "project_id": n.project_id,
            "admin_state_up": true, "status": "ACTIVE", "shared": false, "mtu": 1500,
            "subnets": [], "router:external": false, "revision_number": 1,
            "provider:network_type": if n.vlan.is_some() { "vlan" } else { "geneve" },
            "provider:physical_network": n.vlan.map(|_| "physnet1"),
            "provider:segmentation_id": n.vlan
        }))
        .collect();
    Json(json!({"networks": networks}))
}

async fn list_ports(
    State(cloud): State<Cloud>,
    Extension(Project(project)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let device = query.iter().find(|(k, _)| k == "device_id").map(|(_, v)| v.clone());
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    let mut ports = Vec::new();
    for server in state.servers.values().filter(|s| s.seed.project_id == project && s.status != "DELETED") {
        if device.as_ref().is_some_and(|d| *d != server.id) {
            continue;
        }
        for (index, (network, mac)) in server.seed.ports.iter().enumerate() {
            ports.push(json!({
                "id": format!("port-{}-{index}", server.id), "name": "",
                "network_id": network, "mac_address": mac, "device_id": server.id,
                "device_owner": "compute:nova", "status": "ACTIVE", "admin_state_up": true,
                "tenant_id": project, "project_id": project, "revision_number": 1,
                "created_at": rfc3339(server.created.saturating_add(SignedDuration::from_secs(index as i64)).unwrap_or(server.created)),
                "fixed_ips": [{"subnet_id": format!("subnet-{network}"), "ip_address": fixed_ip(server, index)}]
            }));
        }
    }
    Json(json!({"ports": ports}))
}

/// As the services print times: seconds, `Z`.
fn rfc3339(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A Python-regex-escaped name, unescaped.
fn unescape(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or(c) } else { c });
    }
    out
}
