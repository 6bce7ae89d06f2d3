//! The chart installed for real (issue 18, part 2, first slice): `helm install
//! --wait` of `charts/vm-migration` on two real nodes with the test build's own
//! images, in a namespace that enforces Pod Security `restricted`; the
//! APIService turns Available through the real Service; `kubectl get ivm`
//! lists a vcsim source's VMs through the apiserver pods; killing the leader
//! moves leadership and the disk Service to the other replica; `helm upgrade`
//! with a changed value rolls both Deployments; `helm uninstall` leaves no
//! object of the release.

use std::time::{Duration, Instant};

use serde_json::Value;
use vmm_testkit::chart::{chart_dir, helm};
use vmm_testkit::nodes::image::{OciImage, workspace_image};
use vmm_testkit::nodes::{NODE_IP, NodeCluster};
use vmm_testkit::process::run_dir;
use vmm_testkit::{Inventory, TestNamespace, Vcsim};

const RELEASE: &str = "vmm";
const NAMESPACE: &str = "vm-migration";
const APISERVICE: &str = "apiservice/v1.inventory.harvesterhci.io";

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
    sources.apply(&vcsim.source_manifest("vc")).unwrap();
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

    // Killing the leader moves leadership, and the disk Service with it.
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

    // An upgrade with a changed value rolls both Deployments.
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
    let listed = sources.kubectl(["get", "ivm", "-o", "name"]);
    assert_eq!(listed.expect_success().lines().count(), 3);

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
