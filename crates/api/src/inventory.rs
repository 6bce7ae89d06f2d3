//! Inventory: `inventory.harvesterhci.io/v1`, served read-only by the aggregated
//! apiserver. Providers describe what a source holds with these specs; the
//! apiserver wraps them into API objects with names, labels and versions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
    /// The source this VM is read from; set by the apiserver, not by providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceReference>,
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
    /// Virtual CPUs in all (sockets × cores per socket × threads per core).
    pub cpus: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_per_socket: Option<i32>,
    /// Hardware threads per core, where the source sets them (KubeVirt's
    /// `cpu.threads`); one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_per_core: Option<i32>,
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
    /// The availability zone the VM runs in (OpenStack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The flavor or instance type the VM was sized from (OpenStack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Why the source says the VM is broken, when it does (an OpenStack
    /// server in `ERROR`, with Nova's fault message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// How many snapshots the VM has.
    #[serde(default)]
    pub snapshots: i32,
    /// The snapshot being taken now, where the source says (KubeVirt's
    /// `status.snapshotInProgress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_in_progress: Option<String>,
    /// Host devices and GPUs passed through to the VM, by device name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_devices: Vec<String>,
    /// The labels the VM carries at its source (a KubeVirt VM's own
    /// labels), so a relabelling there shows here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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
    /// The disk can be attached to several VMs at once (a multi-attach
    /// volume): other VMs may write to it during an import.
    #[serde(default)]
    pub shared: bool,
    /// Whether the disk can boot the VM, where the source says (a Cinder
    /// volume's `bootable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootable: Option<bool>,
    /// Set for a disk on the compute node rather than a volume (OpenStack):
    /// which of the flavor's disks it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalDisk>,
    /// Attached to the running VM after it started (a KubeVirt hot-plugged
    /// volume).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hotplugged: bool,
    /// The container image the disk is made from at each start (a KubeVirt
    /// container disk): nothing to export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
}

/// A disk of an OpenStack server that lives on its compute node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LocalDisk {
    /// The root disk of a server booted from an image.
    Root,
    Ephemeral,
    Swap,
}

impl std::fmt::Display for LocalDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Root => "root",
            Self::Ephemeral => "ephemeral",
            Self::Swap => "swap",
        })
    }
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
    /// The NIC's IP addresses as the source knows them (a Neutron port's
    /// fixed IPs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// On the pod network (KubeVirt's masquerade or bridge to the pod),
    /// which has no name to map and gives the VM an address of the pod's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_network: bool,
}

/// A network as its source describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The source this network is read from; set by the apiserver, not by providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceReference>,
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

/// Labels every inventory object carries, for `kubectl get -l`.
pub const SOURCE_KIND_LABEL: &str = "inventory.harvesterhci.io/source-kind";
pub const SOURCE_NAME_LABEL: &str = "inventory.harvesterhci.io/source";

/// `virtualmachines.inventory.harvesterhci.io`: a VM at a source, read-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: VirtualMachineSpec,
    #[serde(default)]
    pub status: VirtualMachineStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// Why importing this VM as it is would fail or lose something.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concerns: Vec<Concern>,
}

/// One reason an import of the VM would fail or lose something, with what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Concern {
    /// CamelCase, e.g. `HasSnapshots`.
    pub reason: String,
    pub message: String,
}

/// `networks.inventory.harvesterhci.io`: a network at a source, read-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: NetworkSpec,
}

/// Makes an inventory type usable with kube's typed `Api`, like a built-in.
macro_rules! inventory_resource {
    ($type:ty, $names:expr) => {
        impl k8s_openapi::Resource for $type {
            const API_VERSION: &'static str = API_VERSION;
            const GROUP: &'static str = GROUP;
            const KIND: &'static str = $names.kind;
            const VERSION: &'static str = VERSION;
            const URL_PATH_SEGMENT: &'static str = $names.plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::ListableResource for $type {
            const LIST_KIND: &'static str = concat!(stringify!($type), "List");
        }

        impl k8s_openapi::Metadata for $type {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

inventory_resource!(VirtualMachine, VIRTUAL_MACHINES);
inventory_resource!(Network, NETWORKS);
