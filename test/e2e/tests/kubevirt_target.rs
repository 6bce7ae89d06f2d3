//! The KubeVirt VirtualMachine an import job creates passes the real KubeVirt
//! CRD schema with strict field validation (a misspelled or unknown field is
//! an error, not silently pruned) and KubeVirt's and Harvester's real
//! admission, and is stored with the source's CPU topology, memory, firmware
//! (with a UUID), disk buses, MACs and networks intact.

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
    let admission = cp.admission().unwrap();
    let ns = TestNamespace::new(cp, "kubevirt-target").unwrap();
    // Harvester's mutator reads every network a VM names.
    let infra = TestNamespace::new(cp, "infra").unwrap();
    for (namespace, nad) in [(ns.name(), "vlan100"), (infra.name(), "dmz")] {
        admission
            .add_network(cp, &vmm_testkit::import::nad(namespace, nad, 100))
            .unwrap();
    }
    let spec: ImportJobSpec = serde_json::from_value(json!({
        "sourceCluster": {"kind": "Vsphere", "name": "vc"},
        "vmName": "Web 01",
        "mapping": [
            {"sourceNetwork": "VM Network", "destinationNetwork": "vlan100"},
            {"sourceNetwork": "DMZ", "destinationNetwork": format!("{}/dmz", infra.name()), "nicModel": "e1000"},
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
        // One socket: Harvester allows no more while CPU hotplug is off.
        cpus: 6,
        cores_per_socket: Some(6),
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
    // A default Harvester (additional-guest-memory-overhead-ratio 1.5) keeps
    // nothing back from the limit: no reserve.
    let vm = virtual_machine(&job, "web-01", &source, &disks, 0).unwrap();
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
        json!({"sockets": 1, "cores": 6, "threads": 1, "maxSockets": 1})
    );
    assert_eq!(stored["domain"]["memory"]["guest"], "3000Mi");
    assert_eq!(stored["domain"]["resources"]["limits"]["memory"], "3000Mi");
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

    // Harvester's legacy strategy (the ratio set to 0): its mutator gives the
    // guest the limit less 100 MiB, the reserve the controller then adds.
    cp.kubectl([
        "patch",
        "settings.harvesterhci.io",
        "additional-guest-memory-overhead-ratio",
        "--type=merge",
        "-p",
        r#"{"value":"0"}"#,
    ])
    .expect_success();
    let mut legacy = virtual_machine(&job, "legacy", &source, &disks, 100).unwrap();
    // MACs of its own: Harvester's validator refuses one web-01 has.
    let interfaces = legacy["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        .as_array_mut()
        .unwrap();
    for (i, interface) in interfaces.iter_mut().enumerate() {
        interface["macAddress"] = json!(format!("00:50:56:00:01:0{i}"));
    }
    let mut dry_run = strict.clone();
    dry_run.dry_run = true;
    // The webhook reads Settings from its cache: wait until it has the value.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let admitted = api
            .patch("legacy", &dry_run, &Patch::Apply(&legacy))
            .await
            .unwrap();
        let domain = &admitted.data["spec"]["template"]["spec"]["domain"];
        if domain["memory"]["guest"] == "3000Mi" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the legacy reserve never applied: {domain}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let created = api
        .patch("legacy", &strict, &Patch::Apply(&legacy))
        .await
        .unwrap();
    let domain = &created.data["spec"]["template"]["spec"]["domain"];
    assert_eq!(domain["memory"]["guest"], "3000Mi");
    assert_eq!(domain["resources"]["limits"]["memory"], "3100Mi");
}
