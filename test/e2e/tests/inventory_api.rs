//! The inventory apiserver binary behind the real kube-apiserver's aggregation
//! layer: the APIService becomes Available with our serving certificate,
//! discovery reaches kubectl, writes are refused with 405, and a caller the
//! front proxy did not vouch for gets 401 (or no TLS session at all).

use std::time::Duration;

use serde_json::Value;
use vmm_testkit::aggregation::{
    ApiServiceRegistration, register_apiservice, wait_apiservice_available,
};
use vmm_testkit::process::free_port;
use vmm_testkit::tls::reqwest_client;
use vmm_testkit::{ControlPlane, ManagedProcess, ProcessBuilder, TestNamespace, workspace_binary};

const GROUP: &str = "inventory.harvesterhci.io";
const WAIT: Duration = Duration::from_secs(120);

struct InventoryServer {
    _process: ManagedProcess,
    port: u16,
}

/// Starts vmm-apiserver with a certificate for `<service>.<namespace>.svc` and
/// registers it as `v1.inventory.harvesterhci.io`.
async fn start_and_register(cp: &ControlPlane) -> InventoryServer {
    let port = free_port().unwrap();
    let registration =
        ApiServiceRegistration::new(GROUP, "v1", port, cp.pki().cluster_ca.cert_pem());
    let serving = cp
        .pki()
        .issue_aggregated_serving(&registration.service_name, &registration.service_namespace)
        .unwrap();
    let admin_port = free_port().unwrap();
    let process = ProcessBuilder::new("vmm-apiserver", workspace_binary("vmm-apiserver").unwrap())
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .arg("--tls-cert-file")
        .arg(&serving.cert_path)
        .arg("--tls-private-key-file")
        .arg(&serving.key_path)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .log_file(cp.dir().join("vmm-apiserver.log"))
        .spawn()
        .unwrap();
    let client = cp.client();
    register_apiservice(&client, &registration).await.unwrap();
    wait_apiservice_available(&client, &registration.apiservice_name(), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\napiserver log:\n{}", process.log_tail(30)));
    InventoryServer {
        _process: process,
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_api_is_served_through_the_aggregator() {
    let cp = ControlPlane::shared();
    let server = start_and_register(cp).await;
    let ns = TestNamespace::new(cp, "inventory").unwrap();

    // Discovery, as kubectl sees it.
    let resources = cp.kubectl([
        "api-resources",
        "--api-group",
        GROUP,
        "--no-headers",
        "-o",
        "wide",
    ]);
    let resources = resources.expect_success();
    for (name, short, kind) in [
        ("virtualmachines", "ivm", "VirtualMachine"),
        ("networks", "inet", "Network"),
    ] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not discovered:\n{resources}"));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            columns[..5],
            [name, short, "inventory.harvesterhci.io/v1", "true", kind],
            "{line}"
        );
        assert!(
            line.contains("get,list,watch") || line.contains("[get list watch]"),
            "{line}"
        );
    }
    let raw = cp.kubectl(["get", "--raw", "/apis/inventory.harvesterhci.io/v1"]);
    let list: Value = serde_json::from_str(raw.expect_success()).unwrap();
    assert_eq!(list["kind"], "APIResourceList");

    // KubeVirt keeps the plain name; ours answers to its full name.
    let kubevirt = cp.kubectl([
        "explain",
        "virtualmachines",
        "--api-version",
        "kubevirt.io/v1",
    ]);
    assert!(
        kubevirt
            .expect_success()
            .contains("GROUP:      kubevirt.io"),
        "{kubevirt}"
    );

    // Writes are refused with the reason, through kube-apiserver.
    let write = cp.kubectl_with_stdin(
        ["create", "-n", ns.name(), "-f", "-"],
        r#"{"apiVersion":"inventory.harvesterhci.io/v1","kind":"VirtualMachine","metadata":{"name":"x"}}"#,
    );
    let error = write.expect_failure();
    assert!(error.contains("the inventory is read-only"), "{error}");
    let delete = cp.kubectl([
        "delete",
        "--raw",
        &format!("/apis/{GROUP}/v1/namespaces/{}/networks/x", ns.name()),
    ]);
    assert!(
        delete.expect_failure().contains("MethodNotAllowed") || delete.stderr.contains("read-only"),
        "{delete}"
    );

    // Straight to the server: no client certificate → 401 Status.
    let ca = cp.pki().cluster_ca.cert_pem();
    let url = format!("https://127.0.0.1:{}/apis", server.port);
    let anonymous = reqwest_client(&[ca], None).unwrap();
    let response = send_as_localhost(&anonymous, &url).await.unwrap();
    assert_eq!(response.status(), 401);
    let status: Value = response.json().await.unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );

    // A certificate of the right CA but not the proxy's name → 401, even with user headers.
    let mallory = cp
        .pki()
        .front_proxy_ca
        .issue_client("mallory-client", "mallory", &[])
        .unwrap();
    let impostor = reqwest_client(&[ca], Some((&mallory.cert_pem, &mallory.key_pem))).unwrap();
    let response = impostor
        .get(&url)
        .header("X-Remote-User", "system:admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // A certificate from any other CA never gets a TLS session.
    let stranger = cp.pki().issue_user("stranger", &[]).unwrap();
    let stranger = reqwest_client(&[ca], Some((&stranger.cert_pem, &stranger.key_pem))).unwrap();
    assert!(
        send_as_localhost(&stranger, &url).await.is_err(),
        "a client certificate of another CA was accepted"
    );
}

async fn send_as_localhost(
    client: &reqwest::Client,
    url: &str,
) -> reqwest::Result<reqwest::Response> {
    client.get(url).send().await
}
