//! Import jobs as a user drives them: what a namespace needs (the image
//! controller stand-in, a NAD, the source), a source VM, the job, and
//! waiting with kubectl until it has ended.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;
use crate::harvester::{Backend, ImageController, Options};
use crate::namespace::TestNamespace;
use crate::vcsim::{CreatedVm, DiskSpec, NicSpec, Vcsim, VmSpec, qemu_img_raw_sha256};

/// A bridge NetworkAttachmentDefinition on `vlan`, as Harvester's UI makes one.
pub fn nad(namespace: &str, name: &str, vlan: u16) -> Value {
    let config = json!({"cniVersion": "0.3.1", "name": name, "type": "bridge",
        "bridge": "mgmt-br", "promiscMode": true, "vlan": vlan, "ipam": {}});
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": config.to_string()}})
}

/// The job (`kubectl get -o json`) once its phase is Succeeded or Failed.
pub fn wait_finished(ns: &TestNamespace, job: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = ns.kubectl(["get", "importjob", job, "-o", "json"]);
        let now: Value = serde_json::from_str(out.ok()?)?;
        let phase = now["status"]["phase"].as_str().unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!(
                "job {job} still running after {timeout:?}: {}",
                now["status"]
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// [`wait_finished`] with the shared controller's log in the panic when the
/// job never ends.
pub fn finished(ns: &TestNamespace, job: &str, timeout: Duration) -> Value {
    wait_finished(ns, job, timeout).unwrap_or_else(|e| {
        panic!(
            "{e:#}\ncontroller log:\n{}",
            crate::servers::shared_controller()
                .server
                .process
                .log_tail(40)
        )
    })
}

/// [`finished`], which must have succeeded (else a panic with the job's
/// status and the shared controller's log).
pub fn succeeded(ns: &TestNamespace, job: &str, timeout: Duration) -> Value {
    let done = finished(ns, job, timeout);
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        done["status"],
        crate::servers::shared_controller()
            .server
            .process
            .log_tail(60)
    );
    done
}

/// The reason and message of a job's Ready condition once it has Failed
/// (a panic if it succeeds).
pub fn failure(ns: &TestNamespace, job: &str, timeout: Duration) -> (String, String) {
    let done = finished(ns, job, timeout);
    assert_eq!(
        done["status"]["phase"], "Failed",
        "{job}: {}",
        done["status"]
    );
    let ready = done["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    (
        ready["reason"].as_str().unwrap_or_default().to_owned(),
        ready["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// What an import test needs in its namespace: the stand-in for Harvester's
/// image controller watching it (retrying after `retry_delay`), the NAD
/// `vlan-a` (VLAN 10) and the `Vsphere` source `vc` for vcsim.
pub fn prepare(
    cp: &ControlPlane,
    vcsim: &Vcsim,
    ns: &TestNamespace<'_>,
    retry_delay: Duration,
) -> Result<ImageController> {
    let harvester = ImageController::start(
        cp.client(),
        Options {
            namespace: Some(ns.name().to_owned()),
            retry_delay,
            ..Options::default()
        },
    )?;
    network_and_source(cp, vcsim, ns)?;
    Ok(harvester)
}

/// The NAD `vlan-a` (VLAN 10) and the `Vsphere` source `vc` for vcsim in
/// the namespace.
pub fn network_and_source(cp: &ControlPlane, vcsim: &Vcsim, ns: &TestNamespace<'_>) -> Result<()> {
    network_and_source_at(cp, vcsim, ns, vcsim.url())
}

/// [`network_and_source`] with the source reaching vcsim at `endpoint`.
pub fn network_and_source_at(
    cp: &ControlPlane,
    vcsim: &Vcsim,
    ns: &TestNamespace<'_>,
    endpoint: &str,
) -> Result<()> {
    cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        &nad(ns.name(), "vlan-a", 10).to_string(),
    )
    .ok()?;
    cp.apply_yaml(ns.name(), &vcsim.source_manifest_at("vc", endpoint))
        .ok()?;
    Ok(())
}

/// A VM in vcsim with one NIC on "VM Network", powered on, and `disks`.
pub async fn source_vm(vcsim: &Vcsim, name: &str, disks: Vec<DiskSpec>) -> Result<CreatedVm> {
    let mut spec = VmSpec::new(name)
        .nic(NicSpec::on("VM Network"))
        .powered_on(true);
    spec.disks = disks;
    vcsim.create_vm(&spec).await
}

/// Creates the import job `name` for `vm_name` of the source `vc`, mapping
/// "VM Network" to `vlan-a`; `spec` fields are added (e.g. `storageClass`).
pub fn create_job(
    cp: &ControlPlane,
    ns: &TestNamespace<'_>,
    name: &str,
    vm_name: &str,
    spec: Value,
) -> Result<()> {
    let mut job = json!({
        "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "sourceCluster": {"kind": "Vsphere", "name": "vc"},
            "vmName": vm_name,
            "mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "vlan-a"}],
        },
    });
    if let (Some(all), Some(extra)) = (job["spec"].as_object_mut(), spec.as_object()) {
        all.extend(extra.clone());
    }
    cp.apply_yaml(ns.name(), &job.to_string()).ok()?;
    Ok(())
}

/// The SHA-256 the stand-in for Harvester's image controller recorded for
/// `image` (empty before it has imported it).
pub fn image_sha256(ns: &TestNamespace<'_>, image: &str) -> String {
    let json = ns.kubectl([
        "get",
        "virtualmachineimages.harvesterhci.io",
        image,
        "-o",
        "json",
    ]);
    let image: Value = serde_json::from_str(json.expect_success()).unwrap();
    image["metadata"]["annotations"][crate::harvester::SHA256_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What a vSphere import that ended (after restarts, kills) must leave:
/// each image `<job>-disk-<i>` holds exactly the bytes qemu-img makes of the
/// source's disk `i`, no other image carries the job's label, no export
/// lease of the VM is open, the VM is off, and `scratch` holds no file.
/// `context` starts each failure's message.
pub async fn assert_vsphere_import_clean(
    vcsim: &Vcsim,
    ns: &TestNamespace<'_>,
    job: &str,
    source: &CreatedVm,
    scratch: &Path,
    context: &str,
) {
    for (index, disk) in source.disks.iter().enumerate() {
        assert_eq!(
            image_sha256(ns, &format!("{job}-disk-{index}")),
            qemu_img_raw_sha256(&disk.descriptor_file).unwrap(),
            "{context}: disk {index}"
        );
    }
    let label = format!("{}={job}", vmm_api::importjob::JOB_LABEL);
    let images = ns.kubectl([
        "get",
        "virtualmachineimages.harvesterhci.io",
        "-l",
        &label,
        "-o",
        "name",
    ]);
    assert_eq!(
        images.expect_success().lines().count(),
        source.disks.len(),
        "{context}: stray images"
    );
    let open: Vec<_> = vcsim
        .leases_of(&source.moref)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.is_open())
        .collect();
    assert!(open.is_empty(), "{context}: leases left open: {open:?}");
    assert_eq!(
        vcsim.power_state(&source.moref).await.unwrap(),
        "poweredOff",
        "{context}"
    );
    let files: Vec<_> = std::fs::read_dir(scratch).unwrap().collect();
    assert!(files.is_empty(), "{context}: local files left: {files:?}");
}

/// The job `name` as `kubectl get -o json` shows it.
pub fn job(ns: &TestNamespace<'_>, name: &str) -> Value {
    let out = ns.kubectl(["get", "importjob", name, "-o", "json"]);
    serde_json::from_str(out.expect_success()).unwrap()
}

/// Whether one of the job's disks is part-way through its transfer (a
/// moment to kill a controller or delete the job in); a panic once the job
/// has failed, which would otherwise only show as a timeout.
pub fn mid_transfer(job: &Value) -> bool {
    assert_ne!(job["status"]["phase"], "Failed", "{}", job["status"]);
    job["status"]["disks"].as_array().is_some_and(|disks| {
        disks
            .iter()
            .any(|d| d["bytesDone"].as_i64().unwrap_or(0) > 0 && d["phase"] == "Transferring")
    })
}

/// Waits until `done`, checking every 100 ms; panics after `timeout` with
/// `what` and what `context` says then (the job, a log).
pub fn until(what: &str, timeout: Duration, done: impl Fn() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stand-in for Harvester's image controller on `ns` alone, with
/// `options` but retrying a failed download after a second (a test need
/// not wait Harvester's 10 s).
pub fn image_controller(ns: &TestNamespace<'_>, options: Options) -> ImageController {
    ImageController::start(
        ns.control_plane().client(),
        Options {
            namespace: Some(ns.name().to_owned()),
            retry_delay: Duration::from_secs(1),
            ..options
        },
    )
    .unwrap()
}

/// Both of Harvester's image backends, as an import job picks them: (a name
/// for the case, the backend, the job's extra spec). The default class is
/// Longhorn's; for CDI a StorageClass of another provisioner
/// (`ceph-<namespace>`) is made here.
pub fn both_backends(ns: &TestNamespace<'_>) -> [(&'static str, Backend, Value); 2] {
    let class = format!("ceph-{}", ns.name());
    let storage_class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": class}, "provisioner": "rbd.csi.ceph.com"});
    ns.control_plane()
        .kubectl_with_stdin(["apply", "-f", "-"], &storage_class.to_string())
        .expect_success();
    [
        ("longhorn", Backend::BackingImage, json!({})),
        ("cdi", Backend::Cdi, json!({"storageClass": class})),
    ]
}
