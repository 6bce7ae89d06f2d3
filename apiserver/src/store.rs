//! The inventory in memory: every source's VMs and networks as API objects, in
//! their source's namespace, with one version counter that orders every change.
//! Providers' events come in through [`InventorySink`]; lists and gets read
//! consistent snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;
use vmm_api::inventory::{
    self, Network, NetworkSpec, SOURCE_KIND_LABEL, SOURCE_NAME_LABEL, SourceReference,
    VirtualMachine, VirtualMachineSpec, VirtualMachineStatus,
};
use vmm_api::names::object_name;
use vmm_providers::InventoryEvent;

use crate::concerns::concerns;
use crate::sink::{InventorySink, SourceId};

/// `(namespace, name)`: the order lists are served in.
pub type ObjectKey = (String, String);

/// The objects of one resource, with the version they were read at.
#[derive(Clone, Debug)]
pub struct Snapshot<T> {
    pub version: u64,
    pub items: Vec<Arc<T>>,
}

pub struct Store {
    state: RwLock<State>,
    /// The newest version, for watchers to wait on.
    versions: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            versions: watch::channel(0).0,
        }
    }
}

/// How many recent changes watchers can resume from.
const CHANGE_LOG_CAPACITY: usize = 10_000;

/// One object of either kind, as a change carries it.
#[derive(Clone, Debug)]
pub enum Object {
    VirtualMachine(Arc<VirtualMachine>),
    Network(Arc<Network>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// What one version changed. A deleted object carries its last state.
#[derive(Clone, Debug)]
pub struct Change {
    pub version: u64,
    pub kind: ChangeType,
    pub object: Object,
}

/// Watchers asked for changes older than the log holds: they must list again.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired;

/// Every change in version order; the oldest are dropped past the capacity.
#[derive(Default)]
struct ChangeLog {
    version: u64,
    recent: VecDeque<Change>,
    dropped_through: u64,
}

impl ChangeLog {
    fn record(&mut self, kind: ChangeType, object: Object) -> u64 {
        self.version += 1;
        self.recent.push_back(Change {
            version: self.version,
            kind,
            object,
        });
        if self.recent.len() > CHANGE_LOG_CAPACITY
            && let Some(oldest) = self.recent.pop_front()
        {
            self.dropped_through = oldest.version;
        }
        self.version
    }
}

#[derive(Default)]
struct State {
    changes: ChangeLog,
    vms: BTreeMap<ObjectKey, Arc<VirtualMachine>>,
    networks: BTreeMap<ObjectKey, Arc<Network>>,
    sources: HashMap<SourceId, SourceObjects>,
}

/// What one source contributed, and what its current watch re-sent so far.
#[derive(Default)]
struct SourceObjects {
    vms: BTreeSet<String>,
    networks: BTreeSet<String>,
    seen_vms: BTreeSet<String>,
    seen_networks: BTreeSet<String>,
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn virtual_machines(&self, namespace: Option<&str>) -> Snapshot<VirtualMachine> {
        let state = self.read();
        Snapshot {
            version: state.changes.version,
            items: in_namespace(&state.vms, namespace),
        }
    }

    pub fn networks(&self, namespace: Option<&str>) -> Snapshot<Network> {
        let state = self.read();
        Snapshot {
            version: state.changes.version,
            items: in_namespace(&state.networks, namespace),
        }
    }

    /// Changes after `version`, oldest first, or [`Expired`] when the log no
    /// longer reaches back that far.
    pub fn changes_since(&self, version: u64) -> Result<Vec<Change>, Expired> {
        let state = self.read();
        let log = &state.changes;
        if version < log.dropped_through || version > log.version {
            return Err(Expired);
        }
        Ok(log
            .recent
            .iter()
            .filter(|change| change.version > version)
            .cloned()
            .collect())
    }

    /// How many VMs and networks the store holds.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.read();
        (state.vms.len(), state.networks.len())
    }

    /// Resolves whenever the store's version moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Runs `change` on the state, then tells watchers if the version moved.
    fn change(&self, change: impl FnOnce(&mut State)) {
        let version = {
            let mut state = self.write();
            change(&mut state);
            state.changes.version
        };
        self.versions.send_if_modified(|current| {
            let moved = *current != version;
            *current = version;
            moved
        });
    }

    pub fn virtual_machine(&self, namespace: &str, name: &str) -> Option<Arc<VirtualMachine>> {
        self.read()
            .vms
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn network(&self, namespace: &str, name: &str) -> Option<Arc<Network>> {
        self.read()
            .networks
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

fn in_namespace<T>(map: &BTreeMap<ObjectKey, Arc<T>>, namespace: Option<&str>) -> Vec<Arc<T>> {
    match namespace {
        None => map.values().cloned().collect(),
        Some(ns) => map
            .range((ns.to_owned(), String::new())..)
            .take_while(|((object_ns, _), _)| object_ns == ns)
            .map(|(_, object)| object.clone())
            .collect(),
    }
}

impl InventorySink for Store {
    fn apply(&self, source: &SourceId, event: InventoryEvent) {
        self.change(|state| apply(state, source, event));
    }

    fn forget(&self, source: &SourceId) {
        self.change(|state| {
            let Some(objects) = state.sources.remove(source) else {
                return;
            };
            for name in objects.vms {
                remove(
                    &mut state.vms,
                    &mut state.changes,
                    source,
                    &name,
                    Object::VirtualMachine,
                );
            }
            for name in objects.networks {
                remove(
                    &mut state.networks,
                    &mut state.changes,
                    source,
                    &name,
                    Object::Network,
                );
            }
        });
    }
}

fn apply(state: &mut State, source: &SourceId, event: InventoryEvent) {
    let objects = state.sources.entry(source.clone()).or_default();
    match event {
        InventoryEvent::Vm(spec) => {
            let vm = virtual_machine(source, spec);
            let name = vm.metadata.name.clone().unwrap_or_default();
            objects.vms.insert(name.clone());
            objects.seen_vms.insert(name.clone());
            upsert(
                &mut state.vms,
                &mut state.changes,
                source,
                name,
                vm,
                Object::VirtualMachine,
            );
        }
        InventoryEvent::Network(spec) => {
            let network = network(source, spec);
            let name = network.metadata.name.clone().unwrap_or_default();
            objects.networks.insert(name.clone());
            objects.seen_networks.insert(name.clone());
            upsert(
                &mut state.networks,
                &mut state.changes,
                source,
                name,
                network,
                Object::Network,
            );
        }
        InventoryEvent::VmRemoved { id } => {
            let name = object_name(&source.name, &id);
            objects.vms.remove(&name);
            remove(
                &mut state.vms,
                &mut state.changes,
                source,
                &name,
                Object::VirtualMachine,
            );
        }
        InventoryEvent::NetworkRemoved { id } => {
            let name = object_name(&source.name, &id);
            objects.networks.remove(&name);
            remove(
                &mut state.networks,
                &mut state.changes,
                source,
                &name,
                Object::Network,
            );
        }
        InventoryEvent::Synced => {
            // The watch re-sent its whole set: whatever it did not is gone.
            let gone_vms: Vec<String> =
                objects.vms.difference(&objects.seen_vms).cloned().collect();
            let gone_networks: Vec<String> = objects
                .networks
                .difference(&objects.seen_networks)
                .cloned()
                .collect();
            objects.vms = std::mem::take(&mut objects.seen_vms);
            objects.networks = std::mem::take(&mut objects.seen_networks);
            for name in gone_vms {
                remove(
                    &mut state.vms,
                    &mut state.changes,
                    source,
                    &name,
                    Object::VirtualMachine,
                );
            }
            for name in gone_networks {
                remove(
                    &mut state.networks,
                    &mut state.changes,
                    source,
                    &name,
                    Object::Network,
                );
            }
        }
    }
}

/// Stores `object` unless an equal one is there, giving it the next version.
fn upsert<T: Clone + PartialEq + HasMeta>(
    map: &mut BTreeMap<ObjectKey, Arc<T>>,
    changes: &mut ChangeLog,
    source: &SourceId,
    name: String,
    mut object: T,
    wrap: fn(Arc<T>) -> Object,
) {
    let key = (source.namespace.clone(), name);
    let kind = match map.get(&key) {
        None => ChangeType::Added,
        Some(existing) => {
            let mut unchanged = (**existing).clone();
            unchanged.meta_mut().resource_version = None;
            if unchanged == object {
                return;
            }
            ChangeType::Modified
        }
    };
    object.meta_mut().resource_version = Some((changes.version + 1).to_string());
    let object = Arc::new(object);
    changes.record(kind, wrap(object.clone()));
    map.insert(key, object);
}

fn remove<T: Clone + HasMeta>(
    map: &mut BTreeMap<ObjectKey, Arc<T>>,
    changes: &mut ChangeLog,
    source: &SourceId,
    name: &str,
    wrap: fn(Arc<T>) -> Object,
) {
    if let Some(removed) = map.remove(&(source.namespace.clone(), name.to_owned())) {
        let mut last = (*removed).clone();
        last.meta_mut().resource_version = Some((changes.version + 1).to_string());
        changes.record(ChangeType::Deleted, wrap(Arc::new(last)));
    }
}

trait HasMeta {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

impl HasMeta for VirtualMachine {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl HasMeta for Network {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn metadata(source: &SourceId, id: &str) -> ObjectMeta {
    let kind = serde_json::to_value(source.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    ObjectMeta {
        name: Some(object_name(&source.name, id)),
        namespace: Some(source.namespace.clone()),
        labels: Some(BTreeMap::from([
            (SOURCE_KIND_LABEL.to_owned(), kind),
            (SOURCE_NAME_LABEL.to_owned(), source.name.clone()),
        ])),
        ..ObjectMeta::default()
    }
}

fn source_reference(source: &SourceId) -> Option<SourceReference> {
    Some(SourceReference {
        kind: source.kind,
        name: source.name.clone(),
    })
}

fn virtual_machine(source: &SourceId, mut spec: VirtualMachineSpec) -> VirtualMachine {
    spec.source = source_reference(source);
    VirtualMachine {
        api_version: inventory::API_VERSION.to_owned(),
        kind: inventory::VIRTUAL_MACHINES.kind.to_owned(),
        metadata: metadata(source, &spec.id),
        status: VirtualMachineStatus {
            concerns: concerns(&spec),
        },
        spec,
    }
}

fn network(source: &SourceId, mut spec: NetworkSpec) -> Network {
    spec.source = source_reference(source);
    Network {
        api_version: inventory::API_VERSION.to_owned(),
        kind: inventory::NETWORKS.kind.to_owned(),
        metadata: metadata(source, &spec.id),
        spec,
    }
}

#[cfg(test)]
mod tests {
    use vmm_api::SourceKind;
    use vmm_api::inventory::PowerState;

    use super::*;

    fn source(namespace: &str, name: &str) -> SourceId {
        SourceId {
            namespace: namespace.into(),
            kind: SourceKind::Vsphere,
            name: name.into(),
        }
    }

    fn vm(id: &str, power_state: PowerState) -> InventoryEvent {
        InventoryEvent::Vm(VirtualMachineSpec {
            id: id.into(),
            display_name: format!("VM {id}"),
            power_state,
            ..VirtualMachineSpec::default()
        })
    }

    fn names(store: &Store, namespace: Option<&str>) -> Vec<String> {
        store
            .virtual_machines(namespace)
            .items
            .iter()
            .map(|vm| vm.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn objects_live_in_their_sources_namespace_with_labels() {
        let store = Store::default();
        store.apply(&source("team-a", "vc"), vm("vm-1", PowerState::On));
        store.apply(&source("team-b", "vc"), vm("vm-1", PowerState::On));
        assert_eq!(names(&store, Some("team-a")), ["vc-vm-1"]);
        assert_eq!(names(&store, None), ["vc-vm-1", "vc-vm-1"]);
        assert!(names(&store, Some("team")).is_empty());
        let vm = store.virtual_machine("team-a", "vc-vm-1").unwrap();
        let labels = vm.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SOURCE_KIND_LABEL], "Vsphere");
        assert_eq!(labels[SOURCE_NAME_LABEL], "vc");
        assert_eq!(vm.spec.source.as_ref().unwrap().name, "vc");
        assert_eq!(vm.api_version, "inventory.harvesterhci.io/v1");
    }

    #[test]
    fn versions_move_only_on_real_changes() {
        let store = Store::default();
        let vc = source("ns", "vc");
        store.apply(&vc, vm("vm-1", PowerState::On));
        let first = store.virtual_machines(None).version;
        store.apply(&vc, vm("vm-1", PowerState::On));
        assert_eq!(
            store.virtual_machines(None).version,
            first,
            "an unchanged VM is no change"
        );
        store.apply(&vc, vm("vm-1", PowerState::Off));
        let vm = store.virtual_machine("ns", "vc-vm-1").unwrap();
        assert_eq!(vm.spec.power_state, PowerState::Off);
        assert_eq!(vm.metadata.resource_version.as_deref(), Some("2"));
    }

    #[test]
    fn a_resync_drops_what_was_not_resent_and_forget_drops_all() {
        let store = Store::default();
        let vc = source("ns", "vc");
        for id in ["vm-1", "vm-2", "vm-3"] {
            store.apply(&vc, vm(id, PowerState::On));
        }
        store.apply(&vc, InventoryEvent::Synced);
        store.apply(&vc, InventoryEvent::VmRemoved { id: "vm-3".into() });
        assert_eq!(names(&store, None), ["vc-vm-1", "vc-vm-2"]);
        // A reconnect re-sends the full set: vm-2 vanished while we were away.
        store.apply(&vc, vm("vm-1", PowerState::On));
        store.apply(&vc, InventoryEvent::Synced);
        assert_eq!(names(&store, None), ["vc-vm-1"]);
        store.forget(&vc);
        assert!(names(&store, None).is_empty());
    }
}
