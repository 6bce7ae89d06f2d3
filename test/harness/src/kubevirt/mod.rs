//! A stand-in for the parts of KubeVirt (v1.7) that an import from another
//! Harvester/KubeVirt cluster depends on: stopping a VM, and exporting its
//! disks. It runs against a "remote" test cluster that has KubeVirt's real
//! `VirtualMachine`, `VirtualMachineInstance` and `VirtualMachineExport` CRDs
//! but no KubeVirt, and follows the v1.7 sources (`pkg/storage/export/`,
//! `cmd/virt-exportproxy`):
//!
//! - **VM stop** (virt-controller): a VM whose `spec.runStrategy` is `Halted`
//!   (or, without a run strategy, `spec.running: false`) and whose
//!   VirtualMachineInstance exists shows `printableStatus: Stopping`; after
//!   [`Options::stop_delay`] its instance is deleted and it shows `Stopped`.
//!   A halted VM whose instance is already gone (a hard power-off) is
//!   `Stopped` at once. [`KubeVirt::run_vm`] is the other direction.
//! - **Export controller** (virt-controller): for each export whose source is
//!   a VirtualMachine, the status KubeVirt writes through the status
//!   subresource: `Pending`/`InUse` ("Virtual Machine <ns>/<name> is
//!   running") while an instance runs, `Skipped`/`VMNoVolumes` while the VM
//!   is missing or has no claims, `Pending`/`PodPending` for
//!   [`Options::ready_delay`] (the exporter pod starting), then
//!   `Ready`/`PodReady` with `internal` and `external` links. Each
//!   `persistentVolumeClaim`, `dataVolume` or `memoryDump` volume whose PVC
//!   exists is a link volume named after the claim, in template order; a
//!   dataVolume whose PVC is missing keeps the export `Pending` ("Not all
//!   volumes … are populated"). Without `spec.tokenSecretRef` a Secret
//!   `export-token-<name>` (key `token`, 20 random letters and digits) is
//!   made, as KubeVirt does. An export past its `ttlDuration` (default 2 h)
//!   is deleted.
//! - **Export server** (virt-exportproxy in front of virt-exportserver): HTTPS
//!   on `127.0.0.1:<port>`, the external links' host, with a certificate from
//!   a CA of its own ([`KubeVirt::ca_pem`], also each link's `cert`). A
//!   request is answered in KubeVirt's order: 400 for a path that is not an
//!   export's, 404 for a missing export, 503 for one that is not `Ready`, 404
//!   for a volume or format it does not serve, 500 when the token Secret
//!   (named by `status.tokenSecretRef`, read at each request) or its `token`
//!   key is missing, 401 unless the `x-kubevirt-export-token` query
//!   parameter or header equals that token; then the format's handler. Each
//!   request is recorded ([`KubeVirt::requests`]). HTTP/1.1 only: the proxy
//!   turns HTTP/2 off.
//!
//! What each format serves, from the volume file
//! [`KubeVirt::volume_path`] (`<dir>/<namespace>/<claim>.img`), streamed:
//!
//! | format | URL ends | answers |
//! |---|---|---|
//! | `raw` | `/volumes/<claim>/disk.img` | GET and HEAD, `Content-Length`, `Accept-Ranges: bytes`; one Range is honoured (206, or 416 when it does not overlap) |
//! | `gzip` | `/volumes/<claim>/disk.img.gz` | GET only (HEAD is 400, as in KubeVirt), gzip made on the fly, no `Content-Length` |
//! | `tar.gz` | `/volumes/<claim>/disk.tar.gz` | GET only, a gzipped tar of the volume root: `./` and `./disk.img` |
//! | `dir` | `/volumes/<claim>/dir` | a 301 to `/volumes/<claim>/dir/` (Go's ServeMux; through KubeVirt's proxy too), a listing there, the file at `dir/disk.img` |
//!
//! A claim gets `raw` and `gzip` (a Block volume or a disk image); the PVC
//! annotation [`FORMATS_ANNOTATION`] (a comma list) chooses others, e.g.
//! `gzip` alone or `dir,tar.gz` (what KubeVirt gives a filesystem PVC without
//! CDI's content type). An export that is deleted, or whose VM runs again,
//! is not served from then on, and its downloads in flight break off.
//!
//! Not modelled: PVC and VirtualMachineSnapshot sources, the manifests
//! (`/external/manifests/…`), the exporter Pod, Service and certificate
//! Secret (only their names appear), garbage collection of the token Secret,
//! CDI's populated check (a PVC that exists is populated), several ranges in
//! one request (the whole volume is sent), starting a VM by its run strategy
//! (use [`KubeVirt::run_vm`]), finalizers and grace periods on instances.
//!
//! ```no_run
//! use vmm_testkit::kubevirt::{KubeVirt, Options};
//! # async fn example(client: kube::Client, dir: &std::path::Path) -> anyhow::Result<()> {
//! let kubevirt = KubeVirt::start(client, dir, Options::default())?;
//! kubevirt.write_volume("vms", "web-root", b"bytes of the disk")?;
//! kubevirt.run_vm("vms", "web").await?;
//! // … halt the VM, create a VirtualMachineExport of it, download its links
//! // trusting kubevirt.ca_pem() …
//! # Ok(()) }
//! ```

mod content;
mod export;
mod links;
mod server;
mod vm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::api::{Api, DynamicObject, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;

use crate::pki::Ca;

pub use links::ExportFormat;
pub use server::{ExportRequest, TokenVia};
pub use vmm_api::external::kubevirt_vm as vm_resource;

use export::Exporter;

/// PVC annotation: the formats its volume is exported in, a comma list of
/// `raw`, `gzip`, `dir` and `tar.gz` (unknown entries are ignored; links
/// list them in KubeVirt's order whatever the order here). Without it:
/// `raw,gzip`.
pub const FORMATS_ANNOTATION: &str = "test.vm-migration.harvesterhci.io/export-formats";

/// The field manager of every write (shown in `managedFields`).
pub const FIELD_MANAGER: &str = "kubevirt-standin";

/// The node a running VM's instance says it runs on (`status.nodeName`).
pub const NODE: &str = "harvester-node-2";

/// KubeVirt's `VirtualMachineInstance` (`kubevirt.io/v1`).
pub fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    )
}

/// KubeVirt's `VirtualMachineExport` (`export.kubevirt.io/v1beta1`).
pub fn export_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("export.kubevirt.io", "v1beta1", "VirtualMachineExport"),
        "virtualmachineexports",
    )
}

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (default: all), so that tests sharing a
    /// cluster can each run their own stand-in.
    pub namespace: Option<String>,
    /// From seeing a VM halted to deleting its instance: the guest's
    /// shutdown (default 3 s).
    pub stop_delay: Duration,
    /// From an export's VM being exportable to the export being `Ready`:
    /// the exporter pod's start (default 2 s).
    pub ready_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            stop_delay: Duration::from_secs(3),
            ready_delay: Duration::from_secs(2),
        }
    }
}

/// `(namespace, name)`.
type Key = (String, String);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// What the controllers and the server share.
struct Ctx {
    client: kube::Client,
    options: Options,
    /// Where the volume files are.
    dir: PathBuf,
    /// The CA of the server certificate, as KubeVirt puts it in links
    /// (trimmed).
    ca_pem: String,
    /// `127.0.0.1:<port>`: the external links' host.
    host: String,
    /// The export "pods": what each export serves, by export.
    exporters: Mutex<HashMap<Key, Arc<Exporter>>>,
    /// When the stand-in first saw each halted VM (by UID) with an instance.
    halts: Mutex<HashMap<String, Instant>>,
    requests: Mutex<Vec<ExportRequest>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx {
    /// `resource` in the watched namespace, or in all.
    fn api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        match &self.options.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    fn namespaced(&self, namespace: &str, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, resource)
    }

    fn volume_path(&self, namespace: &str, claim: &str) -> PathBuf {
        self.dir.join(namespace).join(format!("{claim}.img"))
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// A reconcile error (kube's controller wants a `std::error::Error`).
#[derive(Debug)]
struct Failed(anyhow::Error);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Failed {}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Self {
        Self(e)
    }
}

impl From<kube::Error> for Failed {
    fn from(e: kube::Error) -> Self {
        Self(e.into())
    }
}

/// Both controllers retry a failed reconcile soon (the API server of a
/// test cluster fails only briefly, e.g. while it restarts).
fn retry_soon(_object: Arc<DynamicObject>, error: &Failed, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!("kubevirt stand-in: {error}");
    Action::requeue(Duration::from_secs(1))
}

/// The running stand-in; its controllers and server stop when it is dropped.
pub struct KubeVirt {
    ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for KubeVirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeVirt")
            .field("host", &self.ctx.host)
            .field("dir", &self.ctx.dir)
            .finish_non_exhaustive()
    }
}

impl KubeVirt {
    /// Starts the stand-in against `client` (the remote cluster), keeping
    /// its CA under `<dir>/pki` and the volume files under `dir`. Call it
    /// inside a Tokio runtime.
    pub fn start(client: kube::Client, dir: &Path, options: Options) -> Result<KubeVirt> {
        let ca = Ca::new(
            &dir.join("pki"),
            "kubevirt-export-ca",
            "vmm-e2e KubeVirt export CA",
        )?;
        let serving = ca.issue_server("virt-exportproxy", "virt-exportproxy", &["127.0.0.1"])?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("bind the KubeVirt export server")?;
        listener.set_nonblocking(true)?;
        let host = listener.local_addr()?.to_string();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let acceptor = server::tls_acceptor(&serving)?;
        let ctx = Arc::new(Ctx {
            client,
            options,
            dir: dir.to_path_buf(),
            ca_pem: ca.cert_pem().trim().to_owned(),
            host,
            exporters: Mutex::default(),
            halts: Mutex::default(),
            requests: Mutex::default(),
        });
        let tasks = vec![
            tokio::spawn(vm::run(ctx.clone())).abort_handle(),
            tokio::spawn(export::run(ctx.clone())).abort_handle(),
            tokio::spawn(server::run(ctx.clone(), listener, acceptor)).abort_handle(),
        ];
        Ok(KubeVirt { ctx, tasks })
    }

    /// The CA of the export server's certificate: also the `cert` of every
    /// export's links.
    pub fn ca_pem(&self) -> &str {
        &self.ctx.ca_pem
    }

    /// `127.0.0.1:<port>`, the host of every export's external links.
    pub fn host(&self) -> &str {
        &self.ctx.host
    }

    /// The file the exports of claim `claim` in `namespace` serve.
    pub fn volume_path(&self, namespace: &str, claim: &str) -> PathBuf {
        self.ctx.volume_path(namespace, claim)
    }

    /// Writes the bytes the exports of claim `claim` in `namespace` serve
    /// (to [`volume_path`](Self::volume_path); write a large volume there
    /// directly).
    pub fn write_volume(&self, namespace: &str, claim: &str, bytes: &[u8]) -> Result<()> {
        let path = self.volume_path(namespace, claim);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))
    }

    /// Makes VM `namespace/name` run as KubeVirt would: a
    /// VirtualMachineInstance of the same name from its template (owned by
    /// the VM, `status.phase: Running`), and the VM's status `Running`. An
    /// error for a missing or halted VM.
    pub async fn run_vm(&self, namespace: &str, name: &str) -> Result<()> {
        vm::run_vm(&self.ctx, namespace, name).await
    }

    /// Every request the export server answered, in order.
    pub fn requests(&self) -> Vec<ExportRequest> {
        lock(&self.ctx.requests).clone()
    }
}

impl Drop for KubeVirt {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Connections are tasks of their own: end their downloads too.
        for exporter in lock(&self.ctx.exporters).drain().map(|(_, e)| e) {
            exporter.stop();
        }
    }
}
