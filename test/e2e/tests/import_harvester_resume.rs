//! A controller killed (SIGKILL) while KubeVirt makes the remote export: the
//! next one finishes the job with the same export and identical disks, and
//! deletes the export and its token Secret. Then a job whose progress a
//! watch sees grow, deleted while Harvester downloads its disks: the
//! export, its Secret and the images go.
//! A binary of its own: the controllers here are the test's, and no shared
//! one may take the jobs.

use std::time::Duration;

use vmm_testkit::ControlPlane;
use vmm_testkit::harvester::Options;
use vmm_testkit::import::{self, job, mid_transfer, until};
use vmm_testkit::kubevirt;
use vmm_testkit::remote::ImportWorld;
use vmm_testkit::servers::RestartableController;
use vmm_testkit::sources::KubectlWatch;

const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_export_and_a_deletion_during_the_download_leave_nothing_behind() {
    let cp = ControlPlane::shared();
    // KubeVirt takes a while to serve the export, so the kill lands while
    // it does; Harvester downloads slowly, so the deletion lands mid-way.
    let world = ImportWorld::new(
        "hv-resume",
        Options {
            download_rate: Some(4 << 20),
            ..Options::default()
        },
        kubevirt::Options {
            ready_delay: Duration::from_secs(8),
            ..kubevirt::Options::default()
        },
    )
    .await;
    let volumes = world.running_vm("web", 32).await;
    world.running_vm("db", 64).await;
    let controllers = RestartableController::new(cp).unwrap();
    let ns = &world.ns;
    let exports = || {
        world
            .remote
            .names("virtualmachineexports.export.kubevirt.io")
    };

    let mut first = controllers.start();
    world.create_job("web", "web", "remote");
    tokio::task::block_in_place(|| {
        until(
            "a VirtualMachineExport at the remote cluster",
            WAIT,
            || !exports().is_empty(),
            || {
                format!(
                    "{}\n{}",
                    job(ns, "web")["status"],
                    first.server.process.log_tail(40)
                )
            },
        )
    });
    first.server.process.kill().unwrap();
    drop(first);
    let made = exports();

    let second = controllers.start();
    let done = tokio::task::block_in_place(|| import::wait_finished(ns, "web", WAIT))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", second.server.process.log_tail(40)));
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        done["status"],
        second.server.process.log_tail(40)
    );
    for (index, volume) in volumes.iter().enumerate() {
        assert_eq!(
            import::image_sha256(ns, &format!("web-disk-{index}")),
            volume.sha256,
            "disk {index}"
        );
    }
    let served: Vec<String> = world
        .kubevirt
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.export)
        .collect();
    assert!(
        served.iter().all(|e| made.contains(e)),
        "the second controller read the export the first one made ({made:?}), not another: {served:?}"
    );
    if let Err(left) = tokio::task::block_in_place(|| world.wait_no_exports(WAIT)) {
        panic!("left at the remote cluster after the kill: {left:?}");
    }

    // Users see progress: a watch on the job sees its first disk's bytes
    // grow at least three times while it transfers.
    let watch = KubectlWatch::start(ns, "importjob");
    world.create_job("db", "db", "remote");
    let increases = || {
        let mut last = 0;
        let mut count = 0;
        for event in watch.events() {
            let object = &event["object"];
            let done = object["status"]["disks"][0]["bytesDone"].as_i64();
            if object["metadata"]["name"] == "db" && done.is_some_and(|bytes| bytes > last) {
                last = done.unwrap_or(last);
                count += 1;
            }
        }
        count
    };
    tokio::task::block_in_place(|| {
        until(
            "three increases of the first disk's bytes, seen by a watch, and a disk still transferring",
            WAIT,
            || increases() >= 3 && mid_transfer(&job(ns, "db")),
            || {
                format!(
                    "{}\n{}",
                    job(ns, "db")["status"],
                    second.server.process.log_tail(40)
                )
            },
        )
    });
    ns.kubectl(["delete", "importjob", "db", "--wait=true", "--timeout=240s"])
        .expect_success();
    if let Err(left) = tokio::task::block_in_place(|| world.wait_no_exports(WAIT)) {
        panic!("left at the remote cluster after the deletion: {left:?}");
    }
    let images = ns.kubectl([
        "get",
        "virtualmachineimages.harvesterhci.io",
        "-l",
        "importjob.harvesterhci.io/job=db",
        "-o",
        "name",
    ]);
    assert_eq!(
        images.expect_success().trim(),
        "",
        "the job's images are removed"
    );
}
