//! Two controller replicas elect a leader with a Lease: only the leader
//! reconciles; when it dies, the other takes over. The follower runs with a
//! crash point at the first step of any job, so it proves it never touched
//! one while following, and that it does once it leads.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;
use vmm_controller::crash;
use vmm_testkit::harvester::{ImageController, Options};
use vmm_testkit::servers::{ControllerOptions, ControllerServer, start_controller_with};
use vmm_testkit::vcsim::{DiskSpec, NicSpec, VmSpec};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, import};

const WAIT: Duration = Duration::from_secs(120);

async fn holder(ns: &TestNamespace<'_>, cp: &ControlPlane) -> Option<String> {
    let leases = kube::Api::<Lease>::namespaced(cp.client(), ns.name());
    let lease = leases.get_opt("vm-migration-controller").await.ok()??;
    lease.spec?.holder_identity
}

async fn wait_holder(ns: &TestNamespace<'_>, cp: &ControlPlane, server: &ControllerServer) {
    let pid = format!("-{}", server.server.process.pid());
    let deadline = Instant::now() + WAIT;
    loop {
        let now = holder(ns, cp).await;
        if now.as_deref().is_some_and(|h| h.ends_with(&pid)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never led; the lease's holder: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An import job for a new VM in vcsim, created.
async fn job(cp: &ControlPlane, vcsim: &Vcsim, ns: &TestNamespace<'_>, name: &str, seed: u64) {
    let vm_name = format!("{name} {}", vmm_testkit::namespace::random_suffix());
    vcsim
        .create_vm(
            &VmSpec::new(&vm_name)
                .disk(DiskSpec::generated(8, seed, 0.5))
                .nic(NicSpec::on("VM Network"))
                .powered_on(true),
        )
        .await
        .unwrap();
    let job = json!({
        "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "sourceCluster": {"kind": "Vsphere", "name": "vc"},
            "vmName": vm_name,
            "mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "vlan-a"}],
        },
    });
    cp.apply_yaml(ns.name(), &job.to_string()).expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_follower_takes_over() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let ns = TestNamespace::new(cp, "leader").unwrap();
    let _harvester = ImageController::start(
        cp.client(),
        Options {
            namespace: Some(ns.name().to_owned()),
            retry_delay: Duration::from_secs(1),
            ..Options::default()
        },
    )
    .unwrap();
    cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        &import::nad(ns.name(), "vlan-a", 10).to_string(),
    )
    .expect_success();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let program = vmm_testkit::peers::workspace_binary("vmm-controller").unwrap();
    let args = [
        "--leader-election-namespace",
        ns.name(),
        "--lease-duration-seconds",
        "3",
    ];
    let start = |env: &[(&str, &OsStr)]| {
        let options = ControllerOptions {
            args: &args,
            env,
            ..ControllerOptions::default()
        };
        start_controller_with(cp, &program, cp.kubeconfig_path(), &options).unwrap()
    };

    let mut leader = start(&[]);
    wait_holder(&ns, cp, &leader).await;
    let mut follower = start(&[(crash::ENV, OsStr::new(crash::VALIDATED))]);

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
    let now = holder(&ns, cp).await.unwrap_or_default();
    assert!(
        now.ends_with(&format!("-{}", follower.server.process.pid())),
        "{now}"
    );
}
