//! Real nodes (issue 18, part 1): two kubelets, each with its own containerd,
//! run a Job's pods one per node from images loaded without a registry, serve
//! their logs through kube-apiserver, mount service-account tokens, reach
//! kube-apiserver through the `kubernetes` Service; the test build's own
//! binaries run as images; and when the cluster stops,
//! the host is as it was: no iptables rule, link, mount, cgroup, sysctl, path
//! or process of the nodes is left.

use std::collections::BTreeSet;

use vmm_testkit::nodes::NodeCluster;
use vmm_testkit::nodes::host::HostState;
use vmm_testkit::nodes::image::{BUSYBOX_IMAGE, OciImage, workspace_image};

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: spread
spec:
  parallelism: 2
  completions: 2
  backoffLimit: 0
  template:
    metadata:
      labels: {app: spread}
    spec:
      restartPolicy: Never
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels: {app: spread}
      containers:
        - name: main
          image: IMAGE
          imagePullPolicy: Never
          env:
            - name: NODE_NAME
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          command:
            - /bin/sh
            - -c
            - |
              echo "on $NODE_NAME in $(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
              nc -w 5 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT" -e /bin/true && echo "reached $KUBERNETES_SERVICE_HOST"
              echo "token $(wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token)"
"#;

#[test]
fn a_job_spreads_over_two_real_nodes_and_the_host_is_left_as_it_was() {
    let cluster = NodeCluster::start(2).expect("start two nodes");
    let before: HostState = cluster.host_before().clone();
    let cp = cluster.control_plane();
    assert_eq!(cluster.node_names(), ["node-0", "node-1"]);

    cp.kubectl(["create", "namespace", "spread"])
        .expect_success();
    cp.kubectl_with_stdin(
        ["apply", "-n", "spread", "-f", "-"],
        &JOB.replace("IMAGE", BUSYBOX_IMAGE),
    )
    .expect_success();
    let waited = cp.kubectl([
        "wait",
        "-n",
        "spread",
        "--for=condition=complete",
        "job/spread",
        "--timeout=180s",
    ]);
    assert!(
        waited.success(),
        "{waited}\n{}",
        cp.kubectl(["describe", "pods", "-n", "spread"])
    );

    let nodes: BTreeSet<String> = cp
        .kubectl([
            "get",
            "pods",
            "-n",
            "spread",
            "-l",
            "app=spread",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .expect_success()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(nodes, BTreeSet::from(["node-0".into(), "node-1".into()]));

    // Logs come through each node's kubelet; the token was mounted.
    let logs = cp
        .kubectl(["logs", "-n", "spread", "-l", "app=spread", "--prefix"])
        .expect_success()
        .to_string();
    for node in ["node-0", "node-1"] {
        assert!(logs.contains(&format!("on {node} in spread")), "{logs}");
    }
    assert!(!logs.contains("token 0"), "{logs}");
    // Through kube-proxy's rules for the `kubernetes` Service, from both nodes.
    assert_eq!(logs.matches("reached 10.0.0.1").count(), 2, "{logs}");

    // The test build's own binaries run as images, glibc and all.
    let dir = vmm_testkit::process::run_dir().unwrap();
    for binary in ["vmm-apiserver", "vmm-controller"] {
        let image = OciImage::of_workspace_binary(&dir, binary).unwrap();
        cluster.load_image(&image).unwrap();
        cp.kubectl([
            "run",
            "-n",
            "spread",
            binary,
            &format!("--image={}", workspace_image(binary)),
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "--version",
        ])
        .expect_success();
        let done = cp.kubectl([
            "wait",
            "-n",
            "spread",
            "--for=jsonpath={.status.phase}=Succeeded",
            &format!("pod/{binary}"),
            "--timeout=120s",
        ]);
        assert!(
            done.success(),
            "{done}\n{}",
            cp.kubectl(["describe", "pod", "-n", "spread", binary])
        );
        let on_host = std::process::Command::new(vmm_testkit::workspace_binary(binary).unwrap())
            .arg("--version")
            .output()
            .unwrap();
        let in_pod = cp.kubectl(["logs", "-n", "spread", binary]);
        assert_eq!(
            in_pod.expect_success(),
            String::from_utf8_lossy(&on_host.stdout)
        );
    }

    drop(cluster);
    let after = HostState::capture().expect("capture the host");
    let left = after.differences(&before);
    assert!(left.is_empty(), "the nodes left: {left:#?}");
}
