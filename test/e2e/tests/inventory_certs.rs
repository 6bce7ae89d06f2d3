//! The inventory apiserver's own serving certificate, without cert-manager:
//! started with `--serving-secret`, it makes a CA and a certificate in the
//! Secret and sets the APIService's caBundle, and kube-apiserver's aggregator
//! calls it Available; when the Secret is deleted, it makes a new one, serves
//! it and updates the caBundle, and kubectl keeps working, without a restart.
//! It runs with only a token of the chart's ServiceAccount, so the chart's
//! RBAC is proven enough for this too.
//!
//! The other way round: when kube-apiserver's front-proxy CA rotates, the
//! inventory trusts the new proxy certificate without a restart.

use std::time::{Duration, Instant};

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use vmm_testkit::aggregation::{
    ApiServiceRegistration, register_apiservice, wait_apiservice_available,
};
use vmm_testkit::chart::render;
use vmm_testkit::pki::{Ca, CertFiles, FRONT_PROXY_CLIENT_CN};
use vmm_testkit::servers::{serving_args, start_server};
use vmm_testkit::tls::reqwest_client;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, workspace_binary};

const WAIT: Duration = Duration::from_secs(120);
/// The chart's name for it (release `vmm`): the only Secret of its namespace
/// the chart lets the apiserver read and write.
const SERVING_SECRET: &str = "vmm-apiserver-serving";

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
    let ns = TestNamespace::new(cp, "certs").unwrap();
    let credentials = format!("rbac.credentials.namespaces={{{}}}", ns.name());
    let chart = render(
        "vmm",
        &secret_namespace,
        &["apiserver.apiService.create=false", &credentials],
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
            format!("{secret_namespace}/{SERVING_SECRET}").into(),
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
    // Owned by the APIService: it goes when the APIService does (helm uninstall).
    let stored = cp.kubectl([
        "get",
        "secret",
        SERVING_SECRET,
        "-n",
        &secret_namespace,
        "-o",
        "jsonpath={.type} {.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name} {.data.ca\\.crt}",
    ]);
    let mut fields = stored.expect_success().split(' ');
    let (kind, owner, ca) = (
        fields.next().unwrap(),
        fields.next().unwrap(),
        fields.next().unwrap(),
    );
    assert_eq!(kind, "kubernetes.io/tls");
    assert_eq!(owner, format!("APIService/{name}"));
    assert_eq!(
        k8s_openapi::ByteString(first.clone()),
        serde_json::from_value(serde_json::json!(ca)).unwrap()
    );

    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let count = vcsim.info().vm_paths.len();
    wait_listed(&ns, count);

    // Deleted: a new CA and certificate, served and published at once.
    cp.kubectl(["delete", "secret", SERVING_SECRET, "-n", &secret_namespace])
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

/// On a control plane of its own: the inventory group registered for a
/// free port, and the chart's RBAC in the Service's namespace, with a
/// kubeconfig of the chart's apiserver ServiceAccount.
struct Registered {
    port: u16,
    registration: ApiServiceRegistration,
    namespace: String,
    kubeconfig: std::path::PathBuf,
}

async fn register_with_chart_rbac(cp: &ControlPlane) -> Registered {
    let port = vmm_testkit::process::free_port().unwrap();
    let registration = ApiServiceRegistration::new(
        vmm_api::inventory::GROUP,
        vmm_api::inventory::VERSION,
        port,
        cp.pki().cluster_ca.cert_pem(),
    );
    register_apiservice(&cp.client(), &registration)
        .await
        .unwrap();
    let namespace = registration.service_namespace.clone();
    let chart = render("vmm", &namespace, &["apiserver.apiService.create=false"]).unwrap();
    cp.kubectl_with_stdin(["apply", "--server-side", "-f", "-"], chart.ok().unwrap())
        .expect_success();
    let kubeconfig = cp
        .kubeconfig_for_service_account(&namespace, "vmm-apiserver")
        .unwrap();
    Registered {
        port,
        registration,
        namespace,
        kubeconfig,
    }
}

/// Replaces `path`'s content at once (kube-apiserver never reads half a file).
fn replace_file(path: &std::path::Path, content: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, content).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// kube-apiserver re-reads `--requestheader-client-ca-file` and its proxy
/// client certificate while running and rewrites
/// `kube-system/extension-apiserver-authentication`; the inventory must
/// follow the ConfigMap, or every request would fail until it restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_front_proxy_ca_is_trusted_without_a_restart() {
    // Its own control plane: the rotation changes what every aggregated
    // server of that cluster must trust.
    let cp = ControlPlane::start().unwrap();
    let client = cp.client();
    let Registered {
        port,
        registration,
        namespace,
        kubeconfig,
    } = register_with_chart_rbac(&cp).await;
    let serving = cp
        .pki()
        .issue_aggregated_serving(&registration.service_name, &namespace)
        .unwrap();
    let program = workspace_binary("vmm-apiserver").unwrap();
    let server = start_server(&cp, &program, &kubeconfig, serving_args(port, serving)).unwrap();
    wait_apiservice_available(&client, &registration.apiservice_name(), WAIT)
        .await
        .unwrap();
    cp.kubectl(["get", "ivm", "-A"]).expect_success();

    // What kube-apiserver will present once it has rotated, asking as an admin.
    let url = format!(
        "https://127.0.0.1:{port}/apis/{}",
        vmm_api::inventory::GROUP
    );
    let as_proxy = |proxy: &CertFiles| {
        let http = reqwest_client(
            &[cp.pki().cluster_ca.cert_pem()],
            Some((&proxy.cert_pem, &proxy.key_pem)),
        )
        .unwrap();
        let request = http
            .get(&url)
            .header("X-Remote-User", "admin")
            .header("X-Remote-Group", "system:masters");
        async move { request.send().await.map(|r| r.status().as_u16()) }
    };
    let rotated = Ca::new(
        &cp.dir().join("rotated-pki"),
        "front-proxy-ca",
        "vmm-e2e front-proxy CA, rotated",
    )
    .unwrap();
    let next_proxy = rotated
        .issue_client("front-proxy-client", FRONT_PROXY_CLIENT_CN, &[])
        .unwrap();
    assert!(
        as_proxy(&next_proxy).await.is_err(),
        "a proxy certificate of a CA nobody published was accepted"
    );

    let pki = cp.pki();
    replace_file(pki.front_proxy_ca.cert_path(), rotated.cert_pem());
    replace_file(&pki.front_proxy_client.key_path, &next_proxy.key_pem);
    replace_file(&pki.front_proxy_client.cert_path, &next_proxy.cert_pem);

    let deadline = Instant::now() + WAIT;
    loop {
        let published = cp.kubectl([
            "get",
            "configmap",
            "extension-apiserver-authentication",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data.requestheader-client-ca-file}",
        ]);
        if published.success() && published.stdout.contains(rotated.cert_pem().trim()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver never published the rotated CA: {published}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = as_proxy(&next_proxy).await;
        if matches!(answer, Ok(200)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the inventory never trusted the rotated proxy certificate ({answer:?}):\n{}",
            server.process.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // And through kube-apiserver, which now presents the new certificate.
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = cp.kubectl(["get", "ivm", "-A"]);
        if listed.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl never listed after the rotation: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        server
            .process
            .log_tail(200)
            .contains("the front proxy's trust changed"),
        "{}",
        server.process.log_tail(20)
    );
}

/// A certificate it made is made again before it ends, signed by the same CA:
/// with a 60 s lifetime, for longer than that lifetime, every handshake gets
/// a certificate valid at that moment, the caBundle never changes, and no
/// request through kube-apiserver fails while the certificate changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_is_renewed_before_it_ends() {
    const LIFETIME: Duration = Duration::from_secs(60);
    // Its own control plane: the group can be registered once per cluster.
    let cp = ControlPlane::start().unwrap();
    let client = cp.client();
    let Registered {
        port,
        registration,
        namespace,
        kubeconfig,
    } = register_with_chart_rbac(&cp).await;
    let program = workspace_binary("vmm-apiserver").unwrap();
    let server = start_server(
        &cp,
        &program,
        &kubeconfig,
        vec![
            "--listen-addr".into(),
            format!("127.0.0.1:{port}").into(),
            "--serving-secret".into(),
            format!("{namespace}/{SERVING_SECRET}").into(),
            "--service-name".into(),
            registration.service_name.clone().into(),
            "--serving-cert-lifetime-seconds".into(),
            LIFETIME.as_secs().to_string().into(),
        ],
    )
    .unwrap();
    let name = registration.apiservice_name();
    wait_apiservice_available(&client, &name, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", server.process.log_tail(30)));
    let bundle = ca_bundle(&client, &name).await;
    let ca = String::from_utf8(bundle.clone()).unwrap();
    let host = format!("{}.{namespace}.svc", registration.service_name);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let started = Instant::now();
    let watched_until = started + LIFETIME + Duration::from_secs(15);
    let mut served: Vec<Vec<u8>> = Vec::new();
    let mut failed = Vec::new();
    while Instant::now() < watched_until {
        // A handshake succeeds only with a certificate valid now, of that CA.
        let certificate = vmm_testkit::tls::served_certificate(addr, &host, &[&ca])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the served certificate does not verify now: {e:#}\n{}",
                    server.process.log_tail(20)
                )
            });
        if served.last() != Some(&certificate) {
            served.push(certificate);
            eprintln!(
                "certificate {} served from {:.0?}",
                served.len(),
                started.elapsed()
            );
        }
        let listed = cp.kubectl(["get", "ivm", "-A"]);
        if !listed.success() {
            // When, and with which certificate: does it coincide with a renewal?
            failed.push(format!(
                "at {:.0?}, certificate {}: {}",
                started.elapsed(),
                served.len(),
                listed.stderr
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        served.len() >= 2,
        "the certificate was never renewed:\n{}",
        server.process.log_tail(20)
    );
    assert_eq!(
        ca_bundle(&client, &name).await,
        bundle,
        "a renewal changed the CA"
    );
    assert!(
        failed.is_empty(),
        "requests failed meanwhile: {failed:?}\nour server:\n{}\nkube-apiserver on our group:\n{}",
        server.process.log_tail(30),
        std::fs::read_to_string(cp.apiserver_log_path())
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("inventory.harvesterhci.io") && !line.starts_with('I'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        server
            .process
            .log_tail(200)
            .contains("renewed the serving certificate (same CA)"),
        "{}",
        server.process.log_tail(20)
    );
}
