//! Another Harvester cluster behind `vmm_core`'s traits, on the client of
//! `vmm-harvester` (`crates/harvester`): [`Harvester`] connects with the
//! Secret's kubeconfig or token and checks the cluster, and the connected
//! client is the session. The inventory is kept by watches.
//!
//! An import stops the VM the KubeVirt way (run strategy `Halted`), and
//! its export is a VirtualMachineExport whose disk files are the volumes'
//! links (`vmm_harvester`'s `export` module); ending it, however, deletes
//! the export and its token Secret.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use vmm_api::importjob::DiskBus;
use vmm_api::inventory::PowerState;
use vmm_api::source::{HarvesterSettings, SourceSpec};
use vmm_core::{
    ByteStream, Credentials, DiskFile, Export, ExportEnd, ExportRecorder, InventoryEvent, Provider,
    ProviderError, Reason, Session, Vm, VmDisk,
};
use vmm_harvester::{ExportedVolume, HarvesterClient, HarvesterError, ReadyExport};

/// The Harvester provider.
pub struct Harvester;

#[async_trait]
impl Provider for Harvester {
    async fn connect(
        &self,
        spec: &SourceSpec,
        credentials: &Credentials,
    ) -> Result<Arc<dyn Session>, ProviderError> {
        let settings: HarvesterSettings = spec.settings().map_err(|e| {
            ProviderError::from(HarvesterError::InvalidEndpoint {
                url: spec.connection.endpoint.clone(),
                detail: format!("the Harvester source's spec cannot be read: {e}"),
            })
        })?;
        let connection = &spec.connection;
        let client = HarvesterClient::connect(
            &connection.endpoint,
            credentials,
            connection.ca_bundle.as_deref(),
            connection.insecure_skip_verify.unwrap_or(false),
            settings.namespaces,
        )
        .await?;
        Ok(Arc::new(HarvesterSession { client }))
    }
}

struct HarvesterSession {
    client: HarvesterClient,
}

#[async_trait]
impl Session for HarvesterSession {
    fn endpoint_version(&self) -> String {
        self.client.endpoint_version()
    }

    async fn watch(&self, events: mpsc::Sender<InventoryEvent>) -> Result<(), ProviderError> {
        Ok(self.client.watch(events).await?)
    }

    async fn find_vms(&self, name: &str, within: Option<&str>) -> Result<Vec<Vm>, ProviderError> {
        Ok(self
            .client
            .find_vms(name, within)
            .await?
            .into_iter()
            .map(vm)
            .collect())
    }

    async fn vm(&self, id: &str) -> Result<Vm, ProviderError> {
        Ok(vm(self.client.vm_spec(id).await?))
    }

    async fn power_state(&self, id: &str) -> Result<PowerState, ProviderError> {
        Ok(self.client.power_state(id).await?)
    }

    async fn check_import(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.client.check_import_access(id).await?)
    }

    /// KubeVirt's stop: the run strategy set to `Halted`.
    async fn shutdown_guest(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.client.halt(id).await?)
    }

    async fn wait_powered_off(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        if self.client.wait_halted(id, timeout).await? {
            return Ok(());
        }
        Err(ProviderError::transient(
            Reason::PowerOffTimedOut,
            format!(
                "VM {id} still runs {}s after it was set to Halted: its guest has not shut down (KubeVirt stops it after its termination grace period)",
                timeout.as_secs()
            ),
        ))
    }

    async fn power_off(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.client.kill(id).await?)
    }

    fn export_id_for(&self, vm_id: &str, job_uid: &str) -> Option<String> {
        Some(HarvesterClient::export_id(vm_id, job_uid))
    }

    async fn export(
        &self,
        vm_id: &str,
        resume: Option<&str>,
        // Its ids are recorded before it starts (`export_id_for`).
        _recorder: &dyn ExportRecorder,
    ) -> Result<Box<dyn Export>, ProviderError> {
        // The controller always records an id first (`export_id_for`);
        // without one the export is named after the VM.
        let id = resume.map_or_else(
            || HarvesterClient::export_id(vm_id, vm_id.rsplit('/').next().unwrap_or(vm_id)),
            str::to_owned,
        );
        if self.client.power_state(vm_id).await? != PowerState::Off {
            return Err(ProviderError::permanent(
                Reason::EndpointError,
                format!("VM {vm_id} must be stopped to be exported: it has a running instance"),
            ));
        }
        let ready = self.client.open_export(vm_id, &id).await?;
        Ok(Box::new(VolumeExport {
            client: self.client.clone(),
            id,
            ready: Arc::new(ready),
            settled: false,
        }))
    }

    /// A VirtualMachineExport expires by its TTL: failures are only logged.
    async fn release_export(&self, id: &str, _how: ExportEnd) -> Result<(), ProviderError> {
        if let Err(error) = self.client.remove_export(id).await {
            tracing::warn!(export = %id, %error, "a VirtualMachineExport is left at the remote cluster (it expires by its TTL)");
        }
        Ok(())
    }

    /// Tokens and certificates are not sessions: nothing to end.
    async fn logout(&self) {}
}

/// A VirtualMachineExport of a stopped VM and its token Secret.
struct VolumeExport {
    client: HarvesterClient,
    id: String,
    ready: Arc<ReadyExport>,
    /// Ended or detached: dropping it leaves the remote cluster alone.
    settled: bool,
}

#[async_trait]
impl Export for VolumeExport {
    fn id(&self) -> &str {
        &self.id
    }

    /// The volume of the claim `key`.
    fn disk(&self, key: &str) -> Option<Arc<dyn DiskFile>> {
        let volume = self.ready.volumes.iter().find(|v| v.name == key)?;
        Some(Arc::new(VolumeFile {
            export: self.ready.clone(),
            volume: volume.clone(),
        }))
    }

    /// KubeVirt keeps an export until its TTL: nothing to keep alive.
    fn report_progress(&self, _percent: u8) {}

    fn failure(&self) -> Option<String> {
        None
    }

    /// Deletes the export and its token Secret, whatever the outcome.
    async fn end(mut self: Box<Self>, _how: ExportEnd) -> Result<(), ProviderError> {
        self.settled = true;
        Ok(self.client.remove_export(&self.id).await?)
    }

    fn detach(mut self: Box<Self>) {
        self.settled = true;
    }
}

impl Drop for VolumeExport {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, id) = (self.client.clone(), self.id.clone());
            runtime.spawn(async move {
                if let Err(error) = client.remove_export(&id).await {
                    tracing::warn!(export = %id, %error, "a dropped VirtualMachineExport is left at the remote cluster (it expires by its TTL)");
                }
            });
        }
    }
}

struct VolumeFile {
    export: Arc<ReadyExport>,
    volume: ExportedVolume,
}

#[async_trait]
impl DiskFile for VolumeFile {
    async fn open(&self) -> io::Result<ByteStream> {
        self.export.open(&self.volume).await
    }
}

/// A VM as an import sees it: each disk keyed by its claim's name (which
/// KubeVirt names its export volumes after) and keeping its bus; a
/// container disk has nothing to export. The firmware UUID carries over.
fn vm(spec: vmm_api::inventory::VirtualMachineSpec) -> Vm {
    let disks = spec
        .disks
        .iter()
        .map(|disk| VmDisk {
            key: disk.file.clone().unwrap_or_else(|| disk.name.clone()),
            label: disk.name.clone(),
            capacity_bytes: disk.capacity_bytes,
            unsupported: disk.container_image.as_ref().map(|image| {
                format!(
                    "{} is made from container image {image} at each start: there is nothing to export; copy its data to a volume first",
                    disk.name
                )
            }),
            bus: disk.controller.as_deref().and_then(bus),
        })
        .collect();
    Vm {
        firmware_uuid: spec.uuid.clone(),
        spec,
        disks,
    }
}

/// KubeVirt's disk buses that a job can ask for (a `usb` disk takes the
/// job's default).
fn bus(name: &str) -> Option<DiskBus> {
    match name {
        "virtio" => Some(DiskBus::Virtio),
        "sata" => Some(DiskBus::Sata),
        "scsi" => Some(DiskBus::Scsi),
        _ => None,
    }
}
