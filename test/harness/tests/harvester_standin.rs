//! The Harvester image-controller stand-in against the real CRDs in a real
//! kube-apiserver, with the backends' real downloaders (Longhorn's data
//! source, CDI's importer) fetching from HTTP(S) servers on 127.0.0.1.
//!
//! The servers here are raw HTTP/1.1 (one request per connection) so that a
//! test controls every byte: a HEAD without Content-Length, a body that
//! stalls or breaks off, Range support on or off, a redirect. What the
//! downloaders sent is what the server saw.
//!
//! Each test runs its own stand-in on its own namespace; they share the
//! control plane of this test binary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use vmm_testkit::aggregation::read_request_head;
use vmm_testkit::harvester::{
    ERROR_ANNOTATION, ImageController, ImportRecord, OWNED_BY_ANNOTATION, Options, Outcome,
    SHA256_ANNOTATION, SentRequest, VOLUME_CLAIM_TEMPLATES_ANNOTATION, VmRecord, image_resource,
    kubevirt_vm_resource,
};
use vmm_testkit::{ControlPlane, TestNamespace};

/// Generous limit for anything that waits (never a pass/fail timing).
const WAIT: Duration = Duration::from_secs(120);

// --- a fault-injecting disk server -----------------------------------------

/// How the test server answers `/disk.img` (and `/redirect`, a 302 to it).
#[derive(Debug, Clone, Default)]
struct Behaviour {
    /// Status of every HEAD (default 200).
    head_status: Option<u16>,
    /// Status of every GET without Range (default 200).
    get_status: Option<u16>,
    /// Leave Content-Length out of HEAD answers.
    no_head_length: bool,
    /// Answer `Range: bytes=a-b` with 206 (else the whole image, 200).
    ranges: bool,
    /// After this many body bytes, send nothing for this long.
    stall: Option<(usize, Duration)>,
    /// Declare the full Content-Length but close this many bytes early.
    short_by: usize,
    /// Pause between 64 KiB pieces (so that progress can be seen).
    throttle: Option<Duration>,
    /// Answer the n-th GET without a Range header (1-based) with 500.
    fail_nth_whole_get: Option<usize>,
}

/// What the server saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    range: Option<String>,
}

struct DiskServer {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DiskServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DiskServer {
    /// Serves `data` over HTTP, answering as the default [`Behaviour`]
    /// changed by `tweak`.
    async fn start(data: Arc<Vec<u8>>, tweak: impl FnOnce(&mut Behaviour)) -> DiskServer {
        let mut behaviour = Behaviour::default();
        tweak(&mut behaviour);
        Self::start_tls(data, behaviour, None).await
    }

    async fn start_tls(
        data: Arc<Vec<u8>>,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> DiskServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task_seen = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (data, behaviour, seen, tls) = (
                    data.clone(),
                    behaviour.clone(),
                    task_seen.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    let _ = match tls {
                        None => serve(stream, &data, &behaviour, &seen).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => serve(stream, &data, &behaviour, &seen).await,
                            Err(e) => Err(e.into()),
                        },
                    };
                });
            }
        });
        DiskServer {
            base: format!("{scheme}://127.0.0.1:{port}"),
            seen,
            task,
        }
    }

    fn url(&self) -> String {
        format!("{}/disk.img", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// (HEADs, GETs without Range, GETs with Range) for `path`.
    fn counts(&self, path: &str) -> (usize, usize, usize) {
        let seen = self.seen();
        let n = |f: &dyn Fn(&Seen) -> bool| seen.iter().filter(|s| s.path == path && f(s)).count();
        (
            n(&|s| s.method == "HEAD"),
            n(&|s| s.method == "GET" && s.range.is_none()),
            n(&|s| s.method == "GET" && s.range.is_some()),
        )
    }
}

/// `bytes=a-b` or `bytes=a-`, clamped to `len`.
fn parse_range(range: &str, len: usize) -> Option<(usize, usize)> {
    let (a, b) = range.strip_prefix("bytes=")?.split_once('-')?;
    let first: usize = a.parse().ok()?;
    let last = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().ok()?.min(len - 1)
    };
    (first <= last).then_some((first, last))
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    data: &[u8],
    behaviour: &Behaviour,
    seen: &Mutex<Vec<Seen>>,
) -> Result<()> {
    let Some(head) = read_request_head(&mut stream).await? else {
        return Ok(());
    };
    let (method, path) = (head.method, head.target);
    let range = head
        .headers
        .into_iter()
        .find_map(|(name, value)| (name == "range").then_some(value));
    let nth_whole_get = {
        let mut seen = seen.lock().expect("lock");
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
        });
        seen.iter()
            .filter(|s| s.method == "GET" && s.range.is_none())
            .count()
    };

    let status_line = |code: u16| {
        let reason = match code {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            _ => "Whatever",
        };
        format!("HTTP/1.1 {code} {reason}\r\nConnection: close\r\n")
    };
    let mut out: String;
    let mut body: &[u8] = &[];
    if path == "/redirect" {
        out = status_line(302) + "Location: /disk.img\r\nContent-Length: 0\r\n\r\n";
    } else if path != "/disk.img" {
        out = status_line(404) + "Content-Length: 0\r\n\r\n";
    } else if method == "HEAD" {
        out = status_line(behaviour.head_status.unwrap_or(200));
        if !behaviour.no_head_length {
            out += &format!("Content-Length: {}\r\n", data.len());
        }
        if behaviour.ranges {
            out += "Accept-Ranges: bytes\r\n";
        }
        out += "\r\n";
    } else if method == "GET"
        && range.is_none()
        && behaviour.fail_nth_whole_get == Some(nth_whole_get)
    {
        out = status_line(500) + "Content-Length: 5\r\n\r\nerror";
    } else if let (Some((first, last)), true) = (
        range.as_deref().and_then(|r| parse_range(r, data.len())),
        behaviour.ranges,
    ) {
        out = status_line(206)
            + &format!(
                "Content-Range: bytes {first}-{last}/{}\r\nContent-Length: {}\r\n\r\n",
                data.len(),
                last - first + 1
            );
        body = &data[first..=last];
    } else {
        let code = behaviour.get_status.unwrap_or(200);
        if code == 200 {
            out = status_line(200) + &format!("Content-Length: {}\r\n\r\n", data.len());
            body = &data[..data.len() - behaviour.short_by];
        } else {
            out = status_line(code) + "Content-Length: 5\r\n\r\nerror";
        }
    }
    stream.write_all(out.as_bytes()).await?;
    let mut sent = 0;
    for piece in body.chunks(64 * 1024) {
        if let Some((after, pause)) = behaviour.stall
            && sent <= after
            && after < sent + piece.len()
        {
            let (a, b) = piece.split_at(after - sent);
            stream.write_all(a).await?;
            stream.flush().await?;
            tokio::time::sleep(pause).await;
            stream.write_all(b).await?;
        } else {
            stream.write_all(piece).await?;
        }
        sent += piece.len();
        if let Some(pause) = behaviour.throttle {
            stream.flush().await?;
            tokio::time::sleep(pause).await;
        }
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

// --- helpers ------------------------------------------------------------------

/// `len` deterministic, incompressible bytes.
fn disk_bytes(len: usize) -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    Arc::new(data)
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Test options: short delays ([`Fixture::new`] adds the namespace).
fn options() -> Options {
    Options {
        retry_delay: Duration::from_millis(200),
        progress_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

/// One test's own namespace on the shared control plane (with Harvester's
/// and KubeVirt's real admission: images and VMs are mutated as on
/// Harvester), a client, and a stand-in that watches only that namespace.
struct Fixture {
    // Fields drop in this order: the stand-in stops before its namespace goes.
    controller: ImageController,
    client: kube::Client,
    ns: TestNamespace<'static>,
}

impl Fixture {
    fn new(prefix: &str, options: Options) -> Fixture {
        let cp = ControlPlane::shared();
        cp.admission().expect("admission");
        let ns = TestNamespace::new(cp, prefix).expect("namespace");
        let client = cp.client();
        let options = Options {
            namespace: Some(ns.name().to_owned()),
            ..options
        };
        let controller = ImageController::start(client.clone(), options).expect("start");
        Fixture {
            controller,
            client,
            ns,
        }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    fn images(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), &image_resource())
    }

    /// Creates a download image; `spec` is merged over the required fields.
    async fn create_image(&self, name: &str, url: &str, spec: Value) -> DynamicObject {
        let mut full = json!({"displayName": name, "sourceType": "download", "url": url});
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(extra.clone());
        }
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1",
            "kind": "VirtualMachineImage",
            "metadata": {"name": name},
            "spec": full,
        }))
        .expect("image object");
        self.images()
            .create(&PostParams::default(), &object)
            .await
            .expect("create image")
    }

    async fn get_image(&self, name: &str) -> DynamicObject {
        self.images().get(name).await.expect("get image")
    }

    /// The stand-in's record once image `name` is imported or failed for good.
    async fn finished(&self, name: &str) -> ImportRecord {
        self.controller
            .wait_finished(self.ns(), name, WAIT)
            .await
            .expect("finished")
    }

    /// The stand-in's record once image `name` is imported (panics if it
    /// failed for good).
    async fn imported(&self, name: &str) -> ImportRecord {
        self.controller
            .wait_imported(self.ns(), name, WAIT)
            .await
            .expect("imported")
    }

    /// Waits for image `name` to fail for good with a message containing
    /// `needle`; returns the record and the image.
    async fn failed_with(&self, name: &str, needle: &str) -> (ImportRecord, DynamicObject) {
        let record = self.finished(name).await;
        assert!(failure(&record).contains(needle), "{name}: {record:?}");
        let image = self.get_image(name).await;
        assert_eq!(
            cond_field(&image, "RetryLimitExceeded", "status"),
            "True",
            "{name}"
        );
        (record, image)
    }

    /// A StorageClass for `spec.targetStorageClassName` (cluster-scoped, so
    /// named after the namespace).
    async fn target_storage_class(&self) -> String {
        let name = format!("{}-target", self.ns());
        let sc = StorageClass {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            provisioner: "csi.example.com".to_owned(),
            ..StorageClass::default()
        };
        Api::<StorageClass>::all(self.client.clone())
            .create(&PostParams::default(), &sc)
            .await
            .expect("target StorageClass");
        name
    }

    /// Deletes a StorageClass the test made: cluster-scoped, so it does not
    /// go with the namespace.
    async fn delete_storage_class(&self, name: &str) {
        let _ = Api::<StorageClass>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
}

/// The message of an import that failed for good (panics on any other outcome).
fn failure(record: &ImportRecord) -> &str {
    match &record.outcome {
        Outcome::Failed(message) => message,
        _ => panic!("not failed for good: {record:?}"),
    }
}

fn condition<'a>(image: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    image.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn cond_field(image: &DynamicObject, type_: &str, field: &str) -> String {
    condition(image, type_)
        .and_then(|c| c[field].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// No condition anywhere carries the reason nobody in Harvester sets.
fn assert_no_import_failed(image: &DynamicObject) {
    let conditions = image.data["status"]["conditions"].to_string();
    assert!(!conditions.contains("ImportFailed"), "{conditions}");
}

fn sent(method: &'static str, range: Option<&str>, status: u16) -> SentRequest {
    SentRequest {
        method,
        range: range.map(str::to_owned),
        status: Some(status),
    }
}

// --- tests: backend backingimage ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_raw_file_is_imported_with_one_full_get() {
    let t = Fixture::new("standin-import", options());
    let data = disk_bytes((3 << 20) + 4321);
    let server = DiskServer::start(data.clone(), |b| {
        b.throttle = Some(Duration::from_millis(30));
    })
    .await;

    // Watch the image while it imports: progress must move and stay below 100.
    let poll_api = t.images();
    let observed = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..400 {
            if let Ok(Some(image)) = poll_api.get_opt("disk-0").await {
                let progress = image.data["status"]["progress"].as_i64().unwrap_or(0);
                let imported = cond_field(&image, "Imported", "status");
                seen.push((
                    progress,
                    imported.clone(),
                    cond_field(&image, "Imported", "reason"),
                ));
                if imported == "True" {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    });

    let created = t.create_image("disk-0", &server.url(), json!({})).await;
    let uid = created.metadata.uid.clone().expect("uid");
    let record = t.imported("disk-0").await;
    let expected_sha = sha256_hex(&data);
    assert_eq!(record.sha256.as_deref(), Some(expected_sha.as_str()));
    assert_eq!(record.bytes, data.len() as u64);
    assert_eq!(record.attempts, 1);
    assert!(record.errors.is_empty(), "{:?}", record.errors);
    assert_eq!(record.requests, vec![sent("HEAD", None, 200)]);
    assert_eq!(
        server.counts("/disk.img"),
        (2, 1, 0),
        "Harvester's HEAD, then Longhorn's HEAD and one full GET: {:?}",
        server.seen()
    );

    let image = t.get_image("disk-0").await;
    let status = &image.data["status"];
    let sc_name = format!("lh-{uid}");
    assert_eq!(status["progress"], 100);
    assert_eq!(status["size"], data.len());
    assert_eq!(status["virtualSize"], data.len());
    assert_eq!(status["storageClassName"], sc_name.as_str());
    assert_eq!(status["appliedUrl"], server.url().as_str());
    assert_eq!(status["failed"], 0);
    assert_eq!(record.storage_class_name.as_deref(), Some(sc_name.as_str()));
    for (type_, state, reason) in [
        ("Initialized", "True", "Initialized"),
        ("Imported", "True", "Imported"),
        ("RetryLimitExceeded", "False", ""),
    ] {
        assert_eq!(
            cond_field(&image, type_, "status"),
            state,
            "{type_}: {status}"
        );
        assert_eq!(
            cond_field(&image, type_, "reason"),
            reason,
            "{type_}: {status}"
        );
    }
    assert!(!cond_field(&image, "Imported", "lastUpdateTime").is_empty());
    assert_eq!(
        cond_field(&image, "Imported", "lastTransitionTime"),
        "",
        "Harvester's conditions never set lastTransitionTime"
    );
    assert_eq!(
        image
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SHA256_ANNOTATION)),
        Some(&expected_sha)
    );

    let storage_classes = Api::<StorageClass>::all(t.client.clone());
    let sc = storage_classes
        .get(&sc_name)
        .await
        .expect("the image's StorageClass");
    assert_eq!(sc.provisioner, "driver.longhorn.io");
    let parameters = sc.parameters.unwrap_or_default();
    assert_eq!(parameters.get("backingImage"), Some(&format!("vmi-{uid}")));
    assert_eq!(
        parameters.get("numberOfReplicas").map(String::as_str),
        Some("3")
    );

    let observed = observed.await.expect("poller");
    assert!(
        observed
            .iter()
            .any(|(p, s, r)| (1..=99).contains(p) && s == "Unknown" && r == "Importing"),
        "progress while importing: {observed:?}"
    );
    assert!(
        observed.iter().all(|(p, s, _)| *p < 100 || s == "True"),
        "100 only once imported: {observed:?}"
    );

    // Deleting the image deletes its StorageClass, as in Harvester.
    t.images()
        .delete("disk-0", &DeleteParams::default())
        .await
        .expect("delete image");
    let deadline = tokio::time::Instant::now() + WAIT;
    while storage_classes
        .get_opt(&sc_name)
        .await
        .expect("get")
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sc_name} still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_answered_500_is_retried_until_the_limit() {
    let t = Fixture::new("standin-get500", options());
    let server = DiskServer::start(disk_bytes(64 << 10), |b| b.get_status = Some(500)).await;
    t.create_image("flaky", &server.url(), json!({"retry": 1}))
        .await;

    let record = t.finished("flaky").await;
    let expected = failure(&record).to_owned();
    assert!(
        expected.starts_with("retry attempted 1/1 failed due to error: ")
            && expected.contains("500"),
        "Longhorn's words: {expected}"
    );
    assert_eq!(record.attempts, 2);
    assert_eq!(server.counts("/disk.img"), (4, 2, 0), "{:?}", server.seen());

    let image = t.get_image("flaky").await;
    assert_eq!(image.data["status"]["failed"], 2);
    assert!(
        image.data["status"]["lastFailedTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(cond_field(&image, "RetryLimitExceeded", "status"), "True");
    assert_eq!(
        cond_field(&image, "RetryLimitExceeded", "message"),
        expected
    );
    assert_eq!(cond_field(&image, "Imported", "status"), "False");
    assert_eq!(cond_field(&image, "Imported", "message"), expected);
    // Harvester only flips the status: the reason stays "Importing".
    assert_eq!(cond_field(&image, "Imported", "reason"), "Importing");
    assert_no_import_failed(&image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_decide_who_fails() {
    let t = Fixture::new("standin-head", options());
    let data = disk_bytes(64 << 10);
    // 405: already Harvester's own HEAD (200–399) fails: Initialized=False.
    let refused = DiskServer::start(data.clone(), |b| b.head_status = Some(405)).await;
    // 204: Harvester accepts it, Longhorn (exactly 200) does not.
    let no_content = DiskServer::start(data, |b| b.head_status = Some(204)).await;
    t.create_image("refused", &refused.url(), json!({"retry": 1}))
        .await;
    t.create_image("nocontent", &no_content.url(), json!({"retry": 0}))
        .await;

    let record = t.finished("refused").await;
    let refused_by = format!("got 405 status code from {}", refused.url());
    assert!(failure(&record).ends_with(&refused_by), "{record:?}");
    assert_eq!(
        refused.counts("/disk.img"),
        (2, 0, 0),
        "no GET after a refused HEAD"
    );
    let image = t.get_image("refused").await;
    assert_eq!(image.data["status"]["failed"], 2);
    assert_eq!(cond_field(&image, "RetryLimitExceeded", "status"), "True");
    assert_eq!(cond_field(&image, "Initialized", "status"), "False");
    assert!(
        condition(&image, "Imported").is_none(),
        "never initialized, so no Imported condition: {}",
        image.data["status"]
    );

    let record = t.finished("nocontent").await;
    assert!(
        failure(&record).starts_with("failed due to error: ") && failure(&record).contains("204"),
        "Longhorn's words: {record:?}"
    );
    assert_eq!(no_content.counts("/disk.img"), (2, 0, 0));
    let image = t.get_image("nocontent").await;
    assert_eq!(cond_field(&image, "Initialized", "status"), "True");
    assert_eq!(cond_field(&image, "Imported", "status"), "False");
    assert_eq!(image.data["status"]["failed"], 1);
    assert_no_import_failed(&image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_short_body_fails_the_attempt() {
    let t = Fixture::new("standin-body", options());
    let data = disk_bytes(2 << 20);
    // Longer than Longhorn's 30 s idle limit.
    let stalled = DiskServer::start(data.clone(), |b| {
        b.stall = Some((1 << 20, Duration::from_secs(40)));
    })
    .await;
    let short = DiskServer::start(data, |b| b.short_by = 1000).await;
    t.create_image("stalled", &stalled.url(), json!({"retry": 0}))
        .await;
    t.create_image("short", &short.url(), json!({"retry": 0}))
        .await;

    for (name, server, needle) in [
        ("stalled", &stalled, "context canceled"),
        ("short", &short, "EOF"),
    ] {
        let (_, image) = t.failed_with(name, needle).await;
        assert_eq!(
            server.counts("/disk.img"),
            (2, 1, 0),
            "{name}: one GET, no resume, no Range: {:?}",
            server.seen()
        );
        assert_eq!(cond_field(&image, "Imported", "status"), "False", "{name}");
        assert!(
            image
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(SHA256_ANNOTATION)),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_against_the_additional_ca() {
    let dir = vmm_testkit::process::run_dir().expect("run dir");
    let ca = vmm_testkit::pki::Ca::new(&dir, "disk-ca", "disk server CA").expect("CA");
    let serving = ca
        .issue_server("disk", "127.0.0.1", &["127.0.0.1"])
        .expect("serving certificate");
    let acceptor = tls_acceptor(&serving).expect("TLS");
    let data = disk_bytes(512 << 10);
    let server = DiskServer::start_tls(data.clone(), Behaviour::default(), Some(acceptor)).await;
    let url = format!("{}/redirect", server.base);

    let trusted = Fixture::new(
        "standin-tls",
        Options {
            additional_ca_pem: Some(ca.cert_pem().to_owned()),
            ..options()
        },
    );
    let untrusted = Fixture::new("standin-tls-no-ca", options());
    trusted.create_image("tls", &url, json!({})).await;
    untrusted
        .create_image("tls", &url, json!({"retry": 0}))
        .await;

    // Imported over HTTPS, the redirect followed.
    let record = trusted.imported("tls").await;
    assert_eq!(record.sha256, Some(sha256_hex(&data)));
    let record = untrusted.finished("tls").await;
    assert!(matches!(record.outcome, Outcome::Failed(_)), "{record:?}");
    assert_eq!(
        record.requests.len(),
        1,
        "only Harvester's HEAD: {record:?}"
    );
    assert_eq!(record.requests[0].status, None);
    let image = untrusted.get_image("tls").await;
    assert_eq!(cond_field(&image, "Initialized", "status"), "False");
    // Both HEADs and the GET went through the redirect.
    assert_eq!(server.counts("/redirect"), (2, 1, 0), "{:?}", server.seen());
    assert_eq!(server.counts("/disk.img"), (2, 1, 0), "{:?}", server.seen());
}

fn tls_acceptor(serving: &vmm_testkit::pki::CertFiles) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let config = rustls::ServerConfig::builder_with_provider(vmm_testkit::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vmm_testkit::tls::certs_from_pem(&serving.cert_pem)?,
            PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).context("key")?,
        )?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

// --- tests: backend cdi ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_needs_content_length_and_ranges() {
    let t = Fixture::new("standin-cdi-probe", options());
    let target = t.target_storage_class().await;
    let data = disk_bytes(256 << 10);
    let no_length = DiskServer::start(data.clone(), |b| {
        b.no_head_length = true;
        b.ranges = true;
    })
    .await;
    let no_ranges = DiskServer::start(data, |_| {}).await;
    let spec = json!({"backend": "cdi", "retry": 0, "targetStorageClassName": target});
    t.create_image("no-length", &no_length.url(), spec.clone())
        .await;
    t.create_image("no-ranges", &no_ranges.url(), spec).await;

    for (name, needle) in [
        ("no-length", "Content-Length is not found in the header"),
        ("no-ranges", "expected status code 206"),
    ] {
        let (_, image) = t.failed_with(name, needle).await;
        assert_eq!(
            cond_field(&image, "Initialized", "status"),
            "False",
            "{name}"
        );
    }
    assert_eq!(
        no_length.counts("/disk.img"),
        (1, 0, 1),
        "{:?}",
        no_length.seen()
    );
    t.delete_storage_class(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_imports_through_its_importer() {
    let t = Fixture::new("standin-cdi", options());
    let target = t.target_storage_class().await;
    // Whole sectors: CDI's importer stores a raw disk, which qemu-img sizes
    // in sectors.
    let data = disk_bytes((3 << 20) + 9 * 512);
    let server = DiskServer::start(data.clone(), |b| b.ranges = true).await;
    let spec = json!({"backend": "cdi", "targetStorageClassName": target});
    t.create_image("cdi-disk", &server.url(), spec).await;

    let record = t.imported("cdi-disk").await;
    assert_eq!(record.sha256, Some(sha256_hex(&data)));
    assert_eq!(record.attempts, 1, "{record:?}");
    assert_eq!(
        record.requests,
        vec![
            sent("GET", Some("bytes=0-127"), 206),
            sent("HEAD", None, 200)
        ],
        "Harvester's probes"
    );
    // The importer's first run probes the format and asks for scratch
    // space; the second downloads the disk whole into it.
    let (_, full, _) = server.counts("/disk.img");
    assert_eq!(full, 2, "{:?}", server.seen());

    let image = t.get_image("cdi-disk").await;
    assert_eq!(image.data["status"]["storageClassName"], target.as_str());
    assert_eq!(image.data["status"]["size"], data.len());
    assert_eq!(image.data["status"]["virtualSize"], data.len());
    assert_eq!(image.data["status"]["progress"], 100);
    assert_eq!(cond_field(&image, "Imported", "status"), "True");
    t.delete_storage_class(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_importer_failures_are_retried_without_counting() {
    let t = Fixture::new("standin-cdi-retry", options());
    let target = t.target_storage_class().await;
    let data = disk_bytes(1 << 20);
    let server = DiskServer::start(data.clone(), |b| {
        b.ranges = true;
        // The importer's first read (its format probe).
        b.fail_nth_whole_get = Some(1);
    })
    .await;
    let spec = json!({"backend": "cdi", "retry": 0, "targetStorageClassName": target});
    t.create_image("cdi-retry", &server.url(), spec).await;

    // Imported after the importer ran again.
    let record = t.imported("cdi-retry").await;
    assert_eq!(record.sha256, Some(sha256_hex(&data)));
    assert_eq!(record.attempts, 2, "{record:?}");
    assert_eq!(record.errors.len(), 1, "{record:?}");
    assert!(record.errors[0].contains("500"), "{record:?}");
    let image = t.get_image("cdi-retry").await;
    assert_eq!(
        image.data["status"]["failed"], 0,
        "DataVolume failures never reach the image"
    );
    assert_eq!(cond_field(&image, "Imported", "status"), "True");
    t.delete_storage_class(&target).await;
}

// --- tests: the VM controller part ------------------------------------------------

impl Fixture {
    fn vms(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), &kubevirt_vm_resource())
    }

    /// Creates VM `name` with these volume claim templates and volumes, and
    /// waits until the VM part has handled it.
    async fn create_vm(&self, name: &str, templates: &Value, claims: &[&str]) -> VmRecord {
        self.vms()
            .create(&PostParams::default(), &vm_object(name, templates, claims))
            .await
            .expect("create VM");
        self.controller
            .wait_vm(self.ns(), name, WAIT)
            .await
            .expect("VM handled")
    }
}

fn vm_object(name: &str, templates: &Value, claims: &[&str]) -> DynamicObject {
    let volumes: Vec<Value> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("disk-{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let disks: Vec<Value> = (0..claims.len())
        .map(|i| json!({"name": format!("disk-{i}"), "disk": {"bus": "virtio"}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "annotations": {VOLUME_CLAIM_TEMPLATES_ANNOTATION: templates.to_string()},
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {
                "domain": {
                    "cpu": {"sockets": 1, "cores": 1, "threads": 1},
                    "memory": {"guest": "1Gi"},
                    "devices": {"disks": disks},
                },
                "volumes": volumes,
            }},
        },
    }))
    .expect("VM object")
}

fn pvc_template(name: &str, image_id: &str, class: &str) -> Value {
    json!({
        "metadata": {"name": name, "annotations": {"harvesterhci.io/imageId": image_id}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Block",
            "storageClassName": class,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_claim_templates_become_pvcs() {
    let t = Fixture::new("standin-vm", options());
    let namespace = t.ns();
    let server = DiskServer::start(disk_bytes(64 << 10), |_| {}).await;
    t.create_image("img", &server.url(), json!({})).await;
    let record = t.imported("img").await;
    let class = record.storage_class_name.clone().expect("storage class");
    let image_id = format!("{namespace}/img");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(t.client.clone(), namespace);

    let good = json!([pvc_template("good-disk-0-abcde", &image_id, &class)]);
    let vm = t.create_vm("good", &good, &["good-disk-0-abcde"]).await;
    assert_eq!(vm.error(), None);
    assert_eq!(vm.created_pvcs, ["good-disk-0-abcde"]);
    assert_eq!(vm.owned_pvcs, ["good-disk-0-abcde"]);
    let pvc = pvcs.get("good-disk-0-abcde").await.expect("PVC");
    let spec = pvc.spec.expect("spec");
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    let annotations: BTreeMap<String, String> = pvc.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("harvesterhci.io/imageId"), Some(&image_id));
    assert_eq!(
        annotations.get(OWNED_BY_ANNOTATION).map(String::as_str),
        Some(
            format!(r#"[{{"schema":"kubevirt.io.virtualmachine","refs":["{namespace}/good"]}}]"#)
                .as_str()
        )
    );
    assert!(
        pvc.metadata.owner_references.unwrap_or_default().is_empty(),
        "Harvester records the VM in owned-by, not in ownerReferences"
    );

    let bad = json!([
        pvc_template("bad-missing", &format!("{namespace}/missing"), &class),
        pvc_template("bad-format", "img", &class),
        pvc_template("bad-class", &image_id, "longhorn"),
    ]);
    let claims = ["bad-missing", "bad-format", "bad-class"];
    let vm = t.create_vm("bad", &bad, &claims).await;
    assert_eq!(vm.errors.len(), 3, "{vm:?}");
    assert!(
        vm.created_pvcs.is_empty() && vm.owned_pvcs.is_empty(),
        "{vm:?}"
    );
    let error = t.controller.vm_error(namespace, "bad").expect("error");
    for needle in [
        "not found",
        "not <namespace>/<name>",
        "is not the storage class",
    ] {
        assert!(error.contains(needle), "{needle}: {error}");
    }
    for name in claims {
        assert!(pvcs.get_opt(name).await.expect("get").is_none(), "{name}");
    }
    let vm = t.vms().get("bad").await.expect("VM");
    assert_eq!(
        vm.metadata
            .annotations
            .unwrap_or_default()
            .get(ERROR_ANNOTATION),
        Some(&error)
    );
    if let Some(class) = record.storage_class_name {
        t.delete_storage_class(&class).await;
    }
}
