//! The virtual disks of a VM as the importer needs them: device keys, bus
//! and unit numbers (to match export URLs), backing files and formats (to
//! know whether the datastore fallback can read them).

use std::collections::HashMap;

use vim_rs::types::boxed_types::ValueElements;
use vim_rs::types::convert::CastInto;
use vim_rs::types::structs::{
    VirtualDisk, VirtualDiskFlatVer1BackingInfo, VirtualDiskFlatVer2BackingInfo,
    VirtualDiskRawDiskMappingVer1BackingInfo, VirtualDiskSeSparseBackingInfo,
    VirtualDiskSparseVer1BackingInfo, VirtualDiskSparseVer2BackingInfo,
};
use vim_rs::types::traits::{
    VirtualControllerTrait, VirtualDeviceBackingInfoTrait, VirtualDeviceFileBackingInfoTrait,
    VirtualDeviceTrait,
};
use vim_rs::types::vim_any::VimAny;

use super::model::controller_kind;

/// One virtual disk of a VM, as the importer needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskDetails {
    /// The device key (unique within the VM), e.g. `2000`: what an
    /// [`ExportDisk`](super::ExportDisk) names as its `device_key`.
    pub key: i32,
    /// e.g. `Hard disk 1`.
    pub label: String,
    pub controller_key: Option<i32>,
    /// The bus kind: `pvscsi`, `lsilogic`, `lsilogic-sas`, `buslogic`, `ide`,
    /// `sata`, `nvme`.
    pub controller: Option<String>,
    /// The controller's vSphere type, e.g. `ParaVirtualSCSIController`, as
    /// export device keys name it (`/vm-42/ParaVirtualSCSIController0:1`).
    pub controller_type: Option<String>,
    /// The controller's bus number.
    pub bus_number: Option<i32>,
    /// The disk's unit on its controller.
    pub unit_number: Option<i32>,
    pub capacity_bytes: i64,
    /// The descriptor, `[ds] dir/file.vmdk`.
    pub file: Option<String>,
    /// The data file of a flat disk without snapshots,
    /// `[ds] dir/file-flat.vmdk`: raw bytes, readable through the datastore
    /// endpoint when export is not available.
    pub flat_file: Option<String>,
    /// The datastore's name.
    pub datastore: Option<String>,
    /// Inventory path of the datacenter, e.g. `/DC0`.
    pub datacenter_path: Option<String>,
    pub backing: DiskBacking,
    /// The backing is a delta (the VM has snapshots): the data is the chain.
    pub delta: bool,
    pub thin: bool,
    /// Independent disks are not in snapshots.
    pub independent: bool,
}

/// How a virtual disk is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskBacking {
    /// A descriptor plus a raw `-flat.vmdk` (VMFS, NFS).
    Flat,
    /// Hosted sparse formats (`SparseVer1/2`), or a delta of them.
    Sparse,
    /// Space-efficient sparse (`SeSparse`), usually a snapshot delta.
    SeSparse,
    /// A raw device mapping: a LUN, not a file.
    RawDevice,
    /// Another backing type (vSAN objects, vVols, persistent memory, ...),
    /// by its vSphere type name.
    Other(String),
}

/// `[LocalDS_0] vm/vm.vmdk` → `LocalDS_0`.
pub(crate) fn datastore_of_file(file: &str) -> Option<String> {
    vmm_wire::vsphere::split_datastore_path(file).map(|(ds, _)| ds.to_owned())
}

/// The disks in a `config.hardware.device` value (datastore as its ref).
pub(crate) fn disk_facts(val: &VimAny) -> Vec<DiskDetails> {
    let VimAny::Value(ValueElements::ArrayOfVirtualDevice(devices)) = val else {
        return Vec::new();
    };
    let controllers: HashMap<i32, (String, i32)> = devices
        .iter()
        .filter_map(|d| {
            let d: &dyn VirtualDeviceTrait = d.as_ref();
            let c: Option<&dyn VirtualControllerTrait> = d.into_ref();
            Some((
                d.get_virtual_device().key,
                (
                    d.data_type().as_str().to_owned(),
                    c?.get_virtual_controller().bus_number,
                ),
            ))
        })
        .collect();
    devices
        .iter()
        .filter_map(|d| {
            let d: &dyn VirtualDeviceTrait = d.as_ref();
            let disk = d.as_any_ref().downcast_ref::<VirtualDisk>()?;
            let dev = d.get_virtual_device();
            let controller = dev.controller_key.and_then(|k| controllers.get(&k));
            let mut details = DiskDetails {
                key: dev.key,
                label: dev
                    .device_info
                    .as_ref()
                    .map(|i| i.get_description().label.clone())
                    .unwrap_or_default(),
                controller_key: dev.controller_key,
                controller: controller
                    .and_then(|(t, _)| controller_kind(t))
                    .map(str::to_owned),
                controller_type: controller.map(|(t, _)| t.clone()),
                bus_number: controller.map(|(_, bus)| *bus),
                unit_number: dev.unit_number,
                capacity_bytes: disk
                    .capacity_in_bytes
                    .unwrap_or(disk.capacity_in_kb.saturating_mul(1024)),
                file: None,
                flat_file: None,
                datastore: None,
                datacenter_path: None,
                backing: DiskBacking::Other(String::new()),
                delta: false,
                thin: false,
                independent: false,
            };
            if let Some(b) = disk.backing.as_deref() {
                describe_backing(b, &mut details);
            }
            Some(details)
        })
        .collect()
}

fn describe_backing(b: &(dyn VirtualDeviceBackingInfoTrait + 'static), d: &mut DiskDetails) {
    let file: Option<&dyn VirtualDeviceFileBackingInfoTrait> = b.into_ref();
    if let Some(f) = file {
        let f = f.get_virtual_device_file_backing_info();
        d.file = Some(f.file_name.clone()).filter(|n| !n.is_empty());
        d.datastore = f.datastore.as_ref().map(|r| r.value.clone());
    }
    let any = b.as_any_ref();
    let mode: Option<&str>;
    if let Some(x) = any.downcast_ref::<VirtualDiskFlatVer2BackingInfo>() {
        d.backing = DiskBacking::Flat;
        d.delta = x.parent.is_some();
        d.thin = x.thin_provisioned == Some(true);
        mode = Some(&x.disk_mode);
    } else if let Some(x) = any.downcast_ref::<VirtualDiskFlatVer1BackingInfo>() {
        d.backing = DiskBacking::Flat;
        d.delta = x.parent.is_some();
        mode = Some(&x.disk_mode);
    } else if let Some(x) = any.downcast_ref::<VirtualDiskSeSparseBackingInfo>() {
        d.backing = DiskBacking::SeSparse;
        d.delta = x.parent.is_some();
        mode = Some(&x.disk_mode);
    } else if let Some(x) = any.downcast_ref::<VirtualDiskSparseVer2BackingInfo>() {
        d.backing = DiskBacking::Sparse;
        d.delta = x.parent.is_some();
        mode = Some(&x.disk_mode);
    } else if let Some(x) = any.downcast_ref::<VirtualDiskSparseVer1BackingInfo>() {
        d.backing = DiskBacking::Sparse;
        d.delta = x.parent.is_some();
        mode = Some(&x.disk_mode);
    } else if let Some(x) = any.downcast_ref::<VirtualDiskRawDiskMappingVer1BackingInfo>() {
        d.backing = DiskBacking::RawDevice;
        d.delta = x.parent.is_some();
        mode = x.disk_mode.as_deref();
    } else {
        d.backing = DiskBacking::Other(b.data_type().as_str().to_owned());
        mode = None;
    }
    d.independent = mode.is_some_and(|m| m.starts_with("independent"));
    if d.backing == DiskBacking::Flat && !d.delta {
        d.flat_file = d.file.as_deref().and_then(flat_file_of);
    }
}

/// `[ds] dir/web.vmdk` → `[ds] dir/web-flat.vmdk`.
fn flat_file_of(descriptor: &str) -> Option<String> {
    let stem = descriptor.strip_suffix(".vmdk")?;
    Some(format!("{stem}-flat.vmdk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_files() {
        assert_eq!(
            flat_file_of("[ds] a b/a b_1.vmdk").as_deref(),
            Some("[ds] a b/a b_1-flat.vmdk")
        );
        assert_eq!(flat_file_of("[ds] a/raw.img"), None);
        assert_eq!(
            datastore_of_file("[ds 1] a/b.vmdk").as_deref(),
            Some("ds 1")
        );
    }
}
