//! The scratch directory on a size-limited mount, as the chart gives it (an
//! emptyDir with a `sizeLimit`): the controller runs in a mount namespace of
//! its own with an 8 MiB tmpfs as scratch. A streamOptimized disk four times
//! that size imports intact (it is streamed, never stored: stored, it would
//! not fit), and a monolithicSparse disk whose conversion needs more than
//! that fails `ScratchFull`, naming the value to raise, with no file left
//! behind. Its own test binary: its controller must be the only one of its
//! control plane.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use vmm_testkit::harvester::Options;
use vmm_testkit::import;
use vmm_testkit::servers::{ControllerServer, start_controller_on_limited_scratch};
use vmm_testkit::vcsim::{DiskSpec, NicSpec, VmSpec, qemu_img_raw_sha256};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(300);

fn finished(ns: &TestNamespace, job: &str, controller: &ControllerServer) -> Value {
    import::wait_finished(ns, job, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", controller.server.process.log_tail(60)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_disks_need_no_scratch_and_a_full_scratch_says_what_to_raise() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let scratch = cp.dir().join("scratch-8m");
    let controller = start_controller_on_limited_scratch(cp, "8m", &scratch).unwrap();
    let ns = TestNamespace::new(cp, "scratch").unwrap();
    let _harvester = import::image_controller(&ns, Options::default());
    import::network_and_source(cp, vcsim, &ns).unwrap();
    let suffix = vmm_testkit::namespace::random_suffix();

    let big = format!("big {suffix}");
    let disks = vec![DiskSpec::generated(32, 3, 1.0)];
    let source = import::source_vm(vcsim, &big, disks).await.unwrap();
    import::create_job(cp, &ns, "big", &big, json!({})).unwrap();
    let done = finished(&ns, "big", &controller);
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert_eq!(
        import::image_sha256(&ns, "big-disk-0"),
        qemu_img_raw_sha256(&source.disks[0].descriptor_file).unwrap()
    );

    let legacy = format!("legacy {suffix}");
    let mut spec = VmSpec::new(&legacy)
        .disk(DiskSpec::generated(32, 4, 0.5))
        .nic(NicSpec::on("VM Network"))
        .powered_on(true);
    spec.export_subformat = Some("monolithicSparse".into());
    vcsim.create_vm(&spec).await.unwrap();
    import::create_job(cp, &ns, "legacy", &legacy, json!({})).unwrap();
    let done = finished(&ns, "legacy", &controller);
    let ready = done["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(done["status"]["phase"], "Failed", "{}", done["status"]);
    assert_eq!(ready["reason"], "ScratchFull", "{ready}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("controller.scratchSizeLimit") && message.contains("33554432 bytes"),
        "{message}"
    );

    // Nothing left in the scratch directory, as the controller sees it; the
    // host's directory was never its mount.
    let inside = PathBuf::from(format!(
        "/proc/{}/root{}",
        controller.server.process.pid(),
        scratch.display()
    ));
    let left: Vec<_> = std::fs::read_dir(&inside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the scratch directory: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&scratch.display().to_string()),
        "the tmpfs leaked into the host's mounts"
    );
}
