//! A controller killed (SIGKILL) while Cinder uploads a volume to Glance,
//! and the next one killed while Harvester downloads a disk from Glance
//! through it: a third finishes the job with identical disks, and nothing of
//! the export is left at the cloud. A binary of its own: the controllers here
//! are the test's, and no shared one may take the job.

use std::time::Duration;

use vmm_testkit::ControlPlane;
use vmm_testkit::harvester::Options;
use vmm_testkit::import::{self, job, mid_transfer, until};
use vmm_testkit::openstack::project::Project;
use vmm_testkit::servers::RestartableController;

const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_during_the_upload_and_the_download_finishes_the_job() {
    let cp = ControlPlane::shared();
    // Slow transfers both ways, so each kill lands in the middle of one.
    let project = Project::with_options(
        "os-resume",
        Options {
            download_rate: Some(64 << 20),
            ..Options::default()
        },
    )
    .await;
    let cloud = &project.os.cloud;
    cloud.set_upload_rate(Some(64 << 20));
    let (_, volumes) = project.server("app");
    let controllers = RestartableController::new(cp).unwrap();
    let ns = &project.ns;

    let mut first = controllers.start();
    project.create_job("app", "app");
    tokio::task::block_in_place(|| {
        until(
            "an upload to Glance",
            WAIT,
            || cloud.uploads_in_progress(&project.user.project_id) > 0,
            || first.server.process.log_tail(40),
        )
    });
    first.server.process.kill().unwrap();
    drop(first);

    let mut second = controllers.start();
    tokio::task::block_in_place(|| {
        until(
            "a disk half downloaded",
            WAIT,
            || mid_transfer(&job(ns, "app")),
            || {
                format!(
                    "{}\n{}",
                    job(ns, "app")["status"],
                    second.server.process.log_tail(40)
                )
            },
        )
    });
    second.server.process.kill().unwrap();
    drop(second);

    let third = controllers.start();
    let done = tokio::task::block_in_place(|| import::wait_finished(ns, "app", WAIT))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", third.server.process.log_tail(40)));
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        done["status"],
        third.server.process.log_tail(40)
    );
    for (index, volume) in volumes.iter().enumerate() {
        assert_eq!(
            import::image_sha256(ns, &format!("app-disk-{index}")),
            cloud.volume_sha256(volume).unwrap(),
            "disk {index}"
        );
    }
    if let Err(left) = project.wait_no_leftovers(WAIT).await {
        panic!("left at the cloud: {left:?}");
    }
}
