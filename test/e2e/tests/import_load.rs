//! Import load (issue 16, suite 4): one vSphere import alone, then ten at
//! once, each of a VM with one disk of the same size, through the real
//! controller and the stand-in for Harvester's image controller (which
//! downloads every disk from the controller's disk endpoint). Every job must
//! end Succeeded with its image hashing like qemu-img's conversion of its
//! source; it prints the aggregate throughput of the ten against the one
//! (logical disk bytes per second, job created → Succeeded), for
//! docs/reliability.md. No timing is asserted.
//!
//! In CI: `VMM_LOAD_IMPORTS=10`, `VMM_LOAD_DISK_MIB=32` (the defaults); the
//! long form is `VMM_LOAD_DISK_MIB=256`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::harvester::Options;
use vmm_testkit::servers::shared_controller;
use vmm_testkit::vcsim::{DiskSpec, NicSpec, VmSpec, qemu_img_raw_sha256};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const WAIT: Duration = Duration::from_secs(900);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_imports_at_once_all_succeed() {
    let imports: usize = env_or("VMM_LOAD_IMPORTS", 10);
    let disk_mib: u64 = env_or("VMM_LOAD_DISK_MIB", 32);

    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    shared_controller();
    let ns = TestNamespace::new(cp, "load").unwrap();
    let harvester = import::image_controller(&ns, Options::default());
    import::network_and_source(cp, vcsim, &ns).unwrap();

    let suffix = vmm_testkit::namespace::random_suffix();
    let mut descriptors = Vec::new();
    for i in 0..=imports {
        // A MAC of its own each: vcsim's generated ones clashed once in
        // eleven VMs, and preflight refuses a MAC another VM has.
        let spec = VmSpec::new(format!("load {suffix} {i}"))
            .disk(DiskSpec::generated(disk_mib, 100 + i as u64, 0.5))
            .nic(NicSpec::on("VM Network").mac(format!("00:50:56:3f:10:{i:02x}")))
            .powered_on(true);
        let vm = vcsim.create_vm(&spec).await.unwrap();
        descriptors.push(vm.disks[0].descriptor_file.clone());
    }

    let alone = run_jobs(cp, &ns, &suffix, 0..1);
    let together = run_jobs(cp, &ns, &suffix, 1..imports + 1);
    for (i, descriptor) in descriptors.iter().enumerate() {
        assert_eq!(
            import::image_sha256(&ns, &format!("job-{i}-disk-0")),
            qemu_img_raw_sha256(descriptor).unwrap(),
            "job-{i}'s disk"
        );
    }
    drop(harvester);

    let bytes = (disk_mib << 20) as f64;
    let one = bytes / alone.as_secs_f64();
    let all = imports as f64 * bytes / together.as_secs_f64();
    println!("\nimport load: {imports} vSphere imports at once, one {disk_mib} MiB disk each");
    println!(
        "one alone: {:.1} s, {:.1} MiB/s",
        alone.as_secs_f64(),
        one / 1048576.0
    );
    println!(
        "{imports} at once: all Succeeded in {:.1} s, {:.1} MiB/s aggregate, {:.2}× one import's throughput",
        together.as_secs_f64(),
        all / 1048576.0,
        all / one
    );
}

/// Creates jobs `job-<i>` for VMs `load <suffix> <i>` at once and waits
/// until all have Succeeded (a failure panics with its status); returns the
/// time from the first creation to the last success.
fn run_jobs(
    cp: &ControlPlane,
    ns: &TestNamespace<'_>,
    suffix: &str,
    range: std::ops::Range<usize>,
) -> Duration {
    let started = Instant::now();
    for i in range.clone() {
        import::create_job(
            cp,
            ns,
            &format!("job-{i}"),
            &format!("load {suffix} {i}"),
            json!({}),
        )
        .unwrap();
    }
    let deadline = started + WAIT;
    loop {
        let list: Value = serde_json::from_str(
            ns.kubectl(["get", "importjob", "-o", "json"])
                .expect_success(),
        )
        .unwrap();
        let phases: Vec<(String, Value)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|job| {
                let name = job["metadata"]["name"].as_str().unwrap_or_default();
                range.clone().any(|i| name == format!("job-{i}"))
            })
            .map(|job| (job["metadata"]["name"].to_string(), job["status"].clone()))
            .collect();
        if let Some((name, status)) = phases.iter().find(|(_, s)| s["phase"] == "Failed") {
            panic!("{name} failed: {status}");
        }
        if phases.len() == range.len() && phases.iter().all(|(_, s)| s["phase"] == "Succeeded") {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "not all Succeeded: {phases:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
