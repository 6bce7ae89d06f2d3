//! The VMs our imports create meet KubeVirt's and Harvester's real admission
//! (`vmm_testkit::admission`: virt-api and Harvester's own VM webhook, both
//! `failurePolicy: Fail` for validation): one import per shape a vSphere or
//! an OpenStack source produces, each admitted, and the object stored after
//! mutation still has the source's vCPUs, the memory its guest sees, its
//! firmware, its MACs and its disk order. (A Harvester source's VM is a
//! KubeVirt VM already: `import_harvester` checks what is carried.) And admission is really in the path: VMs
//! each webhook must refuse are refused, with that webhook's words.

use std::time::Duration;

use serde_json::{Value, json};
use vmm_api::quantity::milli_units;
use vmm_testkit::import;
use vmm_testkit::openstack::project::Project;
use vmm_testkit::servers::shared_controller;
use vmm_testkit::vcsim::{Controller, DiskSpec, Firmware, NicModel, NicSpec, VmSpec};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(300);

/// A VM as a vSphere source has it.
struct Shape {
    job: &'static str,
    firmware: Firmware,
    secure_boot: bool,
    cpus: u32,
    cores_per_socket: u32,
    memory_mb: u64,
    disks: &'static [Controller],
    /// The job's `defaultDiskBus`: vSphere's controllers have no KubeVirt bus.
    disk_bus: &'static str,
    nics: &'static [(NicModel, Option<&'static str>)],
}

const SHAPES: &[Shape] = &[
    Shape {
        job: "bios",
        firmware: Firmware::Bios,
        secure_boot: false,
        cpus: 1,
        cores_per_socket: 1,
        memory_mb: 1536,
        disks: &[Controller::Scsi],
        disk_bus: "virtio",
        nics: &[(NicModel::Vmxnet3, Some("00:50:56:AB:CD:EF"))],
    },
    Shape {
        job: "efi",
        firmware: Firmware::Efi,
        secure_boot: false,
        cpus: 2,
        cores_per_socket: 2,
        memory_mb: 3000,
        disks: &[Controller::Sata, Controller::Scsi],
        disk_bus: "sata",
        nics: &[(NicModel::E1000, None), (NicModel::E1000e, None)],
    },
    Shape {
        job: "secure-boot",
        firmware: Firmware::Efi,
        secure_boot: true,
        cpus: 4,
        cores_per_socket: 2,
        memory_mb: 2048,
        disks: &[Controller::Nvme, Controller::Sata, Controller::LsiLogic],
        disk_bus: "scsi",
        nics: &[
            (NicModel::E1000e, Some("00:50:56:0A:0B:0C")),
            (NicModel::Vmxnet3, None),
            (NicModel::E1000, None),
        ],
    },
    Shape {
        job: "four-sockets",
        firmware: Firmware::Bios,
        secure_boot: false,
        cpus: 8,
        cores_per_socket: 2,
        memory_mb: 4100,
        disks: &[
            Controller::Scsi,
            Controller::Sata,
            Controller::Ide,
            Controller::LsiLogicSas,
        ],
        disk_bus: "virtio",
        nics: &[(NicModel::Vmxnet3, None)],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vm_shape_is_admitted_and_keeps_the_source_shape() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    shared_controller();
    let ns = TestNamespace::new(cp, "shapes").unwrap();
    let _harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(1)).unwrap();
    let suffix = vmm_testkit::namespace::random_suffix();
    // The last shape also has a name whose VM name is 63 characters, the
    // most a label value (and so a KubeVirt VM name) may have.
    let long = format!("{}-{suffix}", "v".repeat(62 - suffix.len()));
    assert_eq!(long.len(), 63);

    let mut created = Vec::new();
    for (index, shape) in SHAPES.iter().enumerate() {
        let name = if index + 1 == SHAPES.len() {
            long.clone()
        } else {
            format!("Shape {} {suffix}", shape.job)
        };
        let mut spec = VmSpec::new(&name).powered_on(true);
        spec.firmware = Some(shape.firmware);
        spec.secure_boot = shape.secure_boot;
        spec.cpus = Some(shape.cpus);
        spec.cores_per_socket = Some(shape.cores_per_socket);
        spec.memory_mb = Some(shape.memory_mb);
        for (i, controller) in shape.disks.iter().enumerate() {
            let seed = index as u64 * 10 + i as u64;
            spec = spec.disk(DiskSpec::generated(2, seed, 0.5).on(*controller));
        }
        for (model, mac) in shape.nics {
            let mut nic = NicSpec::on("VM Network").model(*model);
            if let Some(mac) = mac {
                nic = nic.mac(*mac);
            }
            spec = spec.nic(nic);
        }
        let source = vcsim.create_vm(&spec).await.unwrap();
        let spec = json!({"defaultDiskBus": shape.disk_bus});
        import::create_job(cp, &ns, shape.job, &name, spec).unwrap();
        created.push(source);
    }

    for (shape, source) in SHAPES.iter().zip(&created) {
        let kept = Kept {
            vcpus: i64::from(shape.cpus),
            memory_mib: shape.memory_mb,
            efi: (shape.firmware == Firmware::Efi).then_some(shape.secure_boot),
            macs: source.nics.iter().map(|n| n.mac.clone()).collect(),
            disk_keys: source.disks.iter().map(|d| d.key.to_string()).collect(),
            bus: shape.disk_bus,
        };
        assert_kept(&ns, shape.job, &kept);
    }
    assert_eq!(
        SHAPES.last().map(|s| s.job),
        Some("four-sockets"),
        "the long name goes with the last shape"
    );
}

/// A server as an OpenStack source has it: the flavor's vCPUs and RAM, its
/// volumes in device order, a port per MAC (BIOS always: nothing in a
/// flavor or a volume names a firmware).
struct ServerShape {
    job: &'static str,
    vcpus: i32,
    ram_mib: i32,
    volume_gib: &'static [i64],
    ports: usize,
}

const SERVER_SHAPES: &[ServerShape] = &[
    ServerShape {
        job: "os-small",
        vcpus: 1,
        ram_mib: 1536,
        volume_gib: &[1],
        ports: 1,
    },
    ServerShape {
        job: "os-wide",
        vcpus: 3,
        ram_mib: 3000,
        volume_gib: &[1, 1, 1],
        ports: 3,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openstack_server_shape_is_admitted_and_keeps_its_shape() {
    shared_controller();
    let project = Project::new("os-shapes").await;
    let mut created = Vec::new();
    for (index, shape) in SERVER_SHAPES.iter().enumerate() {
        // MACs of their own: Harvester refuses one another VM has.
        let macs: Vec<String> = (0..shape.ports)
            .map(|port| format!("fa:16:3e:e0:{index:02x}:{port:02x}"))
            .collect();
        let mac_refs: Vec<&str> = macs.iter().map(String::as_str).collect();
        let (_, volumes) = project.shaped_server(
            shape.job,
            shape.vcpus,
            shape.ram_mib,
            shape.volume_gib,
            &mac_refs,
        );
        project.create_job(shape.job, shape.job);
        created.push((macs, volumes));
    }
    for (shape, (macs, volumes)) in SERVER_SHAPES.iter().zip(created) {
        let kept = Kept {
            vcpus: i64::from(shape.vcpus),
            memory_mib: u64::try_from(shape.ram_mib).unwrap(),
            efi: None,
            macs,
            disk_keys: volumes,
            bus: "virtio",
        };
        tokio::task::block_in_place(|| assert_kept(&project.ns, shape.job, &kept));
    }
}

/// What the stored VM must still have of its source.
struct Kept {
    vcpus: i64,
    memory_mib: u64,
    /// `Some(secure boot)` when the firmware is EFI.
    efi: Option<bool>,
    macs: Vec<String>,
    /// The source's keys of its disks (the job's `status.disks[].sourceKey`),
    /// in the source's boot order.
    disk_keys: Vec<String>,
    bus: &'static str,
}

/// Waits for `job` to succeed and checks that its VM, as stored after
/// admission's mutation, has what `kept` says.
fn assert_kept(ns: &TestNamespace, job: &str, kept: &Kept) {
    let done = import::succeeded(ns, job, WAIT);
    let target = done["status"]["targetName"].as_str().unwrap();
    let stored: Value = serde_json::from_str(
        ns.kubectl(["get", "virtualmachines.kubevirt.io", target, "-o", "json"])
            .expect_success(),
    )
    .unwrap();
    let context = format!("{job}: {}", stored["spec"]);
    let template = &stored["spec"]["template"]["spec"];
    let domain = &template["domain"];

    let cpu = &domain["cpu"];
    let vcpus: i64 = ["sockets", "cores", "threads"]
        .iter()
        .map(|k| cpu[k].as_i64().unwrap_or(1))
        .product();
    assert_eq!(vcpus, kept.vcpus, "vCPUs: {context}");
    // Compared as quantities: the mutation writes them canonically
    // (2048Mi comes back as 2Gi).
    let guest = domain["memory"]["guest"].as_str().and_then(milli_units);
    assert_eq!(
        guest,
        Some(i128::from(kept.memory_mib) * 1024 * 1024 * 1000),
        "guest memory: {context}"
    );

    let efi = &domain["firmware"]["bootloader"]["efi"];
    assert_eq!(efi.is_object(), kept.efi.is_some(), "firmware: {context}");
    if let Some(secure_boot) = kept.efi {
        assert_eq!(efi["secureBoot"], secure_boot, "secure boot: {context}");
    }

    let macs: Vec<String> = domain["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["macAddress"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    let source_macs: Vec<String> = kept.macs.iter().map(|m| m.to_lowercase()).collect();
    assert_eq!(macs, source_macs, "MACs: {context}");

    // Disk order: the VM's disks boot in the source's order, and each one's
    // claim is made from the image the job imported that source disk into.
    let disks = domain["devices"]["disks"].as_array().unwrap();
    assert_eq!(disks.len(), kept.disk_keys.len(), "disks: {context}");
    let templates: Vec<Value> = serde_json::from_str(
        stored["metadata"]["annotations"]["harvesterhci.io/volumeClaimTemplates"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let job_disks = done["status"]["disks"].as_array().unwrap();
    for (i, (disk, key)) in disks.iter().zip(&kept.disk_keys).enumerate() {
        assert_eq!(disk["bootOrder"], i + 1, "boot order: {context}");
        assert_eq!(disk["disk"]["bus"], kept.bus, "bus: {context}");
        let volume = template["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == disk["name"])
            .unwrap();
        let claim = &volume["persistentVolumeClaim"]["claimName"];
        let claim_template = templates
            .iter()
            .find(|t| &t["metadata"]["name"] == claim)
            .unwrap();
        let image = claim_template["metadata"]["annotations"]["harvesterhci.io/imageId"]
            .as_str()
            .and_then(|id| id.split_once('/'))
            .map(|(_, name)| name)
            .unwrap_or_default();
        let imported = job_disks
            .iter()
            .find(|d| d["imageName"] == image)
            .unwrap_or_else(|| panic!("disk {i}: no job disk in image {image:?}: {context}"));
        assert_eq!(imported["sourceKey"], key.as_str(), "disk {i}: {context}");
    }
}

/// Each webhook is in the path: KubeVirt's validator refuses two disks of
/// one name, Harvester's validator a MAC another VM on the same cluster
/// network has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_vms_are_refused_by_the_real_webhooks() {
    let cp = ControlPlane::shared();
    let admission = cp.admission().unwrap();
    let ns = TestNamespace::new(cp, "refused").unwrap();
    admission
        .add_network(cp, &import::nad(ns.name(), "vlan-a", 10))
        .unwrap();
    let vm = |name: &str, disks: &[&str], mac: &str| {
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns.name()},
            "spec": {"runStrategy": "Halted", "template": {"spec": {
                "domain": {
                    "cpu": {"sockets": 1, "cores": 1, "threads": 1},
                    "memory": {"guest": "1Gi"},
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "devices": {
                        "disks": disks.iter().map(|d| json!({"name": d, "disk": {"bus": "virtio"}})).collect::<Vec<_>>(),
                        "interfaces": [{"name": "nic-0", "model": "virtio", "bridge": {}, "macAddress": mac}],
                    },
                },
                "networks": [{"name": "nic-0", "multus": {"networkName": format!("{}/vlan-a", ns.name())}}],
                "volumes": disks.iter().map(|d| json!({"name": d, "containerDisk": {"image": "disk"}})).collect::<Vec<_>>(),
            }}},
        })
        .to_string()
    };
    let create = |manifest: String| cp.kubectl_with_stdin(["create", "-f", "-"], &manifest);
    // The CRD's schema cannot see this; only KubeVirt's validator does.
    let twins = create(vm("twins", &["disk", "disk"], "02:00:00:00:00:01"));
    let refusal = twins.expect_failure();
    assert!(
        refusal.contains(
            "disks[1] and spec.template.spec.domain.devices.disks[0] must not have the same Name"
        ),
        "{twins}"
    );

    create(vm("first", &["disk"], "02:00:00:00:00:02")).expect_success();
    let copy = create(vm("copy", &["disk"], "02:00:00:00:00:02"));
    let refusal = copy.expect_failure();
    assert!(
        refusal.contains("validator.harvesterhci.io") && refusal.contains("duplicate mac address"),
        "{copy}"
    );
}
