//! Peer faults, vCenter's side (issue 16, suite 2): vCenter refusing
//! connections, hanging, ending our sessions and changing its certificate,
//! under both binaries, while the inventory is watched and an import
//! transfers. vCenter is reached through a relay ([`FaultyLink`]) that the
//! test breaks and mends; vcsim itself keeps running (its inventory lives in
//! its memory). During each fault vCenter changes (a VM is created, another
//! destroyed); once it is mended a `kubectl get ivm -w` started before the
//! first fault must see both (events lost: 0), and the import in flight must
//! end Succeeded with its disk identical. A certificate from a CA the source
//! does not trust stops the inventory and refuses a new job before it touches
//! the VM, naming the fix; the fix (the new CA in `spec.caBundle`) brings
//! both back. Prints each recovery time, for docs/reliability.md.
//!
//! Each fault is held `VMM_VCENTER_FAULT_SECONDS` (8 by default; above 90 a
//! hang outlasts the provider's request timeout, so calls time out and log
//! in again). Its own test binary: its own vcsim, which the faults break.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use vmm_testkit::harvester::Options;
use vmm_testkit::link::{FaultyLink, Link};
use vmm_testkit::servers::{shared_controller, shared_inventory_api};
use vmm_testkit::sources::KubectlWatch;
use vmm_testkit::vcsim::{CreatedVm, DiskSpec, VmSpec};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const WAIT: Duration = Duration::from_secs(300);
/// vcsim's export leases time out after this without progress, so a
/// keep-alive that stops reporting shows within the test.
const LEASE_TIMEOUT: Duration = Duration::from_secs(30);

fn hold() -> Duration {
    let seconds = std::env::var("VMM_VCENTER_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(seconds)
}

fn addr(vcsim: &Vcsim) -> SocketAddr {
    let port = vcsim.base_url().rsplit(':').next().unwrap().parse::<u16>();
    SocketAddr::from(([127, 0, 0, 1], port.expect("vcsim's port")))
}

/// Whether the watch has seen `kind` (`ADDED`, `DELETED`) of the VM `name`.
fn seen(watch: &KubectlWatch, kind: &str, name: &str) -> bool {
    watch
        .events()
        .iter()
        .any(|e| e["type"] == kind && e["object"]["spec"]["displayName"] == name)
}

/// A change vCenter made: the watch event it should bring, and the VM's name.
type Change = (&'static str, String);

struct World<'a> {
    vcsim: &'a Vcsim,
    link: FaultyLink,
    ns: TestNamespace<'a>,
    watch: KubectlWatch,
    /// The changes vCenter made during faults.
    expected: Vec<Change>,
}

impl World<'_> {
    /// The import's phase, and its bytes when transferring.
    fn job_phase(&self) -> String {
        let job = import::job(&self.ns, "in-flight");
        let status = &job["status"];
        match status["disks"][0]["bytesDone"].as_u64() {
            Some(done) if status["phase"] != "Succeeded" => {
                format!(
                    "{} at {} MiB",
                    status["phase"].as_str().unwrap_or("?"),
                    done >> 20
                )
            }
            _ => status["phase"].as_str().unwrap_or("?").to_owned(),
        }
    }

    fn log_tails(&self) -> String {
        format!(
            "controller:\n{}\napiserver:\n{}",
            shared_controller().server.process.log_tail(40),
            shared_inventory_api().server.process.log_tail(40)
        )
    }

    /// Waits until the watch sees `kind` of `name`; how long from `since`.
    fn watched(&self, kind: &str, name: &str, since: Instant) -> Duration {
        import::until(
            &format!("{kind} {name} at the watch"),
            WAIT,
            || seen(&self.watch, kind, name),
            || self.log_tails(),
        );
        since.elapsed()
    }

    /// A VM made before a fault and seen, to be destroyed during it.
    async fn doomed(&self, fault: &str) -> CreatedVm {
        let vm = self
            .vcsim
            .create_vm(&VmSpec::new(format!("doomed {fault}")))
            .await
            .unwrap();
        let name = vm.name.clone();
        tokio::task::block_in_place(|| self.watched("ADDED", &name, Instant::now()));
        vm
    }

    /// vCenter changes while the fault holds: a VM created, `doomed`
    /// destroyed, straight at vcsim, not through the relay. Returns both
    /// changes, also kept in `expected`.
    async fn change(&mut self, fault: &str, doomed: &CreatedVm) -> [Change; 2] {
        let born = self
            .vcsim
            .create_vm(&VmSpec::new(format!("born {fault}")))
            .await
            .unwrap();
        let mut soap = self.vcsim.soap_session().await.unwrap();
        soap.destroy(&doomed.moref).await.unwrap();
        soap.logout().await.unwrap();
        let changes = [("ADDED", born.name), ("DELETED", doomed.name.clone())];
        self.expected.extend(changes.clone());
        changes
    }

    /// Waits until the watch saw every one of `changes`; how long from `since`.
    fn all_watched(&self, changes: &[Change], since: Instant) -> Duration {
        tokio::task::block_in_place(|| {
            changes
                .iter()
                .map(|(kind, name)| self.watched(kind, name, since))
                .max()
                .unwrap_or_default()
        })
    }

    /// Makes the fault, changes vCenter, and returns how long after the
    /// mend the watch saw the changes. A fault with a mend (the link
    /// restored) holds first; one without (sessions ended) counts from the
    /// fault itself.
    async fn ride_out(
        &mut self,
        fault: &str,
        make: impl AsyncFnOnce(&Self),
        mend: Option<Link>,
    ) -> Duration {
        let doomed = self.doomed(fault).await;
        make(self).await;
        let held = Instant::now();
        let changes = self.change(fault, &doomed).await;
        if let Some(link) = mend {
            tokio::time::sleep(hold().saturating_sub(held.elapsed())).await;
            self.link.set(link);
        }
        let mended = if mend.is_some() { Instant::now() } else { held };
        self.all_watched(&changes, mended)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_import_ride_out_vcenter_faults() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::start_without_vms(Some(LEASE_TIMEOUT)).await.unwrap();
    shared_inventory_api();
    shared_controller();
    let ns = TestNamespace::new(cp, "vcfaults").unwrap();
    let link = FaultyLink::start(addr(&vcsim)).unwrap();
    let through_link = format!("https://127.0.0.1:{}/sdk", link.port());
    import::network_and_source_at(cp, &vcsim, &ns, &through_link).unwrap();
    // Downloads held to 1 MiB/s: the import transfers through every fault
    // but the certificate's.
    let _harvester = import::image_controller(
        &ns,
        Options {
            download_rate: Some(1 << 20),
            ..Options::default()
        },
    );
    let in_flight = import::source_vm(&vcsim, "in flight", vec![DiskSpec::generated(64, 3, 1.0)])
        .await
        .unwrap();
    let watch = KubectlWatch::start(&ns, "ivm");
    let mut world = World {
        vcsim: &vcsim,
        link,
        ns,
        watch,
        expected: Vec::new(),
    };
    tokio::task::block_in_place(|| {
        world.watched("ADDED", "in flight", Instant::now());
        import::create_job(cp, &world.ns, "in-flight", "in flight", json!({})).unwrap();
        import::until(
            "the job mid-transfer",
            WAIT,
            || import::mid_transfer(&import::job(&world.ns, "in-flight")),
            || import::job(&world.ns, "in-flight")["status"].to_string(),
        );
    });

    let mut figures = Vec::new();
    let refused = world
        .ride_out(
            "refused",
            async |w| w.link.set(Link::Refusing),
            Some(Link::Up),
        )
        .await;
    figures.push(("connections refused", refused, world.job_phase()));
    // A VM created first answers the long poll waiting at vcsim (the answer
    // held in the relay), so the provider has no poll at vcsim while the
    // next VM is created and another destroyed: one poll sees both after
    // the hang. In the clean CI run of 8cffa1d that happened by chance and
    // the destroy was never reported (vcsim's filter dropped its Leave).
    let hung = world
        .ride_out(
            "hung",
            async |w| {
                w.link.set(Link::Hanging);
                w.vcsim
                    .create_vm(&VmSpec::new("first during the hang"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            },
            Some(Link::Up),
        )
        .await;
    figures.push(("connections hanging", hung, world.job_phase()));
    let expired = world
        .ride_out(
            "expired",
            async |w| {
                let ended = w.vcsim.expire_sessions().await.unwrap();
                assert!(ended > 0, "no session of ours to end");
            },
            None,
        )
        .await;
    figures.push(("every session ended", expired, world.job_phase()));
    // A renewal by the same CA: connections made after it must verify. The
    // link refuses for the hold, so both binaries connect again.
    let renewed = world
        .ride_out(
            "renewed",
            async |w| {
                w.vcsim.rotate_certificate(false).await.unwrap();
                w.link.set(Link::Refusing);
            },
            Some(Link::Up),
        )
        .await;
    figures.push((
        "certificate renewed by the same CA",
        renewed,
        world.job_phase(),
    ));

    tokio::task::block_in_place(|| {
        let done = import::wait_finished(&world.ns, "in-flight", WAIT).unwrap();
        assert_eq!(
            done["status"]["phase"],
            "Succeeded",
            "{}\n{}",
            done["status"],
            world.log_tails()
        );
        assert_eq!(
            import::image_sha256(&world.ns, "in-flight-disk-0"),
            vmm_testkit::vcsim::qemu_img_raw_sha256(&in_flight.disks[0].descriptor_file).unwrap(),
        );
    });
    // One lease, completed: the keep-alive logged in again when its session
    // ended, so vCenter never timed the lease out under the transfer.
    let leases: Vec<_> = vcsim
        .leases_of(&in_flight.moref)
        .await
        .unwrap()
        .into_iter()
        .map(|lease| lease.end_reason)
        .collect();
    assert_eq!(
        leases,
        [Some("complete".to_owned())],
        "{}",
        world.log_tails()
    );

    // A certificate from another CA: refused, with the fix named, until the
    // source trusts it.
    let untrusted = import::source_vm(&vcsim, "untrusted", vec![DiskSpec::generated(8, 4, 0.5)])
        .await
        .unwrap();
    let doomed = world.doomed("new CA").await;
    let new_ca = vcsim.rotate_certificate(true).await.unwrap();
    // Connections made before the change would go on with the old one.
    world.link.set(Link::Refusing);
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.link.set(Link::Up);
    let changes = world.change("new CA", &doomed).await;
    tokio::task::block_in_place(|| {
        import::create_job(cp, &world.ns, "untrusted", "untrusted", json!({})).unwrap();
        let (reason, message) = import::failure(&world.ns, "untrusted", WAIT);
        assert_eq!(reason, "CertificateUntrusted", "{message}");
        assert!(message.contains("CA bundle"), "{message}");
    });
    assert_eq!(
        vcsim.power_state(&untrusted.moref).await.unwrap(),
        "poweredOn"
    );
    assert!(
        !changes
            .iter()
            .any(|(kind, name)| seen(&world.watch, kind, name)),
        "the inventory followed a vCenter whose certificate the source does not trust"
    );
    let patch = json!({"spec": {"caBundle": format!("{}{new_ca}", vcsim.ca_pem())}});
    world
        .ns
        .kubectl([
            "patch",
            "vsphere",
            "vc",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .expect_success();
    let new_ca_figure = world.all_watched(&changes, Instant::now());
    figures.push((
        "certificate from a new CA, then added to spec.caBundle",
        new_ca_figure,
        "(a new job)".into(),
    ));
    tokio::task::block_in_place(|| {
        import::create_job(cp, &world.ns, "trusted", "untrusted", json!({})).unwrap();
        import::succeeded(&world.ns, "trusted", WAIT);
    });

    let events = world.watch.events();
    let lost: Vec<_> = world
        .expected
        .iter()
        .filter(|(kind, name)| !seen(&world.watch, kind, name))
        .collect();
    assert!(lost.is_empty(), "events lost: {lost:?}");
    println!("vCenter faults, each held {:?}:", hold());
    for (fault, recovered, job) in figures {
        println!(
            "  {fault}: both changes at the watch {recovered:.1?} after the mend (sessions: after they ended); the import then: {job}"
        );
    }
    println!(
        "events expected {}, lost {} ({} watch events in all)",
        world.expected.len(),
        lost.len(),
        events.len()
    );
}
