//! Unit-test doubles for the reconcilers, the way kube-rs's controller-rs
//! tests its own: [`FakeKube`] answers a `kube::Client` built on a tower
//! service from objects kept in memory, and [`FakeSource`] is a
//! provider whose session answers from a VM table. Both record what they were
//! asked, and both can be told to fail a call once.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vmm_api::inventory::PowerState;
use vmm_api::source::SourceSpec;
use vmm_core::{
    ByteStream, Credentials, DiskFile, Export, ExportEnd, ExportRecorder, InventoryEvent, Provider,
    ProviderError, Session, Vm,
};

/// One request the fake API server answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct Cluster {
    /// Objects by path (`/apis/g/v/namespaces/ns/plural/name`).
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    /// `(method, path prefix)` → the status to answer once instead.
    failures: Vec<(Method, String, u16)>,
    version: u64,
    /// The controller's job store, fed as a watch would.
    writer: Option<kube::runtime::reflector::store::Writer<vmm_api::ImportJob>>,
}

/// An API server in memory: GET (objects and lists, with label selectors),
/// POST, merge and apply PATCH (status too), DELETE.
#[derive(Clone, Default)]
pub struct FakeKube {
    cluster: Arc<Mutex<Cluster>>,
}

impl FakeKube {
    /// The fake and a client talking to it.
    pub fn start() -> (Self, kube::Client) {
        let fake = Self::default();
        let served = fake.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let served = served.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                let path = parts.uri.path().to_owned();
                let query = parts.uri.query().unwrap_or_default().to_owned();
                let apply = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
                let (status, answer) = served.answer(&parts.method, &path, &query, apply, &body);
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(answer.to_string().into_bytes()))
            }
        });
        (fake, kube::Client::new(service, "default"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `object` at its path (from its apiVersion, kind's `plural`,
    /// namespace and name).
    pub fn put(&self, plural: &str, object: Value) {
        let path = object_path(&object, plural);
        self.lock().objects.insert(path, object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Every object whose path starts with `prefix`.
    pub fn list(&self, prefix: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The next `method` request to a path starting with `prefix` is
    /// answered with `status`.
    pub fn fail_once(&self, method: Method, prefix: &str, status: u16) {
        self.lock()
            .failures
            .push((method, prefix.to_owned(), status));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The reasons of the Events published so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == Method::POST && c.path.ends_with("/events"))
            .filter_map(|c| c.body["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// `apply`: the request is a server-side apply.
    fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        apply: bool,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut cluster = self.lock();
        cluster.calls.push(Call {
            method: method.clone(),
            path: path.to_owned(),
            body: body.clone(),
        });
        let failure = cluster
            .failures
            .iter()
            .position(|(m, prefix, _)| m == method && path.starts_with(prefix.as_str()));
        if let Some(index) = failure {
            let (_, _, code) = cluster.failures.remove(index);
            return status(code, "injected failure");
        }
        cluster.version += 1;
        let version = cluster.version.to_string();
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(object) => (object.to_owned(), true),
            None => (path.to_owned(), false),
        };
        match *method {
            Method::GET => match cluster.objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None if is_collection(path) => {
                    (StatusCode::OK, list(&cluster.objects, path, query))
                }
                None => status(404, "not found"),
            },
            Method::POST => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("generated")
                    .to_owned();
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(version);
                cluster
                    .objects
                    .insert(format!("{path}/{name}"), object.clone());
                (StatusCode::CREATED, object)
            }
            Method::PATCH if apply && !subresource => {
                // Server-side apply: the object as applied.
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(version);
                cluster.objects.insert(object_path, object.clone());
                (StatusCode::OK, object)
            }
            Method::PATCH => match cluster.objects.get_mut(&object_path) {
                Some(object) => {
                    merge(object, &body);
                    object["metadata"]["resourceVersion"] = json!(version);
                    (StatusCode::OK, object.clone())
                }
                None => status(404, "not found"),
            },
            Method::DELETE => match cluster.objects.remove(path) {
                Some(object) => (StatusCode::OK, object),
                None => status(404, "not found"),
            },
            _ => status(405, "method not allowed"),
        }
    }
}

/// `/apis/<group>/<version>[/namespaces/<ns>]/<plural>` with no name after it.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => &segments[2.min(segments.len())..],
        _ => &segments[3.min(segments.len())..],
    };
    matches!(rest, ["namespaces", _, _] | [_])
}

fn list(objects: &BTreeMap<String, Value>, path: &str, query: &str) -> Value {
    let selector = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("labelSelector="))
        .map(|s| s.replace("%3D", "=").replace("%2F", "/"));
    // All namespaces: `/apis/g/v/<plural>` matches `/apis/g/v/namespaces/*/<plural>/*`.
    let (base, plural) = path.rsplit_once('/').unwrap_or_default();
    let items: Vec<Value> = objects
        .iter()
        .filter(|(key, _)| {
            let Some((parent, _name)) = key.rsplit_once('/') else {
                return false;
            };
            parent == path
                || (parent.starts_with(&format!("{base}/namespaces/"))
                    && parent.ends_with(&format!("/{plural}")))
        })
        .map(|(_, object)| object)
        .filter(|object| match &selector {
            None => true,
            Some(selector) => selector.split(',').all(|term| match term.split_once('=') {
                Some((key, value)) => object["metadata"]["labels"][key] == value,
                None => object["metadata"]["labels"].get(term).is_some(),
            }),
        })
        .cloned()
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn status(code: u16, message: &str) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        _ => "InternalError",
    };
    (
        status,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn object_path(object: &Value, plural: &str) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let base = match api_version {
        "v1" => "/api/v1".to_owned(),
        group_version => format!("/apis/{group_version}"),
    };
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{base}/namespaces/{namespace}/{plural}/{name}"),
        None => format!("{base}/{plural}/{name}"),
    }
}

/// What a [`FakeSource`] was asked to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceCall {
    Connect,
    Find(String),
    Vm(String),
    PowerState(String),
    ShutdownGuest(String),
    PowerOff(String),
    Export { vm: String, resume: Option<String> },
    EndExport { id: String, how: ExportEnd },
    ReleaseExport { id: String, how: ExportEnd },
    Logout,
}

#[derive(Default)]
struct SourceState {
    vms: Vec<Vm>,
    power: HashMap<String, PowerState>,
    /// Whether guest shutdown powers the VM off (a guest agent runs).
    guest_agent: bool,
    /// A disk file's bytes, by disk key.
    files: HashMap<String, Bytes>,
    calls: Vec<SourceCall>,
    /// Call name → the error to answer once instead.
    failures: HashMap<&'static str, ProviderError>,
    exports: u32,
    /// Whether it names its exports itself ([`Session::export_id_for`]).
    names_exports: bool,
}

/// A source in memory: VMs, their power, and disk files served by exports.
#[derive(Clone, Default)]
pub struct FakeSource {
    state: Arc<Mutex<SourceState>>,
}

impl FakeSource {
    pub fn new(vms: Vec<Vm>) -> Self {
        let power = vms
            .iter()
            .map(|vm| (vm.spec.id.clone(), vm.spec.power_state))
            .collect();
        let fake = Self::default();
        {
            let mut state = fake.lock();
            state.vms = vms;
            state.power = power;
            state.guest_agent = true;
        }
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A source that names its exports after the job, as OpenStack does.
    pub fn naming_exports(self) -> Self {
        self.lock().names_exports = true;
        self
    }

    pub fn without_guest_agent(self) -> Self {
        self.lock().guest_agent = false;
        self
    }

    pub fn with_file(self, key: &str, bytes: &[u8]) -> Self {
        self.lock()
            .files
            .insert(key.to_owned(), Bytes::copy_from_slice(bytes));
        self
    }

    /// The next call named `call` (`connect`, `find_vms`, `vm`,
    /// `power_state`, `shutdown_guest`, `power_off`, `export`) fails with
    /// `error`.
    pub fn fail_once(&self, call: &'static str, error: ProviderError) {
        self.lock().failures.insert(call, error);
    }

    pub fn calls(&self) -> Vec<SourceCall> {
        self.lock().calls.clone()
    }

    pub fn power(&self, id: &str) -> Option<PowerState> {
        self.lock().power.get(id).copied()
    }

    /// Records `call`; the injected failure of `name`, if any.
    fn called(&self, name: &'static str, call: SourceCall) -> Result<(), ProviderError> {
        let mut state = self.lock();
        state.calls.push(call);
        match state.failures.remove(name) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn not_found(id: &str) -> ProviderError {
        ProviderError::permanent(
            vmm_core::Reason::EndpointError,
            format!("VM {id} does not exist"),
        )
    }

    /// The provider to put in a `Context`: every kind connects to this source.
    pub fn providers(&self) -> crate::context::Providers {
        let provider: Arc<dyn Provider> = Arc::new(self.clone());
        Arc::new(move |_| Some(provider.clone()))
    }
}

#[async_trait]
impl Provider for FakeSource {
    async fn connect(
        &self,
        _spec: &SourceSpec,
        _credentials: &Credentials,
    ) -> Result<Arc<dyn Session>, ProviderError> {
        self.called("connect", SourceCall::Connect)?;
        Ok(Arc::new(self.clone()))
    }
}

#[async_trait]
impl Session for FakeSource {
    fn endpoint_version(&self) -> String {
        "Fake Source 1.0".to_owned()
    }

    async fn watch(&self, _events: mpsc::Sender<InventoryEvent>) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn find_vms(&self, name: &str, _within: Option<&str>) -> Result<Vec<Vm>, ProviderError> {
        self.called("find_vms", SourceCall::Find(name.to_owned()))?;
        let state = self.lock();
        Ok(state
            .vms
            .iter()
            .filter(|vm| vm.spec.display_name == name)
            .cloned()
            .collect())
    }

    async fn vm(&self, id: &str) -> Result<Vm, ProviderError> {
        self.called("vm", SourceCall::Vm(id.to_owned()))?;
        let state = self.lock();
        let mut vm = state
            .vms
            .iter()
            .find(|vm| vm.spec.id == id)
            .cloned()
            .ok_or_else(|| Self::not_found(id))?;
        vm.spec.power_state = state.power[id];
        Ok(vm)
    }

    async fn power_state(&self, id: &str) -> Result<PowerState, ProviderError> {
        self.called("power_state", SourceCall::PowerState(id.to_owned()))?;
        self.power(id).ok_or_else(|| Self::not_found(id))
    }

    async fn shutdown_guest(&self, id: &str) -> Result<(), ProviderError> {
        self.called("shutdown_guest", SourceCall::ShutdownGuest(id.to_owned()))?;
        let mut state = self.lock();
        if !state.guest_agent {
            return Err(ProviderError::permanent(
                vmm_core::Reason::GuestShutdownUnavailable,
                format!("VM {id} runs no guest agent"),
            ));
        }
        state.power.insert(id.to_owned(), PowerState::Off);
        Ok(())
    }

    async fn wait_powered_off(&self, id: &str, _timeout: Duration) -> Result<(), ProviderError> {
        match self.power(id) {
            Some(PowerState::Off) => Ok(()),
            _ => Err(ProviderError::permanent(
                vmm_core::Reason::PowerOffTimedOut,
                format!("VM {id} is still on"),
            )),
        }
    }

    async fn power_off(&self, id: &str) -> Result<(), ProviderError> {
        self.called("power_off", SourceCall::PowerOff(id.to_owned()))?;
        self.lock().power.insert(id.to_owned(), PowerState::Off);
        Ok(())
    }

    fn export_id_for(&self, _vm_id: &str, job_uid: &str) -> Option<String> {
        self.lock()
            .names_exports
            .then(|| format!("named-{job_uid}"))
    }

    async fn export(
        &self,
        vm_id: &str,
        resume: Option<&str>,
        recorder: &dyn ExportRecorder,
    ) -> Result<Box<dyn Export>, ProviderError> {
        self.called(
            "export",
            SourceCall::Export {
                vm: vm_id.to_owned(),
                resume: resume.map(str::to_owned),
            },
        )?;
        let id = match resume {
            Some(id) => id.to_owned(),
            None => {
                let id = {
                    let mut state = self.lock();
                    state.exports += 1;
                    format!("export-{}", state.exports)
                };
                // Like a vSphere lease: the source names it, the caller keeps it.
                recorder.record(&id).await?;
                id
            }
        };
        Ok(Box::new(FakeExport {
            source: self.clone(),
            id,
        }))
    }

    async fn release_export(&self, id: &str, how: ExportEnd) -> Result<(), ProviderError> {
        self.called(
            "release_export",
            SourceCall::ReleaseExport {
                id: id.to_owned(),
                how,
            },
        )
    }

    async fn logout(&self) {
        let _ = self.called("logout", SourceCall::Logout);
    }
}

struct FakeExport {
    source: FakeSource,
    id: String,
}

#[async_trait]
impl Export for FakeExport {
    fn id(&self) -> &str {
        &self.id
    }

    fn disk(&self, key: &str) -> Option<Arc<dyn DiskFile>> {
        let bytes = self.source.lock().files.get(key).cloned()?;
        Some(Arc::new(FakeFile(bytes)))
    }

    fn report_progress(&self, _percent: u8) {}

    fn failure(&self) -> Option<String> {
        None
    }

    async fn end(self: Box<Self>, how: ExportEnd) -> Result<(), ProviderError> {
        let id = self.id.clone();
        self.source
            .called("end_export", SourceCall::EndExport { id, how })
    }

    fn detach(self: Box<Self>) {}
}

struct FakeFile(Bytes);

#[async_trait]
impl DiskFile for FakeFile {
    async fn open(&self) -> io::Result<ByteStream> {
        let bytes = self.0.clone();
        Ok(Box::pin(futures::stream::iter([Ok(bytes)])))
    }
}

/// The namespace of every [`World`].
pub const NS: &str = "team-a";
const JOB_PATH: &str = "/apis/importjob.harvesterhci.io/v1/namespaces/team-a/importjobs/web";

/// A VM at the [`FakeSource`], on "VM Network", with one 1 MiB disk
/// (key `2000`, file bytes: 1 MiB of raw data).
pub fn web_vm(power_state: PowerState) -> Vm {
    use vmm_api::inventory::{Disk, Firmware, Nic, VirtualMachineSpec};
    Vm {
        spec: VirtualMachineSpec {
            id: "vm-1".into(),
            display_name: "Web 01".into(),
            path: Some("/DC0/vm/Web 01".into()),
            power_state,
            cpus: 2,
            memory_mib: 2048,
            firmware: Firmware::Bios,
            disks: vec![Disk {
                name: "Hard disk 1".into(),
                capacity_bytes: DISK_BYTES as i64,
                ..Disk::default()
            }],
            nics: vec![Nic {
                name: "Network adapter 1".into(),
                network: Some("VM Network".into()),
                mac_address: Some("00:50:56:00:00:01".into()),
                model: Some("vmxnet3".into()),
                ..Nic::default()
            }],
            ..VirtualMachineSpec::default()
        },
        disks: vec![vmm_core::VmDisk {
            key: "2000".into(),
            label: "Hard disk 1".into(),
            capacity_bytes: DISK_BYTES as i64,
            unsupported: None,
            bus: None,
        }],
        firmware_uuid: None,
    }
}

pub const DISK_BYTES: usize = 1 << 20;

/// A cluster with a Ready `Vsphere` source `vc` (and its Secret) and a NAD
/// `vlan` in [`NS`], a controller context on it, and a job `web` importing
/// "Web 01" from the [`FakeSource`].
pub struct World {
    pub kube: FakeKube,
    pub source: FakeSource,
    pub jobs: crate::import::Jobs,
    _scratch: tempfile::TempDir,
}

impl World {
    pub fn new(source: FakeSource) -> Self {
        Self::with_limits(source, 4)
    }

    pub fn with_limits(source: FakeSource, max_jobs: usize) -> Self {
        let (kube, client) = FakeKube::start();
        kube.put(
            "vspheres",
            json!({"apiVersion": "source.harvesterhci.io/v1", "kind": "Vsphere",
                "metadata": {"name": "vc", "namespace": NS},
                "spec": {"endpoint": "https://vc.example.com/sdk", "credentials": {"name": "creds"}},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Connected",
                    "message": "logged in", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        );
        kube.put(
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
                // "admin" and "pw"
                "data": {"username": "YWRtaW4=", "password": "cHc="}}),
        );
        kube.put(
            "network-attachment-definitions",
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "vlan", "namespace": NS}, "spec": {"config": "{}"}}),
        );
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let ctx = crate::context::Context::new(
            client,
            None,
            crate::context::DiskUrls::http("http://ctl:8000"),
            crate::context::Limits {
                max_jobs,
                max_jobs_per_source: max_jobs,
            },
            crate::import::scratch::Scratch::new(scratch.path().join("scratch")).expect("scratch"),
            source.providers(),
            &mut prometheus_client::registry::Registry::default(),
        );
        let (store, writer) = kube::runtime::reflector::store();
        let world = Self {
            kube,
            source,
            jobs: crate::import::Jobs::new(Arc::new(ctx), store),
            _scratch: scratch,
        };
        world.store_writer(writer);
        world
    }

    fn store_writer(&self, writer: kube::runtime::reflector::store::Writer<vmm_api::ImportJob>) {
        self.kube.lock().writer = Some(writer);
    }

    /// Job `web` with `spec` fields over the default ones and `status`,
    /// stored in the cluster (and in the controller's job store).
    pub fn job(&self, spec: Value, status: Value) -> vmm_api::ImportJob {
        let mut job = json!({"apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": NS, "generation": 1, "uid": "job-uid",
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": "Web 01",
                "mapping": [{"sourceNetwork": "VM Network", "destinationNetwork": "vlan"}]},
            "status": status});
        merge(&mut job["spec"], &spec);
        self.kube.put("importjobs", job.clone());
        let job: vmm_api::ImportJob = serde_json::from_value(job).expect("a job");
        self.remember(&job);
        job
    }

    /// Puts `job` in the controller's job store (what the watch would do).
    pub fn remember(&self, job: &vmm_api::ImportJob) {
        if let Some(writer) = self.kube.lock().writer.as_mut() {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(job.clone()));
        }
    }

    /// One reconcile of `job` as it is stored now.
    pub async fn reconcile(
        &self,
    ) -> Result<kube::runtime::controller::Action, crate::error::Error> {
        let job = self.stored();
        crate::import::step_job(&self.jobs, &job, NS).await
    }

    /// The job as the cluster holds it.
    pub fn stored(&self) -> vmm_api::ImportJob {
        serde_json::from_value(self.kube.get(JOB_PATH).expect("the job")).expect("a job")
    }

    pub fn phase(&self) -> vmm_api::importjob::ImportPhase {
        self.stored()
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    /// The job's `Ready` reason and message.
    pub fn ready(&self) -> (String, String) {
        let status = self.stored().status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("a Ready condition");
        (ready.reason.clone(), ready.message.clone())
    }
}
