//! Import jobs: `importjob.harvesterhci.io/v1`, kind `VirtualMachine`, one per VM
//! to move. Called [`ImportJob`] in Rust so it never reads as KubeVirt's VM.
//!
//! The plural is `importjobs`, never `virtualmachines`: CRD groups of equal
//! priority are ordered by name, so `importjob.harvesterhci.io` would win
//! `kubectl get virtualmachines` over `kubevirt.io` on a Harvester cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::source::SourceKind;

pub const GROUP: &str = "importjob.harvesterhci.io";
/// Label on everything a job creates (images, the VM): which job, in the
/// same namespace. Users select a job's images with it.
pub const JOB_LABEL: &str = "importjob.harvesterhci.io/job";

/// The regular expression a Kubernetes object name (DNS-1123 label) must match.
const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Import one VM from a source into Harvester.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "importjob.harvesterhci.io",
    version = "v1",
    kind = "VirtualMachine",
    root = "ImportJob",
    plural = "importjobs",
    singular = "importjob",
    shortname = "ij",
    namespaced,
    status = "ImportJobStatus",
    category = "migration",
    derive = "PartialEq",
    doc = "Imports one virtual machine from a source (vSphere, OpenStack, Harvester) into this Harvester cluster.",
    selectable = ".spec.sourceCluster.name",
    selectable = ".status.phase",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.sourceCluster.name",
        priority = 1
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.targetName",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Source VM",
        type_ = "string",
        json_path = ".spec.vmName",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("an import job cannot be changed once created: delete it and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct ImportJobSpec {
    /// The source to import from, in the job's own namespace.
    pub source_cluster: SourceRef,

    /// The VM's name as the source shows it. Spaces, dots and any Unicode are fine.
    #[schemars(length(min = 1, max = 1024))]
    pub vm_name: String,

    /// Folder or inventory path of the VM, e.g. `/DC1/vm/prod`, when its name alone
    /// is not unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,

    /// Name of the Harvester VM to create. Defaults to the source VM's name made
    /// into a valid object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS1123_LABEL}')"))
        .message("must be a lowercase DNS-1123 label: a-z, 0-9 and '-', starting and ending with a letter or digit"))]
    pub target_name: Option<String>,

    /// Where each source network goes. Every network a NIC of the VM uses must be
    /// mapped, or preflight fails before the source VM is touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["sourceNetwork".into()]))]
    pub mapping: Vec<NetworkMapping>,

    /// Storage class of the imported disks; the default image storage class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class: Option<String>,

    /// Start the Harvester VM once it is created.
    #[serde(default = "default_true")]
    pub power_on: bool,

    /// How long to wait for the guest to shut down before giving up (or forcing
    /// the power off when `forcePowerOff` is set).
    #[serde(default = "default_shutdown_timeout")]
    #[schemars(range(min = 0, max = 86400))]
    pub graceful_shutdown_timeout_seconds: i32,

    /// Power the source VM off hard when the guest does not shut down in time.
    #[serde(default)]
    pub force_power_off: bool,

    /// NIC model for NICs whose source model has no KubeVirt equivalent.
    #[serde(default)]
    pub default_nic_model: NicModel,

    /// Bus for the imported disks whose source bus KubeVirt does not have
    /// (a Harvester source's disks keep their own).
    #[serde(default)]
    pub default_disk_bus: DiskBus,
}

fn default_true() -> bool {
    true
}

fn default_shutdown_timeout() -> i32 {
    300
}

/// Names a source object in the job's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct SourceRef {
    pub kind: SourceKind,
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')")
        .message("must be the name of a source in this namespace (lowercase DNS-1123 subdomain)"))]
    pub name: String,
}

/// One source network and the Harvester network (NetworkAttachmentDefinition)
/// its NICs join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkMapping {
    /// The network's name as the source shows it, e.g. `VM Network`.
    #[schemars(length(min = 1, max = 1024))]
    pub source_network: String,
    /// A NetworkAttachmentDefinition as `name` (in the job's namespace) or
    /// `namespace/name`.
    #[schemars(length(min = 1, max = 317))]
    #[x_kube(validation = Rule::new(format!("self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?{}')", &DNS1123_LABEL[1..]))
        .message("must name a NetworkAttachmentDefinition as name or namespace/name, in lowercase DNS-1123 form"))]
    pub destination_network: String,
    /// NIC model on this network, overriding the job's `defaultNicModel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_model: Option<NicModel>,
}

/// KubeVirt interface models Harvester offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    #[default]
    Virtio,
    E1000,
    E1000e,
    #[serde(rename = "ne2k_pci")]
    Ne2kPci,
    Pcnet,
    Rtl8139,
}

/// KubeVirt disk buses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Sata,
    Scsi,
}

/// Where a job is, in the order the pipeline runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImportPhase {
    #[default]
    Pending,
    Validating,
    PoweringOff,
    Exporting,
    Importing,
    #[serde(rename = "CreatingVM")]
    CreatingVm,
    Succeeded,
    Failed,
}

impl ImportPhase {
    pub const ALL: [ImportPhase; 8] = [
        Self::Pending,
        Self::Validating,
        Self::PoweringOff,
        Self::Exporting,
        Self::Importing,
        Self::CreatingVm,
        Self::Succeeded,
        Self::Failed,
    ];

    /// The phase as the API spells it (`CreatingVM`): also the `Ready`
    /// reason and the Event reason while a job is in it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Validating => "Validating",
            Self::PoweringOff => "PoweringOff",
            Self::Exporting => "Exporting",
            Self::Importing => "Importing",
            Self::CreatingVm => "CreatingVM",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Between admission and the end: the job holds a slot.
    pub fn is_running(self) -> bool {
        !matches!(self, Self::Pending | Self::Succeeded | Self::Failed)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ImportPhase>,
    /// Bytes done over bytes in all, for `kubectl get`: `3.2/10.0 GiB (32%)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The Harvester VM this job creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// `Ready` (the job finished) with the reason and message of a failure, and
    /// one condition per finished step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One entry per source disk, in the source's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskStatus>,
    /// The source VM, once preflight found it: later steps (and a restarted
    /// controller) act on exactly this VM, even if another one takes its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_vm: Option<SourceVm>,
    /// The export in progress at the source (on vSphere, the HttpNfcLease),
    /// so that it is always ended, even by a restarted controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
}

/// The source VM a job imports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceVm {
    /// The source's id of the VM (vSphere: its managed object id).
    pub id: String,
    /// Its inventory path at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether the job powered it off (it was on when the job found it).
    #[serde(default)]
    pub powered_off_by_job: bool,
    /// The host it ran on at the source (ESXi host, OpenStack compute host,
    /// remote Harvester node), where the source says: transfers per host
    /// are limited by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Progress of one disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    /// The disk's name at the source, e.g. `Hard disk 1`.
    pub name: String,
    pub capacity_bytes: i64,
    #[serde(default)]
    pub bytes_done: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// The source's key of the disk device (vSphere: the device key), to
    /// match the export's files to disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    /// The VirtualMachineImage holding this disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default)]
    pub phase: DiskPhase,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DiskPhase {
    #[default]
    Pending,
    /// Waits for a transfer slot (transfer mode `jobs`: docs/scale-out.md).
    Queued,
    Transferring,
    Imported,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_match_serde() {
        for phase in ImportPhase::ALL {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
    }
}
