//! The seam between the binaries and the sources. A kind of source is a
//! [`Provider`] (it logs in) whose [`Session`] lists and watches the
//! inventory, finds and powers VMs, and opens [`Export`]s whose disks are
//! read as [`DiskFile`]s. `crates/providers` maps each `SourceKind` to its
//! provider; the binaries use only these traits.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use vmm_api::inventory::PowerState;
use vmm_api::source::SourceSpec;

use crate::{Credentials, InventoryEvent, ProviderError, Vm};

/// The bytes of a disk file, in order, from its start.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// A kind of source.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Logs in to the source `spec` describes (its connection, and the
    /// kind's own settings) with `credentials`.
    async fn connect(
        &self,
        spec: &SourceSpec,
        credentials: &Credentials,
    ) -> Result<Arc<dyn Session>, ProviderError>;
}

/// A logged-in connection to one source. End it with [`logout`](Self::logout).
/// Where an export's id is kept for whoever comes next (the import job's
/// status): see [`Session::export`].
#[async_trait]
pub trait ExportRecorder: Send + Sync {
    /// Records `id`; an error ends the export before it is used.
    async fn record(&self, id: &str) -> Result<(), ProviderError>;
}

#[async_trait]
pub trait Session: Send + Sync {
    /// Product and version of the endpoint, for a source's
    /// `status.endpointVersion`.
    fn endpoint_version(&self) -> String;

    /// Sends every VM and network, then [`InventoryEvent::Synced`], then
    /// changes as the source reports them, until `events` is closed (`Ok`) or
    /// the source fails (`Err`; the caller reconnects with backoff).
    async fn watch(&self, events: mpsc::Sender<InventoryEvent>) -> Result<(), ProviderError>;

    /// Every VM whose display name is exactly `name`, sorted by path; with
    /// `within`, only those under that folder or path. The caller decides
    /// what none or several mean.
    async fn find_vms(&self, name: &str, within: Option<&str>) -> Result<Vec<Vm>, ProviderError>;

    /// The VM with the source's id `id`, as it is now.
    async fn vm(&self, id: &str) -> Result<Vm, ProviderError>;

    async fn power_state(&self, id: &str) -> Result<PowerState, ProviderError>;

    /// Whether the credentials may do what an import of VM `id` does at
    /// the source, asked by preflight before the VM is touched (a refusal
    /// names what is missing). `Ok` where the source cannot say beforehand.
    async fn check_import(&self, id: &str) -> Result<(), ProviderError> {
        let _ = id;
        Ok(())
    }

    /// Asks the guest to shut down and returns once the source accepted it;
    /// a VM already off is fine. [`Reason::GuestShutdownUnavailable`]
    /// when the guest cannot be asked.
    ///
    /// [`Reason::GuestShutdownUnavailable`]: crate::Reason::GuestShutdownUnavailable
    async fn shutdown_guest(&self, id: &str) -> Result<(), ProviderError>;

    /// Waits until the VM is off; [`Reason::PowerOffTimedOut`] after `timeout`.
    ///
    /// [`Reason::PowerOffTimedOut`]: crate::Reason::PowerOffTimedOut
    async fn wait_powered_off(&self, id: &str, timeout: Duration) -> Result<(), ProviderError>;

    /// Powers the VM off at once, like pulling the plug.
    async fn power_off(&self, id: &str) -> Result<(), ProviderError>;

    /// The id the export of VM `vm_id` for the import job with UID
    /// `job_uid` will have, when the provider names its exports itself
    /// (OpenStack names every temporary snapshot, volume and image after it,
    /// Harvester its VirtualMachineExport and token Secret); `None` when the
    /// source assigns ids (a vSphere lease). The caller records it before
    /// [`export`](Self::export)ing with it as `resume`, so that a restart or
    /// a deletion finds whatever the export made at the source, even
    /// half-way.
    fn export_id_for(&self, vm_id: &str, job_uid: &str) -> Option<String> {
        let _ = (vm_id, job_uid);
        None
    }

    /// Opens an export of the (powered-off) VM `vm_id`, or re-opens
    /// `resume`, an export id recorded earlier (by this process or one
    /// before it), when it is still usable. The export lives on its own:
    /// it outlives this session and keeps itself alive until it is ended.
    /// A new export whose id the source assigns is handed to `recorder` as
    /// soon as it exists, before it is waited for: a process that dies while
    /// the source prepares it leaves an id the next one can end.
    async fn export(
        &self,
        vm_id: &str,
        resume: Option<&str>,
        recorder: &dyn ExportRecorder,
    ) -> Result<Box<dyn Export>, ProviderError>;

    /// Ends the export `id` that an earlier process left open, if it still
    /// is. `Ok` when nothing of it is left at the source, or when what is
    /// left ends by itself (a lease's or an export's own timeout: those
    /// failures are only logged); an error when something that never
    /// expires is still there (a temporary volume or image), which the
    /// caller tries again to remove.
    async fn release_export(&self, id: &str, how: ExportEnd) -> Result<(), ProviderError>;

    /// Ends the session; failures are logged (the session times out at the
    /// source).
    async fn logout(&self);
}

/// How an export ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportEnd {
    /// Every disk was read.
    Complete,
    /// Given up, for the reason given (for logs).
    Abort(&'static str),
}

/// An export in progress: the VM's disks, readable until it ends. Dropping
/// it without [`end`](Self::end) or [`detach`](Self::detach) ends it as
/// aborted, as well as the provider can without waiting.
#[async_trait]
pub trait Export: Send + Sync {
    /// The id to record, to [`Session::export`] it again (`resume`) or to
    /// [`Session::release_export`] it after a restart.
    fn id(&self) -> &str;

    /// The file of the disk with the provider's key `key` ([`VmDisk::key`]),
    /// `None` when the export has none for it.
    ///
    /// [`VmDisk::key`]: crate::VmDisk::key
    fn disk(&self, key: &str) -> Option<Arc<dyn DiskFile>>;

    /// Tells the source how far the export is (0–100), where it wants to
    /// know (a vSphere lease times out without progress).
    fn report_progress(&self, percent: u8);

    /// Why the export stopped being usable, if the source ended it.
    fn failure(&self) -> Option<String>;

    /// Ends the export; its disk files stop working.
    async fn end(self: Box<Self>, how: ExportEnd) -> Result<(), ProviderError>;

    /// Lets go of the export without ending it: another holder of the same
    /// id goes on with it.
    fn detach(self: Box<Self>);
}

/// One disk of an export, in the format the source serves it in (raw,
/// streamOptimized VMDK, qcow2, ...): the caller converts.
#[async_trait]
pub trait DiskFile: Send + Sync {
    /// Opens the file for reading from its start; each call reads it anew.
    async fn open(&self) -> io::Result<ByteStream>;
}
