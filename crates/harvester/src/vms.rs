//! One VM read now, by id or by name, as a job's preflight reads it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use vmm_api::inventory::VirtualMachineSpec;

use crate::model::{self, Vm};
use crate::{HarvesterClient, HarvesterError, error};

impl HarvesterClient {
    /// The VM with id `namespace/name`, its disks sized from their claims.
    pub async fn vm_spec(&self, id: &str) -> Result<VirtualMachineSpec, HarvesterError> {
        let (namespace, name) = self.split_id(id)?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &model::virtual_machines());
        let object = match api.get_opt(name).await {
            Ok(Some(object)) => object,
            Ok(None) => {
                return Err(HarvesterError::VmNotFound {
                    url: self.url.clone(),
                    id: id.to_owned(),
                });
            }
            Err(e) => return Err(error::classify(&self.url, "get virtualmachine", &e)),
        };
        self.spec_of(&object).await
    }

    /// Every VM named `name` in the namespaces read, or in namespace
    /// `within` alone; sorted by id.
    pub async fn find_vms(
        &self,
        name: &str,
        within: Option<&str>,
    ) -> Result<Vec<VirtualMachineSpec>, HarvesterError> {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        let mut found = Vec::new();
        for (api, _) in self.apis(&model::virtual_machines()) {
            let list = api
                .list(&params)
                .await
                .map_err(|e| error::classify(&self.url, "list virtualmachines", &e))?;
            for object in list.items {
                if within.is_none_or(|ns| object.metadata.namespace.as_deref() == Some(ns)) {
                    found.push(self.spec_of(&object).await?);
                }
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn spec_of(&self, object: &DynamicObject) -> Result<VirtualMachineSpec, HarvesterError> {
        let vm = Vm::from_dynamic(object).ok_or_else(|| HarvesterError::Api {
            url: self.url.clone(),
            call: "read virtualmachine".into(),
            status: 200,
            detail: "it is not a VirtualMachine as KubeVirt writes them".into(),
        })?;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &vm.namespace);
        let claims: BTreeMap<String, PersistentVolumeClaim> = claims
            .list(&ListParams::default())
            .await
            .map_err(|e| error::classify(&self.url, "list persistentvolumeclaims", &e))?
            .items
            .into_iter()
            .map(|claim| (claim.metadata.name.clone().unwrap_or_default(), claim))
            .collect();
        let mut spec = vm.spec(&claims);
        spec.host = self.node_of(&vm.namespace, &vm.name).await;
        Ok(spec)
    }

    /// The node a running VM's instance runs on: its host, as transfers
    /// count them. `None` for a stopped VM, and where the instance cannot be
    /// read (the host is only a limit's key, never worth failing for).
    async fn node_of(&self, namespace: &str, name: &str) -> Option<String> {
        match self.instances(namespace).get_opt(name).await {
            Ok(instance) => instance?.data["status"]["nodeName"]
                .as_str()
                .map(str::to_owned),
            Err(error) => {
                tracing::debug!(%error, namespace, name, "cannot read the VM's instance for its node");
                None
            }
        }
    }
}
