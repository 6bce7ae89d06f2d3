//! Preflight against Longhorn's free space, through the real kube-apiserver
//! with Longhorn's real Node and Setting CRDs: a VM whose volumes cannot fit
//! fails before the source is touched, with a message naming the fix; once
//! Longhorn has room, the same VM imports. Its own test binary (so its own
//! control plane): Longhorn's nodes are cluster-wide and would constrain
//! every other import test.

use std::time::Duration;

use serde_json::json;
use vmm_testkit::import;
use vmm_testkit::servers::shared_controller;
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

const WAIT: Duration = Duration::from_secs(300);
const LONGHORN: &str = "longhorn-system";
const MI: i64 = 1 << 20;

/// A Longhorn node with one schedulable disk of `maximum` bytes, as Longhorn
/// reports it (status through its subresource, as longhorn-manager writes it).
fn longhorn_node(cp: &ControlPlane, name: &str, maximum: i64) {
    let node = json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Node",
        "metadata": {"name": name, "namespace": LONGHORN},
        "spec": {"allowScheduling": true, "disks": {"default-disk": {
            "allowScheduling": true, "path": "/var/lib/longhorn", "storageReserved": 0, "diskType": "filesystem"}}}});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &node.to_string())
        .expect_success();
    let status = json!({"status": {
        "conditions": [{"type": "Schedulable", "status": "True"}],
        "diskStatus": {"default-disk": {"storageMaximum": maximum, "storageAvailable": maximum,
            "storageScheduled": 0, "conditions": [{"type": "Schedulable", "status": "True"}]}}}});
    cp.kubectl([
        "patch",
        "nodes.longhorn.io",
        name,
        "-n",
        LONGHORN,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
    .expect_success();
}

fn over_provisioning(cp: &ControlPlane, percent: u32) {
    let setting = json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Setting",
        "metadata": {"name": "storage-over-provisioning-percentage", "namespace": LONGHORN},
        "value": percent.to_string()});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &setting.to_string())
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_longhorn_has_no_room_for_fails_in_preflight() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    shared_controller();
    cp.kubectl(["create", "namespace", LONGHORN])
        .expect_success();
    // Two nodes of 10 MiB: three replicas of a 8 MiB disk (24 MiB) do not fit.
    for node in ["node-1", "node-2"] {
        longhorn_node(cp, node, 10 * MI);
    }
    over_provisioning(cp, 100);

    let ns = TestNamespace::new(cp, "space").unwrap();
    let _harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(1)).unwrap();
    let name = format!("Roomy {}", vmm_testkit::namespace::random_suffix());
    let vm = import::source_vm(vcsim, &name, vec![DiskSpec::generated(8, 7, 0.5)])
        .await
        .unwrap();
    import::create_job(cp, &ns, "too-big", &name, json!({})).unwrap();
    let (reason, message) = import::failure(&ns, "too-big", WAIT);
    assert_eq!(reason, "InsufficientStorage", "{message}");
    assert!(
        message.contains("storage-over-provisioning-percentage")
            && message.contains("2 schedulable disk(s)"),
        "{message}"
    );
    assert_eq!(
        vcsim.power_state(&vm.moref).await.unwrap(),
        "poweredOn",
        "a failed preflight powered the VM off"
    );

    // At 200 % the two disks hold 40 MiB: the same VM imports.
    over_provisioning(cp, 200);
    import::create_job(cp, &ns, "fits", &name, json!({})).unwrap();
    let done = import::finished(&ns, "fits", WAIT);
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
}
