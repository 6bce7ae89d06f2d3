//! The inventory apiserver's own serving certificate, without cert-manager:
//! started with `--serving-secret`, it makes a CA and a certificate in the
//! Secret and sets the APIService's caBundle, and kube-apiserver's aggregator
//! calls it Available; when the Secret is deleted, it makes a new one, serves
//! it and updates the caBundle, and kubectl keeps working, without a restart.
//! It runs with only a token of the chart's ServiceAccount, so the chart's
//! RBAC is proven enough for this too.

use std::time::{Duration, Instant};

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use vmm_testkit::aggregation::{
    ApiServiceRegistration, register_apiservice, wait_apiservice_available,
};
use vmm_testkit::chart::render;
use vmm_testkit::servers::start_server;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, workspace_binary};

const WAIT: Duration = Duration::from_secs(120);

async fn ca_bundle(client: &kube::Client, name: &str) -> Vec<u8> {
    let apiservice = kube::Api::<APIService>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    apiservice
        .spec
        .and_then(|s| s.ca_bundle)
        .map(|b| b.0)
        .unwrap_or_default()
}

fn wait_listed(ns: &TestNamespace<'_>, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = ns.kubectl(["get", "ivm", "-o", "name"]);
        if out.success() && out.stdout.lines().count() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the inventory never listed: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_makes_its_certificate_and_keeps_the_apiservice_current() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let client = cp.client();
    let port = vmm_testkit::process::free_port().unwrap();
    // Registered with another CA: only the apiserver can make it Available.
    let registration = ApiServiceRegistration::new(
        vmm_api::inventory::GROUP,
        vmm_api::inventory::VERSION,
        port,
        cp.pki().cluster_ca.cert_pem(),
    );
    register_apiservice(&client, &registration).await.unwrap();
    let name = registration.apiservice_name();
    let secret_namespace = registration.service_namespace.clone();
    let chart = render(
        "vmm",
        &secret_namespace,
        &["apiserver.apiService.create=false"],
    )
    .unwrap();
    cp.kubectl_with_stdin(["apply", "--server-side", "-f", "-"], chart.ok().unwrap())
        .expect_success();
    let kubeconfig = cp
        .kubeconfig_for_service_account(&secret_namespace, "vmm-apiserver")
        .unwrap();
    let program = workspace_binary("vmm-apiserver").unwrap();
    let server = start_server(
        cp,
        &program,
        &kubeconfig,
        vec![
            "--listen-addr".into(),
            format!("127.0.0.1:{port}").into(),
            "--serving-secret".into(),
            format!("{secret_namespace}/inventory-serving").into(),
            "--service-name".into(),
            registration.service_name.clone().into(),
        ],
    )
    .unwrap();
    wait_apiservice_available(&client, &name, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", server.process.log_tail(30)));
    let first = ca_bundle(&client, &name).await;
    assert_ne!(first, cp.pki().cluster_ca.cert_pem().as_bytes());
    let stored = cp.kubectl([
        "get",
        "secret",
        "inventory-serving",
        "-n",
        &secret_namespace,
        "-o",
        "jsonpath={.type} {.data.ca\\.crt}",
    ]);
    let (kind, ca) = stored.expect_success().split_once(' ').unwrap();
    assert_eq!(kind, "kubernetes.io/tls");
    assert_eq!(
        k8s_openapi::ByteString(first.clone()),
        serde_json::from_value(serde_json::json!(ca)).unwrap()
    );

    let ns = TestNamespace::new(cp, "certs").unwrap();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let count = vcsim.info().vm_paths.len();
    wait_listed(&ns, count);

    // Deleted: a new CA and certificate, served and published at once.
    cp.kubectl([
        "delete",
        "secret",
        "inventory-serving",
        "-n",
        &secret_namespace,
    ])
    .expect_success();
    let deadline = Instant::now() + WAIT;
    while ca_bundle(&client, &name).await == first {
        assert!(
            Instant::now() < deadline,
            "the caBundle never changed:\n{}",
            server.process.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_listed(&ns, count);
    wait_apiservice_available(&client, &name, WAIT)
        .await
        .unwrap();
}
