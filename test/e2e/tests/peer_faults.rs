//! Peer faults (issue 16, suite 2): kube-apiserver stopped and started again
//! on its port under both binaries, as an upgrade or a crash would, while an
//! import transfers. Neither binary is restarted: the aggregated inventory
//! answers again, the apiserver's own watches of sources recover (a source
//! created after the restart is listed), the job in flight finishes intact,
//! and a job created after the restart runs. Prints how long each took, for
//! docs/reliability.md. Its own test binary, so its own control plane: the
//! restart ends every watch of whoever shares it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::harvester::Options;
use vmm_testkit::servers::{shared_controller, shared_inventory_api};
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const WAIT: Duration = Duration::from_secs(300);

/// How many inventory VMs of source `source` `kubectl get ivm` lists now
/// (`None` while it fails).
fn listed(ns: &TestNamespace, source: &str) -> Option<usize> {
    let out = ns.kubectl(["get", "ivm", "-o", "json"]);
    let list: Value = serde_json::from_str(out.ok().ok()?).ok()?;
    let items = list["items"].as_array()?;
    Some(
        items
            .iter()
            .filter(|vm| vm["spec"]["source"]["name"] == source)
            .count(),
    )
}

/// Blocks until `done`, returning how long it took from `since`.
fn recovered(what: &str, since: Instant, done: impl Fn() -> bool) -> Duration {
    import::until(what, WAIT, &done, || {
        shared_controller().server.process.log_tail(30)
    });
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_ride_out_a_kube_apiserver_restart() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    shared_inventory_api();
    shared_controller();
    let ns = TestNamespace::new(cp, "faults").unwrap();
    // Downloads held to 4 MiB/s, so the restart lands mid-transfer.
    let _harvester = import::image_controller(
        &ns,
        Options {
            download_rate: Some(4 << 20),
            ..Options::default()
        },
    );
    import::network_and_source(cp, vcsim, &ns).unwrap();
    let suffix = vmm_testkit::namespace::random_suffix();
    let (before, after) = (format!("before {suffix}"), format!("after {suffix}"));
    let disks = || vec![DiskSpec::generated(32, 5, 0.5)];
    let in_flight = import::source_vm(vcsim, &before, disks()).await.unwrap();
    let later = import::source_vm(vcsim, &after, disks()).await.unwrap();
    tokio::task::block_in_place(|| {
        import::until(
            "the source's VMs listed",
            WAIT,
            || listed(&ns, "vc").is_some_and(|n| n > 0),
            String::new,
        );
        import::create_job(cp, &ns, "before", &before, json!({})).unwrap();
        import::until(
            "the first job mid-transfer",
            WAIT,
            || import::mid_transfer(&import::job(&ns, "before")),
            || import::job(&ns, "before")["status"].to_string(),
        );

        let restarted = Instant::now();
        cp.restart_apiserver().unwrap();
        let down = restarted.elapsed();
        let aggregated = recovered("the inventory listed again", restarted, || {
            listed(&ns, "vc").is_some_and(|n| n > 0)
        });
        cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc2"))
            .expect_success();
        let watched = recovered("a new source's VMs listed", restarted, || {
            listed(&ns, "vc2").is_some_and(|n| n > 0)
        });
        import::create_job(cp, &ns, "after", &after, json!({})).unwrap();
        for job in ["before", "after"] {
            let done = import::wait_finished(&ns, job, WAIT).unwrap();
            assert_eq!(
                done["status"]["phase"],
                "Succeeded",
                "{job}: {}\n{}",
                done["status"],
                shared_controller().server.process.log_tail(60)
            );
        }
        let finished = restarted.elapsed();
        for (job, source) in [("before", &in_flight), ("after", &later)] {
            assert_eq!(
                import::image_sha256(&ns, &format!("{job}-disk-0")),
                vmm_testkit::vcsim::qemu_img_raw_sha256(&source.disks[0].descriptor_file).unwrap(),
                "{job}"
            );
        }
        println!(
            "kube-apiserver restart: down {down:.1?}; inventory listed again after {aggregated:.1?}; \
             a source created after it listed after {watched:.1?}; both jobs Succeeded after {finished:.1?}"
        );
    });
}
