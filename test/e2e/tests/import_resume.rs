//! A controller that dies anywhere in an import leaves nothing the next one
//! cannot finish. For each crash point of `vmm_controller::crash` (preflight
//! passed, guest shutdown asked, export opened, one disk imported, every disk
//! imported, VM applied) the controller binary runs with `VMM_CRASH_AT` and
//! exits there without any cleanup; a second one, on the same disk URL, must
//! finish the job with disks identical to `qemu-img`'s conversion, never
//! download a finished disk again, and leave no export lease open, no stray
//! image and no local file.
//!
//! Then a controller killed (SIGKILL) while each of Harvester's image
//! backends downloads a disk through it, Longhorn's data source and CDI's
//! importer side by side: the next one finishes both jobs the same way, the
//! backends' real programs trying again as their controllers have them do.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_controller::crash;
use vmm_testkit::harvester::Options;
use vmm_testkit::process::{ManagedProcess, free_port};
use vmm_testkit::servers::{ControllerOptions, ControllerServer, start_controller_with};
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const WAIT: Duration = Duration::from_secs(300);

/// How many of the job's disks were imported when the controller died at
/// `point` (the small disk 0 finishes first).
fn imported_before(point: &str) -> usize {
    match point {
        crash::ONE_DISK_IMPORTED => 1,
        crash::ALL_DISKS_IMPORTED | crash::VM_APPLIED => 2,
        _ => 0,
    }
}

fn wait_exit(process: &mut ManagedProcess) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = process.try_status().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never reached its crash point:\n{}",
            process.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the job's first disk is between a quarter and the end of its
/// transfer: well into the whole GET, past CDI's ranged reads at the start.
fn a_quarter_through(job: &Value) -> bool {
    assert_ne!(job["status"]["phase"], "Failed", "{}", job["status"]);
    let disk = &job["status"]["disks"][0];
    let (done, size) = (disk["bytesDone"].as_u64(), disk["capacityBytes"].as_u64());
    matches!((done, size), (Some(done), Some(size)) if done >= size / 4 && done < size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_at_any_point_finishes_the_job() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let ns = TestNamespace::new(cp, "resume").unwrap();
    // Harvester retries a failed download after 10 s; sooner keeps this short.
    let harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(2)).unwrap();
    let program = vmm_testkit::peers::workspace_binary("vmm-controller").unwrap();
    let disk_port = free_port().unwrap();
    let scratch = cp.dir().join(format!("controller-tmp-{}", ns.name()));
    std::fs::create_dir_all(&scratch).unwrap();
    let start = |env: &[(&str, &OsStr)]| -> ControllerServer {
        let options = ControllerOptions {
            disk_port: Some(disk_port),
            env,
            ..ControllerOptions::default()
        };
        start_controller_with(cp, &program, cp.kubeconfig_path(), &options).unwrap()
    };

    for (seed, point) in (1..).zip(crash::POINTS) {
        let vm_name = format!("resume {point} {}", vmm_testkit::namespace::random_suffix());
        let disks = vec![
            DiskSpec::generated(16, seed, 0.5),
            DiskSpec::generated(128, seed + 100, 0.5),
        ];
        let source = import::source_vm(vcsim, &vm_name, disks).await.unwrap();
        let job = format!("resume-{point}");

        let mut first = start(&[
            (crash::ENV, OsStr::new(point)),
            ("TMPDIR", scratch.as_os_str()),
        ]);
        import::create_job(cp, &ns, &job, &vm_name, json!({})).unwrap();
        let exit = wait_exit(&mut first.server.process);
        assert_eq!(exit.code(), Some(crash::EXIT_CODE), "{point}: {exit}");
        drop(first);

        let second = start(&[("TMPDIR", scratch.as_os_str())]);
        let done = import::wait_finished(&ns, &job, WAIT)
            .unwrap_or_else(|e| panic!("{point}: {e:#}\n{}", second.server.process.log_tail(40)));
        assert_eq!(
            done["status"]["phase"],
            "Succeeded",
            "{point}: {}\n{}",
            done["status"],
            second.server.process.log_tail(40)
        );

        // Identical disks, nothing leaked; a disk finished before the crash
        // was not fetched again.
        import::assert_vsphere_import_clean(vcsim, &ns, &job, &source, &scratch, point).await;
        for index in 0..imported_before(point) {
            let image = format!("{job}-disk-{index}");
            let record = harvester.result(ns.name(), &image).unwrap();
            assert_eq!(record.attempts, 1, "{point}: {image}: {record:?}");
        }
    }
    drop(harvester);

    // Killed mid-transfer, on each backend. Downloads held to 8 MiB/s, so
    // the kill lands in the middle of the whole GET.
    let ns = TestNamespace::new(cp, "resume-backends").unwrap();
    let harvester = import::image_controller(
        &ns,
        Options {
            download_rate: Some(8 << 20),
            ..Options::default()
        },
    );
    import::network_and_source(cp, vcsim, &ns).unwrap();
    let backends = import::both_backends(&ns);
    let mut first = start(&[("TMPDIR", scratch.as_os_str())]);
    let mut jobs = Vec::new();
    for (seed, (job, backend, spec)) in (50..).zip(backends) {
        let vm_name = format!("killed {job} {}", vmm_testkit::namespace::random_suffix());
        let disks = vec![DiskSpec::generated(96, seed, 0.5)];
        let source = import::source_vm(vcsim, &vm_name, disks).await.unwrap();
        import::create_job(cp, &ns, job, &vm_name, spec).unwrap();
        jobs.push((job, backend, source));
    }
    tokio::task::block_in_place(|| {
        for (job, ..) in &jobs {
            import::until(
                &format!("{job} a quarter through its transfer"),
                WAIT,
                || a_quarter_through(&import::job(&ns, job)),
                || import::job(&ns, job)["status"].to_string(),
            );
        }
    });
    first.server.process.kill().unwrap();
    drop(first);
    let second = start(&[("TMPDIR", scratch.as_os_str())]);
    for (job, backend, source) in &jobs {
        let done = import::wait_finished(&ns, job, WAIT)
            .unwrap_or_else(|e| panic!("{job}: {e:#}\n{}", second.server.process.log_tail(40)));
        assert_eq!(
            done["status"]["phase"], "Succeeded",
            "{job}: {}",
            done["status"]
        );
        import::assert_vsphere_import_clean(vcsim, &ns, job, source, &scratch, job).await;
        let record = harvester
            .result(ns.name(), &format!("{job}-disk-0"))
            .unwrap();
        assert_eq!(record.backend, *backend, "{job}");
        assert!(
            record.attempts >= 2,
            "{job}: the kill went unnoticed: {record:?}"
        );
    }
}
