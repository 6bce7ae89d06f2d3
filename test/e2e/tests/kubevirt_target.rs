//! The KubeVirt VirtualMachine an import job creates passes the real KubeVirt
//! CRD schema with strict field validation (a misspelled or unknown field is
//! an error, not silently pruned) and is stored with the source's CPU
//! topology, memory, firmware (with a UUID), disk buses, MACs and networks
//! intact.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use vmm_api::importjob::{DiskBus, ImportJob, ImportJobSpec};
use vmm_api::inventory::{Disk, Firmware, Nic, VirtualMachineSpec};
use vmm_controller::import::target::{ImportedDisk, virtual_machine};
use vmm_core::Vm;
use vmm_testkit::{ControlPlane, TestNamespace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_vm_passes_kubevirts_schema_strictly() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new(cp, "kubevirt-target").unwrap();
    let spec: ImportJobSpec = serde_json::from_value(json!({
        "sourceCluster": {"kind": "Vsphere", "name": "vc"},
        "vmName": "Web 01",
        "mapping": [
            {"sourceNetwork": "VM Network", "destinationNetwork": "vlan100"},
            {"sourceNetwork": "DMZ", "destinationNetwork": "infra/dmz", "nicModel": "e1000"},
        ],
    }))
    .unwrap();
    let mut job = ImportJob::new("web-01", spec);
    job.metadata.namespace = Some(ns.name().to_owned());
    let nic = |n: u8, network: &str| Nic {
        name: format!("Network adapter {n}"),
        network: Some(network.into()),
        mac_address: Some(format!("00:50:56:00:00:0{n}")),
        model: Some("vmxnet3".into()),
        ..Nic::default()
    };
    let spec = VirtualMachineSpec {
        display_name: "Web 01".into(),
        cpus: 6,
        cores_per_socket: Some(3),
        memory_mib: 3000,
        firmware: Firmware::Efi,
        secure_boot: true,
        disks: vec![Disk::default(), Disk::default()],
        nics: vec![nic(1, "VM Network"), nic(2, "DMZ")],
        ..VirtualMachineSpec::default()
    };
    // A firmware UUID, as a Harvester source's VM carries over.
    let source = Vm {
        spec,
        disks: Vec::new(),
        firmware_uuid: Some("6a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into()),
    };
    let disks: Vec<ImportedDisk> = (0..2)
        .map(|i| ImportedDisk {
            image_name: format!("web-01-disk-{i}"),
            storage_class: format!("lh-{i}"),
            capacity_bytes: 1 << 30,
            bus: (i == 1).then_some(DiskBus::Scsi),
        })
        .collect();
    // With Harvester's legacy fixed reserve for QEMU (100 MiB) on the limit.
    let vm = virtual_machine(&job, "web-01", &source, &disks, 100).unwrap();
    let typo_base = vm.clone();

    let resource = vmm_api::external::kubevirt_vm();
    let api = Api::<DynamicObject>::namespaced_with(cp.client(), ns.name(), &resource);
    // As the controller writes it: server-side apply (idempotent on resume),
    // strictly validated.
    let strict = PatchParams::apply("vmm-controller").validation_strict();
    let created = api
        .patch("web-01", &strict, &Patch::Apply(&vm))
        .await
        .unwrap_or_else(|e| panic!("KubeVirt's schema refused the VM: {e}"));
    let stored = &created.data["spec"]["template"]["spec"];
    assert_eq!(
        stored["domain"]["cpu"],
        json!({"sockets": 2, "cores": 3, "threads": 1})
    );
    assert_eq!(stored["domain"]["memory"]["guest"], "3000Mi");
    assert_eq!(stored["domain"]["resources"]["limits"]["memory"], "3100Mi");
    assert_eq!(
        stored["domain"]["firmware"]["bootloader"]["efi"]["secureBoot"],
        true
    );
    assert_eq!(
        stored["domain"]["firmware"]["uuid"],
        "6a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    );
    assert_eq!(
        stored["domain"]["devices"]["disks"][1]["disk"]["bus"],
        "scsi"
    );
    let interfaces = &stored["domain"]["devices"]["interfaces"];
    assert_eq!(interfaces[1]["macAddress"], "00:50:56:00:00:02");
    assert_eq!(interfaces[1]["model"], "e1000");
    assert_eq!(
        stored["networks"][0]["multus"]["networkName"],
        format!("{}/vlan100", ns.name())
    );

    // The same check catches a field KubeVirt does not know.
    let mut typo = typo_base;
    typo["metadata"]["name"] = json!("typo");
    typo["spec"]["template"]["spec"]["domain"]["cpu"]["socket"] = json!(1);
    let refused = api
        .patch("typo", &strict, &Patch::Apply(&typo))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("socket"), "{refused}");
}
