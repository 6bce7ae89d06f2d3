//! The KubeVirt stand-in (VM stop, VM export) against KubeVirt's real CRDs
//! in a real kube-apiserver, downloading from its HTTPS export server.
//!
//! Each test runs its own stand-in on its own namespace; they share the
//! control plane of this test binary (`ControlPlane::shared`, i.e.
//! `ControlPlane::start_with(ControlPlaneOptions::default())`).

use std::io::Read;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};
use vmm_testkit::kubevirt::{
    ExportFormat, FORMATS_ANNOTATION, KubeVirt, Options, TokenVia, export_resource, vm_resource,
    vmi_resource,
};
use vmm_testkit::{ControlPlane, TestNamespace};

/// Generous limit for anything that waits (never a pass/fail timing).
const WAIT: Duration = Duration::from_secs(120);

/// The token of the Secret the tests name in `spec.tokenSecretRef`.
const TOKEN: &str = "s3cret-export-token";

/// One test's namespace on the shared control plane, a stand-in that
/// watches only it, and an HTTPS client trusting the stand-in's CA.
struct Fixture {
    // Fields drop in this order: the stand-in stops before its namespace goes.
    kubevirt: KubeVirt,
    client: kube::Client,
    http: reqwest::Client,
    ns: TestNamespace<'static>,
}

impl Fixture {
    fn new(prefix: &str, options: Options) -> Fixture {
        let cp = ControlPlane::shared();
        let ns = TestNamespace::new(cp, prefix).expect("namespace");
        let client = cp.client();
        let dir = vmm_testkit::process::run_dir().expect("run dir");
        let options = Options {
            namespace: Some(ns.name().to_owned()),
            ..options
        };
        let kubevirt = KubeVirt::start(client.clone(), &dir, options).expect("start");
        // No redirects followed: a test sees the 301 of `dir`.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(
                vmm_testkit::tls::client_config(&[kubevirt.ca_pem()], None).expect("TLS"),
            )
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Fixture {
            kubevirt,
            client,
            http,
            ns,
        }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), resource)
    }

    async fn create(&self, resource: &ApiResource, object: Value) {
        let object: DynamicObject = serde_json::from_value(object).expect("object");
        self.api(resource)
            .create(&PostParams::default(), &object)
            .await
            .expect("create");
    }

    async fn create_pvc(&self, name: &str, annotations: Value) {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
                     "resources": {"requests": {"storage": "1Gi"}}}});
        let resource = ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&());
        self.create(&resource, pvc).await;
    }

    async fn create_secret(&self, name: &str, token: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"token": token}}))
        .expect("secret");
        Api::<Secret>::namespaced(self.client.clone(), self.ns())
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    }

    async fn create_export(&self, name: &str, vm: &str, spec: Value) {
        let mut full =
            json!({"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm}});
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(extra.clone());
        }
        let export = json!({"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
            "metadata": {"name": name}, "spec": full});
        self.create(&export_resource(), export).await;
    }

    async fn patch_vm(&self, name: &str, patch: Value) {
        self.api(&vm_resource())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch VM");
    }

    /// The object once `done` holds for it (or for its absence: `None`).
    async fn wait(
        &self,
        resource: &ApiResource,
        name: &str,
        what: &str,
        done: impl Fn(Option<&DynamicObject>) -> bool + Send + 'static,
    ) -> Option<DynamicObject> {
        let api = self.api(resource);
        let waited =
            tokio::time::timeout(WAIT, kube::runtime::wait::await_condition(api, name, done));
        match waited.await {
            Ok(result) => result.expect("watch"),
            Err(_) => panic!(
                "{} {name}: {what}: not within {WAIT:?}; now: {:?}",
                resource.kind,
                self.api(resource).get_opt(name).await
            ),
        }
    }

    async fn wait_printable(&self, vm: &str, status: &'static str) {
        self.wait(&vm_resource(), vm, status, move |vm| {
            vm.is_some_and(|vm| vm.data["status"]["printableStatus"] == status)
        })
        .await;
    }

    async fn wait_gone(&self, resource: &ApiResource, name: &str) {
        self.wait(resource, name, "gone", |o| o.is_none()).await;
    }

    /// The export once its `Ready` condition has `reason`.
    async fn wait_ready_reason(&self, export: &str, reason: &'static str) -> Value {
        let export = self
            .wait(&export_resource(), export, reason, move |e| {
                e.is_some_and(|e| ready(&e.data)["reason"] == reason)
            })
            .await
            .expect("export");
        export.data["status"].clone()
    }

    async fn get(&self, url: &str, token: Token<'_>) -> (u16, Vec<u8>) {
        let response = self.send(reqwest::Method::GET, url, token, None).await;
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Token<'_>,
        range: Option<&str>,
    ) -> reqwest::Response {
        let mut request = match token {
            Token::Header(t) => self
                .http
                .request(method, url)
                .header("x-kubevirt-export-token", t),
            Token::Query(t) => self
                .http
                .request(method, format!("{url}?x-kubevirt-export-token={t}")),
            Token::None => self.http.request(method, url),
        };
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send().await.expect("request")
    }
}

#[derive(Clone, Copy)]
enum Token<'a> {
    Header(&'a str),
    Query(&'a str),
    None,
}

fn ready(status_holder: &Value) -> Value {
    status_holder["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A VM like Harvester's: claims, a dataVolume, cloud-init and a container
/// disk (the last two are never exported).
fn vm(name: &str, run_strategy: &str, volumes: Value) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"runStrategy": run_strategy, "template": {
            "metadata": {"labels": {"harvesterhci.io/vmName": name}},
            "spec": {"domain": {"devices": {}, "memory": {"guest": "1Gi"}}, "volumes": volumes}}}})
}

/// `len` deterministic, incompressible bytes.
fn disk_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// `[format, url]` of each format of volume `claim` in a link.
fn formats(link: &Value, claim: &str) -> Vec<(String, String)> {
    let volume = link["volumes"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["name"] == claim))
        .unwrap_or_else(|| panic!("no volume {claim} in {link}"));
    volume["formats"]
        .as_array()
        .expect("formats")
        .iter()
        .map(|f| {
            (
                f["format"].as_str().unwrap_or_default().to_owned(),
                f["url"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_vm_loses_its_instance_after_the_stop_delay() {
    let stop_delay = Duration::from_secs(3);
    let f = Fixture::new(
        "kv-stop",
        Options {
            stop_delay,
            ..Options::default()
        },
    );
    let ns = f.ns().to_owned();
    f.create(&vm_resource(), vm("web", "Always", json!([])))
        .await;
    let mut legacy = vm("legacy", "Always", json!([]));
    legacy["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("runStrategy");
    legacy["spec"]["running"] = json!(true);
    f.create(&vm_resource(), legacy).await;
    f.create(&vm_resource(), vm("off", "Halted", json!([])))
        .await;

    f.kubevirt.run_vm(&ns, "web").await.expect("run web");
    f.kubevirt.run_vm(&ns, "legacy").await.expect("run legacy");
    let refused = f
        .kubevirt
        .run_vm(&ns, "off")
        .await
        .expect_err("a halted VM");
    assert!(format!("{refused:#}").contains("halted"), "{refused:#}");

    let vmi = f.api(&vmi_resource()).get("web").await.expect("instance");
    assert_eq!(vmi.data["status"]["phase"], "Running");
    assert_eq!(
        vmi.metadata.owner_references.as_ref().expect("owner")[0].name,
        "web"
    );
    assert_eq!(vmi.data["spec"]["domain"]["memory"]["guest"], "1Gi");
    f.wait_printable("web", "Running").await;

    let halted_at = Instant::now();
    f.patch_vm("web", json!({"spec": {"runStrategy": "Halted"}}))
        .await;
    f.wait_gone(&vmi_resource(), "web").await;
    assert!(
        halted_at.elapsed() >= stop_delay,
        "the instance went {:?} after the halt",
        halted_at.elapsed()
    );
    f.wait_printable("web", "Stopped").await;
    let web = f.api(&vm_resource()).get("web").await.expect("VM");
    assert!(web.data["status"].get("ready").is_none(), "{}", web.data);

    // The field older VMs use.
    f.patch_vm("legacy", json!({"spec": {"running": false}}))
        .await;
    f.wait_gone(&vmi_resource(), "legacy").await;
    f.wait_printable("legacy", "Stopped").await;
    // A VM that is not halted keeps running.
    f.create(&vm_resource(), vm("busy", "RerunOnFailure", json!([])))
        .await;
    f.kubevirt.run_vm(&ns, "busy").await.expect("run busy");
    f.wait_printable("busy", "Running").await;
    assert!(
        f.api(&vmi_resource())
            .get_opt("busy")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_power_off_is_stopped_at_once() {
    // So long that only the instance's deletion can make the VM Stopped in time.
    let f = Fixture::new(
        "kv-kill",
        Options {
            stop_delay: Duration::from_secs(3600),
            ..Options::default()
        },
    );
    let ns = f.ns().to_owned();
    f.create(&vm_resource(), vm("web", "Always", json!([])))
        .await;
    f.kubevirt.run_vm(&ns, "web").await.expect("run");
    f.patch_vm("web", json!({"spec": {"runStrategy": "Halted"}}))
        .await;
    f.wait_printable("web", "Stopping").await;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    f.api(&vmi_resource())
        .delete("web", &now)
        .await
        .expect("delete instance");
    f.wait_printable("web", "Stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_ready_once_its_vm_stopped_and_serves_its_volumes() {
    let f = Fixture::new(
        "kv-export",
        Options {
            stop_delay: Duration::from_secs(1),
            ready_delay: Duration::from_secs(1),
            ..Options::default()
        },
    );
    let ns = f.ns().to_owned();
    let root = disk_bytes((3 << 20) + 123, 1);
    let data = disk_bytes(1 << 20, 2);
    let files = disk_bytes(100_000, 3);
    f.kubevirt
        .write_volume(&ns, "web-root", &root)
        .expect("write");
    f.kubevirt
        .write_volume(&ns, "web-data", &data)
        .expect("write");
    f.kubevirt
        .write_volume(&ns, "web-files", &files)
        .expect("write");
    f.create_pvc("web-root", json!({})).await;
    f.create_pvc("web-data", json!({FORMATS_ANNOTATION: "gzip"}))
        .await;
    f.create_pvc("web-files", json!({FORMATS_ANNOTATION: "dir,tar.gz"}))
        .await;
    let volumes = json!([
        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\n"}},
        {"name": "root", "persistentVolumeClaim": {"claimName": "web-root"}},
        {"name": "os", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
        {"name": "files", "dataVolume": {"name": "web-files"}},
        {"name": "gone", "persistentVolumeClaim": {"claimName": "no-such-claim"}}]);
    f.create(&vm_resource(), vm("web", "Always", volumes)).await;
    f.create_secret("my-token", TOKEN).await;
    f.kubevirt.run_vm(&ns, "web").await.expect("run");

    // A running VM: in use.
    f.create_export("web-export", "web", json!({"tokenSecretRef": "my-token"}))
        .await;
    let status = f.wait_ready_reason("web-export", "InUse").await;
    assert_eq!(status["phase"], "Pending", "{status}");
    assert_eq!(
        ready(&json!({"status": status}))["message"],
        format!("Virtual Machine {ns}/web is running")
    );
    assert_eq!(status["links"], json!({}));
    assert_eq!(status["tokenSecretRef"], "my-token");
    assert_eq!(status["serviceName"], "virt-export-web-export");
    assert_eq!(status["virtualMachineName"], "web");
    let pvc_ready = status["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == "PVCReady"))
        .expect("PVCReady");
    assert_eq!(
        (&pvc_ready["status"], &pvc_ready["reason"]),
        (&json!("False"), &json!("Unknown"))
    );
    let base = format!(
        "https://{}/api/export.kubevirt.io/v1beta1/namespaces/{ns}/virtualmachineexports/web-export",
        f.kubevirt.host()
    );
    let raw_url = format!("{base}/volumes/web-root/disk.img");
    assert_eq!(
        f.get(&raw_url, Token::Header(TOKEN)).await.0,
        503,
        "not ready yet"
    );

    // Stopped: ready, with the links KubeVirt makes.
    f.patch_vm("web", json!({"spec": {"runStrategy": "Halted"}}))
        .await;
    let status = f.wait_ready_reason("web-export", "PodReady").await;
    assert_eq!(status["phase"], "Ready", "{status}");
    assert_eq!(ready(&json!({"status": status}))["status"], "True");
    let export = f
        .api(&export_resource())
        .get("web-export")
        .await
        .expect("export");
    let created = export.metadata.creation_timestamp.expect("created").0;
    let expires = created
        .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(2))
        .expect("time");
    assert_eq!(status["ttlExpirationTime"], expires.to_string());
    let (internal, external) = (&status["links"]["internal"], &status["links"]["external"]);
    assert_eq!(internal["cert"], f.kubevirt.ca_pem());
    assert_eq!(external["cert"], f.kubevirt.ca_pem());
    let names: Vec<&Value> = external["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| &v["name"])
        .collect();
    assert_eq!(
        names,
        [&json!("web-root"), &json!("web-data"), &json!("web-files")]
    );
    let pair = |format: &str, url: String| (format.to_owned(), url);
    assert_eq!(
        formats(external, "web-root"),
        [
            pair("raw", raw_url.clone()),
            pair("gzip", format!("{base}/volumes/web-root/disk.img.gz"))
        ]
    );
    assert_eq!(
        formats(external, "web-data"),
        [pair("gzip", format!("{base}/volumes/web-data/disk.img.gz"))],
        "gzip only"
    );
    assert_eq!(
        formats(external, "web-files"),
        [
            pair("dir", format!("{base}/volumes/web-files/dir")),
            pair("tar.gz", format!("{base}/volumes/web-files/disk.tar.gz"))
        ],
        "archive only"
    );
    assert_eq!(
        formats(internal, "web-root")[0],
        pair(
            "raw",
            format!("https://virt-export-web-export.{ns}.svc/volumes/web-root/disk.img")
        )
    );

    // raw: the token by header or query; none or a wrong one is refused.
    assert_eq!(
        f.get(&raw_url, Token::Header(TOKEN)).await,
        (200, root.clone())
    );
    assert_eq!(
        f.get(&raw_url, Token::Query(TOKEN)).await,
        (200, root.clone())
    );
    assert_eq!(f.get(&raw_url, Token::None).await.0, 401);
    assert_eq!(f.get(&raw_url, Token::Header("wrong")).await.0, 401);
    assert_eq!(f.get(&raw_url, Token::Query("wrong")).await.0, 401);
    let head = f
        .send(reqwest::Method::HEAD, &raw_url, Token::Header(TOKEN), None)
        .await;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().expect("length"),
        root.len().to_string()
    );
    let part = f
        .send(
            reqwest::Method::GET,
            &raw_url,
            Token::Header(TOKEN),
            Some("bytes=10-19"),
        )
        .await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().expect("range"),
        format!("bytes 10-19/{}", root.len())
    );
    assert_eq!(part.bytes().await.expect("body"), root[10..20]);

    // gzip: GET only, decompresses to the volume.
    let (status, gz) = f
        .get(
            &format!("{base}/volumes/web-root/disk.img.gz"),
            Token::Header(TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        gunzip(&gz) == root,
        "the gzip of web-root decompresses to it"
    );
    let (status, gz) = f
        .get(
            &format!("{base}/volumes/web-data/disk.img.gz"),
            Token::Query(TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        gunzip(&gz) == data,
        "the gzip of web-data decompresses to it"
    );
    let head = f
        .send(
            reqwest::Method::HEAD,
            &format!("{base}/volumes/web-data/disk.img.gz"),
            Token::Header(TOKEN),
            None,
        )
        .await;
    assert_eq!(head.status(), 400, "KubeVirt's gzip handler takes GET only");
    let (status, _) = f
        .get(
            &format!("{base}/volumes/web-data/disk.img"),
            Token::Header(TOKEN),
        )
        .await;
    assert_eq!(status, 404, "web-data has no raw format");

    // tar.gz and dir: the volume root, holding disk.img.
    let (status, tgz) = f
        .get(
            &format!("{base}/volumes/web-files/disk.tar.gz"),
            Token::Header(TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    let tar = gunzip(&tgz);
    assert_eq!(&tar[512..522], b"./disk.img");
    assert!(
        tar[1024..1024 + files.len()] == files[..],
        "the tar holds the volume"
    );
    let redirect = f
        .send(
            reqwest::Method::GET,
            &format!("{base}/volumes/web-files/dir"),
            Token::None,
            None,
        )
        .await;
    assert_eq!(redirect.status(), 301);
    assert_eq!(redirect.headers()["location"], "/volumes/web-files/dir/");
    let (status, listing) = f
        .get(
            &format!("{base}/volumes/web-files/dir/"),
            Token::Header(TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&listing).contains("href=\"disk.img\""));
    assert_eq!(
        f.get(
            &format!("{base}/volumes/web-files/dir/disk.img"),
            Token::Header(TOKEN)
        )
        .await,
        (200, files.clone())
    );
    let (status, _) = f
        .get(
            &format!("{base}/volumes/no-such-claim/disk.img"),
            Token::Header(TOKEN),
        )
        .await;
    assert_eq!(status, 404, "a claim that does not exist is not exported");

    // What the server recorded.
    let requests = f.kubevirt.requests();
    let raw: Vec<_> = requests
        .iter()
        .filter(|r| r.volume.as_deref() == Some("web-root") && r.format == Some(ExportFormat::Raw))
        .map(|r| (r.method.as_str(), r.token, r.status, r.bytes))
        .collect();
    let len = root.len() as u64;
    assert_eq!(
        raw[..5],
        [
            ("GET", TokenVia::Header, 200, len),
            ("GET", TokenVia::Query, 200, len),
            ("GET", TokenVia::None, 401, 0),
            ("GET", TokenVia::Header, 401, 0),
            ("GET", TokenVia::Query, 401, 0),
        ],
        "{requests:#?}"
    );
    assert_eq!(requests[0].status, 503);
    assert_eq!(
        (requests[0].namespace.as_str(), requests[0].export.as_str()),
        (ns.as_str(), "web-export")
    );

    // The token is read at each request: without its Secret, no access.
    Api::<Secret>::namespaced(f.client.clone(), &ns)
        .delete("my-token", &DeleteParams::default())
        .await
        .expect("delete Secret");
    assert_eq!(f.get(&raw_url, Token::Header(TOKEN)).await.0, 500);
    f.create_secret("my-token", TOKEN).await;

    // The VM runs again: the export is no longer ready, and a download in
    // flight breaks off.
    let big = vec![7u8; 32 << 20];
    f.kubevirt
        .write_volume(&ns, "web-root", &big)
        .expect("write");
    let mut download = f
        .send(reqwest::Method::GET, &raw_url, Token::Header(TOKEN), None)
        .await;
    assert_eq!(download.status(), 200);
    let mut received = download
        .chunk()
        .await
        .expect("a chunk")
        .map_or(0, |c| c.len());
    f.patch_vm("web", json!({"spec": {"runStrategy": "Always"}}))
        .await;
    f.kubevirt.run_vm(&ns, "web").await.expect("run again");
    f.wait_ready_reason("web-export", "InUse").await;
    let ended = loop {
        match download.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        ended.is_err() && received < big.len(),
        "{received} bytes, {ended:?}"
    );
    assert_eq!(f.get(&raw_url, Token::Header(TOKEN)).await.0, 503);

    // Deleted: not served from then on.
    f.api(&export_resource())
        .delete("web-export", &DeleteParams::default())
        .await
        .expect("delete export");
    assert_eq!(f.get(&raw_url, Token::Header(TOKEN)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_waits_for_its_vm_and_claims_and_ends_with_its_ttl() {
    let f = Fixture::new(
        "kv-export-wait",
        Options {
            ready_delay: Duration::from_millis(500),
            ..Options::default()
        },
    );
    let ns = f.ns().to_owned();
    f.kubevirt
        .write_volume(&ns, "later-root", b"later's bytes")
        .expect("write");

    // No VM: skipped, no token yet.
    f.create_export("early", "later", json!({})).await;
    let status = f.wait_ready_reason("early", "VMNoVolumes").await;
    assert_eq!(status["phase"], "Skipped", "{status}");
    assert!(status.get("tokenSecretRef").is_none(), "{status}");

    // A VM whose dataVolume has no PVC yet: not populated.
    f.create_pvc("later-root", json!({})).await;
    let volumes = json!([
        {"name": "root", "persistentVolumeClaim": {"claimName": "later-root"}},
        {"name": "dv", "dataVolume": {"name": "later-dv"}}]);
    f.create(&vm_resource(), vm("later", "Halted", volumes))
        .await;
    let status = f
        .wait(&export_resource(), "early", "not populated", |e| {
            e.is_some_and(|e| {
                ready(&e.data)["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("are populated"))
            })
        })
        .await
        .expect("export")
        .data["status"]
        .clone();
    assert_eq!(status["phase"], "Pending", "{status}");
    assert_eq!(
        ready(&json!({"status": status}))["message"],
        format!("Not all volumes in the Virtual Machine {ns}/later are populated")
    );

    // Populated: ready, with a token Secret of its own.
    f.create_pvc("later-dv", json!({})).await;
    let status = f.wait_ready_reason("early", "PodReady").await;
    assert_eq!(status["tokenSecretRef"], "export-token-early");
    let secrets = Api::<Secret>::namespaced(f.client.clone(), &ns);
    let secret = secrets
        .get("export-token-early")
        .await
        .expect("token Secret");
    let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VirtualMachineExport", "early", Some(true))
    );
    let token = String::from_utf8(secret.data.expect("data")["token"].0.clone()).expect("utf-8");
    assert_eq!(token.len(), 20);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
    let url = formats(&status["links"]["external"], "later-root")[0]
        .1
        .clone();
    assert_eq!(
        f.get(&url, Token::Header(&token)).await,
        (200, b"later's bytes".to_vec())
    );

    // An export past its TTL is deleted.
    f.create_secret("my-token", TOKEN).await;
    f.create_export(
        "brief",
        "later",
        json!({"tokenSecretRef": "my-token", "ttlDuration": "3s"}),
    )
    .await;
    f.wait_gone(&export_resource(), "brief").await;
}
