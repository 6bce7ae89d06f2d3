//! A vSphere import whose export cannot be read fails with a reason, and
//! nothing it leaves behind carries a secret: not the export lease's ticket
//! (its URL), not a disk endpoint token (an image's URL), not vCenter's
//! password or session cookie, in the job's status, the namespace's Events
//! or any line the controller logged (issue 16, hole 1). Two failures: one
//! before any image exists, one after Harvester gave up on the images. Its
//! own binary: vcsim's export faults are process-wide.

use std::time::Duration;

use serde_json::json;
use vmm_testkit::harvester::{ImageController, Options};
use vmm_testkit::import;
use vmm_testkit::servers::shared_controller;
use vmm_testkit::vcsim::{DiskSpec, ExportFault, NicSpec, VmSpec};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_leaves_no_ticket_token_password_or_cookie_anywhere() {
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
    import::network_and_source(cp, vcsim, &ns).unwrap();

    // Every download of an export answers 500: the disk cannot be read, and
    // the job fails before any image (or disk URL) exists.
    let early = failed_import(cp, vcsim, &ns, "early", ExportFault::status(500)).await;
    assert!(
        early.tokens.is_empty(),
        "images were made: {:?}",
        early.tokens
    );
    // Every download breaks off after 4 MiB: enough to tell the format, so
    // the images are made and Harvester downloads from the disk endpoint,
    // whose answers break off too, until Harvester gives up on them.
    let late = failed_import(cp, vcsim, &ns, "late", ExportFault::drop_after(4 << 20)).await;
    assert!(!late.tokens.is_empty(), "no image was made");
    // Failed because Harvester gave up on the images, not before.
    assert!(
        late.status["conditions"]
            .as_array()
            .is_some_and(|all| all.iter().any(|c| c["reason"] == "ImageImportFailed")),
        "{}",
        late.status
    );

    let events = ns.kubectl(["get", "events", "-o", "json"]);
    let log = std::fs::read_to_string(controller.server.process.log_path()).unwrap();
    let places = [
        ("the early job's status", early.status.to_string()),
        ("the late job's status", late.status.to_string()),
        ("the namespace's Events", events.expect_success().to_owned()),
        ("the controller's log", log),
    ];
    let tickets = early.tickets.iter().chain(&late.tickets);
    let secrets: Vec<(&str, &str)> = tickets
        .map(|t| ("a lease ticket", t.as_str()))
        .chain(late.tokens.iter().map(|t| ("a disk token", t.as_str())))
        .chain([
            ("vCenter's password", vcsim.password()),
            ("a session cookie", "vmware_soap_session="),
        ])
        .collect();
    for (place, text) in &places {
        for (what, secret) in &secrets {
            assert!(!text.contains(secret), "{place} holds {what}");
        }
    }
}

/// What a failed import left to look for.
struct Failed {
    status: serde_json::Value,
    /// The tickets of the job's export leases (in their URLs' paths).
    tickets: Vec<String>,
    /// The disk endpoint tokens of the job's images (in their URLs' paths).
    tokens: Vec<String>,
}

/// Imports a new VM with every export download failing as `fault` says,
/// until the job fails.
async fn failed_import(
    cp: &ControlPlane,
    vcsim: &Vcsim,
    ns: &TestNamespace<'_>,
    job: &str,
    fault: ExportFault,
) -> Failed {
    let name = format!("Leak {job} {}", vmm_testkit::namespace::random_suffix());
    vcsim
        .create_vm(
            &VmSpec::new(&name)
                .disk(DiskSpec::generated(16, 3, 1.0))
                .nic(NicSpec::on("VM Network")),
        )
        .await
        .unwrap();
    vcsim
        .inject_export_fault(&ExportFault {
            times: Some(10_000),
            ..fault
        })
        .await
        .unwrap();
    import::create_job(cp, ns, job, &name, json!({})).unwrap();
    let done = tokio::task::block_in_place(|| import::finished(ns, job, WAIT));
    vcsim.clear_export_faults().await.unwrap();
    assert_eq!(done["status"]["phase"], "Failed", "{}", done["status"]);
    let path_part =
        |url: &str, after: &str| Some(url.split(after).nth(1)?.split('/').next()?.to_owned());
    let tickets: Vec<String> = vcsim
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|lease| lease.vm_name == name)
        .flat_map(|lease| lease.urls)
        .filter_map(|url| path_part(&url, "/export/"))
        .collect();
    assert!(
        !tickets.is_empty(),
        "{job}: the job never opened an export lease"
    );
    let images = ns.kubectl(["get", "virtualmachineimages", "-o", "json"]);
    let images: serde_json::Value = serde_json::from_str(images.expect_success()).unwrap();
    let tokens = images["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|image| {
            image["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{job}-")))
        })
        .filter_map(|image| path_part(image["spec"]["url"].as_str()?, "/disks/"))
        .collect();
    Failed {
        status: done["status"].clone(),
        tickets,
        tokens,
    }
}
