//! One VM, for an import: finding it by name (preflight), its power state,
//! guest shutdown, and the disk facts the importer needs beyond the
//! inventory spec (device keys, bus and unit numbers, backing files).
//!
//! Finding is two reads: the names of all VMs (one small property), then the
//! matches with everything the inventory mapping needs, plus the folders,
//! datacenters, hosts, networks and datastores that name their paths and
//! NICs. So a large vCenter is not read whole for one VM.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use vim_rs::mo::{PropertyCollector, ViewManager};
use vim_rs::types::boxed_types::ValueElements;
use vim_rs::types::enums::MoTypesEnum;
use vim_rs::types::structs::{
    DynamicProperty, ManagedObjectReference, ObjectSpec, PropertyFilterSpec, PropertySpec,
    RetrieveOptions,
};
use vim_rs::types::vim_any::VimAny;

use super::view_object_spec;
use vmm_api::inventory::{PowerState, VirtualMachineSpec};
use vmm_wire::vsphere::unescape_name;

use super::disks::{DiskDetails, datastore_of_file, disk_facts};
use super::error::classify;
use super::model::{self, Dirty, ObjKind, ObjectCache, Value};
use super::{PAGE_SIZE, VsphereClient, VsphereError, convert, is_fault};

/// How often [`VsphereClient::wait_powered_off`] reads the power state.
const POWER_POLL: Duration = Duration::from_secs(1);

/// A VM with what an import needs to know about it.
#[derive(Clone, Debug, PartialEq)]
pub struct VmDetails {
    /// The inventory spec (id, path, power state, CPUs, disks, NICs, ...).
    pub spec: VirtualMachineSpec,
    /// The virtual disks, in device order (the order of `spec.disks`).
    pub disks: Vec<DiskDetails>,
    /// Inventory path of the VM's datacenter, e.g. `/DC0` (the `dcPath` of
    /// datastore URLs).
    pub datacenter_path: Option<String>,
}

impl VsphereClient {
    /// Every VM (templates skipped) whose display name is exactly `name`,
    /// sorted by path. With `within`, only VMs under that folder or
    /// inventory path (`/DC0/vm/prod`, at any depth), or the VM at exactly
    /// that path (`/DC0/vm/prod/Web 01`). The caller decides what 0 or
    /// several matches mean.
    ///
    /// Paths are compared as vSphere reports them (`/` inside a name as
    /// `%2f`); names after unescaping, as the inventory shows them.
    pub fn find_vms<'a>(
        &'a self,
        name: &'a str,
        within: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<VmDetails>, VsphereError>> {
        Box::pin(async move {
            let ids = self.vm_ids_named(name).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut found = self.details_of(&ids).await?;
            if let Some(within) = within {
                let within = within.trim_end_matches('/');
                found.retain(|vm| {
                    vm.spec.path.as_deref().is_some_and(|p| {
                        p == within
                            || p.strip_prefix(within)
                                .is_some_and(|rest| rest.starts_with('/'))
                    })
                });
            }
            found.sort_by(|a, b| (&a.spec.path, &a.spec.id).cmp(&(&b.spec.path, &b.spec.id)));
            Ok(found)
        })
    }

    /// The VM `vm_id` (e.g. `vm-42`) as of now: power state, disks, NICs, ...
    /// [`VsphereError::VmNotFound`] when it does not exist (or is a template).
    pub async fn vm(&self, vm_id: &str) -> Result<VirtualMachineSpec, VsphereError> {
        Ok(self.vm_details(vm_id).await?.spec)
    }

    /// [`vm`](Self::vm) plus the disk facts of [`VmDetails`].
    pub fn vm_details<'a>(
        &'a self,
        vm_id: &'a str,
    ) -> BoxFuture<'a, Result<VmDetails, VsphereError>> {
        Box::pin(async move {
            self.details_of(&[vm_id.to_owned()])
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| self.vm_not_found(vm_id))
        })
    }

    /// The VM's `runtime.powerState`, in one small read.
    pub fn power_state<'a>(
        &'a self,
        vm_id: &'a str,
    ) -> BoxFuture<'a, Result<PowerState, VsphereError>> {
        Box::pin(async move {
            let props = self
                .object_properties(vm_ref(vm_id), "VirtualMachine", &["runtime.powerState"])
                .await?
                .ok_or_else(|| self.vm_not_found(vm_id))?;
            Ok(props
                .into_iter()
                .find(|p| p.name == "runtime.powerState")
                .map(|p| match convert::value(&p.name, p.val) {
                    Value::Power(p) => p,
                    _ => PowerState::Unknown,
                })
                .unwrap_or(PowerState::Unknown))
        })
    }

    /// Asks the guest to shut down (`ShutdownGuest`, through VMware Tools)
    /// and returns once vSphere accepted it: the VM powers off later, see
    /// [`wait_powered_off`](Self::wait_powered_off). A VM that is already
    /// off is fine (so a resumed job can call this again).
    ///
    /// [`VsphereError::ToolsUnavailable`] when Tools is not running in the
    /// guest (the caller may then power off hard, if allowed);
    /// [`VsphereError::InvalidPowerState`] when the VM is suspended.
    pub fn shutdown_guest<'a>(&'a self, vm_id: &'a str) -> BoxFuture<'a, Result<(), VsphereError>> {
        Box::pin(async move {
            const CALL: &str = "ShutdownGuest";
            let vm = vim_rs::mo::VirtualMachine::new(self.handle(), vm_id);
            let Err(e) = vm.shutdown_guest().await else {
                tracing::debug!(vm = vm_id, "guest shutdown requested");
                return Ok(());
            };
            if is_fault(&e, "ToolsUnavailable") {
                return Err(VsphereError::ToolsUnavailable {
                    url: self.url.clone(),
                    vm: vm_id.to_owned(),
                });
            }
            if is_fault(&e, "ManagedObjectNotFound") {
                return Err(self.vm_not_found(vm_id));
            }
            if is_fault(&e, "InvalidPowerState") {
                let state = self.power_state(vm_id).await?;
                if state == PowerState::Off {
                    return Ok(());
                }
                return Err(VsphereError::InvalidPowerState {
                    url: self.url.clone(),
                    vm: vm_id.to_owned(),
                    call: CALL,
                    required: "powered on",
                    actual: power_name(state).to_owned(),
                    fix: "resume or power on the VM first, or power it off",
                });
            }
            Err(classify(&self.url, CALL, &e, None))
        })
    }

    /// Waits until the VM is powered off, reading its power state every
    /// second; [`VsphereError::PowerOffTimeout`] after `timeout`.
    pub fn wait_powered_off<'a>(
        &'a self,
        vm_id: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), VsphereError>> {
        Box::pin(async move {
            let started = Instant::now();
            loop {
                let state = self.power_state(vm_id).await?;
                if state == PowerState::Off {
                    return Ok(());
                }
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(VsphereError::PowerOffTimeout {
                        url: self.url.clone(),
                        vm: vm_id.to_owned(),
                        state: power_name(state).to_owned(),
                        waited,
                    });
                }
                tokio::time::sleep(POWER_POLL.min(timeout - waited)).await;
            }
        })
    }

    /// The VM's virtual disks (device facts only: datastore names and the
    /// datacenter are left out), in one small read.
    pub(crate) async fn disk_layout(&self, vm_id: &str) -> Result<Vec<DiskDetails>, VsphereError> {
        let props = self
            .object_properties(vm_ref(vm_id), "VirtualMachine", &["config.hardware.device"])
            .await?
            .ok_or_else(|| self.vm_not_found(vm_id))?;
        Ok(props
            .iter()
            .find(|p| p.name == "config.hardware.device")
            .map(|p| disk_facts(&p.val))
            .unwrap_or_default())
    }

    pub(crate) fn vm_not_found(&self, vm_id: &str) -> VsphereError {
        VsphereError::VmNotFound {
            url: self.url.clone(),
            vm: vm_id.to_owned(),
        }
    }

    /// The properties `paths` of one object; `None` when it does not exist.
    pub(crate) async fn object_properties(
        &self,
        obj: ManagedObjectReference,
        type_name: &str,
        paths: &[&str],
    ) -> Result<Option<Vec<DynamicProperty>>, VsphereError> {
        let spec = PropertyFilterSpec {
            prop_set: vec![PropertySpec {
                r#type: type_name.to_owned(),
                all: Some(false),
                path_set: Some(paths.iter().map(|p| (*p).to_owned()).collect()),
            }],
            object_set: vec![ObjectSpec {
                obj,
                skip: Some(false),
                select_set: None,
            }],
            // A missing object is then a ManagedObjectNotFound fault. (With
            // `true`, vcsim answers an empty `<returnval/>`, which vim_rs
            // cannot parse.)
            report_missing_objects_in_results: None,
        };
        let pc = self.collector();
        let result = pc
            .retrieve_properties_ex(&[spec], &RetrieveOptions { max_objects: None })
            .await;
        let result = match result {
            Ok(result) => result,
            Err(e) if is_fault(&e, "ManagedObjectNotFound") => return Ok(None),
            Err(e) => return Err(classify(&self.url, "RetrievePropertiesEx", &e, None)),
        };
        Ok(result
            .and_then(|r| r.objects.into_iter().next())
            .map(|content| content.prop_set.unwrap_or_default()))
    }

    fn collector(&self) -> PropertyCollector {
        PropertyCollector::new(
            self.handle(),
            &self.client.service_content().property_collector.value,
        )
    }

    /// Ids of the VMs whose (unescaped) name is `name`.
    async fn vm_ids_named(&self, name: &str) -> Result<Vec<String>, VsphereError> {
        let view = self.view_of(&["VirtualMachine"]).await?;
        let spec = PropertyFilterSpec {
            prop_set: vec![PropertySpec {
                r#type: "VirtualMachine".to_owned(),
                all: Some(false),
                path_set: Some(vec!["name".to_owned()]),
            }],
            object_set: vec![view_object_spec(&view)],
            report_missing_objects_in_results: None,
        };
        let mut ids = Vec::new();
        let result = self
            .retrieve_paged(spec, |content| {
                let named = content.prop_set.iter().flatten().any(|p| {
                    p.name == "name"
                        && matches!(&p.val, VimAny::Value(ValueElements::PrimitiveString(n))
                            if unescape_name(n) == name || n == name)
                });
                if named {
                    ids.push(content.obj.value);
                }
            })
            .await;
        self.destroy_view(&view).await;
        result?;
        Ok(ids)
    }

    /// Details of the VMs `ids` (missing ones and templates left out).
    async fn details_of(&self, ids: &[String]) -> Result<Vec<VmDetails>, VsphereError> {
        let context_types: Vec<&str> = model::PROPERTY_PATHS
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t != "VirtualMachine")
            .collect();
        let view = self.view_of(&context_types).await?;
        let mut object_set = vec![view_object_spec(&view)];
        object_set.extend(ids.iter().map(|id| ObjectSpec {
            obj: vm_ref(id),
            skip: Some(false),
            select_set: None,
        }));
        // Missing VMs (deleted since they were found) are left out rather
        // than failing the call; the view's datacenters and folders keep the
        // result from being empty (which vim_rs could not parse from vcsim).
        let spec = PropertyFilterSpec {
            prop_set: super::filter_spec(&view).prop_set,
            object_set,
            report_missing_objects_in_results: Some(true),
        };
        let mut store = ObjectCache::default();
        let mut dirty = Dirty::default();
        let mut tree: HashMap<String, Node> = HashMap::new();
        let mut disks: HashMap<String, Vec<DiskDetails>> = HashMap::new();
        let result = self
            .retrieve_paged(spec, |content| {
                let Some(kind) = ObjKind::from_type_name(content.obj.r#type.as_str()) else {
                    return;
                };
                let id = content.obj.value;
                store.enter(&id, kind, &mut dirty);
                let node = tree.entry(id.clone()).or_insert_with(|| Node::new(kind));
                for prop in content.prop_set.unwrap_or_default() {
                    if prop.name == "config.hardware.device" {
                        disks.insert(id.clone(), disk_facts(&prop.val));
                    }
                    let value = convert::value(&prop.name, prop.val);
                    node.record(&prop.name, &value);
                    store.set(&id, kind, &prop.name, Some(value), &mut dirty);
                }
            })
            .await;
        self.destroy_view(&view).await;
        result?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let spec = store.vm_spec(id)?;
                let datacenter_path = datacenter_path(&tree, id);
                let disks = disks
                    .remove(id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut d| {
                        d.datastore = d
                            .datastore
                            .as_deref()
                            .and_then(|ds| tree.get(ds))
                            .and_then(|n| n.name.as_deref())
                            .map(unescape_name)
                            .or_else(|| d.file.as_deref().and_then(datastore_of_file));
                        d.datacenter_path = datacenter_path.clone();
                        d
                    })
                    .collect();
                Some(VmDetails {
                    spec,
                    disks,
                    datacenter_path,
                })
            })
            .collect())
    }

    /// Runs a paged RetrievePropertiesEx, handing each object to `each`.
    async fn retrieve_paged(
        &self,
        spec: PropertyFilterSpec,
        mut each: impl FnMut(vim_rs::types::structs::ObjectContent),
    ) -> Result<(), VsphereError> {
        let pc = self.collector();
        let options = RetrieveOptions {
            max_objects: Some(PAGE_SIZE),
        };
        let page = pc
            .retrieve_properties_ex(&[spec], &options)
            .await
            .map_err(|e| classify(&self.url, "RetrievePropertiesEx", &e, None))?;
        let Some(mut page) = page else {
            return Ok(());
        };
        loop {
            for content in page.objects {
                each(content);
            }
            let Some(token) = page.token else {
                return Ok(());
            };
            page = pc
                .continue_retrieve_properties_ex(&token)
                .await
                .map_err(|e| classify(&self.url, "ContinueRetrievePropertiesEx", &e, None))?;
        }
    }

    async fn view_of(&self, types: &[&str]) -> Result<ManagedObjectReference, VsphereError> {
        let content = self.client.service_content();
        let Some(view_manager) = &content.view_manager else {
            return Err(VsphereError::Fault {
                url: self.url.clone(),
                call: "CreateContainerView",
                detail: "the endpoint has no ViewManager".into(),
            });
        };
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        ViewManager::new(self.handle(), &view_manager.value)
            .create_container_view(&content.root_folder, Some(&types), true)
            .await
            .map_err(|e| classify(&self.url, "CreateContainerView", &e, None))
    }
}

pub(crate) fn vm_ref(id: &str) -> ManagedObjectReference {
    ManagedObjectReference {
        r#type: MoTypesEnum::VirtualMachine,
        value: id.to_owned(),
    }
}

/// vSphere's name of a power state, for messages.
pub(crate) fn power_name(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "poweredOn",
        PowerState::Off => "poweredOff",
        PowerState::Suspended => "suspended",
        PowerState::Unknown => "in an unknown power state",
    }
}

/// Name and parents of an object, to walk up to its datacenter.
struct Node {
    kind: ObjKind,
    name: Option<String>,
    parent: Option<String>,
    parent_vapp: Option<String>,
    parent_folder: Option<String>,
}

impl Node {
    fn new(kind: ObjKind) -> Self {
        Self {
            kind,
            name: None,
            parent: None,
            parent_vapp: None,
            parent_folder: None,
        }
    }

    fn record(&mut self, path: &str, value: &Value) {
        match (path, value) {
            ("name", Value::Text(n)) => self.name = Some(n.clone()),
            ("parent", Value::Ref(r)) => self.parent = Some(r.clone()),
            ("parentVApp", Value::Ref(r)) => self.parent_vapp = Some(r.clone()),
            ("parentFolder", Value::Ref(r)) => self.parent_folder = Some(r.clone()),
            _ => {}
        }
    }

    fn up(&self) -> Option<&str> {
        match self.kind {
            ObjKind::VirtualMachine => self.parent.as_deref().or(self.parent_vapp.as_deref()),
            ObjKind::VirtualApp => self
                .parent_vapp
                .as_deref()
                .or(self.parent_folder.as_deref()),
            _ => self.parent.as_deref(),
        }
    }
}

/// `/Folder/DC0`: the path of the first Datacenter above `id`.
fn datacenter_path(tree: &HashMap<String, Node>, id: &str) -> Option<String> {
    let mut current = tree.get(id)?.up();
    let mut dc = None;
    for _ in 0..64 {
        let Some(cur) = current else { break };
        let node = tree.get(cur)?;
        if node.kind == ObjKind::Datacenter {
            dc = Some(cur);
            break;
        }
        current = node.up();
    }
    let mut parts = Vec::new();
    let mut current = dc;
    for _ in 0..64 {
        let Some(cur) = current else { break };
        // The root folder is not in the view: the walk ends there.
        let Some(node) = tree.get(cur) else { break };
        parts.push(node.name.clone()?);
        current = node.up();
    }
    if parts.is_empty() {
        return None;
    }
    parts.reverse();
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: ObjKind, name: &str, parent: Option<&str>) -> Node {
        Node {
            kind,
            name: Some(name.into()),
            parent: parent.map(Into::into),
            parent_vapp: None,
            parent_folder: None,
        }
    }

    #[test]
    fn datacenter_paths() {
        let mut tree = HashMap::new();
        tree.insert("group-f".into(), node(ObjKind::Folder, "Lab", None));
        tree.insert(
            "datacenter-2".into(),
            node(ObjKind::Datacenter, "DC0", Some("group-f")),
        );
        tree.insert(
            "group-v3".into(),
            node(ObjKind::Folder, "vm", Some("datacenter-2")),
        );
        tree.insert(
            "vm-9".into(),
            node(ObjKind::VirtualMachine, "Web 01", Some("group-v3")),
        );
        assert_eq!(datacenter_path(&tree, "vm-9").as_deref(), Some("/Lab/DC0"));
        tree.insert(
            "vm-10".into(),
            node(ObjKind::VirtualMachine, "x", Some("unknown")),
        );
        assert_eq!(datacenter_path(&tree, "vm-10"), None);
    }

    #[test]
    fn power_names() {
        assert_eq!(power_name(PowerState::On), "poweredOn");
        assert_eq!(power_name(PowerState::Suspended), "suspended");
    }
}
