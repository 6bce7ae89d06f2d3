//! The KubeVirt VirtualMachine an import job creates, the way Harvester's own UI
//! creates one (docs/harvester.md §2): one PVC per
//! imported image through the `harvesterhci.io/volumeClaimTemplates`
//! annotation, which Harvester's VM controller turns into PVCs; CPU topology
//! and memory exactly as the source has them (no vCPU multiplication, MiB not
//! MB: both bugs of today's importer); firmware (and its UUID where the
//! source has one to keep), disk buses where the source has KubeVirt's, NIC
//! models, MACs, and one Multus network per mapped source network. Pure: no
//! I/O.

use serde_json::{Value, json};
use vmm_api::importjob::{DiskBus, ImportJob, NicModel};
use vmm_api::inventory::Firmware;
use vmm_core::Vm;

pub use vmm_api::importjob::JOB_LABEL;
pub const VOLUME_CLAIM_TEMPLATES: &str = "harvesterhci.io/volumeClaimTemplates";
pub const IMAGE_ID: &str = "harvesterhci.io/imageId";

/// One imported disk, as its VirtualMachineImage reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedDisk {
    pub image_name: String,
    /// The image's `status.storageClassName` (never built from the name: it
    /// changed between Harvester versions).
    pub storage_class: String,
    /// The disk's size at the source; the PVC gets at least this.
    pub capacity_bytes: i64,
    /// The bus it keeps from the source; else the job's default.
    pub bus: Option<DiskBus>,
}

/// Why a VM cannot be built as asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{nic} is on source network {network:?}, which the job does not map: add it to spec.mapping"
    )]
    UnmappedNetwork { nic: String, network: String },
    #[error("{nic} is on no network the source can name, so it cannot be mapped")]
    NicWithoutNetwork { nic: String },
    #[error(
        "the source reports {cpus} vCPUs and {memory_mib} MiB of memory: nothing to size a VM by"
    )]
    NoResources { cpus: i32, memory_mib: i64 },
    #[error("{images} images for {disks} source disks")]
    DiskCountMismatch { images: usize, disks: usize },
}

/// The VM for `job`, named `name`, from the source VM and its imported disks
/// (in the source's disk order: the first one boots). Harvester's webhook
/// gives the guest the memory limit less `reserved_memory_mib`
/// ([`settings::reserved_memory_mib`](crate::import::preflight::settings::reserved_memory_mib)),
/// so the limit carries that reserve and the guest gets the source's memory.
pub fn virtual_machine(
    job: &ImportJob,
    name: &str,
    source_vm: &Vm,
    disks: &[ImportedDisk],
    reserved_memory_mib: i64,
) -> Result<Value, TargetError> {
    let source = &source_vm.spec;
    let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
    let job_name = job.metadata.name.as_deref().unwrap_or_default();
    if source.cpus < 1 || source.memory_mib < 1 {
        return Err(TargetError::NoResources {
            cpus: source.cpus,
            memory_mib: source.memory_mib,
        });
    }
    if disks.len() != source.disks.len() {
        return Err(TargetError::DiskCountMismatch {
            images: disks.len(),
            disks: source.disks.len(),
        });
    }

    let mut claim_templates = Vec::new();
    let mut disk_devices = Vec::new();
    let mut volumes = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let device = format!("disk-{index}");
        let claim = format!("{name}-{device}");
        claim_templates.push(json!({
            "metadata": {
                "name": claim,
                "annotations": {IMAGE_ID: format!("{namespace}/{}", disk.image_name)},
            },
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": disk.capacity_bytes.to_string()}},
                "volumeMode": "Block",
                "storageClassName": disk.storage_class,
            },
        }));
        disk_devices.push(json!({
            "name": device,
            "bootOrder": index + 1,
            "disk": {"bus": bus(disk.bus.unwrap_or(job.spec.default_disk_bus))},
        }));
        volumes.push(json!({"name": device, "persistentVolumeClaim": {"claimName": claim}}));
    }

    let mut interfaces = Vec::new();
    let mut networks = Vec::new();
    for (index, nic) in source.nics.iter().enumerate() {
        let Some(network) = nic.network.as_deref() else {
            return Err(TargetError::NicWithoutNetwork {
                nic: nic.name.clone(),
            });
        };
        let mapping = job
            .spec
            .mapping
            .iter()
            .find(|m| m.source_network == network)
            .ok_or_else(|| TargetError::UnmappedNetwork {
                nic: nic.name.clone(),
                network: network.to_owned(),
            })?;
        let nad = qualified(&mapping.destination_network, namespace);
        let model = mapping
            .nic_model
            .unwrap_or_else(|| nic_model(nic.model.as_deref(), job.spec.default_nic_model));
        let interface_name = format!("nic-{index}");
        let mut interface =
            json!({"name": interface_name, "model": model_name(model), "bridge": {}});
        if let Some(mac) = &nic.mac_address {
            interface["macAddress"] = json!(mac);
        }
        interfaces.push(interface);
        networks.push(json!({"name": interface_name, "multus": {"networkName": nad}}));
    }

    let (sockets, cores, threads) = topology(
        source.cpus,
        source.cores_per_socket,
        source.threads_per_core,
    );
    let guest = format!("{}Mi", source.memory_mib);
    let limit = format!("{}Mi", source.memory_mib + reserved_memory_mib);
    let mut domain = json!({
        "cpu": {"sockets": sockets, "cores": cores, "threads": threads},
        "memory": {"guest": guest},
        "resources": {"limits": {"cpu": source.cpus.to_string(), "memory": limit}},
        "machine": {"type": "q35"},
        "features": {"acpi": {"enabled": true}},
        "devices": {
            "disks": disk_devices,
            "interfaces": interfaces,
            "inputs": [{"bus": "usb", "name": "tablet", "type": "tablet"}],
        },
    });
    let mut firmware = serde_json::Map::new();
    if source.firmware == Firmware::Efi {
        firmware.insert(
            "bootloader".into(),
            json!({"efi": {"secureBoot": source.secure_boot}}),
        );
        if source.secure_boot {
            domain["features"]["smm"] = json!({"enabled": true});
        }
    }
    if let Some(uuid) = &source_vm.firmware_uuid {
        firmware.insert("uuid".into(), json!(uuid));
    }
    if !firmware.is_empty() {
        domain["firmware"] = Value::Object(firmware);
    }

    let claim_templates =
        serde_json::to_string(&claim_templates).expect("JSON values always serialize");
    Ok(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                JOB_LABEL: job_name,
                "harvesterhci.io/creator": "harvester",
                "harvesterhci.io/os": os_label(source.guest_os.as_deref()),
            },
            "annotations": {VOLUME_CLAIM_TEMPLATES: claim_templates},
        },
        "spec": {
            "runStrategy": if job.spec.power_on { "RerunOnFailure" } else { "Halted" },
            "template": {
                "metadata": {"labels": {"harvesterhci.io/vmName": name}},
                "spec": {
                    "domain": domain,
                    "evictionStrategy": "LiveMigrateIfPossible",
                    "networks": networks,
                    "volumes": volumes,
                },
            },
        },
    }))
}

/// Sockets, cores and threads as the source has them; a count that does
/// not split evenly (which vSphere refuses, but another source may report)
/// becomes one core per socket, never a different number of vCPUs.
fn topology(cpus: i32, cores_per_socket: Option<i32>, threads: Option<i32>) -> (i32, i32, i32) {
    let threads = threads.filter(|&t| t > 0).unwrap_or(1);
    match cores_per_socket {
        Some(cores) if cores > 0 && cpus % (cores * threads) == 0 => {
            (cpus / (cores * threads), cores, threads)
        }
        _ => (cpus, 1, 1),
    }
}

/// What KubeVirt answers when a VM has more sockets than `maxSockets`, which
/// Harvester v1.6 to v1.8's VM webhook sets to 1 whenever CPU hotplug is off
/// (harvester#10265, fixed by harvester#10757).
pub const MAX_SOCKETS_REFUSAL: &str = "greater than the maximum sockets allowed";

/// The same vCPUs as one socket (`sockets × cores` cores), for a Harvester
/// that refuses more sockets; `None` when the VM has one socket already.
pub fn single_socket(vm: &Value) -> Option<Value> {
    let cpu = vm.pointer("/spec/template/spec/domain/cpu")?;
    let sockets = cpu["sockets"].as_i64().filter(|&s| s > 1)?;
    let cores = cpu["cores"].as_i64().unwrap_or(1);
    let mut flat = vm.clone();
    flat["spec"]["template"]["spec"]["domain"]["cpu"] =
        json!({"sockets": 1, "cores": sockets * cores, "threads": cpu["threads"].clone()});
    Some(flat)
}

/// `name` alone means a NAD in the job's namespace.
fn qualified(nad: &str, namespace: &str) -> String {
    if nad.contains('/') {
        nad.to_owned()
    } else {
        format!("{namespace}/{nad}")
    }
}

/// The KubeVirt model closest to the source's, or the job's default where the
/// source's has no KubeVirt equivalent (vmxnet3).
fn nic_model(source: Option<&str>, default: NicModel) -> NicModel {
    match source.map(str::to_ascii_lowercase).as_deref() {
        Some("e1000") => NicModel::E1000,
        Some("e1000e") => NicModel::E1000e,
        Some("ne2k_pci") => NicModel::Ne2kPci,
        Some("pcnet" | "pcnet32" | "vlance") => NicModel::Pcnet,
        Some("rtl8139") => NicModel::Rtl8139,
        Some("virtio") => NicModel::Virtio,
        _ => default,
    }
}

fn model_name(model: NicModel) -> Value {
    serde_json::to_value(model).expect("enums always serialize")
}

fn bus(bus: DiskBus) -> Value {
    serde_json::to_value(bus).expect("enums always serialize")
}

/// Harvester's `harvesterhci.io/os` label, from the source's guest id.
fn os_label(guest: Option<&str>) -> &'static str {
    let guest = guest.unwrap_or_default().to_ascii_lowercase();
    if guest.contains("windows") {
        "windows"
    } else {
        "linux"
    }
}

#[cfg(test)]
mod tests {
    use vmm_api::SourceKind;
    use vmm_api::importjob::{ImportJobSpec, NetworkMapping, SourceRef};
    use vmm_api::inventory::{Disk, Nic, VirtualMachineSpec};

    use super::*;

    fn job(mapping: &[(&str, &str)]) -> ImportJob {
        let mut job = ImportJob::new(
            "web-01",
            serde_json::from_value::<ImportJobSpec>(json!({
                "sourceCluster": {"kind": "Vsphere", "name": "vc"},
                "vmName": "Web 01",
            }))
            .unwrap(),
        );
        job.metadata.namespace = Some("team-a".into());
        job.spec.mapping = mapping
            .iter()
            .map(|(source, destination)| NetworkMapping {
                source_network: (*source).into(),
                destination_network: (*destination).into(),
                nic_model: None,
            })
            .collect();
        assert_eq!(
            job.spec.source_cluster,
            SourceRef {
                kind: SourceKind::Vsphere,
                name: "vc".into()
            }
        );
        job
    }

    fn source() -> VirtualMachineSpec {
        VirtualMachineSpec {
            display_name: "Web 01".into(),
            cpus: 8,
            cores_per_socket: Some(4),
            memory_mib: 6144,
            firmware: Firmware::Efi,
            secure_boot: true,
            guest_os: Some("windows2019srv_64Guest".into()),
            disks: vec![Disk::default(), Disk::default()],
            nics: vec![
                Nic {
                    name: "Network adapter 1".into(),
                    network: Some("VM Network".into()),
                    mac_address: Some("00:50:56:aa:bb:01".into()),
                    model: Some("vmxnet3".into()),
                    ..Nic::default()
                },
                Nic {
                    name: "Network adapter 2".into(),
                    network: Some("DMZ".into()),
                    mac_address: Some("00:50:56:aa:bb:02".into()),
                    model: Some("e1000e".into()),
                    ..Nic::default()
                },
            ],
            ..VirtualMachineSpec::default()
        }
    }

    fn vm(spec: VirtualMachineSpec) -> Vm {
        Vm {
            spec,
            disks: Vec::new(),
            firmware_uuid: None,
        }
    }

    fn disks() -> Vec<ImportedDisk> {
        (0..2)
            .map(|i| ImportedDisk {
                image_name: format!("web-01-disk-{i}"),
                storage_class: format!("lh-uid-{i}"),
                capacity_bytes: 10 << 30,
                bus: None,
            })
            .collect()
    }

    #[test]
    fn the_vm_has_the_sources_shape() {
        let vm = virtual_machine(
            &job(&[("VM Network", "vlan100"), ("DMZ", "infra/dmz")]),
            "web-01",
            &vm(source()),
            &disks(),
            100,
        )
        .unwrap();
        let domain = &vm["spec"]["template"]["spec"]["domain"];
        assert_eq!(
            domain["cpu"],
            json!({"sockets": 2, "cores": 4, "threads": 1})
        );
        assert_eq!(domain["resources"]["limits"]["cpu"], "8");
        assert_eq!(domain["memory"]["guest"], "6144Mi");
        assert_eq!(domain["resources"]["limits"]["memory"], "6244Mi");
        assert_eq!(domain["firmware"]["bootloader"]["efi"]["secureBoot"], true);
        assert_eq!(domain["features"]["smm"]["enabled"], true);
        let interfaces = &domain["devices"]["interfaces"];
        assert_eq!(interfaces[0]["macAddress"], "00:50:56:aa:bb:01");
        assert_eq!(interfaces[0]["model"], "virtio", "vmxnet3 → the default");
        assert_eq!(interfaces[1]["model"], "e1000e");
        let networks = &vm["spec"]["template"]["spec"]["networks"];
        assert_eq!(networks[0]["multus"]["networkName"], "team-a/vlan100");
        assert_eq!(networks[1]["multus"]["networkName"], "infra/dmz");
        assert_eq!(vm["metadata"]["labels"]["harvesterhci.io/os"], "windows");
        assert_eq!(vm["spec"]["runStrategy"], "RerunOnFailure");

        let templates: Value = serde_json::from_str(
            vm["metadata"]["annotations"][VOLUME_CLAIM_TEMPLATES]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(templates[1]["metadata"]["name"], "web-01-disk-1");
        assert_eq!(
            templates[1]["metadata"]["annotations"][IMAGE_ID],
            "team-a/web-01-disk-1"
        );
        assert_eq!(templates[1]["spec"]["storageClassName"], "lh-uid-1");
        assert_eq!(templates[1]["spec"]["volumeMode"], "Block");
        let volumes = &vm["spec"]["template"]["spec"]["volumes"];
        assert_eq!(
            volumes[1]["persistentVolumeClaim"]["claimName"],
            "web-01-disk-1"
        );
        assert_eq!(domain["devices"]["disks"][0]["bootOrder"], 1);
    }

    #[test]
    fn bios_and_odd_topologies_keep_the_vcpu_count() {
        let mut bios = source();
        bios.firmware = Firmware::Bios;
        bios.secure_boot = false;
        bios.cpus = 6;
        bios.cores_per_socket = Some(4);
        let vm = virtual_machine(
            &job(&[("VM Network", "a"), ("DMZ", "b")]),
            "x",
            &vm(bios),
            &disks(),
            0,
        )
        .unwrap();
        let domain = &vm["spec"]["template"]["spec"]["domain"];
        assert!(domain.get("firmware").is_none());
        assert!(domain["features"].get("smm").is_none());
        assert_eq!(
            domain["cpu"],
            json!({"sockets": 6, "cores": 1, "threads": 1})
        );
        assert_eq!(topology(4, None, None), (4, 1, 1));
        assert_eq!(
            topology(6, Some(2), Some(2)),
            (6, 1, 1),
            "12 threads do not make 6"
        );
    }

    /// A KubeVirt VM's threads, disk buses and firmware UUID carry over;
    /// the job's default bus is for disks without one of KubeVirt's.
    #[test]
    fn what_a_kubevirt_source_has_carries_over() {
        let mut kubevirt = source();
        kubevirt.cpus = 8;
        kubevirt.cores_per_socket = Some(2);
        kubevirt.threads_per_core = Some(2);
        let mut disks = disks();
        disks[1].bus = Some(DiskBus::Scsi);
        let mut job = job(&[("VM Network", "a"), ("DMZ", "b")]);
        job.spec.default_disk_bus = DiskBus::Sata;
        let source = Vm {
            firmware_uuid: Some("5f1ad6a4-0000-4000-8000-000000000001".into()),
            ..vm(kubevirt)
        };
        let built = virtual_machine(&job, "x", &source, &disks, 0).unwrap();
        let domain = &built["spec"]["template"]["spec"]["domain"];
        assert_eq!(
            domain["cpu"],
            json!({"sockets": 2, "cores": 2, "threads": 2})
        );
        assert_eq!(domain["devices"]["disks"][0]["disk"]["bus"], "sata");
        assert_eq!(domain["devices"]["disks"][1]["disk"]["bus"], "scsi");
        assert_eq!(
            domain["firmware"]["uuid"],
            "5f1ad6a4-0000-4000-8000-000000000001"
        );
        assert_eq!(domain["firmware"]["bootloader"]["efi"]["secureBoot"], true);
    }

    #[test]
    fn one_socket_keeps_the_vcpu_count() {
        let vm = virtual_machine(
            &job(&[("VM Network", "a"), ("DMZ", "b")]),
            "x",
            &vm(source()),
            &disks(),
            0,
        )
        .unwrap();
        let flat = single_socket(&vm).unwrap();
        let cpu = &flat["spec"]["template"]["spec"]["domain"]["cpu"];
        assert_eq!(*cpu, json!({"sockets": 1, "cores": 8, "threads": 1}));
        assert_eq!(
            flat["spec"]["template"]["spec"]["domain"]["resources"],
            vm["spec"]["template"]["spec"]["domain"]["resources"]
        );
        assert!(single_socket(&flat).is_none(), "one socket already");
    }

    #[test]
    fn what_cannot_be_built_says_why() {
        let unmapped = virtual_machine(
            &job(&[("VM Network", "a")]),
            "x",
            &vm(source()),
            &disks(),
            0,
        );
        assert_eq!(
            unmapped.unwrap_err(),
            TargetError::UnmappedNetwork {
                nic: "Network adapter 2".into(),
                network: "DMZ".into()
            }
        );
        let mapped = job(&[("VM Network", "a"), ("DMZ", "b")]);
        let err = virtual_machine(&mapped, "x", &vm(source()), &disks()[..1], 0).unwrap_err();
        assert_eq!(
            err,
            TargetError::DiskCountMismatch {
                images: 1,
                disks: 2
            }
        );
        let mut empty = source();
        empty.memory_mib = 0;
        assert!(matches!(
            virtual_machine(&mapped, "x", &vm(empty), &disks(), 0),
            Err(TargetError::NoResources { .. })
        ));
    }
}
