//! vSphere behind `vmm_core`'s traits, on the client of `vmm-vsphere`
//! (`crates/vsphere`): [`Vsphere`] logs in, a logged-in client is the
//! session, an NFC lease is the export and each of its disk URLs a disk file
//! (a streamOptimized VMDK).
//!
//! An export logs in a session of its own, so it outlives the session that
//! opened it (the controller logs that one out at the end of each reconcile);
//! ending the export logs its session out.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use vmm_api::inventory::PowerState;
use vmm_api::source::SourceSpec;
use vmm_core::{
    ByteStream, Credentials, DiskFile, Export, ExportEnd, ExportRecorder, InventoryEvent, Provider,
    ProviderError, Session, Vm, VmDisk,
};

use vmm_vsphere::{
    Attached, DEFAULT_READY_TIMEOUT, DiskBacking, DiskDetails, ExportLease, LeaseSession,
    VmDetails, VsphereClient, VsphereError,
};

/// How long a recorded lease may take to be ready again when it is resumed.
const RESUME_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a left-over lease may take to be ready before it is ended.
const RELEASE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The vSphere provider.
pub struct Vsphere;

#[async_trait]
impl Provider for Vsphere {
    async fn connect(
        &self,
        spec: &SourceSpec,
        credentials: &Credentials,
    ) -> Result<Arc<dyn Session>, ProviderError> {
        let connection = &spec.connection;
        let client = VsphereClient::connect(
            &connection.endpoint,
            credentials,
            connection.ca_bundle.as_deref(),
            connection.insecure_skip_verify.unwrap_or(false),
        )
        .await?;
        Ok(Arc::new(VsphereSession(client)))
    }
}

/// A logged-in vCenter session.
struct VsphereSession(VsphereClient);

#[async_trait]
impl Session for VsphereSession {
    fn endpoint_version(&self) -> String {
        self.0.about().endpoint_version()
    }

    async fn watch(&self, events: mpsc::Sender<InventoryEvent>) -> Result<(), ProviderError> {
        Ok(self.0.watch(events).await?)
    }

    async fn find_vms(&self, name: &str, within: Option<&str>) -> Result<Vec<Vm>, ProviderError> {
        let found = self.0.find_vms(name, within).await?;
        Ok(found.into_iter().map(vm).collect())
    }

    async fn vm(&self, id: &str) -> Result<Vm, ProviderError> {
        Ok(vm(self.0.vm_details(id).await?))
    }

    async fn power_state(&self, id: &str) -> Result<PowerState, ProviderError> {
        Ok(self.0.power_state(id).await?)
    }

    async fn shutdown_guest(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.0.shutdown_guest(id).await?)
    }

    async fn wait_powered_off(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        Ok(self.0.wait_powered_off(id, timeout).await?)
    }

    async fn power_off(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.0.set_power(id, false).await?)
    }

    async fn export(
        &self,
        vm_id: &str,
        resume: Option<&str>,
        recorder: &dyn ExportRecorder,
    ) -> Result<Box<dyn Export>, ProviderError> {
        let own = self.0.new_session().await?;
        let mut lease = match open_lease(&own, vm_id, resume, recorder).await {
            Ok(lease) => lease,
            Err(error) => {
                log_out(&own).await;
                return Err(error);
            }
        };
        let percent = Arc::new(AtomicU8::new(0));
        lease.keep_alive(percent.clone());
        Ok(Box::new(LeaseExport { lease, percent }))
    }

    /// A lease left open times out by itself: failures are only logged.
    async fn release_export(&self, id: &str, how: ExportEnd) -> Result<(), ProviderError> {
        match ExportLease::attach(&self.0, id, RELEASE_READY_TIMEOUT).await {
            Ok(Attached::Ready(lease)) => {
                if let Err(error) = end_lease(*lease, how).await {
                    tracing::warn!(lease = %id, %error, "cannot end a left-over export lease (it times out by itself)");
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(lease = %id, %error, "cannot read a left-over export lease")
            }
        }
        Ok(())
    }

    async fn logout(&self) {
        log_out(&self.0).await;
    }
}

async fn log_out(client: &VsphereClient) {
    if let Err(error) = client.logout().await {
        tracing::debug!(%error, "vSphere logout failed (the session times out by itself)");
    }
}

/// The lease `resume` when vCenter still has it ready, else a new export
/// whose id `recorder` has before it is waited for (vCenter can take long to
/// ready a lease, and a lease nobody knows of stays open until it times out).
async fn open_lease(
    client: &VsphereClient,
    vm_id: &str,
    resume: Option<&str>,
    recorder: &dyn ExportRecorder,
) -> Result<ExportLease, ProviderError> {
    if let Some(id) = resume {
        match ExportLease::attach(client, id, RESUME_READY_TIMEOUT).await {
            Ok(Attached::Ready(lease)) => return Ok(*lease),
            Ok(_) => {}
            Err(error) => {
                tracing::info!(lease = %id, %error, "the earlier export is gone; exporting again")
            }
        }
    }
    let mut lease = client.create_export(vm_id).await?;
    if let Err(error) = recorder.record(lease.id()).await {
        if let Err(abort) = lease.abort("its id could not be recorded").await {
            tracing::warn!(%abort, "cannot abort an export lease (it times out by itself)");
        }
        return Err(error);
    }
    lease.wait_ready(DEFAULT_READY_TIMEOUT).await?;
    Ok(lease)
}

async fn end_lease(lease: ExportLease, how: ExportEnd) -> Result<(), VsphereError> {
    match how {
        ExportEnd::Complete => lease.complete().await,
        ExportEnd::Abort(reason) => lease.abort(reason).await,
    }
}

/// A VM as an import sees it: each disk keyed by its device key.
fn vm(details: VmDetails) -> Vm {
    let disks = details
        .disks
        .iter()
        .map(|disk| VmDisk {
            key: disk.key.to_string(),
            label: disk.label.clone(),
            capacity_bytes: disk.capacity_bytes,
            unsupported: unsupported(disk),
            bus: None,
        })
        .collect();
    Vm {
        spec: details.spec,
        disks,
        firmware_uuid: None,
    }
}

/// Why an NFC export cannot carry this disk, and what to change.
fn unsupported(disk: &DiskDetails) -> Option<String> {
    if disk.backing == DiskBacking::RawDevice {
        return Some(format!(
            "{} is a raw device mapping: its LUN cannot be exported; copy it to a virtual disk at the source first",
            disk.label
        ));
    }
    disk.independent.then(|| {
        format!(
            "{} is an independent disk: exports skip it; make it dependent at the source to import it",
            disk.label
        )
    })
}

/// An NFC export lease, kept alive with the progress last reported.
struct LeaseExport {
    lease: ExportLease,
    percent: Arc<AtomicU8>,
}

#[async_trait]
impl Export for LeaseExport {
    fn id(&self) -> &str {
        self.lease.id()
    }

    fn disk(&self, key: &str) -> Option<Arc<dyn DiskFile>> {
        let device_key: i32 = key.parse().ok()?;
        let file = self
            .lease
            .disks()
            .iter()
            .find(|d| d.device_key == Some(device_key))?;
        Some(Arc::new(LeaseDisk {
            session: self.lease.session(),
            url: file.url.clone(),
        }))
    }

    fn report_progress(&self, percent: u8) {
        self.percent.store(percent.min(100), Ordering::Relaxed);
    }

    fn failure(&self) -> Option<String> {
        self.lease.keep_alive_failure()
    }

    async fn end(self: Box<Self>, how: ExportEnd) -> Result<(), ProviderError> {
        let session = self.lease.session();
        let ended = end_lease(self.lease, how).await;
        log_out(&session.client()).await;
        Ok(ended?)
    }

    fn detach(self: Box<Self>) {
        // Its session is left to time out: whether vCenter ends a lease with
        // the session that opened it is not something to find out here.
        self.lease.detach();
    }
}

/// One disk URL of a lease, read with the cookie of the lease's session as
/// it is when the download opens.
struct LeaseDisk {
    session: LeaseSession,
    /// Carries the lease's ticket: never in a message (the provider's
    /// errors show it redacted).
    url: String,
}

#[async_trait]
impl DiskFile for LeaseDisk {
    async fn open(&self) -> io::Result<ByteStream> {
        let download = self
            .session
            .client()
            .open_disk(&self.url, 0)
            .await
            .map_err(io::Error::other)?;
        Ok(download.into_stream().map_err(io::Error::other).boxed())
    }
}
