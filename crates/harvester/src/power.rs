//! Stopping a remote VM as KubeVirt users do: its run strategy set to
//! `Halted` (KubeVirt then shuts the guest down through ACPI, and kills it
//! after its termination grace period), and "off" meaning what KubeVirt's
//! export controller means by it: no VirtualMachineInstance that still
//! runs.

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::wait::await_condition;
use serde_json::json;
use vmm_api::inventory::PowerState;

use crate::{HarvesterClient, HarvesterError, model};

/// How long a hard stop waits for the VMI to be gone.
const KILL_WAIT: Duration = Duration::from_secs(60);

impl HarvesterClient {
    /// On while the VM has a VirtualMachineInstance that has not ended.
    pub async fn power_state(&self, id: &str) -> Result<PowerState, HarvesterError> {
        let (namespace, name) = self.split_id(id)?;
        let instance = self
            .instances(namespace)
            .get_opt(name)
            .await
            .map_err(|e| self.refused(&e, "get", "virtualmachineinstances", namespace))?;
        Ok(if instance.as_ref().is_none_or(ended) {
            PowerState::Off
        } else {
            PowerState::On
        })
    }

    /// Sets the VM's run strategy to `Halted` (or `running: false` for a VM
    /// that still uses that older field: KubeVirt refuses both at once).
    pub async fn halt(&self, id: &str) -> Result<(), HarvesterError> {
        let (namespace, name) = self.split_id(id)?;
        let vms: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &model::virtual_machines());
        let vm = vms
            .get_opt(name)
            .await
            .map_err(|e| self.refused(&e, "get", "virtualmachines", namespace))?
            .ok_or_else(|| HarvesterError::VmNotFound {
                url: self.url.clone(),
                id: id.to_owned(),
            })?;
        let patch = if vm.data["spec"].get("running").is_some() {
            json!({"spec": {"running": false}})
        } else {
            json!({"spec": {"runStrategy": "Halted"}})
        };
        vms.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| self.refused(&e, "patch", "virtualmachines", namespace))?;
        Ok(())
    }

    /// Waits until the VM's instance is gone or has ended; `Ok(false)`
    /// after `timeout`.
    pub async fn wait_halted(&self, id: &str, timeout: Duration) -> Result<bool, HarvesterError> {
        let (namespace, name) = self.split_id(id)?;
        let gone = await_condition(self.instances(namespace), name, |instance: Option<&_>| {
            instance.is_none_or(ended)
        });
        match tokio::time::timeout(timeout, gone).await {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(HarvesterError::Api {
                url: self.url.clone(),
                call: "watch virtualmachineinstance".into(),
                status: 0,
                detail: e.to_string(),
            }),
        }
    }

    /// Halts the VM and deletes its instance at once (no grace period),
    /// like `virtctl stop --force --grace-period=0`, then waits for it to
    /// be gone.
    pub async fn kill(&self, id: &str) -> Result<(), HarvesterError> {
        self.halt(id).await?;
        let (namespace, name) = self.split_id(id)?;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match self.instances(namespace).delete(name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => {
                return Err(self.refused(&e, "delete", "virtualmachineinstances", namespace));
            }
        }
        if self.wait_halted(id, KILL_WAIT).await? {
            Ok(())
        } else {
            Err(HarvesterError::Api {
                url: self.url.clone(),
                call: "delete virtualmachineinstance".into(),
                status: 0,
                detail: format!(
                    "the instance of VM {id} is still there {}s after its deletion",
                    KILL_WAIT.as_secs()
                ),
            })
        }
    }

    pub(crate) fn instances(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &model::virtual_machine_instances(),
        )
    }
}

/// An instance whose phase is `Succeeded` or `Failed` no longer runs
/// (KubeVirt's export controller does not count it as in use).
fn ended(instance: &DynamicObject) -> bool {
    matches!(
        instance.data["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}
