//! A stand-in for Harvester's image controller, and for the slice of its VM
//! controller that turns a VM's `harvesterhci.io/volumeClaimTemplates`
//! annotation into PVCs.
//!
//! Harvester itself cannot run here (it needs Longhorn, CDI and a node), but
//! what our importer depends on is how Harvester and its image backends *read
//! the URL* of a `VirtualMachineImage` and how Harvester *reports* it. The
//! backends' downloaders are the real programs (`crate::downloaders`); this
//! stand-in plays what sits around them, against the real CRD
//! (`harvesterhci.io/v1beta1`, which has no status subresource: status is
//! merge-patched on the object), following docs/harvester.md §1 and the
//! Harvester v1.8 sources it cites:
//!
//! - **`backend: backingimage`** (the default): Harvester's HEAD (15 s,
//!   200–399, Content-Length > 0 becomes `status.size`), a StorageClass
//!   `lh-<image UID>` (provisioner `driver.longhorn.io`, parameter
//!   `backingImage: vmi-<image UID>`), then Longhorn's backing-image data
//!   source run as longhorn-manager runs it, its progress mirrored.
//! - **`backend: cdi`**: Harvester's probes (`Range: bytes=0-127`, then a HEAD
//!   that must carry Content-Length), then CDI's importer run as CDI's
//!   controller runs its pod (without scratch space, then with it).
//! - Status the way Harvester's `vmiOperator` writes it: `Initialized`,
//!   `Imported` (`Importing` → `Imported`), progress shown as 99 until ready,
//!   `failed`/`lastFailedTime`/`RetryLimitExceeded` on failures, retries at
//!   least [`Options::retry_delay`] apart until `failed > spec.retry`. Never
//!   an `ImportFailed` reason: no Harvester code sets one.
//!
//! Everything it saw is recorded per image ([`ImportRecord`]: Harvester's own
//! requests, attempts, SHA-256 of the stored image unless
//! [`Options::hashing`] is off) and the SHA-256 is also put on the image as
//! the annotation [`SHA256_ANNOTATION`], so tests that only have kubectl can
//! compare it.
//!
//! The VM part ([`VmRecord`]) creates the PVCs of the annotation like
//! Harvester's VM controller, checks each `harvesterhci.io/imageId` against
//! the image's `status.storageClassName`, and records the owning VM on the PVC
//! in Harvester's `harvesterhci.io/owned-by` annotation (Harvester sets no
//! ownerReference on these PVCs). For a `cdi` image Harvester would make a
//! DataVolume instead; there is no CDI controller here, so it is a PVC too.
//!
//! Not modelled: Longhorn's BackingImage object (only its name is used, in the
//! StorageClass) and what Longhorn does with a stored qcow2 (the controller
//! serves raw). A job that fails on the Kubernetes side (e.g. the image was
//! deleted) ends with [`Outcome::Error`] and is not retried.
//!
//! ```no_run
//! use std::time::Duration;
//! use vmm_testkit::harvester::{ImageController, Options};
//! # async fn example(client: kube::Client) -> anyhow::Result<()> {
//! let controller = ImageController::start(client, Options::default())?;
//! // … create a VirtualMachineImage "disk-0" in "team-a" …
//! let record = controller
//!     .wait_imported("team-a", "disk-0", Duration::from_secs(60))
//!     .await?;
//! println!("{} bytes, sha256 {:?}", record.bytes, record.sha256);
//! # Ok(()) }
//! ```

mod attempt;
mod backing;
mod cdi;
mod cluster_dns;
mod fetch;
mod image;
mod record;
mod status;
mod throttle;
mod vm;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};

pub use record::{Backend, ImportRecord, Outcome, SentRequest, VmRecord};
pub use status::Condition;

use record::{Key, Shared, key};

/// The image's SHA-256 (hex), set when it is imported.
pub const SHA256_ANNOTATION: &str = "test.vm-migration.harvesterhci.io/sha256";
/// Why the stand-in's VM controller refused a VM's volume claim templates.
pub const ERROR_ANNOTATION: &str = "test.vm-migration.harvesterhci.io/error";
/// `<namespace>/<name>` of the image a PVC is made from.
pub const IMAGE_ID_ANNOTATION: &str = "harvesterhci.io/imageId";
/// A VM's PVCs, a JSON array of PVC objects (notes §2).
pub const VOLUME_CLAIM_TEMPLATES_ANNOTATION: &str = "harvesterhci.io/volumeClaimTemplates";
/// Harvester's record of which VMs use a PVC (`ref.AnnotationSchemaOwnerKeyName`).
pub const OWNED_BY_ANNOTATION: &str = "harvesterhci.io/owned-by";
/// The provisioner of the StorageClass Harvester makes per image.
pub const LONGHORN_PROVISIONER: &str = "driver.longhorn.io";

/// The field manager of every write (shown in `managedFields`).
pub const FIELD_MANAGER: &str = "harvester-standin";

fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..kube::api::PatchParams::default()
    }
}

fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..kube::api::PostParams::default()
    }
}

pub use vmm_api::external::{
    kubevirt_vm as kubevirt_vm_resource, virtual_machine_image as image_resource,
};

/// The StorageClass Harvester v1.8 creates for a `backingimage` image.
pub fn storage_class_name(image_uid: &str) -> String {
    format!("lh-{image_uid}")
}

/// The Longhorn BackingImage name Harvester uses for an image.
pub fn backing_image_name(image_uid: &str) -> String {
    format!("vmi-{image_uid}")
}

/// How the stand-in behaves. The defaults are Harvester's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    /// Harvester's `additional-ca` setting (PEM): trusted, besides nothing
    /// else, for HTTPS URLs by Harvester and Longhorn's downloader. Without
    /// it only plain `http://` URLs work.
    pub additional_ca_pem: Option<String>,
    /// Whether the `cdi` backend trusts [`additional_ca_pem`](Self::additional_ca_pem).
    /// Default false: in v1.8 Harvester's CDI probes use Go's default client,
    /// and a private CA for CDI needs a ConfigMap that only v1.9 supports.
    pub cdi_uses_additional_ca: bool,
    /// Harvester's HEAD timeout (15 s).
    pub head_timeout: Duration,
    /// How long Harvester's CDI probes wait for a byte (Go's default client
    /// has no limit: this keeps a broken test from hanging) and its
    /// connections' timeout. Longhorn's 30 s idle limit is its own.
    pub idle_timeout: Duration,
    /// Delay before a retry (Harvester: at least 10 s after `lastFailedTime`).
    /// Also the delay before CDI's importer runs again.
    pub retry_delay: Duration,
    /// How often a download's progress is read (longhorn-manager polls its
    /// data source about every 3 s), and at most one progress update per it.
    pub progress_interval: Duration,
    /// Also run the VM part (volume claim templates → PVCs). Default true.
    pub vm_controller: bool,
    /// How each download is hashed (default [`Hashing::Sha256`]).
    pub hashing: Hashing,
    /// Pass the downloaders at most this many bytes per second (default:
    /// unlimited), as a network between Harvester and the controller would:
    /// the local system and the browser suite use it so an import's progress
    /// can be watched, resume tests so a transfer can be cut mid-way. Only
    /// for loopback or plain HTTP URLs.
    pub download_rate: Option<u64>,
}

/// What the stand-in hashes each download with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// SHA-256 of the stored image, in [`ImportRecord::sha256`] and the
    /// [`SHA256_ANNOTATION`].
    Sha256,
    /// Nothing: `sha256` stays unset. For benchmarks, where reading the
    /// image again for SHA-256 (about 160 MB/s on a small machine) would be
    /// most of the time measured.
    Off,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            additional_ca_pem: None,
            cdi_uses_additional_ca: false,
            head_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(10),
            progress_interval: Duration::from_secs(1),
            vm_controller: true,
            hashing: Hashing::Sha256,
            download_rate: None,
        }
    }
}

/// What every task of one controller shares.
struct Ctx {
    client: kube::Client,
    options: Options,
    http: fetch::Http,
    shared: Arc<Shared>,
    /// Where the downloaders' runs go ([`attempt::Attempt`]).
    work_dir: PathBuf,
    /// `additional_ca_pem` as a file, for the downloaders.
    ca_file: Option<PathBuf>,
}

impl Ctx {
    /// `resource` in the watched namespace, or in all.
    fn api(&self, resource: &kube::core::ApiResource) -> kube::Api<kube::api::DynamicObject> {
        match &self.options.namespace {
            Some(ns) => kube::Api::namespaced_with(self.client.clone(), ns, resource),
            None => kube::Api::all_with(self.client.clone(), resource),
        }
    }
}

/// The running stand-in; its tasks stop when it is dropped.
pub struct ImageController {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for ImageController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageController").finish_non_exhaustive()
    }
}

impl ImageController {
    /// Starts watching images (and VMs, see [`Options::vm_controller`]).
    /// Call it inside a Tokio runtime; fails on a bad CA PEM, or when its
    /// work directory cannot be made.
    pub fn start(client: kube::Client, options: Options) -> Result<ImageController> {
        let http = fetch::Http::new(&options, &client)?;
        let work_dir = crate::process::run_dir()?.join("harvester-standin");
        std::fs::create_dir_all(&work_dir)?;
        let ca_file = match &options.additional_ca_pem {
            Some(pem) => {
                let file = work_dir.join("additional-ca.pem");
                std::fs::write(&file, pem)?;
                Some(file)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(()),
        });
        let ctx = Arc::new(Ctx {
            client,
            options,
            http,
            shared: shared.clone(),
            work_dir,
            ca_file,
        });
        let mut tasks = vec![tokio::spawn(image::run(ctx.clone())).abort_handle()];
        if ctx.options.vm_controller {
            tasks.push(tokio::spawn(vm::run(ctx)).abort_handle());
        }
        Ok(ImageController { shared, tasks })
    }

    /// The record of image `namespace/name` (its latest UID), if it was handled.
    pub fn result(&self, namespace: &str, name: &str) -> Option<ImportRecord> {
        self.shared
            .lock()
            .images
            .get(&key(namespace, name))
            .cloned()
    }

    /// Waits until the image is imported; an error if it failed for good
    /// (`RetryLimitExceeded=True`) or `timeout` passed.
    pub async fn wait_imported(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<ImportRecord> {
        let record = self.wait_finished(namespace, name, timeout).await?;
        match &record.outcome {
            Outcome::Imported => Ok(record),
            other => Err(anyhow!(
                "image {namespace}/{name} was not imported: {other:?}; errors: {:?}",
                record.errors
            )),
        }
    }

    /// Waits until the image is imported or failed for good, whichever.
    pub async fn wait_finished(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<ImportRecord> {
        let k = key(namespace, name);
        let what = format!("image {namespace}/{name} imported or failed");
        self.shared
            .wait(&what, timeout, |s| {
                let r = s.images.get(&k)?;
                (r.outcome != Outcome::InProgress).then(|| r.clone())
            })
            .await
            .map_err(|e| anyhow!("{e:#}; record: {:?}", self.result(namespace, name)))
    }

    /// The VM part's record for VM `namespace/name`.
    pub fn vm_result(&self, namespace: &str, name: &str) -> Option<VmRecord> {
        self.shared.lock().vms.get(&key(namespace, name)).cloned()
    }

    /// Why the VM's volume claim templates were refused, if they were.
    pub fn vm_error(&self, namespace: &str, name: &str) -> Option<String> {
        self.vm_result(namespace, name)?.error()
    }

    /// Waits until the VM part has handled VM `namespace/name`.
    pub async fn wait_vm(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<VmRecord> {
        let k = key(namespace, name);
        let what = format!("VM {namespace}/{name} handled");
        self.shared
            .wait(&what, timeout, |s| s.vms.get(&k).cloned())
            .await
    }
}

impl Drop for ImageController {
    fn drop(&mut self) {
        // Aborting the watch tasks drops their JoinSets, which aborts every
        // download in flight.
        for task in &self.tasks {
            task.abort();
        }
    }
}
