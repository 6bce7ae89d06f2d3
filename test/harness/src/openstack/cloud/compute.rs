//! Nova: servers (microversion 2.47 views), their `changes-since`, and the
//! actions the provider takes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{Cloud, CloudState, MAX_MICROVERSION, Project, ServerRecord, error, rfc3339};

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
        response
            .headers_mut()
            .insert("OpenStack-API-Version", value);
    }
    response
}

pub(super) async fn version(State(cloud): State<Cloud>) -> Json<Value> {
    Json(json!({"version": {
        "id": "v2.1", "status": "CURRENT", "version": MAX_MICROVERSION, "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{}/", cloud.compute_url())}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]
    }}))
}

pub(super) async fn list_servers(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let since = match param("changes-since").map(str::parse::<Timestamp>) {
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "Invalid input for query parameters changes-since.".into(),
            );
        }
        None => None,
    };
    // Nova matches `name` as a regular expression; anchored exact names are
    // what clients send, so the stand-in honours `^…$` and substrings.
    let name_filter =
        param("name").map(|n| unescape(n.trim_start_matches('^').trim_end_matches('$')));
    let limit: usize = param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000)
        .min(1000);
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
        .filter(|s| {
            name_filter
                .as_ref()
                .is_none_or(|n| s.seed.name.contains(n.as_str()))
        })
        .collect();
    servers.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
    if let Some(marker) = marker {
        match servers.iter().position(|s| s.id == marker) {
            Some(at) => servers.drain(..=at).for_each(drop),
            None => {
                return error(
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

pub(super) async fn show_server(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    match state
        .servers
        .get(&id)
        .filter(|s| s.seed.project_id == project && s.status != "DELETED")
    {
        Some(server) => with_microversion(
            &headers,
            json!({"server": server_view(&cloud, &state, server)}),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            format!("Instance {id} could not be found."),
        ),
    }
}

pub(super) async fn server_action(
    State(cloud): State<Cloud>,
    Extension(Project(project, token)): Extension<Project>,
    Path(id): Path<String>,
    Json(action): Json<Value>,
) -> Response {
    let delay = cloud.settings.lock().unwrap().stop_delay;
    let now = Timestamp::now();
    let image_name = {
        let mut state = cloud.state.lock().unwrap();
        state.advance(now);
        let Some(server) = state
            .servers
            .get_mut(&id)
            .filter(|s| s.seed.project_id == project && s.status != "DELETED")
        else {
            return error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                format!("Instance {id} could not be found."),
            );
        };
        let vm_state = if server.status == "SHUTOFF" {
            "stopped"
        } else {
            "active"
        };
        let conflict = |action: &str| {
            error(
                StatusCode::CONFLICT,
                "conflictingRequest",
                format!("Cannot '{action}' instance {id} while it is in vm_state {vm_state}"),
            )
        };
        if action.get("os-stop").is_some() {
            if server.status != "ACTIVE" || server.stopping_until.is_some() {
                return conflict("stop");
            }
            let delay = SignedDuration::try_from(delay).unwrap_or_default();
            server.stopping_until = Some(now.saturating_add(delay).unwrap_or(now));
            server.updated = now;
            return StatusCode::ACCEPTED.into_response();
        }
        if action.get("os-start").is_some() {
            if server.status != "SHUTOFF" {
                return conflict("start");
            }
            server.status = "ACTIVE";
            server.updated = now;
            return StatusCode::ACCEPTED.into_response();
        }
        let Some(name) = action["createImage"]["name"].as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "There is no such action in the stand-in".into(),
            );
        };
        if server.seed.image.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "the stand-in snapshots only image-backed servers (Nova would snapshot the volumes)".into(),
            );
        }
        name.to_owned()
    };
    // A snapshot of the root disk as Nova's libvirt driver makes one of a
    // qcow2-backed instance: a qcow2 image.
    let root = cloud.root_disk(&id);
    let image_id = match cloud
        .image_from_file(&token, &image_name, "qcow2", root, || {})
        .await
    {
        Ok(image_id) => image_id,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "computeFault",
                format!("{e:#}"),
            );
        }
    };
    (StatusCode::ACCEPTED, Json(json!({"image_id": image_id}))).into_response()
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
        let name = state
            .networks
            .get(network)
            .map_or(network.clone(), |n| n.name.clone());
        addresses.entry(name).or_default().push(json!({
            "addr": server.fixed_ip(index), "version": 4,
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

/// Each volume with the servers it is attached to, by device.
/// A Python-regex-escaped name, unescaped.
fn unescape(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}
