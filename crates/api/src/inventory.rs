//! Inventory: `inventory.harvesterhci.io/v1`, served read-only by the aggregated
//! apiserver. Providers describe what a source holds with these specs; the
//! apiserver wraps them into API objects with names, labels and versions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::source::SourceKind;

pub const GROUP: &str = "inventory.harvesterhci.io";

/// Which source an inventory object comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct SourceReference {
    pub kind: SourceKind,
    pub name: String,
}

/// A VM as its source describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// The source's own id of the VM: the managed object id on vSphere (`vm-42`),
    /// the server id on OpenStack, `namespace/name` on Harvester. The object's
    /// name is derived from it, so it survives renames.
    pub id: String,
    /// The name the source shows: any text, spaces and Unicode included.
    pub display_name: String,
    /// Inventory path, e.g. `/DC0/vm/prod/Web 01` on vSphere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A second, globally unique id where the source has one (vSphere instance UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub power_state: PowerState,
    /// Virtual CPUs in all (sockets × cores per socket).
    pub cpus: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_per_socket: Option<i32>,
    /// Memory in MiB, exactly as the source sizes it.
    pub memory_mib: i64,
    pub firmware: Firmware,
    #[serde(default)]
    pub secure_boot: bool,
    /// The guest OS as the source names it (e.g. `ubuntu64Guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_os: Option<String>,
    /// The host (hypervisor or compute node) the VM runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// How many snapshots the VM has.
    #[serde(default)]
    pub snapshots: i32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PowerState {
    On,
    Off,
    Suspended,
    #[default]
    Unknown,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Firmware {
    #[default]
    #[serde(rename = "BIOS")]
    Bios,
    #[serde(rename = "EFI")]
    Efi,
}

/// One virtual disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// The disk's label at the source, e.g. `Hard disk 1`.
    pub name: String,
    pub capacity_bytes: i64,
    /// Where the disk lives: datastore, volume type or storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// The disk's file or volume id at the source, e.g. `[LocalDS_0] web/web.vmdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Controller type the disk hangs on, e.g. `pvscsi`, `lsilogic`, `ide`, `sata`, `nvme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// A raw device mapping: the data is a LUN, not a file that can be exported.
    #[serde(default)]
    pub raw_device: bool,
    /// An independent disk: snapshots (and so exports of snapshots) skip it.
    #[serde(default)]
    pub independent: bool,
}

/// One network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    /// The NIC's label at the source, e.g. `Network adapter 1`.
    pub name: String,
    /// The display name of the network the NIC is on: what an import job's
    /// `mapping[].sourceNetwork` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// The source's model, e.g. `vmxnet3`, `e1000e`, `virtio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A network as its source describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The source's own id of the network (`network-7`, `dvportgroup-12`, a Neutron id).
    pub id: String,
    pub display_name: String,
    pub kind: NetworkKind,
    /// VLAN id, when the network has exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<i32>,
    /// The virtual switch the network belongs to, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NetworkKind {
    /// A vSphere standard switch port group.
    StandardPortgroup,
    /// A vSphere distributed switch port group.
    DistributedPortgroup,
    /// A network managed outside vSphere (NSX).
    Opaque,
    /// An OpenStack Neutron network.
    Neutron,
    /// A Harvester NetworkAttachmentDefinition.
    NetworkAttachmentDefinition,
    #[default]
    Other,
}

pub const VERSION: &str = "v1";
pub const API_VERSION: &str = "inventory.harvesterhci.io/v1";

/// How a resource of the inventory API is named in discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceNames {
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    /// Never `vm` or `vmi`: those mean KubeVirt's objects on Harvester.
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
}

pub const VIRTUAL_MACHINES: ResourceNames = ResourceNames {
    plural: "virtualmachines",
    singular: "virtualmachine",
    kind: "VirtualMachine",
    short_names: &["ivm"],
    categories: &["inventory"],
};

pub const NETWORKS: ResourceNames = ResourceNames {
    plural: "networks",
    singular: "network",
    kind: "Network",
    short_names: &["inet"],
    categories: &["inventory"],
};

/// Every resource the inventory API serves.
pub const RESOURCES: [ResourceNames; 2] = [VIRTUAL_MACHINES, NETWORKS];
