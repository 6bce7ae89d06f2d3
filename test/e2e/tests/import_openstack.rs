//! An OpenStack import end to end: the controller binary against the real
//! Keystone and Glance and the project's stand-in for Nova, Cinder and
//! Neutron (whose uploads write real bytes into Glance), the stand-in for
//! Harvester's image controller downloading every disk, and the real
//! KubeVirt CRD. Each image must hash like its volume; the VM must have the
//! flavor's shape and the ports' MACs; no temporary snapshot, volume or image
//! may be left at the cloud, also when the job is deleted half-way. Two
//! faults of the cloud: an upload that fails (the image is made again) and
//! DELETEs refused while a job is deleted (it waits for them).

use std::time::Duration;

use serde_json::{Value, json};
use vmm_testkit::import;
use vmm_testkit::openstack::project::Project;
use vmm_testkit::servers::shared_controller;

const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_volume_two_port_server_imports_intact_and_leaves_nothing_behind() {
    shared_controller();
    let project = Project::new("os-import").await;
    let (server, volumes) = project.server("web");
    let done = import_succeeds(&project, "web");
    let ns = &project.ns;

    // Each image holds exactly its volume's bytes, the boot volume first.
    for (index, volume) in volumes.iter().enumerate() {
        assert_eq!(
            import::image_sha256(ns, &format!("web-disk-{index}")),
            project.os.cloud.volume_sha256(volume).unwrap(),
            "disk {index}"
        );
        assert_eq!(done["status"]["disks"][index]["sourceKey"], volume.as_str());
    }

    // The VM: the flavor's CPUs and memory, the ports' MACs, mapped networks.
    let target = done["status"]["targetName"].as_str().unwrap().to_owned();
    let vm = ns.kubectl(["get", "virtualmachines.kubevirt.io", &target, "-o", "json"]);
    let vm: Value = serde_json::from_str(vm.expect_success()).unwrap();
    let domain = &vm["spec"]["template"]["spec"]["domain"];
    let cpu = &domain["cpu"];
    assert_eq!(
        cpu["sockets"].as_i64().unwrap()
            * cpu["cores"].as_i64().unwrap()
            * cpu["threads"].as_i64().unwrap(),
        4,
        "{domain}"
    );
    // As a quantity: admission stores it canonically (3072Mi as 3Gi).
    assert_eq!(
        domain["memory"]["guest"]
            .as_str()
            .and_then(vmm_api::quantity::milli_units),
        Some(3072 * 1024 * 1024 * 1000),
        "{domain}"
    );
    let macs: Vec<_> = domain["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["macAddress"].clone())
        .collect();
    assert_eq!(macs, Project::server_macs("web").map(|mac| json!(mac)));
    let networks = &vm["spec"]["template"]["spec"]["networks"];
    assert_eq!(
        networks[0]["multus"]["networkName"],
        format!("{}/vlan-a", ns.name())
    );
    assert_eq!(
        networks[1]["multus"]["networkName"],
        format!("{}/vlan-b", ns.name())
    );

    // The server was stopped for it; the cloud holds nothing of the export.
    assert_eq!(project.os.cloud.server_status(&server), Some("SHUTOFF"));
    if let Err(left) = project.wait_no_leftovers(WAIT).await {
        panic!("left at the cloud: {left:?}");
    }
}

/// Nova snapshots an image-backed server's local root disk to a qcow2
/// image: the controller converts it with qemu-img and the root disk comes
/// first, its bytes intact; the snapshot image is removed with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_backed_server_imports_its_root_disk_through_a_snapshot_image() {
    shared_controller();
    let project = Project::new("os-image").await;
    let (server, volume) = project.image_backed_server("app");
    let done = import_succeeds(&project, "app");
    let ns = &project.ns;
    let disks = &done["status"]["disks"];
    assert_eq!(disks[0]["sourceKey"], "root", "{disks}");
    assert_eq!(disks[1]["sourceKey"], volume.as_str(), "{disks}");
    assert_eq!(
        import::image_sha256(ns, "app-disk-0"),
        project.os.cloud.root_disk_sha256(&server).unwrap()
    );
    assert_eq!(
        import::image_sha256(ns, "app-disk-1"),
        project.os.cloud.volume_sha256(&volume).unwrap()
    );
    if let Err(left) = project.wait_no_leftovers(WAIT).await {
        panic!("left at the cloud: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_during_the_upload_leaves_nothing_behind() {
    shared_controller();
    let project = Project::new("os-delete").await;
    let (_, _) = project.server("db");
    // Slow uploads to Glance, so the deletion lands while one runs.
    project.os.cloud.set_upload_rate(Some(32 << 20));
    project.create_job("db", "db");
    let ns = &project.ns;
    wait_for_a_temporary_volume(&project, "db");
    ns.kubectl(["delete", "importjob", "db", "--wait=true", "--timeout=240s"])
        .expect_success();
    project.os.cloud.set_upload_rate(None);
    // An upload still running when the job went finishes in Glance first:
    // what it made is removed all the same.
    if let Err(left) = project.wait_no_leftovers(WAIT).await {
        panic!(
            "left at the cloud after the job was deleted: {left:?}\n{}",
            shared_controller().server.process.log_tail(40)
        );
    }
}

/// Cinder's upload of one volume fails and the cloud deletes its image, as
/// Cinder does: the export makes that image again (the job says why it
/// waited) and the import succeeds, every disk intact, nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_cloud_loses_during_the_upload_is_made_again() {
    shared_controller();
    let project = Project::new("os-reupload").await;
    let (_, volumes) = project.server("api");
    project.os.cloud.fail_next_upload_of(&volumes[1]);
    import_succeeds(&project, "api");
    let ns = &project.ns;
    for (index, volume) in volumes.iter().enumerate() {
        assert_eq!(
            import::image_sha256(ns, &format!("api-disk-{index}")),
            project.os.cloud.volume_sha256(volume).unwrap(),
            "disk {index}"
        );
    }
    let events = ns.kubectl(["get", "events", "-o", "jsonpath={.items[*].message}"]);
    assert!(
        events
            .expect_success()
            .contains("the export makes it again"),
        "{events}"
    );
    if let Err(left) = project.wait_no_leftovers(WAIT).await {
        panic!("left at the cloud: {left:?}");
    }
}

/// A job deleted while Cinder refuses every DELETE (its backend down) keeps
/// its finalizer and says why in an Event; once the cloud lets its
/// temporaries go, they are removed and the job with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_waits_until_the_cloud_lets_its_temporaries_go() {
    shared_controller();
    let project = Project::new("os-refuse").await;
    project.server("cache");
    project.create_job("cache", "cache");
    let ns = &project.ns;
    wait_for_a_temporary_volume(&project, "cache");
    let cloud = &project.os.cloud;
    cloud.refuse_deletes(&project.user.project_id, true);
    ns.kubectl(["delete", "importjob", "cache", "--wait=false"])
        .expect_success();
    tokio::task::block_in_place(|| {
        import::until(
            "an ExportNotReleased Event",
            WAIT,
            || {
                ns.kubectl(["get", "events", "-o", "jsonpath={.items[*].reason}"])
                    .stdout
                    .contains("ExportNotReleased")
            },
            || shared_controller().server.process.log_tail(40),
        )
    });
    let held = import::job(ns, "cache");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert!(!project.leftovers().await.is_empty());
    cloud.refuse_deletes(&project.user.project_id, false);
    ns.kubectl(["wait", "--for=delete", "importjob/cache", "--timeout=240s"])
        .expect_success();
    if let Err(left) = project.wait_no_leftovers(WAIT).await {
        panic!("left at the cloud after the job went: {left:?}");
    }
}

/// Waits until the export of `job` has made a temporary volume.
fn wait_for_a_temporary_volume(project: &Project, job: &str) {
    tokio::task::block_in_place(|| {
        import::until(
            "a temporary volume",
            WAIT,
            || {
                project
                    .os
                    .cloud
                    .snapshot_and_volume_names(&project.user.project_id)
                    .iter()
                    .any(|n| n.starts_with("volume vmm-"))
            },
            || {
                format!(
                    "job: {}\n{}",
                    import::job(&project.ns, job)["status"],
                    shared_controller().server.process.log_tail(60)
                )
            },
        )
    });
}

/// Imports the server `name` as the job `name`; the finished job, which
/// must have succeeded.
fn import_succeeds(project: &Project, name: &str) -> Value {
    project.create_job(name, name);
    tokio::task::block_in_place(|| import::succeeded(&project.ns, name, WAIT))
}
