//! OpenStack behind `vmm_core`'s traits, on the client of `vmm-openstack`
//! (`crates/openstack`): [`Openstack`] logs in to Keystone, and a logged-in
//! client is the session. The inventory is polled (the source's
//! `pollIntervalSeconds`). An export makes a Glance image of each disk
//! (`vmm_openstack::export`) and its disk files are the images' downloads;
//! ending it, however, removes every temporary it made.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use vmm_api::inventory::{Disk, LocalDisk, PowerState};
use vmm_api::source::{OpenstackSettings, SourceSpec};
use vmm_core::{
    ByteStream, Credentials, DiskFile, Export, ExportEnd, ExportRecorder, InventoryEvent, Provider,
    ProviderError, Session, Vm, VmDisk,
};
use vmm_openstack::{ExportedDisk, OpenstackClient, OpenstackError};

/// How often the inventory is polled when the source does not say.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The OpenStack provider.
pub struct Openstack;

#[async_trait]
impl Provider for Openstack {
    async fn connect(
        &self,
        spec: &SourceSpec,
        credentials: &Credentials,
    ) -> Result<Arc<dyn Session>, ProviderError> {
        let settings: OpenstackSettings = spec.settings().map_err(|e| {
            ProviderError::from(OpenstackError::InvalidSettings(format!(
                "the OpenStack source's spec cannot be read: {e}"
            )))
        })?;
        let connection = &spec.connection;
        let client = OpenstackClient::connect(
            &connection.endpoint,
            credentials,
            &settings,
            connection.ca_bundle.as_deref(),
            connection.insecure_skip_verify.unwrap_or(false),
        )
        .await?;
        let poll = settings
            .poll_interval_seconds
            .map_or(DEFAULT_POLL_INTERVAL, |s| Duration::from_secs(s.into()));
        Ok(Arc::new(OpenstackSession { client, poll }))
    }
}

struct OpenstackSession {
    client: OpenstackClient,
    poll: Duration,
}

#[async_trait]
impl Session for OpenstackSession {
    fn endpoint_version(&self) -> String {
        self.client.endpoint_version()
    }

    async fn watch(&self, events: mpsc::Sender<InventoryEvent>) -> Result<(), ProviderError> {
        Ok(self.client.watch(events, self.poll).await?)
    }

    async fn find_vms(&self, name: &str, _within: Option<&str>) -> Result<Vec<Vm>, ProviderError> {
        let mut vms = Vec::new();
        for server in self.client.find_servers(name).await? {
            vms.push(vm(self.client.vm_spec(server).await?));
        }
        Ok(vms)
    }

    async fn vm(&self, id: &str) -> Result<Vm, ProviderError> {
        let server = self.client.server(id).await?;
        Ok(vm(self.client.vm_spec(server).await?))
    }

    async fn power_state(&self, id: &str) -> Result<PowerState, ProviderError> {
        Ok(self.client.power_state(id).await?)
    }

    async fn shutdown_guest(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.client.stop(id).await?)
    }

    async fn wait_powered_off(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        Ok(self.client.wait_stopped(id, timeout).await?)
    }

    /// Nova has no harder stop than `os-stop`, which powers the server off
    /// when its guest does not shut down in the compute node's time.
    async fn power_off(&self, id: &str) -> Result<(), ProviderError> {
        Ok(self.client.stop(id).await?)
    }

    fn export_id_for(&self, _vm_id: &str, job_uid: &str) -> Option<String> {
        Some(format!("vmm-{job_uid}"))
    }

    async fn export(
        &self,
        vm_id: &str,
        resume: Option<&str>,
        // Its ids are recorded before it starts (`export_id_for`).
        _recorder: &dyn ExportRecorder,
    ) -> Result<Box<dyn Export>, ProviderError> {
        let id = resume.map_or_else(|| format!("vmm-{vm_id}"), str::to_owned);
        let server = self.client.server(vm_id).await?;
        if self.client.power_state(vm_id).await? != PowerState::Off {
            return Err(ProviderError::permanent(
                vmm_core::Reason::EndpointError,
                format!("server {vm_id} must be stopped (SHUTOFF) to be exported: stop it first"),
            ));
        }
        let disks = self.client.export_images(&server, &id).await?;
        Ok(Box::new(ImageExport {
            client: self.client.clone(),
            id,
            disks,
        }))
    }

    /// Nothing an export makes expires: what is left is an error.
    async fn release_export(&self, id: &str, _how: ExportEnd) -> Result<(), ProviderError> {
        released(id, self.client.release(id).await)
    }

    /// Keystone tokens are not sessions: they expire by themselves.
    async fn logout(&self) {}
}

/// The Glance images of a server's disks.
struct ImageExport {
    client: OpenstackClient,
    id: String,
    disks: Vec<ExportedDisk>,
}

#[async_trait]
impl Export for ImageExport {
    fn id(&self) -> &str {
        &self.id
    }

    fn disk(&self, key: &str) -> Option<Arc<dyn DiskFile>> {
        let disk = self.disks.iter().find(|d| d.key == key)?;
        Some(Arc::new(GlanceImage {
            client: self.client.clone(),
            image_id: disk.image_id.clone(),
        }))
    }

    /// Glance images do not expire: nothing to keep alive.
    fn report_progress(&self, _percent: u8) {}

    fn failure(&self) -> Option<String> {
        None
    }

    /// Removes the images (and anything else the export made), whatever
    /// the outcome.
    async fn end(self: Box<Self>, _how: ExportEnd) -> Result<(), ProviderError> {
        released(&self.id, self.client.release(&self.id).await)
    }

    fn detach(self: Box<Self>) {}
}

/// Whether export `id` is gone, with `left` of its temporaries still at the
/// cloud after the release's retries.
fn released(id: &str, left: usize) -> Result<(), ProviderError> {
    if left == 0 {
        return Ok(());
    }
    Err(ProviderError::transient(
        vmm_core::Reason::EndpointError,
        format!(
            "{left} temporaries of export {id} are still at the cloud (the cloud's errors are in the controller's log)"
        ),
    ))
}

struct GlanceImage {
    client: OpenstackClient,
    image_id: String,
}

#[async_trait]
impl DiskFile for GlanceImage {
    async fn open(&self) -> io::Result<ByteStream> {
        self.client
            .open_image(&self.image_id)
            .await
            .map_err(io::Error::other)
    }
}

/// A server as an import sees it: each volume keyed by its id, the local
/// root disk as `root`. The swap disk is left out (it holds nothing to
/// keep); an ephemeral disk cannot be exported.
fn vm(mut spec: vmm_api::inventory::VirtualMachineSpec) -> Vm {
    spec.disks
        .retain(|disk| disk.local != Some(LocalDisk::Swap));
    let disks = spec.disks.iter().map(disk).collect();
    Vm {
        spec,
        disks,
        firmware_uuid: None,
    }
}

fn disk(disk: &Disk) -> VmDisk {
    let (key, unsupported) = match disk.local {
        Some(LocalDisk::Root) => ("root".to_owned(), None),
        Some(local) => (
            disk.name.clone(),
            Some(format!(
                "{} is the server's {local} disk: Nova cannot export it; copy its data to a volume and attach that instead",
                disk.name
            )),
        ),
        None => (disk.file.clone().unwrap_or_default(), None),
    };
    VmDisk {
        key,
        label: disk.name.clone(),
        capacity_bytes: disk.capacity_bytes,
        unsupported,
        bus: None,
    }
}
