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
use vmm_testkit::chart::{chart_dir, helm};
use vmm_testkit::harvester::{ImageController, Options};
use vmm_testkit::nodes::image::{OciImage, workspace_image};
use vmm_testkit::nodes::{NODE_IP, NodeCluster};
use vmm_testkit::process::run_dir;
use vmm_testkit::vcsim::{CreatedVm, DiskSpec, qemu_img_raw_sha256};
use vmm_testkit::{Inventory, TestNamespace, Vcsim, import};

const RELEASE: &str = "vmm";
const NAMESPACE: &str = "vm-migration";
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
    let dir = run_dir().unwrap();
    for binary in ["vmm-apiserver", "vmm-controller"] {
        let image = OciImage::of_workspace_binary(&dir, binary).unwrap();
        cluster.load_image(&image).unwrap();
    }
    let sources = TestNamespace::new(cp, "sources").unwrap();
    cp.apply_yaml(
        "default",
        &format!(
            r#"{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "{NAMESPACE}",
                "labels": {{"pod-security.kubernetes.io/enforce": "restricted",
                            "pod-security.kubernetes.io/enforce-version": "latest"}}}}}}"#
        ),
    )
    .expect_success();

    let image = |component: &str| {
        let name = workspace_image(&format!("vmm-{component}"));
        let (repository, tag) = name.rsplit_once(':').unwrap();
        [
            format!("{component}.image.repository={repository}"),
            format!("{component}.image.tag={tag}"),
        ]
    };
    let mut values = vec![
        "imagePullPolicy=Never".to_string(),
        format!("rbac.credentials.namespaces={{{}}}", sources.name()),
    ];
    values.extend(image("apiserver"));
    values.extend(image("controller"));
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let installed = helm_chart(cp, "install", &values);
    assert!(
        installed.success(),
        "{installed}\n{}",
        cp.kubectl(["describe", "pods,replicasets", "-n", NAMESPACE])
    );

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
    let vcsim = Vcsim::start(Inventory {
        extra_args: vec!["-listen".into(), format!("{NODE_IP}:0")],
        ..Inventory::with_vms(3)
    })
    .unwrap();
    import::network_and_source(cp, &vcsim, &sources).unwrap();
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
    // Harvester's own retry delay (10 s): a download cut by a pod's end is
    // retried once the other replica serves.
    let _harvester = ImageController::start(
        cp.client(),
        Options {
            namespace: Some(sources.name().to_owned()),
            download_rate: Some(DOWNLOAD_RATE),
            ..Options::default()
        },
    )
    .unwrap();
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
    let before = pod_names(cp);
    let upgraded = helm_chart(
        cp,
        "upgrade",
        &[
            "apiserver.resources.requests.cpu=50m".into(),
            "controller.resources.requests.cpu=50m".into(),
        ],
    );
    assert!(upgraded.success(), "{upgraded}");
    let after = wait_for(cp, "four new pods", |cp| {
        let now = pod_names(cp);
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
        let pods = words(
            cp,
            &[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                "app.kubernetes.io/component=controller",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
        );
        let leads = replicas == 0 || disk_endpoints(cp).len() == 1;
        (pods.len() == replicas && leads).then_some(())
    });
}

/// The controller pods' last log lines, for failure messages.
fn controller_logs(cp: &vmm_testkit::ControlPlane) -> String {
    cp.kubectl([
        "logs",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/component=controller",
        "--prefix",
        "--tail=30",
    ])
    .to_string()
}

/// What `probe` returns, once it returns something; panics after two minutes.
fn wait_for<T>(
    cp: &vmm_testkit::ControlPlane,
    what: &str,
    probe: impl Fn(&vmm_testkit::ControlPlane) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = probe(cp) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}:\n{}",
            cp.kubectl([
                "get",
                "pods,leases,endpointslices",
                "-n",
                NAMESPACE,
                "-o",
                "wide"
            ])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
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

/// The names of the release's running pods.
fn pod_names(cp: &vmm_testkit::ControlPlane) -> Vec<String> {
    words(
        cp,
        &[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )
}

/// The words kubectl prints for `args`; none when it fails.
fn words(cp: &vmm_testkit::ControlPlane, args: &[&str]) -> Vec<String> {
    cp.kubectl(args)
        .ok()
        .map(|out| out.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `helm <verb>` (install, upgrade) of the chart as the release, waiting,
/// with `--set` values (an upgrade keeps the others).
fn helm_chart(
    cp: &vmm_testkit::ControlPlane,
    verb: &str,
    values: &[String],
) -> vmm_testkit::CmdOutput {
    let mut args = vec![
        verb.to_string(),
        RELEASE.into(),
        chart_dir().display().to_string(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--kubeconfig".into(),
        cp.kubeconfig_path().display().to_string(),
        "--wait".into(),
        "--timeout=240s".into(),
    ];
    if verb == "upgrade" {
        args.push("--reuse-values".into());
    }
    for value in values {
        args.extend(["--set".to_string(), value.clone()]);
    }
    helm(&args).unwrap()
}
