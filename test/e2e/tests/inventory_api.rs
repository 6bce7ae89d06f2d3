//! The inventory apiserver binary behind the real kube-apiserver's aggregation
//! layer: the APIService becomes Available with our serving certificate,
//! discovery reaches kubectl, writes are refused with 405, and a caller the
//! front proxy did not vouch for gets 401 (or no TLS session at all). With a
//! `Vsphere` source pointing at vcsim, kubectl browses its VMs like built-ins,
//! and namespace RBAC decides who sees them.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vmm_testkit::servers::{metric, shared_inventory_api};
use vmm_testkit::tls::reqwest_client;
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim};

mod common;

const GROUP: &str = "inventory.harvesterhci.io";
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_api_is_served_through_the_aggregator() {
    let cp = ControlPlane::shared();
    let server = shared_inventory_api();
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

    // kubectl explain reads our OpenAPI v3, which the aggregator fetches in the background.
    let deadline = std::time::Instant::now() + WAIT;
    let explained = loop {
        let out = cp.kubectl(["explain", "virtualmachines.inventory.harvesterhci.io.spec"]);
        if out.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let explained = explained.expect_success();
    for field in ["displayName", "powerState", "memoryMib", "nics"] {
        assert!(explained.contains(field), "{field} missing:\n{explained}");
    }
    assert!(
        explained.contains("inventory.harvesterhci.io"),
        "{explained}"
    );

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

/// Polls `kubectl get ivm` in `namespace` until it lists `count` VMs.
fn wait_for_vms(cp: &ControlPlane, namespace: &str, count: usize) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = cp.kubectl(["get", "ivm", "-n", namespace, "-o", "name"]);
        if out.success() && out.stdout.lines().count() == count {
            return out.stdout;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{namespace} never listed {count} VMs: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_browses_a_vcenters_vms_under_namespace_rbac() {
    let cp = ControlPlane::shared();
    let server = shared_inventory_api();
    let vcsim = Vcsim::shared();
    let vm_count = vcsim.info().vm_paths.len();
    let team_a = TestNamespace::new(cp, "team-a").unwrap();
    let team_b = TestNamespace::new(cp, "team-b").unwrap();
    cp.apply_yaml(team_a.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let names = wait_for_vms(cp, team_a.name(), vm_count);
    let first = names
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("virtualmachine.inventory.harvesterhci.io/")
        .to_owned();

    // Table and wide columns.
    let table = team_a.kubectl(["get", "virtualmachines.inventory.harvesterhci.io"]);
    let header = table.expect_success().lines().next().unwrap().to_owned();
    for column in [
        "NAME",
        "DISPLAY NAME",
        "POWER",
        "CPUS",
        "MEMORY",
        "DISKS",
        "GUEST OS",
        "SOURCE",
        "CONCERNS",
    ] {
        assert!(header.contains(column), "{column} missing: {header}");
    }
    assert!(!header.contains("PATH"), "{header}");
    let wide = team_a.kubectl(["get", "ivm", "-o", "wide"]);
    let wide_header = wide.expect_success().lines().next().unwrap().to_owned();
    for column in ["PATH", "HOST", "NETWORKS"] {
        assert!(
            wide_header.contains(column),
            "{column} missing: {wide_header}"
        );
    }
    assert!(wide.stdout.contains("/DC0/vm/"), "{wide}");

    // The object itself.
    let yaml = team_a.kubectl(["get", "ivm", &first, "-o", "json"]);
    let vm: Value = serde_json::from_str(yaml.expect_success()).unwrap();
    assert_eq!(vm["kind"], "VirtualMachine");
    assert_eq!(vm["spec"]["source"]["name"], "vc");
    assert!(vm["spec"]["cpus"].as_i64().unwrap() > 0, "{vm}");
    assert_eq!(
        vm["metadata"]["labels"]["inventory.harvesterhci.io/source"],
        "vc"
    );

    // Selectors, pages.
    let by_label = team_a.kubectl([
        "get",
        "ivm",
        "-o",
        "name",
        "-l",
        "inventory.harvesterhci.io/source=vc",
    ]);
    assert_eq!(by_label.expect_success().lines().count(), vm_count);
    let by_field = team_a.kubectl([
        "get",
        "ivm",
        "-o",
        "name",
        "--field-selector",
        &format!("metadata.name={first}"),
    ]);
    assert_eq!(
        by_field.expect_success().trim(),
        format!("virtualmachine.inventory.harvesterhci.io/{first}")
    );
    let power = team_a.kubectl([
        "get",
        "ivm",
        "-o",
        "name",
        "--field-selector",
        "spec.powerState=On",
    ]);
    assert_eq!(
        power.expect_success().lines().count(),
        vm_count,
        "vcsim VMs start powered on"
    );
    let chunked = team_a.kubectl(["get", "ivm", "-o", "name", "--chunk-size=2"]);
    assert_eq!(chunked.expect_success(), names);
    let networks = team_a.kubectl(["get", "inet"]);
    assert!(
        networks.expect_success().contains("DistributedPortgroup"),
        "{networks}"
    );

    // Bad input, through kube-apiserver: 400 and 410 as Status.
    let path = format!(
        "/apis/{GROUP}/v1/namespaces/{}/virtualmachines",
        team_a.name()
    );
    let bad = cp.kubectl(["get", "--raw", &format!("{path}?labelSelector=a%20in%20(b")]);
    assert!(
        bad.expect_failure().contains("BadRequest")
            || bad.stderr.contains("unable to parse requirement"),
        "{bad}"
    );
    let stale = cp.kubectl(["get", "--raw", &format!("{path}?limit=1&continue=1/x/y")]);
    assert!(
        stale.expect_failure().contains("continue token expired")
            || stale.stderr.contains("Expired"),
        "{stale}"
    );

    // The admin endpoint counts what was served and held.
    let admin = reqwest_client(&[cp.pki().cluster_ca.cert_pem()], None).unwrap();
    let scrape = || async {
        let url = format!("http://127.0.0.1:{}/metrics", server.server.admin_port);
        admin.get(url).send().await.unwrap().text().await.unwrap()
    };
    let metrics = scrape().await;
    assert!(
        metrics.contains(
            r#"vmm_apiserver_requests_total{verb="list",resource="virtualmachines",code="200"}"#
        ),
        "{metrics}"
    );
    let held = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"vmm_inventory_objects{resource="virtualmachines"} "#))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + WAIT;
    let mut metrics = metrics;
    while held(&metrics) < vm_count {
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        metrics = scrape().await;
    }

    // Tenancy: a user bound in team-a sees team-a's inventory, and nothing of team-b's.
    let user = format!("carol-{}", vmm_testkit::namespace::random_suffix());
    cp.kubectl_with_stdin(
        ["apply", "-n", team_a.name(), "-f", "-"],
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "inventory-reader"},
             "rules": [{"apiGroups": [GROUP], "resources": ["virtualmachines", "networks"], "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "carol"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "inventory-reader"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
        ]}).to_string(),
    )
    .expect_success();
    let carol = |ns: &str| cp.kubectl_as(&user, &[], ["get", "ivm", "-n", ns, "-o", "name"]);
    assert_eq!(carol(team_a.name()).expect_success(), names);
    let denied = carol(team_b.name());
    assert!(denied.expect_failure().contains("forbidden"), "{denied}");
    let everywhere = cp.kubectl_as(&user, &[], ["get", "ivm", "-A"]);
    assert!(
        everywhere.expect_failure().contains("at the cluster scope"),
        "{everywhere}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_vcenter_changes_through_kube_apiserver() {
    use futures::StreamExt;
    use kube::runtime::watcher;

    let cp = ControlPlane::shared();
    shared_inventory_api();
    // A vCenter of this test's own: it powers a VM off.
    let vcsim = tokio::task::spawn_blocking(|| Vcsim::start(vmm_testkit::Inventory::with_vms(2)))
        .await
        .unwrap()
        .unwrap();
    let ns = TestNamespace::new(cp, "watch").unwrap();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let names = wait_for_vms(cp, ns.name(), vcsim.info().vm_paths.len());
    let first = names
        .lines()
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let vm: Value = serde_json::from_str(
        ns.kubectl(["get", "ivm", &first, "-o", "json"])
            .expect_success(),
    )
    .unwrap();
    let moref = vm["spec"]["id"].as_str().unwrap().to_owned();

    // kube-rs, as controllers do: a streaming list, then changes.
    let api: kube::Api<vmm_api::inventory::VirtualMachine> =
        kube::Api::namespaced(cp.client(), ns.name());
    let mut events = watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut initial = 0;
    loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("watch events")
            .unwrap()
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(_) => initial += 1,
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before the initial-events-end bookmark: {other:?}"),
        }
    }
    assert_eq!(initial, names.lines().count());

    // kubectl get -w, as people do.
    let mut kubectl = std::process::Command::new(cp.peers().kubectl())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["get", "ivm", "-n", ns.name(), "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let seen = seen.clone();
        let stdout = kubectl.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line);
            }
        })
    };

    // Power off only once kubectl has listed, so the change arrives as an event.
    let vm_count = names.lines().count();
    wait_until_lines(&seen, "kubectl listed every VM", |lines| {
        lines.iter().filter(|l| l.starts_with("ADDED")).count() == vm_count
    });
    common::power_off(&vcsim, &moref).await;

    let modified = loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("a watch event")
            .expect("the watch goes on")
            .unwrap();
        if let watcher::Event::Apply(vm) = event
            && vm.metadata.name.as_deref() == Some(first.as_str())
        {
            break vm;
        }
    };
    assert_eq!(
        modified.spec.power_state,
        vmm_api::inventory::PowerState::Off
    );
    wait_until_lines(&seen, "kubectl get -w showed the power-off", |lines| {
        lines
            .iter()
            .any(|l| l.starts_with("MODIFIED") && l.contains(&first) && l.contains(" Off "))
    });
    kubectl.kill().unwrap();
    let _ = kubectl.wait();
    reader.join().unwrap();
}

fn wait_until_lines(lines: &Mutex<Vec<String>>, what: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let seen = lines.lock().unwrap().clone();
        if done(&seen) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never: {what}\n{}",
            seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The concerns of `vm` in `namespace` once they satisfy `done`, as reasons.
fn wait_for_concerns(
    cp: &ControlPlane,
    namespace: &str,
    vm: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = cp.kubectl(["get", "ivm", "-n", namespace, vm, "-o", "json"]);
        let object: Value = serde_json::from_str(out.expect_success()).unwrap();
        let reasons: Vec<String> = object["status"]["concerns"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if done(&reasons) {
            return object;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{vm}: never {what}; concerns now {reasons:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Concerns that need the cluster follow it: a source network without any
/// NetworkAttachmentDefinition to map to, a KubeVirt VM already holding the
/// name an import would give the VM, and one holding the VM's MAC address. Also: each source's sync lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concerns_follow_networks_and_vms_in_the_cluster() {
    let cp = ControlPlane::shared();
    let server = shared_inventory_api();
    let vcsim = Vcsim::shared();
    let ns = TestNamespace::new(cp, "concerns").unwrap();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let names = wait_for_vms(cp, ns.name(), vcsim.info().vm_paths.len());
    let vm = names.lines().next().unwrap().rsplit('/').next().unwrap();
    let has = |reason: &'static str| move |r: &[String]| r.iter().any(|x| x == reason);
    let lacks = |reason: &'static str| move |r: &[String]| r.iter().all(|x| x != reason);

    // No NAD anywhere yet (no other test in this binary makes one).
    let object = wait_for_concerns(cp, ns.name(), vm, "unmappable", has("NoNetworkToMapTo"));
    let network = object["spec"]["nics"][0]["network"]
        .as_str()
        .unwrap()
        .to_owned();
    let display_name = object["spec"]["displayName"].as_str().unwrap().to_owned();
    let networks = ns.kubectl(["get", "inet", "-o", "json"]);
    let networks: Value = serde_json::from_str(networks.expect_success()).unwrap();
    let vlan = networks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["displayName"] == network.as_str())
        .and_then(|n| n["spec"]["vlan"].as_i64());
    // A NAD as Harvester writes one, carrying the network's VLAN.
    let mut config = serde_json::json!({"cniVersion": "0.3.1", "name": "mapped", "type": "bridge",
        "bridge": "mgmt-br", "promiscMode": true, "ipam": {}});
    if let Some(vlan) = vlan.filter(|v| *v != 0) {
        config["vlan"] = vlan.into();
    }
    let nad = serde_json::json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "mapped", "namespace": ns.name()}, "spec": {"config": config.to_string()}});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &nad.to_string())
        .expect_success();
    wait_for_concerns(cp, ns.name(), vm, "mappable", lacks("NoNetworkToMapTo"));

    // A KubeVirt VM with the name an import would use.
    let target = vmm_api::names::target_vm_name(&display_name);
    let kubevirt_vm = serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": target, "namespace": ns.name()},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}}});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &kubevirt_vm.to_string())
        .expect_success();
    let object = wait_for_concerns(cp, ns.name(), vm, "name-clashing", has("NameTaken"));
    assert!(
        object.to_string().contains("spec.targetName"),
        "the message names the fix: {object}"
    );
    ns.kubectl(["delete", "virtualmachines.kubevirt.io", &target])
        .expect_success();
    wait_for_concerns(cp, ns.name(), vm, "clear", lacks("NameTaken"));

    // A KubeVirt VM in another namespace with the VM's MAC address.
    let mac = object["spec"]["nics"][0]["macAddress"]
        .as_str()
        .expect("vcsim gives each NIC a MAC")
        .to_uppercase();
    let elsewhere = TestNamespace::new(cp, "concerns-mac").unwrap();
    let holder = serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "holder", "namespace": elsewhere.name()},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {
            "interfaces": [{"name": "nic-0", "bridge": {}, "macAddress": mac}]}}}}}});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &holder.to_string())
        .expect_success();
    let object = wait_for_concerns(cp, ns.name(), vm, "MAC-clashing", has("MacAddressInUse"));
    let holder_path = format!("{}/holder", elsewhere.name());
    assert!(
        object.to_string().contains(&holder_path),
        "the message names the VM: {object}"
    );
    elsewhere
        .kubectl(["delete", "virtualmachines.kubevirt.io", "holder"])
        .expect_success();
    wait_for_concerns(cp, ns.name(), vm, "clear of MACs", lacks("MacAddressInUse"));

    // How fresh the source's inventory is.
    let lag = format!(
        r#"vmm_inventory_sync_lag_seconds{{namespace="{}",kind="Vsphere",source="vc"}}"#,
        ns.name()
    );
    metric(server.server.admin_port, &lag).unwrap();
}
