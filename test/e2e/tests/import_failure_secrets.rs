//! A vSphere import whose export cannot be read fails with a reason, and
//! nothing it leaves behind carries a secret: not the export lease's ticket
//! (its URL), not vCenter's password or session cookie, in the job's status,
//! the namespace's Events or any line the controller logged (issue 16,
//! hole 1). Its own binary: vcsim's export faults are process-wide.

use std::time::Duration;

use serde_json::json;
use vmm_testkit::harvester::{ImageController, Options};
use vmm_testkit::import;
use vmm_testkit::servers::shared_controller;
use vmm_testkit::vcsim::{DiskSpec, ExportFault, NicSpec, VmSpec};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_leaves_no_ticket_password_or_cookie_anywhere() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let controller = shared_controller();
    let ns = TestNamespace::new(cp, "leak").unwrap();
    let _harvester = ImageController::start(
        cp.client(),
        Options {
            namespace: Some(ns.name().to_owned()),
            retry_delay: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .unwrap();
    let name = format!("Leak {}", vmm_testkit::namespace::random_suffix());
    vcsim
        .create_vm(
            &VmSpec::new(&name)
                .disk(DiskSpec::generated(16, 3, 1.0))
                .nic(NicSpec::on("VM Network")),
        )
        .await
        .unwrap();
    import::network_and_source(cp, vcsim, &ns).unwrap();
    // Every download of an export answers 500: the disk cannot be read.
    vcsim
        .inject_export_fault(&ExportFault {
            times: Some(10_000),
            ..ExportFault::status(500)
        })
        .await
        .unwrap();
    let job = json!({
        "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "leak"},
        "spec": {
            "sourceCluster": {"kind": "Vsphere", "name": "vc"},
            "vmName": name,
            "mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "vlan-a"}],
        },
    });
    cp.apply_yaml(ns.name(), &job.to_string()).expect_success();
    let done = tokio::task::block_in_place(|| import::finished(&ns, "leak", WAIT));
    vcsim.clear_export_faults().await.unwrap();
    assert_eq!(done["status"]["phase"], "Failed", "{}", done["status"]);

    let tickets: Vec<String> = vcsim
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|lease| lease.vm_name == name)
        .flat_map(|lease| lease.urls)
        .filter_map(|url| {
            url.split("/export/")
                .nth(1)?
                .split('/')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert!(!tickets.is_empty(), "the job never opened an export lease");
    let events = ns.kubectl(["get", "events", "-o", "json"]);
    let log = std::fs::read_to_string(controller.server.process.log_path()).unwrap();
    let places = [
        ("the job's status", done["status"].to_string()),
        ("the namespace's Events", events.expect_success().to_owned()),
        ("the controller's log", log),
    ];
    for (place, text) in &places {
        for ticket in &tickets {
            assert!(
                !text.contains(ticket.as_str()),
                "{place} holds a lease ticket"
            );
        }
        assert!(
            !text.contains(vcsim.password()),
            "{place} holds vCenter's password"
        );
        assert!(
            !text.contains("vmware_soap_session="),
            "{place} holds a session cookie"
        );
    }
}
