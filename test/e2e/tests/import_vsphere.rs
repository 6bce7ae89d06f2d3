//! A vSphere import end to end, through the real kube-apiserver: the
//! controller binary against vcsim (ExportVm with real disk bytes), the
//! stand-in for Harvester's image controller downloading every disk for real,
//! and the real KubeVirt CRD. Each image must hash like `qemu-img convert -O
//! raw` of its source disk; the VM must have the source's shape; the source
//! must be off; no export lease may stay open.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::harvester::{ImageController, Options, SHA256_ANNOTATION};
use vmm_testkit::import;
use vmm_testkit::servers::{ControllerServer, metric, shared_controller};
use vmm_testkit::vcsim::{DiskSpec, Firmware, NicSpec, VmSpec, qemu_img_raw_sha256};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(300);

fn controller() -> &'static ControllerServer {
    shared_controller()
}

/// The job once it has ended, or a panic with the controller's log.
fn wait_finished(ns: &TestNamespace, job: &str) -> Value {
    import::finished(ns, job, WAIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_disk_two_nic_vm_imports_intact() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    let ns = TestNamespace::new(cp, "import").unwrap();
    // Only this test's namespace: another test here needs images left alone.
    let _harvester = ImageController::start(
        cp.client(),
        Options {
            namespace: Some(ns.name().to_owned()),
            retry_delay: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .unwrap();
    let name = format!("Web 01 {}", vmm_testkit::namespace::random_suffix());
    let mut spec = VmSpec::new(&name)
        .disk(DiskSpec::generated(48, 7, 0.5))
        .disk(DiskSpec::generated(16, 8, 0.25))
        .nic(NicSpec::on("VM Network"))
        .nic(NicSpec::on("DC0_DVPG0"))
        .powered_on(true);
    spec.cpus = Some(4);
    spec.cores_per_socket = Some(2);
    spec.memory_mb = Some(1536);
    spec.firmware = Some(Firmware::Efi);
    let source_vm = vcsim.create_vm(&spec).await.unwrap();

    for object in [
        import::nad(ns.name(), "vlan-a", 10),
        import::nad(ns.name(), "vlan-b", 20),
    ] {
        cp.kubectl_with_stdin(["apply", "-f", "-"], &object.to_string())
            .expect_success();
    }
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let job = json!({
        "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "web-01"},
        "spec": {
            "sourceCluster": {"kind": "Vsphere", "name": "vc"},
            "vmName": name,
            "mapping": [
                {"sourceNetwork": "VM Network", "destinationNetwork": "vlan-a"},
                {"sourceNetwork": "DC0_DVPG0", "destinationNetwork": format!("{}/vlan-b", ns.name())},
            ],
            "gracefulShutdownTimeoutSeconds": 30,
        },
    });
    cp.apply_yaml(ns.name(), &job.to_string()).expect_success();

    let done = wait_finished(&ns, "web-01");
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        done["status"],
        controller().server.process.log_tail(60)
    );

    // Every image holds exactly the bytes qemu-img makes of the source disk.
    for (index, disk) in source_vm.disks.iter().enumerate() {
        let image = ns.kubectl([
            "get",
            "virtualmachineimages.harvesterhci.io",
            &format!("web-01-disk-{index}"),
            "-o",
            "json",
        ]);
        let image: Value = serde_json::from_str(image.expect_success()).unwrap();
        assert_eq!(
            image["metadata"]["annotations"][SHA256_ANNOTATION],
            qemu_img_raw_sha256(&disk.descriptor_file).unwrap().as_str(),
            "disk {index}"
        );
        let status_disk = &done["status"]["disks"][index];
        assert_eq!(status_disk["phase"], "Imported");
        assert_eq!(status_disk["bytesDone"], disk.capacity_bytes);
    }

    // The VM: the source's shape, its MACs, the mapped networks.
    let target = done["status"]["targetName"].as_str().unwrap().to_owned();
    assert!(target.starts_with("web-01-"), "{target}");
    let vm = ns.kubectl(["get", "virtualmachines.kubevirt.io", &target, "-o", "json"]);
    let vm: Value = serde_json::from_str(vm.expect_success()).unwrap();
    let domain = &vm["spec"]["template"]["spec"]["domain"];
    // Two sockets of two cores at the source: Harvester's mutator caps
    // sockets at one (CPU hotplug off), so the four vCPUs are cores.
    assert_eq!(
        domain["cpu"],
        json!({"sockets": 1, "cores": 4, "threads": 1, "maxSockets": 1})
    );
    assert_eq!(domain["memory"]["guest"], "1536Mi");
    // A default Harvester sets additional-guest-memory-overhead-ratio, so
    // its mutator keeps nothing back from the limit for QEMU: the limit is
    // the guest's memory.
    assert_eq!(domain["resources"]["limits"]["memory"], "1536Mi");
    assert!(
        domain["firmware"]["bootloader"]["efi"].is_object(),
        "{domain}"
    );
    for (index, nic) in source_vm.nics.iter().enumerate() {
        assert_eq!(
            domain["devices"]["interfaces"][index]["macAddress"],
            nic.mac.as_str()
        );
    }
    let networks = &vm["spec"]["template"]["spec"]["networks"];
    assert_eq!(
        networks[0]["multus"]["networkName"],
        format!("{}/vlan-a", ns.name())
    );
    assert_eq!(
        networks[1]["multus"]["networkName"],
        format!("{}/vlan-b", ns.name())
    );

    // The source is off, and nothing is left open at the source.
    assert_eq!(
        vcsim.power_state(&source_vm.moref).await.unwrap(),
        "poweredOff"
    );
    let open: Vec<_> = vcsim
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.is_open())
        .collect();
    assert!(open.is_empty(), "export leases left open: {open:?}");
    // Prometheus: the job by phase, the bytes served, the duration.
    let value = |series: &str| metric(controller().server.admin_port, series).unwrap();
    assert!(value(r#"vmm_import_jobs{phase="Succeeded"}"#) >= 1.0);
    let capacity: u64 = source_vm.disks.iter().map(|d| d.capacity_bytes).sum();
    assert!(value("vmm_import_disk_bytes_served_total") >= capacity as f64);
    assert!(value(r#"vmm_import_job_duration_seconds_count{outcome="succeeded"}"#) >= 1.0);

    let events = ns.kubectl([
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web-01",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    for reason in [
        "Validating",
        "PoweringOff",
        "Exporting",
        "DiskStreamed",
        "Importing",
        "Succeeded",
    ] {
        assert!(
            events.stdout.contains(reason),
            "no {reason} event: {events}"
        );
    }
    // streamOptimized disks never go through the scratch directory.
    assert!(
        !events.stdout.contains("DiskConverted"),
        "a streamOptimized disk was converted: {events}"
    );
    assert!(value(r#"vmm_import_disks_prepared_total{path="streamed"}"#) >= 2.0);
}

/// Every kind of disk on both of Harvester's image backends, each image
/// downloaded by its backend's real program: Longhorn's data source for the
/// default class, CDI's importer for any other class (`backend: cdi`: its
/// validation's ranged reads through nbdkit, then the whole disk into
/// scratch). A dense and a half-zero disk stream from a streamOptimized
/// export; a monolithicSparse export cannot stream and is converted by
/// qemu-img in the controller's scratch directory first. Each image must hash
/// like qemu-img's conversion, in one attempt, from one export, its lease
/// closed, no scratch file left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_disk_imports_intact_on_both_backends() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    let ns = TestNamespace::new(cp, "backends").unwrap();
    let harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(1)).unwrap();
    let backends = import::both_backends(&ns);
    // (name, export subformat, disks as data fractions, event of the path)
    let kinds = [
        ("streamed", None, [1.0, 0.5].as_slice(), "DiskStreamed"),
        (
            "converted",
            Some("monolithicSparse"),
            [0.5].as_slice(),
            "DiskConverted",
        ),
    ];
    let suffix = vmm_testkit::namespace::random_suffix();
    let mut seed = 30;
    let mut jobs = Vec::new();
    for (backend_name, backend, job_spec) in &backends {
        for (kind, subformat, fractions, event) in &kinds {
            let job = format!("{kind}-{backend_name}");
            let mut spec = VmSpec::new(format!("{job} {suffix}"))
                .nic(NicSpec::on("VM Network"))
                .powered_on(true);
            for fraction in *fractions {
                seed += 1;
                spec = spec.disk(DiskSpec::generated(24, seed, *fraction));
            }
            spec.export_subformat = subformat.map(str::to_owned);
            let source = vcsim.create_vm(&spec).await.unwrap();
            import::create_job(cp, &ns, &job, &spec.name, job_spec.clone()).unwrap();
            jobs.push((job, source, *backend, *event));
        }
    }

    for (job, ..) in &jobs {
        import::succeeded(&ns, job, WAIT);
    }
    // Checked once every job has ended: a converting job has scratch files.
    for (job, source, backend, event) in &jobs {
        import::assert_vsphere_import_clean(vcsim, &ns, job, source, &controller().tmp_dir, job)
            .await;
        for index in 0..source.disks.len() {
            let image = format!("{job}-disk-{index}");
            let record = harvester.result(ns.name(), &image).unwrap();
            assert_eq!(record.backend, *backend, "{image}");
            assert_eq!(record.attempts, 1, "{image}: {record:?}");
        }
        let leases = vcsim.leases_of(&source.moref).await.unwrap();
        assert_eq!(leases.len(), 1, "{job}: one export: {leases:?}");
        let events = ns.kubectl([
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={job}"),
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        let other = if *event == "DiskStreamed" {
            "DiskConverted"
        } else {
            "DiskStreamed"
        };
        assert!(
            events.stdout.contains(event) && !events.stdout.contains(other),
            "{job}: not only {event}: {events}"
        );
    }
    let converted = metric(
        controller().server.admin_port,
        r#"vmm_import_disks_prepared_total{path="converted"}"#,
    );
    assert!(converted.unwrap() >= 2.0);
}

/// Harvester v1.6 to v1.8 cap a VM's sockets at one when CPU hotplug is off
/// (its VM mutator sets `maxSockets: 1`, and KubeVirt's validator refuses
/// more sockets: harvester#10265). Both run here for real
/// (`vmm_testkit::admission`); the import still ends with the source's
/// vCPUs, as cores of one socket, and says so in an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harvester_allowing_one_socket_gets_the_vcpus_as_cores() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    let ns = TestNamespace::new(cp, "one-socket").unwrap();
    let _harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(1)).unwrap();
    let name = format!("Licensed {}", vmm_testkit::namespace::random_suffix());
    let mut spec = VmSpec::new(&name)
        .disk(DiskSpec::generated(8, 5, 0.5))
        .nic(NicSpec::on("VM Network"))
        .powered_on(true);
    spec.cpus = Some(4);
    spec.cores_per_socket = Some(2);
    vcsim.create_vm(&spec).await.unwrap();
    import::create_job(cp, &ns, "licensed", &name, json!({})).unwrap();
    let done = wait_finished(&ns, "licensed");
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    let target = done["status"]["targetName"].as_str().unwrap();
    let cpu = ns.kubectl([
        "get",
        "virtualmachines.kubevirt.io",
        target,
        "-o",
        "jsonpath={.spec.template.spec.domain.cpu}",
    ]);
    let cpu: Value = serde_json::from_str(cpu.expect_success()).unwrap();
    assert_eq!(
        cpu,
        json!({"sockets": 1, "cores": 4, "threads": 1, "maxSockets": 1})
    );
    let events = ns.kubectl([
        "get",
        "events",
        "--field-selector=reason=OneSocket",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.expect_success().contains("4 vCPUs"),
        "no OneSocket event: {events}"
    );
}

/// A stopped KubeVirt VM that Harvester's and KubeVirt's admission accept:
/// one vCPU, 1 GiB, the given devices and networks.
fn halted_vm(namespace: &str, name: &str, devices: Value, networks: Value) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runStrategy": "Halted", "template": {"spec": {
            "domain": {
                "cpu": {"sockets": 1, "cores": 1, "threads": 1},
                "memory": {"guest": "1Gi"},
                "devices": devices},
            "networks": networks}}}})
}

/// The job's Ready condition once the job has Failed.
fn failure(ns: &TestNamespace, job: &str) -> (String, String) {
    import::failure(ns, job, WAIT)
}

/// Every bad input ends the job in preflight with a reason that names the fix,
/// and the source VM is never powered off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_fail_in_preflight_and_leave_the_source_vm_on() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    let ns = TestNamespace::new(cp, "preflight").unwrap();
    let suffix = vmm_testkit::namespace::random_suffix();
    let solo = format!("Solo {suffix}");
    let twin = format!("Twin {suffix}");
    let vm = |name: &str| {
        VmSpec::new(name)
            .disk(DiskSpec::generated(8, 1, 0.1))
            .nic(NicSpec::on("VM Network"))
            .powered_on(true)
    };
    let solo_vm = vcsim.create_vm(&vm(&solo)).await.unwrap();
    vcsim.create_vm(&vm(&twin)).await.unwrap();
    // A VM whose MAC a KubeVirt VM in another namespace already has (written
    // in upper case there: MACs compare without case).
    let dup = format!("Dup {suffix}");
    let pid = std::process::id().to_be_bytes();
    let mac = format!("00:50:56:3a:{:02x}:{:02x}", pid[2], pid[3]);
    let mut dup_vm = vm(&dup);
    dup_vm.nics[0] = NicSpec::on("VM Network").mac(&mac);
    vcsim.create_vm(&dup_vm).await.unwrap();
    let elsewhere = TestNamespace::new(cp, "preflight-mac").unwrap();
    let holder = halted_vm(
        elsewhere.name(),
        "holder",
        json!({"interfaces": [{"name": "nic-0", "bridge": {}, "macAddress": mac.to_uppercase()}]}),
        json!([{"name": "nic-0", "pod": {}}]),
    );
    cp.kubectl_with_stdin(["apply", "-f", "-"], &holder.to_string())
        .expect_success();
    let holder_path = format!("{}/holder", elsewhere.name());
    // A CDI storage class (its volumes are in that class) with a quota in the
    // namespace too small for one disk.
    let tight = format!("tight-{suffix}");
    let class_and_quota = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": tight},
         "provisioner": "csi.example.com"},
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "small", "namespace": ns.name()},
         "spec": {"hard": {format!("{tight}.storageclass.storage.k8s.io/requests.storage"): "1Mi"}}},
    ]});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &class_and_quota.to_string())
        .expect_success();
    let mut second = vm(&twin);
    let datacenter = vcsim.info().datacenter_path.clone();
    let datacenter = datacenter.unwrap_or_else(|| format!("/{}", vcsim.datacenter()));
    second.folder = Some(format!("{datacenter}/vm/other-{suffix}"));
    vcsim.create_vm(&second).await.unwrap();

    cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        &import::nad(ns.name(), "vlan-a", 10).to_string(),
    )
    .expect_success();
    let taken = halted_vm(ns.name(), "taken", json!({}), json!([]));
    cp.kubectl_with_stdin(["apply", "-f", "-"], &taken.to_string())
        .expect_success();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let closed = format!(
        "https://127.0.0.1:{}/sdk",
        vmm_testkit::process::free_port().unwrap()
    );
    let broken_sources = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"},
         "stringData": {"username": vcsim.username(), "password": "not-it"}},
        {"apiVersion": "source.harvesterhci.io/v1", "kind": "Vsphere", "metadata": {"name": "badpw"},
         "spec": {"endpoint": vcsim.url(), "credentials": {"name": "wrong"}, "caBundle": vcsim.ca_pem()}},
        {"apiVersion": "source.harvesterhci.io/v1", "kind": "Vsphere", "metadata": {"name": "down"},
         "spec": {"endpoint": closed, "credentials": {"name": "vc-credentials"}, "caBundle": vcsim.ca_pem()}},
    ]});
    cp.apply_yaml(ns.name(), &broken_sources.to_string())
        .expect_success();
    // The controller marks the broken sources first, so the jobs see them.
    for source in ["badpw", "down"] {
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = ns.kubectl([
                "get",
                "vsphere",
                source,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if ready.stdout.trim() == "False" {
                break;
            }
            assert!(Instant::now() < deadline, "{source} never became un-Ready");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    let mapped = json!([{"sourceNetwork": "VM Network", "destinationNetwork": "vlan-a"}]);
    let cases: [(&str, Value, &str, &str); 11] = [
        (
            "unknown-source",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "nope"}, "vmName": solo, "mapping": mapped}),
            "SourceNotFound",
            "nope",
        ),
        (
            "unknown-vm",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": "no such VM", "mapping": mapped}),
            "VmNotFound",
            "spec.vmName",
        ),
        (
            "ambiguous-vm",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": twin, "mapping": mapped}),
            "VmNotUnique",
            "spec.path",
        ),
        (
            "unmapped-nic",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": solo}),
            "NetworkNotMapped",
            "VM Network",
        ),
        (
            "missing-nad",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": solo,
            "mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "ghost"}]}),
            "NetworkNotFound",
            "ghost",
        ),
        (
            "missing-class",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": solo, "mapping": mapped,
            "storageClass": "ghost-class"}),
            "StorageClassNotFound",
            "ghost-class",
        ),
        (
            "mac-in-use",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": dup, "mapping": mapped}),
            "MacAddressInUse",
            &holder_path,
        ),
        (
            "over-quota",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": solo, "mapping": mapped,
            "storageClass": tight}),
            "QuotaExceeded",
            "ResourceQuota small",
        ),
        (
            "name-taken",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": solo, "mapping": mapped,
            "targetName": "taken"}),
            "TargetNameTaken",
            "spec.targetName",
        ),
        (
            "bad-credentials",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "badpw"}, "vmName": solo, "mapping": mapped}),
            "SourceNotReady",
            "AuthenticationFailed",
        ),
        (
            "unreachable",
            json!({"sourceCluster": {"kind": "Vsphere", "name": "down"}, "vmName": solo, "mapping": mapped}),
            "SourceNotReady",
            "EndpointUnreachable",
        ),
    ];
    let jobs: Vec<Value> = cases
        .iter()
        .map(|(name, spec, ..)| {
            json!({"apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
                   "metadata": {"name": name}, "spec": spec})
        })
        .collect();
    cp.apply_yaml(
        ns.name(),
        &json!({"apiVersion": "v1", "kind": "List", "items": jobs}).to_string(),
    )
    .expect_success();
    for (name, _, reason, says) in &cases {
        let (got, message) = failure(&ns, name);
        assert_eq!(&got, reason, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
        assert!(
            !message.contains("not-it"),
            "{name}: a password leaked: {message}"
        );
    }

    assert_eq!(
        vcsim.power_state(&solo_vm.moref).await.unwrap(),
        "poweredOn",
        "a failed preflight powered the VM off"
    );
    // The wrong password reached no log and no event either.
    let log = std::fs::read_to_string(controller().server.process.log_path()).unwrap();
    assert!(
        !log.contains("not-it"),
        "a password in the controller's log"
    );
    let events = ns.kubectl(["get", "events", "-o", "json"]);
    assert!(
        !events.expect_success().contains("not-it"),
        "a password in an event"
    );
    // Prometheus says why jobs fail.
    for (_, _, reason, _) in &cases {
        let series = format!("vmm_import_jobs_failed{{reason=\"{reason}\"}}");
        let count = metric(controller().server.admin_port, &series).unwrap();
        assert!(count >= 1.0, "{series} {count}");
    }
}

/// Deleting a job mid-import cancels it: its images are removed, the export
/// lease is ended, and the source VM is left in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_mid_import_removes_what_it_made() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    // No image controller runs here: the images wait for a download that
    // never comes, so the job stays in Importing until it is deleted.
    let ns = TestNamespace::new(cp, "cancel").unwrap();
    let name = format!("Cancel me {}", vmm_testkit::namespace::random_suffix());
    let source_vm = vcsim
        .create_vm(
            &VmSpec::new(&name)
                .disk(DiskSpec::generated(8, 3, 0.5))
                .nic(NicSpec::on("VM Network"))
                .powered_on(true),
        )
        .await
        .unwrap();
    import::network_and_source(cp, vcsim, &ns).unwrap();
    let job = json!({
        "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "cancel"},
        "spec": {"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": name,
                 "mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "vlan-a"}]},
    });
    cp.apply_yaml(ns.name(), &job.to_string()).expect_success();

    let deadline = Instant::now() + WAIT;
    loop {
        let phase = ns.kubectl([
            "get",
            "importjob",
            "cancel",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        if phase.stdout.trim() == "Importing" {
            break;
        }
        assert!(Instant::now() < deadline, "never Importing: {phase}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let images = || {
        ns.kubectl([
            "get",
            "virtualmachineimages.harvesterhci.io",
            "-l",
            "importjob.harvesterhci.io/job=cancel",
            "-o",
            "name",
        ])
        .stdout
    };
    assert_eq!(images().lines().count(), 1, "one image per disk");
    let open_leases = || async {
        vcsim
            .leases_of(&source_vm.moref)
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.is_open())
            .count()
    };
    assert_eq!(open_leases().await, 1, "the export is open while importing");

    ns.kubectl([
        "delete",
        "importjob",
        "cancel",
        "--wait=true",
        "--timeout=60s",
    ])
    .expect_success();
    assert_eq!(images(), "", "the job's images are gone");
    assert_eq!(open_leases().await, 0, "the export lease was ended");
    let mut soap = vmm_testkit::vcsim::soap::SoapSession::login(vcsim)
        .await
        .unwrap();
    let still_there = soap
        .property("VirtualMachine", &source_vm.moref, "name")
        .await
        .unwrap();
    assert!(still_there.is_some(), "the source VM must never be deleted");
    soap.logout().await.unwrap();
}

/// Ranged reads, as CDI's importer makes them through nbdkit (and any
/// importer that reads a disk in pieces), answered by the controller from a
/// streamOptimized export that can only be read in order: each range holds
/// exactly the bytes qemu-img's conversion has there, whatever the order
/// (ascending, repeated, backwards, far ahead, from the end), and a whole
/// GET after them is whole. No image controller runs in the namespace, so
/// the disk stays served while the test reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_hold_the_bytes_qemu_img_makes() {
    const MIB: u64 = 1 << 20;
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    controller();
    let ns = TestNamespace::new(cp, "ranges").unwrap();
    import::network_and_source(cp, vcsim, &ns).unwrap();
    let name = format!("ranges {}", vmm_testkit::namespace::random_suffix());
    let source = import::source_vm(vcsim, &name, vec![DiskSpec::generated(72, 41, 0.5)])
        .await
        .unwrap();
    import::create_job(cp, &ns, "ranges", &name, json!({})).unwrap();
    let url = tokio::task::block_in_place(|| {
        let url = || {
            let image = ns.kubectl([
                "get",
                "virtualmachineimages.harvesterhci.io",
                "ranges-disk-0",
                "-o",
                "jsonpath={.spec.url}",
            ]);
            image.ok().ok().map(str::to_owned).filter(|u| !u.is_empty())
        };
        import::until(
            "the disk served",
            WAIT,
            || url().is_some(),
            || import::job(&ns, "ranges")["status"].to_string(),
        );
        url().unwrap()
    });
    let raw = vmm_testkit::vcsim::qemu_img_raw(&source.disks[0].descriptor_file).unwrap();
    let want = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    let size = want.len() as u64;
    assert_eq!(size, 72 * MIB);

    let client = reqwest::Client::new();
    // (Range header, first byte, end): Harvester's probe, nbdkit's small
    // reads at the start, then out of order, beyond any spool, from the end.
    let reads = [
        ("bytes=0-127", 0, 128),
        ("bytes=0-65535", 0, 65536),
        ("bytes=512-1023", 512, 1024),
        ("bytes=1048576-3145727", MIB, 3 * MIB),
        ("bytes=4096-8191", 4096, 8192),
        ("bytes=62914560-63963135", 60 * MIB, 61 * MIB),
        ("bytes=100-199", 100, 200),
        ("bytes=-4096", size - 4096, size),
        ("bytes=71303168-", 68 * MIB, size),
    ];
    for (range, start, end) in reads {
        let response = client
            .get(&url)
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206, "{range}");
        let content_range = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(response.headers()["content-range"], content_range.as_str());
        let body = response.bytes().await.unwrap();
        assert!(
            body[..] == want[start as usize..end as usize],
            "{range}: not the bytes qemu-img has there"
        );
    }
    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let body = whole.bytes().await.unwrap();
    assert!(body[..] == want[..], "the whole GET after ranges differs");
    ns.kubectl(["delete", "importjob", "ranges", "--wait=false"])
        .expect_success();
}
