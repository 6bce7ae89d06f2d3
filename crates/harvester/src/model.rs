//! KubeVirt VirtualMachines, the claims of their volumes and Multus
//! NetworkAttachmentDefinitions as a remote Harvester serves them (only the
//! fields the provider reads), and how they become inventory specs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::core::{ApiResource, DynamicObject};
use serde::Deserialize;
use serde_json::Value;
use vmm_api::inventory::{
    Disk, Firmware, NetworkKind, NetworkSpec, Nic, PowerState, VirtualMachineSpec,
};
use vmm_api::quantity::milli_units;

const MIB: i128 = 1 << 20;

pub(crate) fn virtual_machines() -> ApiResource {
    crate::resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}

pub(crate) fn virtual_machine_instances() -> ApiResource {
    crate::resource(
        "kubevirt.io",
        "v1",
        "VirtualMachineInstance",
        "virtualmachineinstances",
    )
}

pub(crate) fn virtual_machine_exports() -> ApiResource {
    crate::resource(
        "export.kubevirt.io",
        "v1beta1",
        "VirtualMachineExport",
        "virtualmachineexports",
    )
}

pub(crate) fn network_attachment_definitions() -> ApiResource {
    crate::resource(
        "k8s.cni.cncf.io",
        "v1",
        "NetworkAttachmentDefinition",
        "network-attachment-definitions",
    )
}

/// A VirtualMachine's spec and status, as far as they are read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VmObject {
    pub spec: VmSpec,
    pub status: VmStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VmSpec {
    pub template: Template,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Template {
    pub spec: TemplateSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TemplateSpec {
    pub domain: Domain,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Domain {
    pub cpu: Cpu,
    pub memory: Memory,
    pub resources: Resources,
    pub firmware: Option<DomainFirmware>,
    pub devices: Devices,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Cpu {
    pub sockets: Option<i32>,
    pub cores: Option<i32>,
    pub threads: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Memory {
    pub guest: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Resources {
    pub requests: BTreeMap<String, Value>,
    pub limits: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DomainFirmware {
    pub uuid: Option<String>,
    pub bootloader: Option<Bootloader>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Bootloader {
    pub efi: Option<Efi>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Efi {
    /// KubeVirt turns Secure Boot on when an EFI VM does not say.
    pub secure_boot: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Devices {
    pub disks: Vec<DiskDevice>,
    pub interfaces: Vec<Interface>,
    pub gpus: Vec<HostDevice>,
    pub host_devices: Vec<HostDevice>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HostDevice {
    pub device_name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DiskDevice {
    pub name: String,
    pub disk: Option<Bus>,
    pub cdrom: Option<Bus>,
    pub lun: Option<Bus>,
    pub boot_order: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Bus {
    pub bus: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Interface {
    pub name: String,
    pub mac_address: Option<String>,
    pub model: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Network {
    pub name: String,
    pub multus: Option<Multus>,
    pub pod: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Multus {
    pub network_name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Volume {
    pub name: String,
    pub persistent_volume_claim: Option<ClaimRef>,
    pub data_volume: Option<DataVolumeRef>,
    pub container_disk: Option<ContainerDisk>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ClaimRef {
    pub claim_name: String,
    pub hotpluggable: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DataVolumeRef {
    pub name: String,
    pub hotpluggable: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ContainerDisk {
    pub image: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct VmStatus {
    pub printable_status: Option<String>,
    pub snapshot_in_progress: Option<String>,
}

/// A VirtualMachine: its namespace, name and what is read of it.
#[derive(Clone, Debug)]
pub(crate) struct Vm {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub object: VmObject,
}

impl Vm {
    /// Reads a watched object; `None` when it is not a VirtualMachine as
    /// KubeVirt writes them (logged).
    pub fn from_dynamic(object: &DynamicObject) -> Option<Vm> {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        match serde_json::from_value::<VmObject>(object.data.clone()) {
            Ok(vm) => Some(Vm {
                namespace,
                name,
                labels: object.metadata.labels.clone().unwrap_or_default(),
                object: vm,
            }),
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "a VirtualMachine that cannot be read is left out");
                None
            }
        }
    }

    /// `namespace/name`: the VM's id in the inventory.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The VM's spec, its disks' sizes and classes from `claims` (the
    /// namespace's PersistentVolumeClaims by name).
    pub fn spec(&self, claims: &BTreeMap<String, PersistentVolumeClaim>) -> VirtualMachineSpec {
        let template = &self.object.spec.template.spec;
        let domain = &template.domain;
        let cpu = &domain.cpu;
        let (sockets, cores, threads) = (
            cpu.sockets.unwrap_or(1).max(1),
            cpu.cores.unwrap_or(1).max(1),
            cpu.threads.unwrap_or(1).max(1),
        );
        let efi = domain
            .firmware
            .as_ref()
            .and_then(|f| f.bootloader.as_ref())
            .and_then(|b| b.efi.as_ref());
        VirtualMachineSpec {
            id: self.id(),
            display_name: self.name.clone(),
            path: Some(self.id()),
            uuid: domain.firmware.as_ref().and_then(|f| f.uuid.clone()),
            power_state: power_state(self.object.status.printable_status.as_deref()),
            cpus: sockets * cores * threads,
            cores_per_socket: Some(cores),
            threads_per_core: Some(threads),
            memory_mib: memory_mib(domain),
            firmware: if efi.is_some() {
                Firmware::Efi
            } else {
                Firmware::Bios
            },
            secure_boot: efi.is_some_and(|efi| efi.secure_boot.unwrap_or(true)),
            disks: self.disks(claims),
            nics: self.nics(),
            snapshot_in_progress: self.object.status.snapshot_in_progress.clone(),
            host_devices: domain
                .devices
                .gpus
                .iter()
                .chain(&domain.devices.host_devices)
                .map(|d| d.device_name.clone())
                .collect(),
            labels: self.labels.clone(),
            ..VirtualMachineSpec::default()
        }
    }

    /// The disks backed by volume claims (or container images), boot order
    /// first (then as declared); cloud-init and other generated volumes are
    /// not disks to import.
    fn disks(&self, claims: &BTreeMap<String, PersistentVolumeClaim>) -> Vec<Disk> {
        let template = &self.object.spec.template.spec;
        let mut disks: Vec<(u32, Disk)> = Vec::new();
        for device in &template.domain.devices.disks {
            let Some(volume) = template.volumes.iter().find(|v| v.name == device.name) else {
                continue;
            };
            let bus = [&device.disk, &device.cdrom, &device.lun]
                .into_iter()
                .flatten()
                .find_map(|b| b.bus.clone())
                .unwrap_or_else(|| "virtio".to_owned());
            let disk = Disk {
                name: device.name.clone(),
                controller: Some(bus),
                bootable: device.boot_order.map(|_| true),
                ..Disk::default()
            };
            let disk = match (
                &volume.persistent_volume_claim,
                &volume.data_volume,
                &volume.container_disk,
            ) {
                (Some(claim), _, _) => claim_disk(
                    disk,
                    claims.get(&claim.claim_name),
                    &claim.claim_name,
                    claim.hotpluggable,
                ),
                (None, Some(dv), _) => {
                    claim_disk(disk, claims.get(&dv.name), &dv.name, dv.hotpluggable)
                }
                (None, None, Some(container)) => Disk {
                    container_image: Some(container.image.clone()),
                    ..disk
                },
                (None, None, None) => continue,
            };
            disks.push((device.boot_order.unwrap_or(u32::MAX), disk));
        }
        disks.sort_by_key(|(order, _)| *order);
        disks.into_iter().map(|(_, disk)| disk).collect()
    }

    /// The interfaces, each on its network: a NAD as `namespace/name`, or
    /// none for the pod network (which an import maps like any unnamed one).
    fn nics(&self) -> Vec<Nic> {
        let template = &self.object.spec.template.spec;
        template
            .domain
            .devices
            .interfaces
            .iter()
            .map(|interface| {
                let network = template.networks.iter().find(|n| n.name == interface.name);
                Nic {
                    name: interface.name.clone(),
                    network: network
                        .and_then(|n| n.multus.as_ref())
                        .map(|m| qualified(&self.namespace, &m.network_name)),
                    pod_network: network.is_some_and(|n| n.pod.is_some()),
                    mac_address: interface.mac_address.clone(),
                    model: Some(
                        interface
                            .model
                            .clone()
                            .unwrap_or_else(|| "virtio".to_owned()),
                    ),
                    ip_addresses: Vec::new(),
                }
            })
            .collect()
    }
}

/// A disk on the claim `name` (`None` while the claim is not seen), sized
/// and classed from it.
fn claim_disk(
    disk: Disk,
    claim: Option<&PersistentVolumeClaim>,
    name: &str,
    hotplugged: bool,
) -> Disk {
    Disk {
        capacity_bytes: claim.map_or(0, claim_bytes),
        datastore: claim
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.storage_class_name.clone()),
        file: Some(name.to_owned()),
        hotplugged,
        ..disk
    }
}

/// A NAD's network: `namespace/name`, with the VLAN and bridge of
/// Harvester's bridge CNI configuration where it has them.
pub(crate) fn network(object: &DynamicObject) -> NetworkSpec {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let config: Value = object.data["spec"]["config"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let id = format!("{namespace}/{name}");
    NetworkSpec {
        id: id.clone(),
        display_name: id,
        kind: NetworkKind::NetworkAttachmentDefinition,
        vlan: config["vlan"]
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .filter(|v| *v > 0),
        switch: config["bridge"].as_str().map(str::to_owned),
        ..NetworkSpec::default()
    }
}

/// A Multus network name as `namespace/name` (a bare name is in the VM's
/// namespace).
fn qualified(namespace: &str, network_name: &str) -> String {
    if network_name.contains('/') {
        network_name.to_owned()
    } else {
        format!("{namespace}/{network_name}")
    }
}

fn power_state(printable: Option<&str>) -> PowerState {
    match printable {
        Some("Running" | "Migrating") => PowerState::On,
        Some("Stopped") => PowerState::Off,
        Some("Paused") => PowerState::Suspended,
        _ => PowerState::Unknown,
    }
}

/// The guest's memory: `memory.guest`, else the memory request (or limit).
fn memory_mib(domain: &Domain) -> i64 {
    let request = |map: &BTreeMap<String, Value>| {
        map.get("memory")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    domain
        .memory
        .guest
        .clone()
        .or_else(|| request(&domain.resources.requests))
        .or_else(|| request(&domain.resources.limits))
        .and_then(|text| milli_units(&text))
        .map_or(0, |milli| i64::try_from(milli / 1000 / MIB).unwrap_or(0))
}

/// A claim's size: what is provisioned, else what was asked for.
fn claim_bytes(claim: &PersistentVolumeClaim) -> i64 {
    let provisioned = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let requested = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    provisioned
        .or(requested)
        .and_then(|q| milli_units(&q.0))
        .map_or(0, |milli| i64::try_from(milli / 1000).unwrap_or(0))
}
