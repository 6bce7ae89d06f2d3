//! OpenStack behind `vmm_core`'s traits, on the client of `vmm-openstack`
//! (`crates/openstack`): [`Openstack`] logs in to Keystone, and a logged-in
//! client is the session. The inventory is polled (the source's
//! `pollIntervalSeconds`).
//!
//! Exports (snapshot → volume → image → Glance download) are not built yet:
//! every disk says so, which stops an import in preflight, before the server
//! is touched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use vmm_api::inventory::{Disk, PowerState};
use vmm_api::source::{OpenstackSettings, SourceSpec};
use vmm_core::{
    Credentials, Export, ExportEnd, InventoryEvent, Provider, ProviderError, Reason, Session, Vm,
    VmDisk,
};
use vmm_openstack::{OpenstackClient, OpenstackError};

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

    async fn export(
        &self,
        vm_id: &str,
        _resume: Option<&str>,
    ) -> Result<Box<dyn Export>, ProviderError> {
        Err(ProviderError::permanent(
            Reason::KindNotSupported,
            format!("server {vm_id}: {NOT_EXPORTABLE_YET}"),
        ))
    }

    async fn release_export(&self, _id: &str, _how: ExportEnd) {}

    /// Keystone tokens are not sessions: they expire by themselves.
    async fn logout(&self) {}
}

const NOT_EXPORTABLE_YET: &str =
    "this version of vm-migration browses OpenStack but cannot import from it yet";

/// A server as an import sees it: each volume keyed by its id.
fn vm(spec: vmm_api::inventory::VirtualMachineSpec) -> Vm {
    let disks = spec.disks.iter().map(disk).collect();
    Vm { spec, disks }
}

fn disk(disk: &Disk) -> VmDisk {
    VmDisk {
        key: disk.file.clone().unwrap_or_else(|| disk.name.clone()),
        label: disk.name.clone(),
        capacity_bytes: disk.capacity_bytes,
        unsupported: Some(format!("{}: {NOT_EXPORTABLE_YET}", disk.name)),
    }
}
