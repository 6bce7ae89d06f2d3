//! A Harvester import end to end: the controller binary against a second
//! kube-apiserver playing the remote cluster, with the stand-in for
//! KubeVirt's VM stop, export controller and export server (real bytes over
//! TLS with the export's CA, the token in its header), and the stand-in for
//! the local Harvester's image controller downloading every disk. Each
//! image must hash like its remote volume; the new VM must equal the remote
//! one in every field that carries over; the remote VM must be halted and no
//! export or token Secret left there.

use std::time::Duration;

use serde_json::{Value, json};
use vmm_testkit::harvester::Options;
use vmm_testkit::import;
use vmm_testkit::kubevirt::{self, ExportFormat, TokenVia};
use vmm_testkit::remote::{ImportWorld, REMOTE_NS};
use vmm_testkit::servers::shared_controller;
use vmm_testkit::sources::{secret, source};

const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_vm_imports_intact_and_leaves_nothing_behind() {
    shared_controller();
    let world = ImportWorld::new(
        "hv-import",
        Options::default(),
        kubevirt::Options::default(),
    )
    .await;
    let volumes = world.running_vm("web", 64).await;
    world.create_job("web", "web", "remote");
    let ns = &world.ns;
    let done = tokio::task::block_in_place(|| import::succeeded(ns, "web", WAIT));

    // Each image holds exactly its volume's bytes, the boot volume first;
    // the data volume came gzip-compressed (its only link).
    for (index, volume) in volumes.iter().enumerate() {
        assert_eq!(
            import::image_sha256(ns, &format!("web-disk-{index}")),
            volume.sha256,
            "disk {index}"
        );
        assert_eq!(done["status"]["disks"][index]["sourceKey"], volume.claim);
    }
    // The node it ran on is its host, as transfer limits count them.
    assert_eq!(done["status"]["sourceVm"]["host"], kubevirt::NODE);
    // Their URLs, which anyone who may read the images sees, stop working
    // with the job.
    let http = vmm_testkit::tls::reqwest_client(&[], None).unwrap();
    for index in 0..volumes.len() {
        let image = format!("web-disk-{index}");
        let url = ns.kubectl([
            "get",
            "virtualmachineimages.harvesterhci.io",
            &image,
            "-o",
            "jsonpath={.spec.url}",
        ]);
        let url = url.expect_success().trim().to_owned();
        let status = http.get(&url).send().await.unwrap().status();
        assert_eq!(status, 404, "{url} after the job succeeded");
    }
    let requests = world.kubevirt.requests();
    for (claim, format) in [
        ("web-root", ExportFormat::Raw),
        ("web-data", ExportFormat::Gzip),
    ] {
        assert!(
            requests.iter().any(|r| r.volume.as_deref() == Some(claim)
                && r.format == Some(format)
                && r.status == 200
                && r.token == TokenVia::Header),
            "{claim} was not read as {format:?} with the token header: {requests:#?}"
        );
    }

    // The new VM is the remote one in every field that carries over.
    let target = done["status"]["targetName"].as_str().unwrap().to_owned();
    let local = ns.kubectl(["get", "virtualmachines.kubevirt.io", &target, "-o", "json"]);
    let local: Value = serde_json::from_str(local.expect_success()).unwrap();
    let remote = world
        .remote
        .get("virtualmachines.kubevirt.io", "web")
        .unwrap();
    assert_eq!(carried(&local), carried(&remote));

    // The remote VM is halted, its instance gone; no export is left there.
    assert_eq!(remote["spec"]["runStrategy"], "Halted");
    assert!(
        world
            .remote
            .get("virtualmachineinstances.kubevirt.io", "web")
            .is_none()
    );
    if let Err(left) = tokio::task::block_in_place(|| world.wait_no_exports(WAIT)) {
        panic!("left at the remote cluster: {left:?}");
    }
}

/// A token that may only browse: preflight fails the import, naming what
/// the role lacks, and the remote VM runs on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browse_only_token_fails_the_job_before_the_vm_is_touched() {
    shared_controller();
    let world = ImportWorld::new(
        "hv-denied",
        Options::default(),
        kubevirt::Options::default(),
    )
    .await;
    world.running_vm("app", 8).await;
    let ns = &world.ns;
    ns.apply_all(&[
        secret("reader", json!({"token": world.remote.token("reader")})),
        source(
            "Harvester",
            "browse",
            world.remote.cp.server_url(),
            "reader",
            json!({"caBundle": world.remote.ca}),
        ),
    ]);
    world.create_job("app", "app", "browse");
    let (reason, message) = tokio::task::block_in_place(|| import::failure(ns, "app", WAIT));
    assert_eq!(reason, "PermissionDenied", "{message}");
    assert!(
        message.contains("patch virtualmachines") && message.contains(REMOTE_NS),
        "{message}"
    );
    let vm = world
        .remote
        .get("virtualmachines.kubevirt.io", "app")
        .unwrap();
    assert_eq!(vm["spec"]["runStrategy"], "RerunOnFailure");
    assert!(
        world
            .remote
            .get("virtualmachineinstances.kubevirt.io", "app")
            .is_some(),
        "the VM still runs"
    );
    assert!(world.kubevirt.requests().is_empty(), "nothing was exported");
}

/// What a VM is made of that an import carries over: CPU topology, guest
/// memory (MiB), firmware (boot loader and UUID), the imported disks' buses
/// in boot order, and each interface's MAC, model and network (by name:
/// the job maps each remote VLAN to the local one of the same name).
fn carried(vm: &Value) -> Value {
    let spec = &vm["spec"]["template"]["spec"];
    let domain = &spec["domain"];
    let claims: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("persistentVolumeClaim").is_some())
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut disks: Vec<(u64, Value)> = domain["devices"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| claims.contains(&d["name"].as_str().unwrap_or_default()))
        .map(|d| {
            (
                d["bootOrder"].as_u64().unwrap_or(u64::MAX),
                d["disk"]["bus"].clone(),
            )
        })
        .collect();
    disks.sort_by_key(|(order, _)| *order);
    let network = |name: &Value| {
        spec["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| &n["name"] == name)
            .and_then(|n| n["multus"]["networkName"].as_str())
            .map(|qualified| qualified.rsplit('/').next().unwrap().to_owned())
    };
    let interfaces: Vec<Value> = domain["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!([i["macAddress"], i["model"], network(&i["name"])]))
        .collect();
    // What the target's admission adds (the remote test cluster has none):
    // Harvester's `maxSockets` and the SMBIOS serial KubeVirt makes up.
    let mut cpu = domain["cpu"].clone();
    let mut firmware = domain["firmware"].clone();
    for (object, added) in [(&mut cpu, "maxSockets"), (&mut firmware, "serial")] {
        if let Some(object) = object.as_object_mut() {
            object.remove(added);
        }
    }
    json!({
        "cpu": cpu,
        "memoryMib": mib(domain["memory"]["guest"].as_str().unwrap()),
        "firmware": firmware,
        "disks": disks.into_iter().map(|(_, bus)| bus).collect::<Vec<_>>(),
        "interfaces": interfaces,
    })
}

/// A `Mi` or `Gi` quantity in MiB.
fn mib(quantity: &str) -> u64 {
    match quantity.split_at(quantity.len() - 2) {
        (n, "Mi") => n.parse().unwrap(),
        (n, "Gi") => n.parse::<u64>().unwrap() * 1024,
        _ => panic!("not a Mi or Gi quantity: {quantity}"),
    }
}
