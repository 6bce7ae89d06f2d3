//! Preflight: room on Longhorn's disks for the VM's volumes. Harvester's
//! importer finds out only when the volumes cannot be scheduled, after the
//! source is off and every disk copied, and then downloads again and again
//! (harvester#8849).
//!
//! Longhorn places a replica of size S on a disk when S fits in
//! `(storageMaximum - storageReserved) × over-provisioning% - storageScheduled`
//! (and keeps a minimal available share free, which only refuses more). So
//! two things must hold before an import can succeed: some schedulable disk
//! has room for the largest volume, and all of them together have room for
//! every replica of every volume. Only that is checked: a lower bound that
//! never refuses what Longhorn could place. Nodes, disks and settings come
//! from Longhorn's own objects; without them (no Longhorn, or not yet
//! reported) nothing is refused.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde_json::Value;
use vmm_api::external;
use vmm_api::quantity::gib;

use crate::connect::Refused;
use crate::import::images::LONGHORN_PROVISIONER;

/// What Harvester gives an image's volumes without a storage class.
const DEFAULT_REPLICAS: u64 = 3;
/// Longhorn's default for `storage-over-provisioning-percentage`.
const DEFAULT_OVER_PROVISIONING: i64 = 100;
const OVER_PROVISIONING_SETTING: &str = "storage-over-provisioning-percentage";

/// Refuses disks (capacities in bytes) that Longhorn surely cannot place on
/// `class` (`None`: Harvester's default for images). Classes of other
/// provisioners are not Longhorn's to check.
pub async fn check(
    client: &kube::Client,
    class: Option<&StorageClass>,
    disks: &[i64],
) -> Result<(), Refused> {
    let parameters = match class {
        Some(class) if class.provisioner != LONGHORN_PROVISIONER => return Ok(()),
        Some(class) => class.parameters.clone().unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let replicas = parameters
        .get("numberOfReplicas")
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REPLICAS);
    let nodes = Api::<DynamicObject>::all_with(client.clone(), &external::longhorn_node())
        .list(&ListParams::default())
        .await;
    let nodes = match nodes {
        Ok(nodes) => nodes.items,
        // No Longhorn here: nothing to know.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(unreadable(&e)),
    };
    let Some(namespace) = nodes.first().and_then(|n| n.metadata.namespace.clone()) else {
        return Ok(());
    };
    let over_provisioning = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &namespace,
        &external::longhorn_setting(),
    )
    .get_opt(OVER_PROVISIONING_SETTING)
    .await
    .map_err(|e| unreadable(&e))?
    .and_then(|setting| setting.data["value"].as_str()?.parse().ok())
    .unwrap_or(DEFAULT_OVER_PROVISIONING);
    let reported = nodes.iter().any(|node| {
        node.data["status"]["diskStatus"]
            .as_object()
            .is_some_and(|d| !d.is_empty())
    });
    if !reported {
        return Ok(());
    }
    let rooms: Vec<i128> = nodes
        .iter()
        .flat_map(|node| disk_rooms(&node.data, over_provisioning))
        .collect();
    fits(&rooms, replicas, disks)
}

fn unreadable(error: &kube::Error) -> Refused {
    Refused::new(
        "StorageUnreadable",
        format!("cannot read Longhorn's nodes and settings to check for room: {error}"),
    )
}

/// The room each schedulable disk of a Longhorn node has for new replicas.
fn disk_rooms(node: &Value, over_provisioning: i64) -> Vec<i128> {
    let schedulable = |object: &Value| {
        // A condition not reported yet is not a reason to refuse.
        object["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Schedulable")
            .is_none_or(|c| c["status"] == "True")
    };
    let spec = &node["spec"];
    if spec["allowScheduling"] == false || !schedulable(&node["status"]) {
        return Vec::new();
    }
    let Some(disks) = spec["disks"].as_object() else {
        return Vec::new();
    };
    let int = |value: &Value| i128::from(value.as_i64().unwrap_or(0));
    disks
        .iter()
        .filter(|(_, disk)| disk["allowScheduling"] != false)
        .filter_map(|(name, disk)| {
            let status = &node["status"]["diskStatus"][name];
            if status.is_null() || !schedulable(status) {
                return None;
            }
            let usable = int(&status["storageMaximum"]) - int(&disk["storageReserved"]);
            let room =
                usable * i128::from(over_provisioning) / 100 - int(&status["storageScheduled"]);
            Some(room.max(0))
        })
        .collect()
}

fn fits(rooms: &[i128], replicas: u64, disks: &[i64]) -> Result<(), Refused> {
    let largest = disks.iter().copied().max().unwrap_or(0);
    let needed = i128::from(replicas) * disks.iter().map(|&d| i128::from(d)).sum::<i128>();
    let biggest_room = rooms.iter().copied().max().unwrap_or(0);
    let total_room: i128 = rooms.iter().sum();
    if i128::from(largest) <= biggest_room && needed <= total_room {
        return Ok(());
    }
    Err(Refused::new(
        "InsufficientStorage",
        format!(
            "Longhorn has no room for the VM's volumes: {replicas} replica(s) of {} GiB need {} GiB, and its {} schedulable disk(s) have {} GiB left in all, at most {} GiB on one (the largest volume is {} GiB): free or add Longhorn disks, lower numberOfReplicas in the storage class, or raise Longhorn's {OVER_PROVISIONING_SETTING}",
            gib(needed / i128::from(replicas.max(1))),
            gib(needed),
            rooms.len(),
            gib(total_room),
            gib(biggest_room),
            gib(i128::from(largest)),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GI: i64 = 1 << 30;

    #[test]
    fn rooms_follow_longhorns_scheduling_rule() {
        let node = json!({
            "spec": {"allowScheduling": true, "disks": {
                "a": {"allowScheduling": true, "storageReserved": 10 * GI},
                "b": {"allowScheduling": true, "storageReserved": 0},
                "off": {"allowScheduling": false, "storageReserved": 0},
                "full": {"allowScheduling": true, "storageReserved": 0},
                "unready": {"allowScheduling": true, "storageReserved": 0},
            }},
            "status": {"conditions": [{"type": "Schedulable", "status": "True"}], "diskStatus": {
                "a": {"storageMaximum": 110 * GI, "storageScheduled": 50 * GI},
                "b": {"storageMaximum": 100 * GI, "storageScheduled": 0},
                "off": {"storageMaximum": 100 * GI, "storageScheduled": 0},
                "full": {"storageMaximum": 100 * GI, "storageScheduled": 300 * GI},
                "unready": {"storageMaximum": 100 * GI, "conditions": [{"type": "Schedulable", "status": "False"}]},
            }},
        });
        let gi = |n: i64| i128::from(n * GI);
        // (100 Gi usable × 200 %) - scheduled
        assert_eq!(disk_rooms(&node, 200), [gi(150), gi(200), 0]);
        assert_eq!(disk_rooms(&node, 100), [gi(50), gi(100), 0]);

        let mut cordoned = node.clone();
        cordoned["spec"]["allowScheduling"] = json!(false);
        assert!(disk_rooms(&cordoned, 100).is_empty());
        let mut unschedulable = node;
        unschedulable["status"]["conditions"][0]["status"] = json!("False");
        assert!(disk_rooms(&unschedulable, 100).is_empty());
    }

    #[test]
    fn volumes_fit_only_when_the_largest_and_all_replicas_have_room() {
        let gi = |n: i64| i128::from(n * GI);
        let cases: &[(&[i128], u64, &[i64], bool)] = &[
            (&[gi(100), gi(100), gi(100)], 3, &[50 * GI, 40 * GI], true),
            // Together there is room, but no disk takes the 60 Gi volume.
            (&[gi(50), gi(50), gi(50), gi(50)], 1, &[60 * GI], false),
            // Each volume fits somewhere, but not three replicas of both.
            (&[gi(100), gi(100)], 3, &[50 * GI, 40 * GI], false),
            (&[gi(100), gi(100)], 2, &[50 * GI, 40 * GI], true),
            (&[], 3, &[GI], false),
        ];
        for (rooms, replicas, disks, want) in cases {
            let got = fits(rooms, *replicas, disks);
            assert_eq!(
                got.is_ok(),
                *want,
                "{rooms:?} {replicas} {disks:?}: {got:?}"
            );
            if let Err(refused) = got {
                assert_eq!(refused.reason, "InsufficientStorage");
                assert!(
                    refused.message.contains("numberOfReplicas"),
                    "{}",
                    refused.message
                );
            }
        }
    }
}
