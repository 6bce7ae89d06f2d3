//! Two controller replicas elect a leader with a Lease: only the leader
//! reconciles; when it dies, the other takes over. The follower runs with a
//! crash point at the first step of any job, so it proves it never touched
//! one while following, and that it does once it leads. Each runs as the
//! chart's pod would (`POD_NAME` of a Pod object made from the chart's pod
//! template), and the chart's disk Service selects exactly the leader's pod,
//! so the disk URLs Harvester was given reach the replica serving the disks.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use serde::Deserialize;
use serde_json::{Value, json};
use vmm_controller::crash;
use vmm_testkit::chart::render;
use vmm_testkit::servers::{ControllerOptions, start_controller_with};
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const WAIT: Duration = Duration::from_secs(120);

async fn holder(ns: &TestNamespace<'_>, cp: &ControlPlane) -> Option<String> {
    let leases = kube::Api::<Lease>::namespaced(cp.client(), ns.name());
    let lease = leases.get_opt("vm-migration-controller").await.ok()??;
    lease.spec?.holder_identity
}

/// Polls `check` until it holds.
async fn eventually<T: std::fmt::Debug + PartialEq>(
    what: &str,
    want: T,
    mut check: impl AsyncFnMut() -> T,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = check().await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The chart's controller pod labels and its disk Service's selector.
fn chart_wiring(namespace: &str) -> (Value, String) {
    let rendered = render("vmm", namespace, &[]).unwrap();
    let mut labels = Value::Null;
    let mut selector = String::new();
    for document in serde_yaml::Deserializer::from_str(rendered.ok().unwrap()) {
        let object = Value::deserialize(document).unwrap();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        match (object["kind"].as_str(), name) {
            (Some("Deployment"), "vmm-controller") => {
                labels = object["spec"]["template"]["metadata"]["labels"].clone();
            }
            (Some("Service"), "vmm-controller") => {
                let pairs = object["spec"]["selector"].as_object().unwrap();
                selector = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                    .collect::<Vec<_>>()
                    .join(",");
            }
            _ => {}
        }
    }
    assert!(!selector.is_empty() && labels.is_object());
    (labels, selector)
}

/// An import job for a new VM in vcsim, created.
async fn job(cp: &ControlPlane, vcsim: &Vcsim, ns: &TestNamespace<'_>, name: &str, seed: u64) {
    let vm_name = format!("{name} {}", vmm_testkit::namespace::random_suffix());
    let disks = vec![DiskSpec::generated(8, seed, 0.5)];
    import::source_vm(vcsim, &vm_name, disks).await.unwrap();
    import::create_job(cp, ns, name, &vm_name, json!({})).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_follower_takes_over() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let ns = TestNamespace::new(cp, "leader").unwrap();
    let _harvester = import::prepare(cp, vcsim, &ns, Duration::from_secs(1)).unwrap();
    // Pod objects as the chart's Deployment makes them (never scheduled here).
    let (labels, selector) = chart_wiring(ns.name());
    for pod in ["ctl-a", "ctl-b"] {
        let manifest = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": labels},
            "spec": {"containers": [{"name": "controller", "image": "controller"}]}});
        cp.apply_yaml(ns.name(), &manifest.to_string())
            .expect_success();
    }
    let served_by = || {
        let out = ns.kubectl(["get", "pods", "-l", &selector, "-o", "name"]);
        out.stdout.trim().to_owned()
    };
    let program = vmm_testkit::peers::workspace_binary("vmm-controller").unwrap();
    let args = [
        "--leader-election-namespace",
        ns.name(),
        "--lease-duration-seconds",
        "3",
    ];
    let start = |pod: &str, crash_at: Option<&str>| {
        let mut env = vec![("POD_NAME", OsStr::new(pod))];
        env.extend(crash_at.map(|point| (crash::ENV, OsStr::new(point))));
        let options = ControllerOptions {
            args: &args,
            env: &env,
            ..ControllerOptions::default()
        };
        start_controller_with(cp, &program, cp.kubeconfig_path(), &options).unwrap()
    };

    let mut leader = start("ctl-a", None);
    eventually("the lease's holder", Some("ctl-a".to_owned()), async || {
        holder(&ns, cp).await
    })
    .await;
    let mut follower = start("ctl-b", Some(crash::VALIDATED));
    eventually(
        "the disk Service's pods",
        "pod/ctl-a".to_owned(),
        async || served_by(),
    )
    .await;

    job(cp, vcsim, &ns, "first", 41).await;
    let done = import::wait_finished(&ns, "first", WAIT).unwrap();
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert!(
        follower.server.process.try_status().unwrap().is_none(),
        "the follower reconciled a job:\n{}",
        follower.server.process.log_tail(20)
    );
    assert!(
        follower
            .server
            .process
            .log_tail(50)
            .contains("another replica leads"),
        "{}",
        follower.server.process.log_tail(20)
    );

    leader.server.process.kill().unwrap();
    job(cp, vcsim, &ns, "second", 42).await;
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(status) = follower.server.process.try_status().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never took over:\n{}",
            follower.server.process.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(exit.code(), Some(crash::EXIT_CODE), "{exit}");
    assert_eq!(holder(&ns, cp).await.as_deref(), Some("ctl-b"));
    drop((leader, follower));

    // Both restart, as kubelet restarts containers: each starts as standby,
    // one leads, and the disk Service selects exactly that one's pod.
    let _a = start("ctl-a", None);
    let _b = start("ctl-b", None);
    let deadline = Instant::now() + WAIT;
    loop {
        let now = holder(&ns, cp).await.unwrap_or_default();
        if served_by() == format!("pod/{now}") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the disk Service selects {:?} while {now} leads",
            served_by()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
