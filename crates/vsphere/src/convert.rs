//! vim_rs values (as the SOAP transport parses them) → the plain [`Value`]s of
//! the replica. Unknown shapes become [`Value::Other`] rather than errors:
//! vcsim and real vCenters differ in what they fill in.

use std::collections::HashMap;

use vim_rs::types::boxed_types::ValueElements;
use vim_rs::types::convert::CastInto;
use vim_rs::types::enums::VirtualMachinePowerStateEnum;
use vim_rs::types::structs::{
    ManagedObjectReference, OpaqueNetworkSummary, VMwareDvsPortSetting, VirtualDisk,
    VirtualDiskFlatVer1BackingInfo, VirtualDiskFlatVer2BackingInfo,
    VirtualDiskRawDiskMappingVer1BackingInfo, VirtualDiskSeSparseBackingInfo,
    VirtualDiskSparseVer1BackingInfo, VirtualDiskSparseVer2BackingInfo,
    VirtualEthernetCardDistributedVirtualPortBackingInfo, VirtualEthernetCardNetworkBackingInfo,
    VirtualEthernetCardOpaqueNetworkBackingInfo, VirtualMachineSnapshotInfo,
    VirtualMachineSnapshotTree, VmwareDistributedVirtualSwitchVlanIdSpec,
};
use vim_rs::types::traits::{
    VirtualDeviceBackingInfoTrait, VirtualDeviceFileBackingInfoTrait, VirtualDeviceTrait,
    VirtualEthernetCardTrait,
};
use vim_rs::types::vim_any::VimAny;
use vmm_api::inventory::PowerState;

use super::model::{Device, NicBacking, Value, controller_kind, nic_model};

/// Converts the value of `path`.
pub(crate) fn value(path: &str, val: VimAny) -> Value {
    match val {
        VimAny::Value(v) => from_elements(path, v),
        VimAny::Object(obj) => {
            let any = obj.as_any_box();
            let any = match any.downcast::<ManagedObjectReference>() {
                Ok(r) => return Value::Ref(r.value),
                Err(any) => any,
            };
            let any = match any.downcast::<VirtualMachineSnapshotInfo>() {
                Ok(info) => return Value::SnapshotCount(count_snapshots(&info.root_snapshot_list)),
                Err(any) => any,
            };
            let any = match any.downcast::<VMwareDvsPortSetting>() {
                Ok(setting) => {
                    let vlan = setting
                        .vlan
                        .as_ref()
                        .and_then(|v| {
                            v.as_any_ref()
                                .downcast_ref::<VmwareDistributedVirtualSwitchVlanIdSpec>()
                        })
                        .map(|v| v.vlan_id)
                        .filter(|id| *id != 0);
                    return Value::Vlan(vlan);
                }
                Err(any) => any,
            };
            match any.downcast::<OpaqueNetworkSummary>() {
                Ok(summary) => Value::OpaqueId(summary.opaque_network_id.clone()),
                Err(_) => Value::Other,
            }
        }
    }
}

fn from_elements(path: &str, v: ValueElements) -> Value {
    match v {
        ValueElements::PrimitiveString(s) => Value::Text(s),
        ValueElements::PrimitiveInt(i) => Value::Int(i.into()),
        ValueElements::PrimitiveLong(i) => Value::Int(i),
        ValueElements::PrimitiveShort(i) => Value::Int(i.into()),
        ValueElements::PrimitiveBoolean(b) => Value::Bool(b),
        ValueElements::VirtualMachinePowerState(p) => Value::Power(power(&p)),
        ValueElements::ArrayOfTag(tags) => Value::Tags(tags.into_iter().map(|t| t.key).collect()),
        ValueElements::ArrayOfVirtualDevice(devices) => {
            let controllers: HashMap<i32, &'static str> = devices
                .iter()
                .filter_map(|d| {
                    let kind = controller_kind(d.data_type().as_str())?;
                    Some((d.get_virtual_device().key, kind))
                })
                .collect();
            Value::Devices(
                devices
                    .iter()
                    .filter_map(|d| device(d.as_ref(), &controllers))
                    .collect(),
            )
        }
        other => {
            tracing::debug!(path, value_type = other.as_str(), "property value not read");
            Value::Other
        }
    }
}

fn power(p: &VirtualMachinePowerStateEnum) -> PowerState {
    match p {
        VirtualMachinePowerStateEnum::PoweredOn => PowerState::On,
        VirtualMachinePowerStateEnum::PoweredOff => PowerState::Off,
        VirtualMachinePowerStateEnum::Suspended => PowerState::Suspended,
        VirtualMachinePowerStateEnum::Other_(_) => PowerState::Unknown,
    }
}

fn count_snapshots(trees: &[VirtualMachineSnapshotTree]) -> i32 {
    trees
        .iter()
        .map(|t| 1 + t.child_snapshot_list.as_deref().map_or(0, count_snapshots))
        .sum()
}

fn label(dev: &dyn VirtualDeviceTrait) -> String {
    dev.get_virtual_device()
        .device_info
        .as_ref()
        .map(|d| d.get_description().label.clone())
        .unwrap_or_default()
}

/// The device, if it is one the mapping reads: a disk (with the kind of its
/// controller, by key among `controllers`) or a NIC.
fn device(
    dev: &(dyn VirtualDeviceTrait + 'static),
    controllers: &HashMap<i32, &'static str>,
) -> Option<Device> {
    let type_name = dev.data_type().as_str();
    if let Some(disk) = dev.as_any_ref().downcast_ref::<VirtualDisk>() {
        let (file, datastore, raw_device, independent) = match disk.backing.as_deref() {
            Some(b) => disk_backing(b),
            None => (None, None, false, false),
        };
        return Some(Device::Disk {
            label: label(dev),
            capacity_bytes: disk
                .capacity_in_bytes
                .unwrap_or(disk.capacity_in_kb.saturating_mul(1024)),
            controller: disk
                .controller_key
                .and_then(|key| controllers.get(&key).copied()),
            file,
            datastore,
            raw_device,
            independent,
        });
    }
    let eth: Option<&dyn VirtualEthernetCardTrait> = dev.into_ref();
    if let Some(eth) = eth {
        let card = eth.get_virtual_ethernet_card();
        return Some(Device::Nic {
            label: label(dev),
            model: nic_model(type_name),
            mac: card.mac_address.clone().filter(|m| !m.is_empty()),
            backing: card
                .backing
                .as_deref()
                .map(nic_backing)
                .unwrap_or(NicBacking::Unknown),
        });
    }
    None
}

/// (file, datastore ref, raw device mapping, independent)
fn disk_backing(
    b: &(dyn VirtualDeviceBackingInfoTrait + 'static),
) -> (Option<String>, Option<String>, bool, bool) {
    let file: Option<&dyn VirtualDeviceFileBackingInfoTrait> = b.into_ref();
    let (file_name, datastore) = match file {
        Some(f) => {
            let f = f.get_virtual_device_file_backing_info();
            (
                Some(f.file_name.clone()).filter(|n| !n.is_empty()),
                f.datastore.as_ref().map(|d| d.value.clone()),
            )
        }
        None => (None, None),
    };
    let any = b.as_any_ref();
    let (raw, mode): (bool, Option<&str>) =
        if let Some(x) = any.downcast_ref::<VirtualDiskRawDiskMappingVer1BackingInfo>() {
            (true, x.disk_mode.as_deref())
        } else if let Some(x) = any.downcast_ref::<VirtualDiskFlatVer2BackingInfo>() {
            (false, Some(&x.disk_mode))
        } else if let Some(x) = any.downcast_ref::<VirtualDiskSeSparseBackingInfo>() {
            (false, Some(&x.disk_mode))
        } else if let Some(x) = any.downcast_ref::<VirtualDiskSparseVer2BackingInfo>() {
            (false, Some(&x.disk_mode))
        } else if let Some(x) = any.downcast_ref::<VirtualDiskFlatVer1BackingInfo>() {
            (false, Some(&x.disk_mode))
        } else if let Some(x) = any.downcast_ref::<VirtualDiskSparseVer1BackingInfo>() {
            (false, Some(&x.disk_mode))
        } else {
            (false, None)
        };
    let independent = mode.is_some_and(|m| m.starts_with("independent"));
    (file_name, datastore, raw, independent)
}

fn nic_backing(b: &(dyn VirtualDeviceBackingInfoTrait + 'static)) -> NicBacking {
    let any = b.as_any_ref();
    if let Some(n) = any.downcast_ref::<VirtualEthernetCardNetworkBackingInfo>() {
        return NicBacking::Network {
            network: n.network.as_ref().map(|r| r.value.clone()),
            device_name: n.device_name.clone(),
        };
    }
    if let Some(d) = any.downcast_ref::<VirtualEthernetCardDistributedVirtualPortBackingInfo>() {
        return NicBacking::Distributed {
            portgroup_key: d.port.portgroup_key.clone(),
        };
    }
    if let Some(o) = any.downcast_ref::<VirtualEthernetCardOpaqueNetworkBackingInfo>() {
        return NicBacking::Opaque {
            id: o.opaque_network_id.clone(),
        };
    }
    NicBacking::Unknown
}
