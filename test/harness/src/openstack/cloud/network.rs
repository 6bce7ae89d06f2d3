//! Neutron: networks and ports.

use axum::Json;
use axum::extract::{Extension, Query, State};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{Cloud, Project, rfc3339};

pub(super) async fn list_networks(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let ids: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .collect();
    let state = cloud.state.lock().unwrap();
    let networks: Vec<Value> = state
        .networks
        .values()
        .filter(|n| n.project_id == project && (ids.is_empty() || ids.contains(&n.id.as_str())))
        .map(|n| {
            json!({
                "id": n.id, "name": n.name, "tenant_id": n.project_id, "project_id": n.project_id,
                "admin_state_up": true, "status": "ACTIVE", "shared": false, "mtu": 1500,
                "subnets": [], "router:external": false, "revision_number": 1,
                "provider:network_type": if n.vlan.is_some() { "vlan" } else { "geneve" },
                "provider:physical_network": n.vlan.map(|_| "physnet1"),
                "provider:segmentation_id": n.vlan
            })
        })
        .collect();
    Json(json!({"networks": networks}))
}

pub(super) async fn list_ports(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Query(query): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let device = query
        .iter()
        .find(|(k, _)| k == "device_id")
        .map(|(_, v)| v.clone());
    let mut state = cloud.state.lock().unwrap();
    state.advance(Timestamp::now());
    let mut ports = Vec::new();
    for server in state
        .servers
        .values()
        .filter(|s| s.seed.project_id == project && s.status != "DELETED")
    {
        if device.as_ref().is_some_and(|d| *d != server.id) {
            continue;
        }
        for (index, (network, mac)) in server.seed.ports.iter().enumerate() {
            ports.push(json!({
                "id": server.port_id(index), "name": "",
                "network_id": network, "mac_address": mac, "device_id": server.id,
                "device_owner": "compute:nova", "status": "ACTIVE", "admin_state_up": true,
                "tenant_id": project, "project_id": project, "revision_number": 1,
                "created_at": rfc3339(server.created.saturating_add(SignedDuration::from_secs(index as i64)).unwrap_or(server.created)),
                "fixed_ips": [{"subnet_id": format!("subnet-{network}"), "ip_address": server.fixed_ip(index)}]
            }));
        }
    }
    Json(json!({"ports": ports}))
}
