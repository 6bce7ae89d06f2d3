//! Concerns: what would make an import of a VM fail or lose something, so the
//! UI can say so before anyone starts. Most come from what the source reports;
//! three need the cluster: whether a source network has any Harvester network
//! to map to, whether the VM's default target name is taken, and whether a
//! KubeVirt VM already has one of its MAC addresses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;

use serde::Deserialize;
use vmm_api::inventory::{Concern, LocalDisk, VirtualMachineSpec};
use vmm_api::names::target_vm_name;

use crate::store::ObjectKey;

/// What the cluster holds that some concerns depend on. `None` until known: a
/// concern is never raised on a guess.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterFacts {
    /// The VLANs each NetworkAttachmentDefinition carries, cluster-wide (a job
    /// may map to a NAD in any namespace).
    pub nads: Option<Vec<NadVlans>>,
    /// KubeVirt VirtualMachines by namespace and name.
    pub vms: Option<BTreeSet<ObjectKey>>,
    /// The KubeVirt VM each MAC address (lower case) is on.
    pub macs: Option<BTreeMap<String, ObjectKey>>,
}

/// Which VLANs a NetworkAttachmentDefinition carries, read from its CNI config
/// the way Harvester writes it (docs/harvester.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NadVlans {
    Untagged,
    Vlan(i32),
    Trunk(Vec<RangeInclusive<i32>>),
    /// Not a bridge network (an overlay, another CNI): it may fit any network.
    Any,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CniConfig {
    #[serde(rename = "type", default)]
    plugin: String,
    #[serde(default)]
    vlan: Option<i32>,
    #[serde(default)]
    vlan_trunk: Vec<TrunkRange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrunkRange {
    #[serde(rename = "minID")]
    min_id: i32,
    #[serde(rename = "maxID")]
    max_id: i32,
}

impl NadVlans {
    pub fn from_config(config: &str) -> Self {
        let Ok(cni) = serde_json::from_str::<CniConfig>(config) else {
            return Self::Any;
        };
        if cni.plugin != "bridge" {
            return Self::Any;
        }
        if !cni.vlan_trunk.is_empty() {
            return Self::Trunk(cni.vlan_trunk.iter().map(|r| r.min_id..=r.max_id).collect());
        }
        match cni.vlan {
            None | Some(0) => Self::Untagged,
            Some(id) => Self::Vlan(id),
        }
    }

    /// Whether a source network on `vlan` (unknown when `None`; 0 untagged)
    /// could be mapped here without changing the guest's network.
    fn carries(&self, vlan: Option<i32>) -> bool {
        match (self, vlan) {
            (Self::Any, _) | (_, None) => true,
            (Self::Untagged, Some(id)) => id == 0,
            (Self::Vlan(nad), Some(id)) => *nad == id,
            (Self::Trunk(ranges), Some(id)) => ranges.iter().any(|r| r.contains(&id)),
        }
    }
}

/// Everything beyond the VM itself that its concerns look at.
pub struct Context<'a> {
    /// The VM's namespace: where an import job would create the Harvester VM.
    pub namespace: &'a str,
    /// The VLAN of each network of the VM's source, by display name.
    pub network_vlans: &'a HashMap<String, Option<i32>>,
    pub cluster: &'a ClusterFacts,
}

pub fn concerns(vm: &VirtualMachineSpec, context: &Context<'_>) -> Vec<Concern> {
    let mut found = Vec::new();
    let mut add = |reason: &str, message: String| {
        found.push(Concern {
            reason: reason.to_owned(),
            message,
        })
    };
    if let Some(fault) = &vm.fault {
        add(
            "SourceFault",
            format!(
                "the source reports the VM broken ({fault}): repair or rebuild it there first, or the import copies a VM that does not run"
            ),
        );
    }
    if vm.snapshots > 0 {
        add(
            "HasSnapshots",
            format!(
                "the VM has {} snapshot(s): only the current state is imported; consolidate or delete them at the source to import what you see",
                vm.snapshots
            ),
        );
    }
    if let Some(snapshot) = &vm.snapshot_in_progress {
        add(
            "SnapshotInProgress",
            format!("snapshot {snapshot} is being taken: wait until it completes before importing"),
        );
    }
    if !vm.host_devices.is_empty() {
        add(
            "HostDevices",
            format!(
                "the VM uses host devices ({}): the imported VM gets none; attach matching devices on the target after the import",
                vm.host_devices.join(", ")
            ),
        );
    }
    for disk in &vm.disks {
        if let Some(image) = &disk.container_image {
            add(
                "ContainerDisk",
                format!(
                    "{} is made from container image {image} at each start: there is nothing to export; give the imported VM that image, or copy the disk's data to a volume first",
                    disk.name
                ),
            );
        }
        if disk.hotplugged {
            add(
                "HotpluggedVolume",
                format!(
                    "{} was hot-plugged into the running VM: the imported VM gets it as an ordinary disk",
                    disk.name
                ),
            );
        }
        if disk.raw_device {
            add(
                "RawDeviceMapping",
                format!(
                    "{} is a raw device mapping: its LUN cannot be exported; copy it to a virtual disk at the source first",
                    disk.name
                ),
            );
        } else if disk.independent {
            add(
                "IndependentDisk",
                format!(
                    "{} is an independent disk: exports skip it; make it dependent at the source to import it",
                    disk.name
                ),
            );
        }
        if disk.shared {
            add(
                "SharedDisk",
                format!(
                    "{} can be attached to several VMs at once: another VM may write to it while it is copied; detach it from the others before importing",
                    disk.name
                ),
            );
        }
        match disk.local {
            Some(LocalDisk::Ephemeral) => add(
                "EphemeralDisk",
                format!(
                    "{} is the server's ephemeral disk: Nova cannot export it; copy its data to a volume and attach that instead",
                    disk.name
                ),
            ),
            Some(LocalDisk::Swap) => add(
                "SwapDisk",
                format!(
                    "{} is not imported: the Harvester VM gets no swap disk (make swap inside the guest if it needs one)",
                    disk.name
                ),
            ),
            Some(LocalDisk::Root) => add(
                "ImageBackedRootDisk",
                format!(
                    "{} lives on the compute node, not on a volume: it is imported through a snapshot image of the server, which needs room for it in Glance",
                    disk.name
                ),
            ),
            None => {}
        }
    }
    for nic in vm.nics.iter().filter(|nic| nic.pod_network) {
        add(
            "PodNetwork",
            format!(
                "{} is on the pod network: it has no network to map, and KubeVirt gives the imported VM a new address behind the pod's; move it to a VM network to keep its address",
                nic.name
            ),
        );
    }
    for nic in vm
        .nics
        .iter()
        .filter(|nic| nic.network.is_none() && !nic.pod_network)
    {
        add(
            "NicWithoutNetwork",
            format!(
                "{} is on no network the source can name: it cannot be mapped to a Harvester network",
                nic.name
            ),
        );
    }
    if let Some(nads) = &context.cluster.nads {
        let networks: BTreeSet<&str> = vm
            .nics
            .iter()
            .filter_map(|n| n.network.as_deref())
            .collect();
        for network in networks {
            let vlan = context.network_vlans.get(network).copied().flatten();
            if !nads.iter().any(|nad| nad.carries(vlan)) {
                let carrying = match vlan {
                    Some(0) => "untagged traffic".to_owned(),
                    Some(id) => format!("VLAN {id}"),
                    None => "any network".to_owned(),
                };
                add(
                    "NoNetworkToMapTo",
                    format!(
                        "no NetworkAttachmentDefinition carries {carrying} for source network {network:?}: create a VM network for it in Harvester before importing"
                    ),
                );
            }
        }
    }
    if let Some(vms) = &context.cluster.vms {
        let target = target_vm_name(&vm.display_name);
        if vms.contains(&(context.namespace.to_owned(), target.clone())) {
            add(
                "NameTaken",
                format!(
                    "a VirtualMachine named {target:?} already exists in namespace {:?}: give the import job a spec.targetName",
                    context.namespace
                ),
            );
        }
    }
    if let Some(macs) = &context.cluster.macs {
        for nic in &vm.nics {
            let Some(mac) = &nic.mac_address else {
                continue;
            };
            if let Some((namespace, name)) = macs.get(&mac.to_ascii_lowercase()) {
                add(
                    "MacAddressInUse",
                    format!(
                        "{} has MAC address {mac}, which VirtualMachine {namespace}/{name} already has: an import would fail until that VM is deleted or re-addressed",
                        nic.name
                    ),
                );
            }
        }
    }
    if vm.disks.is_empty() {
        add(
            "NoDisks",
            "the VM has no disks: there is nothing to import".to_owned(),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use vmm_api::inventory::{Disk, Nic};

    use super::*;

    fn reasons(vm: &VirtualMachineSpec, context: &Context<'_>) -> Vec<String> {
        concerns(vm, context)
            .into_iter()
            .map(|c| c.reason)
            .collect()
    }

    fn nic(network: Option<&str>) -> Nic {
        Nic {
            name: "Network adapter 1".into(),
            network: network.map(str::to_owned),
            ..Nic::default()
        }
    }

    fn vm_on(networks: &[&str]) -> VirtualMachineSpec {
        VirtualMachineSpec {
            display_name: "Web 01".into(),
            disks: vec![Disk {
                name: "Hard disk 1".into(),
                ..Disk::default()
            }],
            nics: networks.iter().map(|n| nic(Some(n))).collect(),
            ..VirtualMachineSpec::default()
        }
    }

    #[test]
    fn each_source_concern_names_the_fix() {
        let vlans = HashMap::new();
        let unknown = ClusterFacts::default();
        let context = Context {
            namespace: "ns",
            network_vlans: &vlans,
            cluster: &unknown,
        };
        assert!(concerns(&vm_on(&["VM Network"]), &context).is_empty());

        let disk = |raw_device, independent| Disk {
            name: "Hard disk".into(),
            raw_device,
            independent,
            ..Disk::default()
        };
        let local = |local| Disk {
            name: "local".into(),
            local: Some(local),
            ..Disk::default()
        };
        let troubled = VirtualMachineSpec {
            fault: Some("ERROR: No valid host was found.".into()),
            snapshots: 2,
            snapshot_in_progress: Some("nightly".into()),
            host_devices: vec!["nvidia.com/GA102GL_A10".into()],
            disks: vec![
                Disk {
                    container_image: Some("quay.io/containerdisks/fedora:40".into()),
                    ..disk(false, false)
                },
                Disk {
                    hotplugged: true,
                    ..disk(false, false)
                },
                disk(true, false),
                disk(false, true),
                Disk {
                    shared: true,
                    ..disk(false, false)
                },
                local(LocalDisk::Root),
                local(LocalDisk::Ephemeral),
                local(LocalDisk::Swap),
            ],
            nics: vec![
                Nic {
                    pod_network: true,
                    ..nic(None)
                },
                nic(None),
            ],
            ..VirtualMachineSpec::default()
        };
        assert_eq!(
            reasons(&troubled, &context),
            [
                "SourceFault",
                "HasSnapshots",
                "SnapshotInProgress",
                "HostDevices",
                "ContainerDisk",
                "HotpluggedVolume",
                "RawDeviceMapping",
                "IndependentDisk",
                "SharedDisk",
                "ImageBackedRootDisk",
                "EphemeralDisk",
                "SwapDisk",
                "PodNetwork",
                "NicWithoutNetwork"
            ]
        );
        assert_eq!(
            reasons(&VirtualMachineSpec::default(), &context),
            ["NoDisks"]
        );
    }

    #[test]
    fn nad_configs_as_harvester_writes_them() {
        for (config, want) in [
            (
                r#"{"cniVersion":"0.3.1","name":"vlan100","type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{}}"#,
                NadVlans::Vlan(100),
            ),
            (
                r#"{"type":"bridge","bridge":"mgmt-br"}"#,
                NadVlans::Untagged,
            ),
            (
                r#"{"type":"bridge","vlan":0,"vlanTrunk":[{"minID":1,"maxID":10},{"minID":20,"maxID":20}]}"#,
                NadVlans::Trunk(vec![1..=10, 20..=20]),
            ),
            (r#"{"type":"kube-ovn"}"#, NadVlans::Any),
            ("not json", NadVlans::Any),
        ] {
            assert_eq!(NadVlans::from_config(config), want, "{config}");
        }
    }

    #[test]
    fn a_network_needs_a_nad_that_carries_its_vlan() {
        let vlans = HashMap::from([
            ("prod".to_owned(), Some(100)),
            ("flat".to_owned(), Some(0)),
            ("std".to_owned(), None),
        ]);
        let cases: [(&[NadVlans], &[&str], &[&str]); 6] = [
            (&[], &["prod"], &["NoNetworkToMapTo"]),
            (&[], &["std"], &["NoNetworkToMapTo"]),
            (&[NadVlans::Vlan(100)], &["prod", "std"], &[]),
            (
                &[NadVlans::Vlan(200)],
                &["prod", "flat"],
                &["NoNetworkToMapTo", "NoNetworkToMapTo"],
            ),
            (
                &[NadVlans::Untagged, NadVlans::Trunk(vec![90..=110])],
                &["prod", "flat"],
                &[],
            ),
            (&[NadVlans::Any], &["prod"], &[]),
        ];
        for (nads, networks, want) in cases {
            let cluster = ClusterFacts {
                nads: Some(nads.to_vec()),
                ..ClusterFacts::default()
            };
            let context = Context {
                namespace: "ns",
                network_vlans: &vlans,
                cluster: &cluster,
            };
            assert_eq!(
                reasons(&vm_on(networks), &context),
                want,
                "{nads:?} {networks:?}"
            );
        }
    }

    #[test]
    fn the_default_target_name_must_be_free_in_the_namespace() {
        let vlans = HashMap::new();
        let cluster = ClusterFacts {
            vms: Some(BTreeSet::from([("team-a".to_owned(), "web-01".to_owned())])),
            ..ClusterFacts::default()
        };
        let context = |namespace| Context {
            namespace,
            network_vlans: &vlans,
            cluster: &cluster,
        };
        let found = concerns(&vm_on(&[]), &context("team-a"));
        assert_eq!(found[0].reason, "NameTaken");
        assert!(
            found[0].message.contains("spec.targetName"),
            "{}",
            found[0].message
        );
        assert!(concerns(&vm_on(&[]), &context("team-b")).is_empty());
    }

    #[test]
    fn a_mac_address_a_kubevirt_vm_has_is_a_concern_in_any_namespace() {
        let vlans = HashMap::new();
        let holder = ("team-b".to_owned(), "web-01".to_owned());
        let cluster = ClusterFacts {
            macs: Some(BTreeMap::from([("00:50:56:aa:bb:01".to_owned(), holder)])),
            ..ClusterFacts::default()
        };
        let context = Context {
            namespace: "team-a",
            network_vlans: &vlans,
            cluster: &cluster,
        };
        let with_mac = |mac: &str| VirtualMachineSpec {
            nics: vec![Nic {
                mac_address: Some(mac.to_owned()),
                ..nic(Some("VM Network"))
            }],
            ..vm_on(&[])
        };
        let found = concerns(&with_mac("00:50:56:AA:BB:01"), &context);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].reason, "MacAddressInUse");
        assert!(
            found[0].message.contains("team-b/web-01"),
            "{}",
            found[0].message
        );
        assert!(concerns(&with_mac("00:50:56:aa:bb:02"), &context).is_empty());
    }
}
