//! Two inventory apiserver replicas stay coherent for a client that lists
//! from one and watches from the other (as happens behind the Service): each
//! replica keeps its own resourceVersions, so a version from the other one is
//! refused with 410 and the client relists; after that, every change comes
//! exactly once. Both replicas are talked to directly, as kube-apiserver's
//! proxy would, with the front proxy's client certificate.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use vmm_testkit::servers::{Server, serving_args, start_inventory_api, start_server};
use vmm_testkit::tls::reqwest_client;
use vmm_testkit::vcsim::{NicSpec, VmSpec};
use vmm_testkit::{ControlPlane, TestNamespace, Vcsim, workspace_binary};

mod common;

const WAIT: Duration = Duration::from_secs(120);

/// One replica, reached directly as kube-apiserver's proxy reaches it.
struct Replica {
    base: String,
    client: reqwest::Client,
}

impl Replica {
    fn new(cp: &ControlPlane, port: u16) -> Self {
        let proxy = &cp.pki().front_proxy_client;
        let client = reqwest_client(
            &[cp.pki().cluster_ca.cert_pem()],
            Some((&proxy.cert_pem, &proxy.key_pem)),
        )
        .unwrap();
        Self {
            base: format!("https://127.0.0.1:{port}"),
            client,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .header("X-Remote-User", "system:admin")
            .header("X-Remote-Group", "system:masters")
    }

    /// The namespace's VM list.
    async fn list(&self, namespace: &str) -> Value {
        let path =
            format!("/apis/inventory.harvesterhci.io/v1/namespaces/{namespace}/virtualmachines");
        self.get(&path).send().await.unwrap().json().await.unwrap()
    }

    /// A watch from `version`: the events, one JSON value per line.
    async fn watch(
        &self,
        namespace: &str,
        version: &str,
    ) -> (u16, futures::stream::BoxStream<'static, Value>) {
        let path = format!(
            "/apis/inventory.harvesterhci.io/v1/namespaces/{namespace}/virtualmachines?watch=true&resourceVersion={version}"
        );
        let response = self.get(&path).send().await.unwrap();
        let status = response.status().as_u16();
        // Newline-delimited JSON, read chunk by chunk.
        let events = futures::stream::unfold(
            (response, Vec::new()),
            |(mut response, mut buffer)| async move {
                loop {
                    if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        let event: Value = serde_json::from_slice(&line).unwrap();
                        return Some((event, (response, buffer)));
                    }
                    let chunk = response.chunk().await.ok()??;
                    buffer.extend_from_slice(&chunk);
                }
            },
        )
        .boxed();
        (status, events)
    }
}

/// Whether a watch from a version of the other replica was refused as too
/// old: an HTTP 410, or (as kube-apiserver does) an ERROR event with a 410.
async fn refused_as_expired(
    (status, mut events): (u16, futures::stream::BoxStream<'static, Value>),
) -> bool {
    if status == 410 {
        return true;
    }
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    matches!(first, Ok(Some(event)) if event["type"] == "ERROR" && event["object"]["code"] == 410)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_from_one_replica_and_a_watch_from_the_other_agree() {
    let cp = ControlPlane::shared();
    let vcsim = Vcsim::shared();
    let program = workspace_binary("vmm-apiserver").unwrap();
    let first = start_inventory_api(cp, &program, cp.kubeconfig_path())
        .await
        .unwrap();
    // The second replica: the same Service name in its certificate, not registered.
    let port = vmm_testkit::process::free_port().unwrap();
    let serving = cp
        .pki()
        .issue_aggregated_serving(
            &first.registration.service_name,
            &first.registration.service_namespace,
        )
        .unwrap();
    let _second: Server = start_server(
        cp,
        &program,
        cp.kubeconfig_path(),
        serving_args(port, serving),
    )
    .unwrap();
    let (a, b) = (Replica::new(cp, first.port), Replica::new(cp, port));

    let ns = TestNamespace::new(cp, "replicas").unwrap();
    let vm = vcsim
        .create_vm(
            &VmSpec::new(format!("coherent {}", ns.name()))
                .nic(NicSpec::on("VM Network"))
                .powered_on(true),
        )
        .await
        .unwrap();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let count = vcsim.info().vm_paths.len() + 1;
    for replica in [&a, &b] {
        let deadline = Instant::now() + WAIT;
        while replica.list(ns.name()).await["items"]
            .as_array()
            .map_or(0, Vec::len)
            < count
        {
            assert!(Instant::now() < deadline, "a replica never listed every VM");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // A version from one replica means nothing to the other: 410, both ways.
    for (lister, watcher) in [(&a, &b), (&b, &a)] {
        let listed = lister.list(ns.name()).await;
        let version = listed["metadata"]["resourceVersion"].as_str().unwrap();
        assert!(
            refused_as_expired(watcher.watch(ns.name(), version).await).await,
            "a foreign resourceVersion {version} was accepted"
        );
    }

    // Relisted from the replica it watches, the client sees every later
    // change once: the list plus the events is what the replica lists later.
    let listed = b.list(ns.name()).await;
    let version = listed["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut state = versions(&listed["items"]);
    let (status, mut events) = b.watch(ns.name(), &version).await;
    assert_eq!(status, 200);
    common::power_off(vcsim, &vm.moref).await;
    let mut seen_off = false;
    let mut last = version.parse::<u64>().unwrap();
    let quiet = Duration::from_secs(3);
    let deadline = Instant::now() + WAIT;
    loop {
        let Ok(event) = tokio::time::timeout(quiet, events.next()).await else {
            if seen_off {
                break; // quiet after the change
            }
            assert!(Instant::now() < deadline, "the power change never came");
            continue;
        };
        let event = event.expect("the watch ended");
        let object = &event["object"];
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let rv: u64 = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv > last, "an event out of order or repeated: {event}");
        last = rv;
        match event["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                state.insert(name, rv);
            }
            Some("DELETED") => {
                state.remove(&name);
            }
            _ => panic!("unexpected event {event}"),
        }
        if object["spec"]["id"] == vm.moref.as_str() && object["spec"]["powerState"] == "Off" {
            seen_off = true;
        }
    }
    let now = b.list(ns.name()).await;
    assert_eq!(
        state,
        versions(&now["items"]),
        "the watch missed or invented a change"
    );
}

/// Each listed object's name and resourceVersion.
fn versions(items: &Value) -> std::collections::BTreeMap<String, u64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["metadata"]["name"].as_str().unwrap().to_owned(),
                item["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect()
}
