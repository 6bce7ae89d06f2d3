//! A VM as an import sees it: what the inventory shows of it, and for each
//! disk the provider's key (to find the disk's file in an export) and
//! whether the provider can export it at all.

use vmm_api::importjob::DiskBus;
use vmm_api::inventory::VirtualMachineSpec;

/// A VM at its source, found for an import.
#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    /// The inventory spec: id, path, power state, CPUs, memory, firmware,
    /// disks and NICs. The KubeVirt VM is built from it.
    pub spec: VirtualMachineSpec,
    /// The disks, in the order of `spec.disks` (the first one boots).
    pub disks: Vec<VmDisk>,
    /// The SMBIOS system UUID the guest sees, where the source sets one the
    /// new VM can keep (a KubeVirt VM's `firmware.uuid`): licences and
    /// guests that key on it see the same machine.
    pub firmware_uuid: Option<String>,
}

/// One disk of a [`Vm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDisk {
    /// The provider's key of the disk: opaque outside the provider, kept in
    /// the job's status (`disks[].sourceKey`) and given back to
    /// [`Export::disk`](crate::Export::disk) to find the disk's file.
    pub key: String,
    /// The disk's name at the source, e.g. `Hard disk 1`.
    pub label: String,
    pub capacity_bytes: i64,
    /// Why the provider cannot export this disk, phrased as what to change
    /// at the source; `None` when it can.
    pub unsupported: Option<String>,
    /// The bus the disk keeps on the new VM, where the source has one of
    /// KubeVirt's (a KubeVirt VM's disks: its guest has the drivers);
    /// `None` takes the job's `defaultDiskBus`.
    pub bus: Option<DiskBus>,
}
