//! Preflight against the room an import needs, through the real
//! kube-apiserver with Longhorn's and Harvester's real CRDs: a VM whose
//! volumes Longhorn cannot place, or whose pod the namespace's quota on
//! requests cannot hold (as Harvester's overcommit setting computes them),
//! fails before the source is touched, with a message naming the fix; with
//! room, the same VM imports. Its own test binary (so its own control plane):
//! Longhorn's nodes and Harvester's settings are cluster-wide and would
//! constrain every other import test.

use std::time::Duration;

use serde_json::json;
use vmm_testkit::import;
use vmm_testkit::servers::shared_controller;
use vmm_testkit::vcsim::{DiskSpec, NicSpec, VmSpec};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_on_requests_counts_them_as_harvesters_overcommit_does() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    shared_controller();
    // Harvester's defaults, as its Setting objects carry them: requests are
    // limits x 100 / these, and the guest gets the whole memory limit.
    let setting = |name: &str, default: &str| {
        json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting",
            "metadata": {"name": name}, "default": default, "value": ""})
        .to_string()
    };
    for (name, default) in [
        (
            "overcommit-config",
            r#"{"cpu":1000,"memory":150,"storage":100}"#,
        ),
        ("additional-guest-memory-overhead-ratio", "1.5"),
    ] {
        cp.kubectl_with_stdin(["apply", "-f", "-"], &setting(name, default))
            .expect_success();
    }
    let ns = TestNamespace::new(cp, "requests").unwrap();
    let _harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(1)).unwrap();
    // A CDI class: Longhorn's room (the other test's) is not this test's business.
    let class = format!("ceph-{}", ns.name());
    let quota = |memory: &str| {
        json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": class},
             "provisioner": "rbd.csi.ceph.com"},
            {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team", "namespace": ns.name()},
             "spec": {"hard": {"requests.memory": memory, "requests.cpu": "200m"}}},
        ]})
        .to_string()
    };
    // 3 GiB at 150 % asks for 2 GiB; 2 CPUs at 1000 % for 200m.
    cp.kubectl_with_stdin(["apply", "-f", "-"], &quota("2047Mi"))
        .expect_success();
    let name = format!("Sized {}", vmm_testkit::namespace::random_suffix());
    let mut spec = VmSpec::new(&name)
        .disk(DiskSpec::generated(8, 9, 0.5))
        .nic(NicSpec::on("VM Network"))
        .powered_on(true);
    spec.cpus = Some(2);
    spec.memory_mb = Some(3072);
    let vm = vcsim.create_vm(&spec).await.unwrap();
    let job = json!({"storageClass": class});
    import::create_job(cp, &ns, "over", &name, job.clone()).unwrap();
    let (reason, message) = import::failure(&ns, "over", WAIT);
    assert_eq!(reason, "QuotaExceeded", "{message}");
    assert!(message.contains("requests.memory"), "{message}");
    assert_eq!(vcsim.power_state(&vm.moref).await.unwrap(), "poweredOn");

    cp.kubectl_with_stdin(["apply", "-f", "-"], &quota("2Gi"))
        .expect_success();
    import::create_job(cp, &ns, "exact", &name, job).unwrap();
    let done = import::finished(&ns, "exact", WAIT);
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    let target = done["status"]["targetName"].as_str().unwrap();
    let limit = ns.kubectl([
        "get",
        "virtualmachines.kubevirt.io",
        target,
        "-o",
        "jsonpath={.spec.template.spec.domain.resources.limits.memory}",
    ]);
    // As a quantity: admission stores it canonically (3072Mi as 3Gi).
    assert_eq!(
        vmm_api::quantity::milli_units(limit.stdout.trim()),
        Some(3072 * 1024 * 1024 * 1000),
        "no reserve with a ratio set: {limit}"
    );
}
