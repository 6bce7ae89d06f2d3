//! Neutron: networks and ports, with the `id`, `device_id` and
//! `changed_since` filters and the `fields` selection.

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::{Cloud, Project, error, rfc3339};

/// What a list request asks for, from its query.
struct ListQuery {
    ids: Vec<String>,
    device_id: Option<String>,
    /// `changed_since`: only what was updated at or after it.
    changed_since: Option<Timestamp>,
    /// `fields`: only these attributes (all when empty).
    fields: Vec<String>,
}

impl ListQuery {
    /// The query, or what is wrong with it.
    fn parse(query: Vec<(String, String)>) -> Result<Self, String> {
        let mut parsed = ListQuery {
            ids: Vec::new(),
            device_id: None,
            changed_since: None,
            fields: Vec::new(),
        };
        for (key, value) in query {
            match key.as_str() {
                "id" => parsed.ids.push(value),
                "device_id" => parsed.device_id = Some(value),
                "fields" => parsed.fields.push(value),
                "changed_since" => {
                    let time = value.parse::<Timestamp>().map_err(|_| {
                        format!("The input changed_since must be in the ISO8601 format: {value}")
                    })?;
                    parsed.changed_since = Some(time);
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    /// Whether an item with `id`, updated at `updated`, is listed.
    fn lists(&self, id: &str, updated: Timestamp) -> bool {
        (self.ids.is_empty() || self.ids.iter().any(|i| i == id))
            && self.changed_since.is_none_or(|since| updated >= since)
    }

    /// `item` with only the asked-for fields.
    fn select(&self, item: Value) -> Value {
        if self.fields.is_empty() {
            return item;
        }
        let Value::Object(all) = item else {
            return item;
        };
        let kept: Map<String, Value> = all
            .into_iter()
            .filter(|(key, _)| self.fields.contains(key))
            .collect();
        Value::Object(kept)
    }
}

pub(super) async fn list_networks(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let query = match ListQuery::parse(query) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, "HTTPBadRequest", message),
    };
    let state = cloud.state.lock().unwrap();
    let networks: Vec<Value> = state
        .networks
        .values()
        .filter(|n| n.project_id == project && query.lists(&n.id, n.updated))
        .map(|n| {
            query.select(json!({
                "id": n.id, "name": n.name, "tenant_id": n.project_id, "project_id": n.project_id,
                "admin_state_up": true, "status": "ACTIVE", "shared": false, "mtu": 1500,
                "subnets": [], "router:external": false, "revision_number": n.revision,
                "updated_at": rfc3339(n.updated),
                "provider:network_type": if n.vlan.is_some() { "vlan" } else { "geneve" },
                "provider:physical_network": n.vlan.map(|_| "physnet1"),
                "provider:segmentation_id": n.vlan
            }))
        })
        .collect();
    Json(json!({"networks": networks})).into_response()
}

/// Ports of the project's servers; each is created (and last updated) a
/// second apart after its server.
pub(super) async fn list_ports(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let query = match ListQuery::parse(query) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, "HTTPBadRequest", message),
    };
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    let mut ports = Vec::new();
    for server in state
        .servers
        .values()
        .filter(|s| s.seed.project_id == project && s.status != "DELETED")
    {
        if query.device_id.as_ref().is_some_and(|d| *d != server.id) {
            continue;
        }
        for (index, (network, mac)) in server.seed.ports.iter().enumerate() {
            let created = server
                .created
                .saturating_add(SignedDuration::from_secs(index as i64))
                .unwrap_or(server.created);
            let id = server.port_id(index);
            if !query.lists(&id, created) {
                continue;
            }
            ports.push(query.select(json!({
                "id": id, "name": "",
                "network_id": network, "mac_address": mac, "device_id": server.id,
                "device_owner": "compute:nova", "status": "ACTIVE", "admin_state_up": true,
                "tenant_id": project, "project_id": project, "revision_number": 1,
                "created_at": rfc3339(created), "updated_at": rfc3339(created),
                "fixed_ips": [{"subnet_id": format!("subnet-{network}"), "ip_address": server.fixed_ip(index)}]
            })));
        }
    }
    Json(json!({"ports": ports})).into_response()
}
