//! Another Harvester cluster behind `vmm_core`'s traits, on the client of
//! `vmm-harvester` (`crates/harvester`): [`Harvester`] connects with the
//! Secret's kubeconfig or token and checks the cluster, and the connected
//! client is the session. The inventory is kept by watches.
//!
//! Importing from a Harvester source is not built yet (issue 15's export
//! part): the session's import calls refuse, naming that, before anything
//! at the remote cluster is touched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use vmm_api::inventory::PowerState;
use vmm_api::source::{HarvesterSettings, SourceSpec};
use vmm_core::{
    Credentials, Export, ExportEnd, InventoryEvent, Provider, ProviderError, Reason, Session, Vm,
    VmDisk,
};
use vmm_harvester::{HarvesterClient, HarvesterError};

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

/// What the import calls answer until importing from Harvester is built.
fn not_yet() -> ProviderError {
    ProviderError::permanent(
        Reason::KindNotSupported,
        "importing from a Harvester source is not built yet: its VMs can be browsed, not imported; nothing was changed at the remote cluster",
    )
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
        Ok(self.client.vm_spec(id).await?.power_state)
    }

    async fn shutdown_guest(&self, _id: &str) -> Result<(), ProviderError> {
        Err(not_yet())
    }

    async fn wait_powered_off(&self, _id: &str, _timeout: Duration) -> Result<(), ProviderError> {
        Err(not_yet())
    }

    async fn power_off(&self, _id: &str) -> Result<(), ProviderError> {
        Err(not_yet())
    }

    async fn export(
        &self,
        _vm_id: &str,
        _resume: Option<&str>,
    ) -> Result<Box<dyn Export>, ProviderError> {
        Err(not_yet())
    }

    /// No export is ever made yet: nothing to release.
    async fn release_export(&self, _id: &str, _how: ExportEnd) {}

    /// Tokens and certificates are not sessions: nothing to end.
    async fn logout(&self) {}
}

/// A VM as an import sees it: each disk keyed by its claim's name; a
/// container disk has nothing to export.
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
        })
        .collect();
    Vm { spec, disks }
}
