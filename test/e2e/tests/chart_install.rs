//! The chart installed for real (issue 18, part 2): `helm install --wait` of
//! `charts/vm-migration` on two real nodes with the test build's own images,
//! in a namespace that enforces Pod Security `restricted`; the APIService
//! turns Available through the real Service; `kubectl get ivm` lists a vcsim
//! source's VMs through the apiserver pods; import jobs complete with their
//! disks served from the leader's pod through the chart's disk Service, one
//! across the leader's pod being killed (leadership and the disk Service move
//! to the other replica) and one across a `helm upgrade` with a changed value
//! (both Deployments roll); `helm uninstall` leaves no object of the release.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::chart::helm;
use vmm_testkit::nodes::NodeCluster;
use vmm_testkit::release::{
    self, NAMESPACE, RELEASE, controller_logs, helm_chart, wait_for, words,
};
use vmm_testkit::vcsim::{CreatedVm, DiskSpec, qemu_img_raw_sha256};
use vmm_testkit::{Inventory, TestNamespace, Vcsim, import};
const APISERVICE: &str = "apiservice/v1.inventory.harvesterhci.io";
/// The chart's default disk URL, as Harvester's downloaders are given it.
const DISK_URL: &str = "http://vmm-controller.vm-migration.svc:8000/";
/// Harvester's downloads are slowed to this, so a pod can be killed, or
/// the release upgraded, while one runs (a 64 MiB disk: 8 s).
const DOWNLOAD_RATE: u64 = 8 << 20;
const WAIT: Duration = Duration::from_secs(180);

#[test]
fn the_chart_installs_on_real_nodes_and_serves_the_inventory_through_its_pods() {
    let cluster = NodeCluster::start(2).expect("start two nodes");
    let cp = cluster.control_plane();
    let sources = TestNamespace::new(cp, "sources").unwrap();
    release::install(&cluster, &sources, &[]).unwrap();
    let kubeconfig = cp.kubeconfig_path().display().to_string();

    // Both Deployments' pods run, each Deployment spread over the nodes.
    let pods: Value = serde_json::from_str(
        cp.kubectl(["get", "pods", "-n", NAMESPACE, "-o", "json"])
            .expect_success(),
    )
    .unwrap();
    let running: Vec<(String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pod| pod["status"]["phase"] == "Running")
        .map(|pod| {
            (
                pod["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                pod["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(running.len(), 4, "{running:?}");

    let available = cp.kubectl([
        "wait",
        "--for=condition=Available",
        APISERVICE,
        "--timeout=120s",
    ]);
    assert!(available.success(), "{available}");

    // The apiserver pods reach vcsim on the bridge, as a pod reaches a vCenter.
    let vcsim = release::vcenter(&sources, Inventory::with_vms(3)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = sources.kubectl(["get", "ivm", "-o", "name"]);
        if out.success() && out.stdout.lines().count() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 3 VMs listed: {out}\n{}",
            sources.kubectl(["get", "vsphere", "-o", "yaml"])
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Harvester downloads each disk from the leader's pod, through the
    // chart's disk Service.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();
    // A download cut by a pod's end is retried once the other replica serves.
    let _harvester = release::harvester(&sources, Some(DOWNLOAD_RATE)).unwrap();
    let jobs = Jobs {
        vcsim: &vcsim,
        ns: &sources,
        runtime: &runtime,
    };
    let first = jobs.start("first", 1);
    jobs.imported("first", &first);

    // Killing the leader mid-transfer moves leadership, and the disk Service
    // with it; the job completes.
    let failover = jobs.start("failover", 2);
    jobs.mid_transfer("failover");
    let leader = wait_for(cp, "a leader", |cp| {
        lease_holder(cp).filter(|h| !h.is_empty())
    });
    cp.kubectl(["delete", "pod", "-n", NAMESPACE, &leader, "--wait=false"])
        .expect_success();
    let successor = wait_for(cp, "another leader serving disks", |cp| {
        let holder = lease_holder(cp).filter(|h| !h.is_empty() && *h != leader)?;
        (disk_endpoints(cp) == [holder.clone()]).then_some(holder)
    });
    assert_ne!(successor, leader);
    jobs.imported("failover", &failover);

    // An upgrade with a changed value rolls both Deployments, and a job in
    // flight through it completes.
    let rolled = jobs.start("upgrade", 3);
    jobs.mid_transfer("upgrade");
    let before = release::pods(cp, "", true);
    let upgraded = helm_chart(
        cp,
        "upgrade",
        &[
            "apiserver.resources.requests.cpu=50m".into(),
            "controller.resources.requests.cpu=50m".into(),
        ],
    )
    .unwrap();
    assert!(upgraded.success(), "{upgraded}");
    let after = wait_for(cp, "four new pods", |cp| {
        let now = release::pods(cp, "", true);
        (now.len() == 4 && now.iter().all(|p| !before.contains(p))).then_some(now)
    });
    assert_eq!(after.len(), 4);
    jobs.imported("upgrade", &rolled);
    let listed = sources.kubectl(["get", "ivm", "-o", "name"]);
    assert_eq!(listed.expect_success().lines().count(), 3 + 3);

    // The chart's test passes on a working release, fails saying why when
    // no controller runs, and passes again once one does.
    let chart_test = || {
        helm([
            "test",
            RELEASE,
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            &kubeconfig,
            "--timeout=120s",
        ])
        .unwrap()
    };
    let tested = chart_test();
    assert!(tested.success(), "{tested}");
    scale_controller(cp, 0);
    let tested = chart_test();
    assert!(!tested.success(), "{tested}");
    let said = cp.kubectl(["logs", "-n", NAMESPACE, "vmm-check"]);
    assert!(
        said.expect_success().contains("FAIL  controller leader:"),
        "{said}"
    );
    scale_controller(cp, 2);
    let tested = chart_test();
    assert!(tested.success(), "{tested}");

    let uninstalled = helm([
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
        "--wait",
        "--timeout=120s",
    ])
    .unwrap();
    assert!(uninstalled.success(), "{uninstalled}");
    // The garbage collector removes the pods and the apiserver's Secret (its
    // owner is the APIService) after helm returns.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = cp.kubectl([
            "get",
            "all,secrets,configmaps,serviceaccounts,roles,rolebindings,leases,poddisruptionbudgets,networkpolicies",
            "-n",
            NAMESPACE,
            "-o",
            "name",
        ]);
        let left: Vec<String> = left
            .expect_success()
            .lines()
            .filter(|name| {
                !matches!(
                    *name,
                    "serviceaccount/default" | "configmap/kube-root-ca.crt"
                )
            })
            .map(str::to_string)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in {NAMESPACE}: {left:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let cluster_scoped = cp.kubectl([
        "get",
        "clusterroles,clusterrolebindings,apiservices",
        "-o",
        "name",
    ]);
    let ours: Vec<&str> = cluster_scoped
        .expect_success()
        .lines()
        .filter(|name| {
            name.contains(&format!("/{RELEASE}-")) || name.ends_with("inventory.harvesterhci.io")
        })
        .collect();
    assert!(ours.is_empty(), "left: {ours:?}");
}

/// Import jobs of one disk each, in the sources' namespace.
struct Jobs<'a> {
    vcsim: &'a Vcsim,
    ns: &'a TestNamespace<'a>,
    runtime: &'a tokio::runtime::Runtime,
}

impl Jobs<'_> {
    /// A new powered-on VM in vcsim with a 64 MiB disk of `seed`, and the
    /// job `name` importing it.
    fn start(&self, name: &str, seed: u64) -> CreatedVm {
        let vm_name = format!("{name}-{}", vmm_testkit::namespace::random_suffix());
        let disks = vec![DiskSpec::generated(64, seed, 0.5)];
        let vm = self
            .runtime
            .block_on(import::source_vm(self.vcsim, &vm_name, disks))
            .unwrap();
        import::create_job(self.ns.control_plane(), self.ns, name, &vm_name, json!({})).unwrap();
        vm
    }

    /// Waits until the job's disk is part-way through its transfer.
    fn mid_transfer(&self, name: &str) {
        import::until(
            &format!("{name} mid-transfer"),
            WAIT,
            || import::mid_transfer(&import::job(self.ns, name)),
            || controller_logs(self.ns.control_plane()),
        );
    }

    /// Waits for the job to succeed; its image must hold the bytes qemu-img
    /// makes of the source disk, downloaded from the chart's disk Service.
    fn imported(&self, name: &str, source: &CreatedVm) {
        let cp = self.ns.control_plane();
        let done = import::wait_finished(self.ns, name, WAIT).unwrap_or_else(|e| {
            panic!(
                "{e:#}
{}",
                controller_logs(cp)
            )
        });
        assert_eq!(
            done["status"]["phase"],
            "Succeeded",
            "{}
{}",
            done["status"],
            controller_logs(cp)
        );
        let image = format!("{name}-disk-0");
        let url = self.ns.kubectl([
            "get",
            "virtualmachineimages.harvesterhci.io",
            &image,
            "-o",
            "jsonpath={.spec.url}",
        ]);
        assert!(url.expect_success().starts_with(DISK_URL), "{url}");
        assert_eq!(
            import::image_sha256(self.ns, &image),
            qemu_img_raw_sha256(&source.disks[0].descriptor_file).unwrap(),
            "{name}"
        );
    }
}

/// Scales the controller's Deployment to `replicas` and waits until exactly
/// that many of its pods run (and, for any, one of them leads).
fn scale_controller(cp: &vmm_testkit::ControlPlane, replicas: usize) {
    cp.kubectl([
        "scale",
        "deployment",
        "vmm-controller",
        "-n",
        NAMESPACE,
        &format!("--replicas={replicas}"),
    ])
    .expect_success();
    wait_for(cp, &format!("{replicas} controller pods"), |cp| {
        let pods = release::pods(cp, "app.kubernetes.io/component=controller", false);
        let leads = replicas == 0 || disk_endpoints(cp).len() == 1;
        (pods.len() == replicas && leads).then_some(())
    });
}

fn lease_holder(cp: &vmm_testkit::ControlPlane) -> Option<String> {
    let out = cp.kubectl([
        "get",
        "lease",
        "vm-migration-controller",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    out.ok().ok().map(str::to_string)
}

/// The pods behind the controller's disk Service.
fn disk_endpoints(cp: &vmm_testkit::ControlPlane) -> Vec<String> {
    words(
        cp,
        &[
            "get",
            "endpointslices",
            "-n",
            NAMESPACE,
            "-l",
            &format!("kubernetes.io/service-name={RELEASE}-controller"),
            "-o",
            "jsonpath={.items[*].endpoints[*].targetRef.name}",
        ],
    )
}
