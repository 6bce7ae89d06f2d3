//! The inventory in memory: every source's VMs and networks as API objects, in
//! their source's namespace, with one version counter that orders every change.
//! Providers' events come in through [`InventorySink`]; lists and gets read
//! consistent snapshots. Concerns are computed here, when a VM, its source's
//! networks or the cluster facts they depend on change.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;
use vmm_api::inventory::{
    self, Network, NetworkSpec, SOURCE_KIND_LABEL, SOURCE_NAME_LABEL, SourceReference,
    VirtualMachine, VirtualMachineSpec, VirtualMachineStatus,
};
use vmm_api::names::object_name;
use vmm_core::InventoryEvent;

use crate::concerns::{ClusterFacts, Context, concerns};
use crate::pages::Pages;
use crate::resources::{InventoryResource, selected_alike};
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
    state: RwLock<Contents>,
    /// The newest version, for watchers to wait on.
    versions: watch::Sender<u64>,
    /// Older snapshots that paged lists are still reading.
    pages: Pages,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (vms, networks) = self.counts();
        f.debug_struct("Store")
            .field("vms", &vms)
            .field("networks", &networks)
            .finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        let first = first_version();
        Self {
            state: RwLock::new(Contents {
                changes: ChangeLog {
                    version: first,
                    recent: VecDeque::new(),
                    dropped_through: first,
                },
                ..Contents::default()
            }),
            versions: watch::channel(first).0,
            pages: Pages::default(),
        }
    }
}

/// Versions count up from a random multiple of 2^33, so two replicas (or a
/// replica before and after a restart) never issue the same version: given
/// another's version, a replica answers 410 and the client lists again, never
/// serves a wrong page or misses an event. Below 2^53: Rancher's UI compares
/// versions as JavaScript numbers, which are exact only up to there (above,
/// it resumed watches from a rounded version and steve refused them).
fn first_version() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system RNG does not fail on Linux; a fixed start only loses the
    // cross-replica guarantee, never correctness within one replica.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    (u64::from_le_bytes(bytes) & ((1 << FIRST_VERSION_BITS) - 1)) << VERSIONS_PER_BASE_BITS
}

/// 2^33 versions per process before its range meets the next base's.
const VERSIONS_PER_BASE_BITS: u32 = 33;
/// Random bits of the base: two replicas share one with a chance of 1 in 2^20.
const FIRST_VERSION_BITS: u32 = 20;
const _: () = assert!(VERSIONS_PER_BASE_BITS + FIRST_VERSION_BITS == 53);

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

/// What one version changed. A deleted object carries its last state; a
/// modified one also its state before when a selector could tell the two
/// apart, so a watch with a selector can tell an object that stopped matching
/// (DELETED) from one that started (ADDED). Without it, every selector selects
/// both states or neither.
#[derive(Clone, Debug)]
pub struct Change {
    pub version: u64,
    pub kind: ChangeType,
    pub object: Object,
    pub previous: Option<Object>,
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
    fn record(&mut self, kind: ChangeType, object: Object, previous: Option<Object>) {
        self.version += 1;
        self.recent.push_back(Change {
            version: self.version,
            kind,
            object,
            previous,
        });
        if self.recent.len() > CHANGE_LOG_CAPACITY
            && let Some(oldest) = self.recent.pop_front()
        {
            self.dropped_through = oldest.version;
        }
    }
}

#[derive(Default)]
struct Contents {
    changes: ChangeLog,
    vms: Collection<VirtualMachine>,
    networks: Collection<Network>,
    cluster: ClusterFacts,
    /// When each source last confirmed that its objects here are current.
    confirmed: HashMap<SourceId, Instant>,
    /// When a change from each source last reached the store.
    changed: HashMap<SourceId, SystemTime>,
}

/// The objects of one kind, and which source contributed which names.
struct Collection<T> {
    objects: BTreeMap<ObjectKey, Arc<T>>,
    by_source: HashMap<SourceId, Contributed>,
}

impl<T> Default for Collection<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            by_source: HashMap::new(),
        }
    }
}

/// One source's names, and those its current watch has sent since it began.
#[derive(Default)]
struct Contributed {
    current: BTreeSet<String>,
    resent: BTreeSet<String>,
}

impl<T: InventoryResource> Collection<T> {
    /// Stores `object` unless an equal one is there, giving it the next
    /// version; true when something changed.
    fn upsert(&mut self, changes: &mut ChangeLog, source: &SourceId, mut object: T) -> bool {
        let name = object.metadata().name.clone().unwrap_or_default();
        let contributed = self.by_source.entry(source.clone()).or_default();
        contributed.current.insert(name.clone());
        contributed.resent.insert(name.clone());
        let key = (source.namespace.clone(), name);
        let previous = self.objects.get(&key).cloned();
        if let Some(existing) = &previous {
            object.metadata_mut().resource_version = existing.metadata().resource_version.clone();
            if **existing == object {
                return false;
            }
        }
        object.metadata_mut().resource_version = Some((changes.version + 1).to_string());
        let object = Arc::new(object);
        self.objects.insert(key, object.clone());
        let (kind, previous) = match previous {
            None => (ChangeType::Added, None),
            Some(before) => (
                ChangeType::Modified,
                // Kept only while a watch's selector may need it.
                (!selected_alike(before.as_ref(), object.as_ref())).then(|| T::wrap(before)),
            ),
        };
        changes.record(kind, T::wrap(object), previous);
        true
    }

    fn remove(&mut self, changes: &mut ChangeLog, source: &SourceId, name: &str) -> bool {
        if let Some(contributed) = self.by_source.get_mut(source) {
            contributed.current.remove(name);
        }
        let Some(removed) = self
            .objects
            .remove(&(source.namespace.clone(), name.to_owned()))
        else {
            return false;
        };
        let mut last = (*removed).clone();
        last.metadata_mut().resource_version = Some((changes.version + 1).to_string());
        changes.record(ChangeType::Deleted, T::wrap(Arc::new(last)), None);
        true
    }

    /// A new watch of the source begins: what it sends from now on counts.
    fn resync(&mut self, source: &SourceId) {
        if let Some(contributed) = self.by_source.get_mut(source) {
            contributed.resent.clear();
        }
    }

    /// The source's watch re-sent its whole set: whatever it did not is gone.
    fn synced(&mut self, changes: &mut ChangeLog, source: &SourceId) -> bool {
        let Some(contributed) = self.by_source.get_mut(source) else {
            return false;
        };
        let gone: Vec<String> = contributed
            .current
            .difference(&contributed.resent)
            .cloned()
            .collect();
        contributed.current = std::mem::take(&mut contributed.resent);
        let mut changed = false;
        for name in gone {
            changed |= self.remove(changes, source, &name);
        }
        changed
    }

    fn forget(&mut self, changes: &mut ChangeLog, source: &SourceId) {
        if let Some(contributed) = self.by_source.remove(source) {
            for name in contributed.current {
                self.remove(changes, source, &name);
            }
        }
    }

    fn of_source<'a>(&'a self, source: &'a SourceId) -> impl Iterator<Item = &'a T> + 'a {
        self.by_source
            .get(source)
            .into_iter()
            .flat_map(|contributed| contributed.current.iter())
            .filter_map(|name| self.objects.get(&(source.namespace.clone(), name.clone())))
            .map(|object| object.as_ref())
    }

    fn snapshot(&self, version: u64, namespace: Option<&str>) -> Snapshot<T> {
        let items = match namespace {
            None => self.objects.values().cloned().collect(),
            Some(ns) => self
                .objects
                .range((ns.to_owned(), String::new())..)
                .take_while(|((object_ns, _), _)| object_ns == ns)
                .map(|(_, object)| object.clone())
                .collect(),
        };
        Snapshot { version, items }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        self.objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, Contents> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Contents> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn virtual_machines(&self, namespace: Option<&str>) -> Snapshot<VirtualMachine> {
        let state = self.read();
        state.vms.snapshot(state.changes.version, namespace)
    }

    pub fn networks(&self, namespace: Option<&str>) -> Snapshot<Network> {
        let state = self.read();
        state.networks.snapshot(state.changes.version, namespace)
    }

    pub fn virtual_machine(&self, namespace: &str, name: &str) -> Option<Arc<VirtualMachine>> {
        self.read().vms.get(namespace, name)
    }

    pub fn network(&self, namespace: &str, name: &str) -> Option<Arc<Network>> {
        self.read().networks.get(namespace, name)
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
    pub fn pages(&self) -> &Pages {
        &self.pages
    }

    pub fn counts(&self) -> (usize, usize) {
        let state = self.read();
        (state.vms.objects.len(), state.networks.objects.len())
    }

    /// For each source that has synced: how long since it last confirmed
    /// that what the store holds of it is current.
    pub fn sync_ages(&self) -> Vec<(SourceId, Duration)> {
        let state = self.read();
        let mut ages: Vec<_> = state
            .confirmed
            .iter()
            .map(|(source, at)| (source.clone(), at.elapsed()))
            .collect();
        ages.sort();
        ages
    }

    /// For each source that changed something here: when it last did.
    pub fn last_changes(&self) -> Vec<(SourceId, SystemTime)> {
        let state = self.read();
        let mut changes: Vec<_> = state
            .changed
            .iter()
            .map(|(source, at)| (source.clone(), *at))
            .collect();
        changes.sort();
        changes
    }

    /// Resolves whenever the store's version moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// New facts about the cluster: VMs whose concerns change get a new version.
    pub fn set_cluster_facts(&self, facts: ClusterFacts) {
        self.change(|state| {
            if state.cluster != facts {
                state.cluster = facts;
                refresh_concerns(state, None);
            }
        });
    }

    /// Runs `change` on the state, then tells watchers if the version moved.
    fn change(&self, change: impl FnOnce(&mut Contents)) {
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
}

impl InventorySink for Store {
    fn resync(&self, source: &SourceId) {
        self.change(|state| {
            state.vms.resync(source);
            state.networks.resync(source);
        });
    }

    fn apply(&self, source: &SourceId, event: InventoryEvent) {
        self.change(|state| {
            let version = state.changes.version;
            apply(state, source, event);
            if state.changes.version != version {
                state.changed.insert(source.clone(), SystemTime::now());
            }
        });
    }

    fn forget(&self, source: &SourceId) {
        self.change(|state| {
            state.vms.forget(&mut state.changes, source);
            state.networks.forget(&mut state.changes, source);
            state.confirmed.remove(source);
            state.changed.remove(source);
        });
    }
}

fn apply(state: &mut Contents, source: &SourceId, event: InventoryEvent) {
    let networks_changed = match event {
        InventoryEvent::Vm(spec) => {
            let vm = virtual_machine(state, source, spec);
            state.vms.upsert(&mut state.changes, source, vm);
            false
        }
        InventoryEvent::Network(spec) => {
            let network = network(source, spec);
            state.networks.upsert(&mut state.changes, source, network)
        }
        InventoryEvent::VmRemoved { id } => {
            let name = object_name(&source.name, &id);
            state.vms.remove(&mut state.changes, source, &name);
            false
        }
        InventoryEvent::NetworkRemoved { id } => {
            let name = object_name(&source.name, &id);
            state.networks.remove(&mut state.changes, source, &name)
        }
        InventoryEvent::Synced => {
            state.vms.synced(&mut state.changes, source);
            state.confirmed.insert(source.clone(), Instant::now());
            state.networks.synced(&mut state.changes, source)
        }
        InventoryEvent::Current => {
            state.confirmed.insert(source.clone(), Instant::now());
            false
        }
    };
    if networks_changed {
        refresh_concerns(state, Some(source));
    }
}

/// The VLAN of each of the source's networks, by display name.
fn network_vlans(state: &Contents, source: &SourceId) -> HashMap<String, Option<i32>> {
    state
        .networks
        .of_source(source)
        .map(|n| (n.spec.display_name.clone(), n.spec.vlan))
        .collect()
}

/// Recomputes the concerns of the VMs of `only` (or of every source), storing
/// a new version of each VM whose concerns changed.
fn refresh_concerns(state: &mut Contents, only: Option<&SourceId>) {
    let sources: Vec<SourceId> = match only {
        Some(source) => vec![source.clone()],
        None => state.vms.by_source.keys().cloned().collect(),
    };
    for source in sources {
        let vlans = network_vlans(state, &source);
        let context = Context {
            namespace: &source.namespace,
            network_vlans: &vlans,
            cluster: &state.cluster,
        };
        let changed: Vec<VirtualMachine> = state
            .vms
            .of_source(&source)
            .filter_map(|vm| {
                let now = concerns(&vm.spec, &context);
                (now != vm.status.concerns).then(|| VirtualMachine {
                    status: VirtualMachineStatus { concerns: now },
                    ..vm.clone()
                })
            })
            .collect();
        for vm in changed {
            state.vms.upsert(&mut state.changes, &source, vm);
        }
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

fn virtual_machine(
    state: &Contents,
    source: &SourceId,
    mut spec: VirtualMachineSpec,
) -> VirtualMachine {
    spec.source = source_reference(source);
    let vlans = network_vlans(state, source);
    let context = Context {
        namespace: &source.namespace,
        network_vlans: &vlans,
        cluster: &state.cluster,
    };
    let mut concerns = concerns(&spec, &context);
    // A vector collected or pushed to one element at a time keeps room for
    // four; held for every VM, the empty slots were ~9 MiB of the heap at
    // 10,000 VMs (docs/benchmarks.md).
    spec.disks.shrink_to_fit();
    spec.nics.shrink_to_fit();
    spec.host_devices.shrink_to_fit();
    concerns.shrink_to_fit();
    VirtualMachine {
        api_version: inventory::API_VERSION.to_owned(),
        kind: inventory::VIRTUAL_MACHINES.kind.to_owned(),
        metadata: metadata(source, &spec.id),
        status: VirtualMachineStatus { concerns },
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
    use vmm_api::inventory::{Disk, Nic, PowerState};

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
    fn held_objects_keep_no_spare_room() {
        let store = Store::default();
        // Collected as providers do: one element, room for four.
        let disks: Vec<Disk> = (0..3)
            .filter(|&i| i == 0)
            .map(|_| Disk::default())
            .collect();
        let nics: Vec<Nic> = (0..3).filter(|&i| i == 0).map(|_| Nic::default()).collect();
        assert!(disks.capacity() > 1 && nics.capacity() > 1);
        let spec = VirtualMachineSpec {
            id: "vm-1".into(),
            snapshots: 1,
            disks,
            nics,
            ..VirtualMachineSpec::default()
        };
        store.apply(&source("ns", "vc"), InventoryEvent::Vm(spec));
        let vm = store.virtual_machine("ns", "vc-vm-1").unwrap();
        assert_eq!(vm.spec.disks.capacity(), 1);
        assert_eq!(vm.spec.nics.capacity(), 1);
        let concerns = &vm.status.concerns;
        assert!(!concerns.is_empty());
        assert_eq!(concerns.capacity(), concerns.len());
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
        assert_eq!(
            vm.metadata.resource_version,
            Some((first + 1).to_string()),
            "one version per real change"
        );
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
        store.apply(&vc, vm("vm-4", PowerState::On));
        // A reconnect re-sends the full set: vm-2, and vm-4 seen since the
        // last sync, vanished while we were away.
        store.resync(&vc);
        store.apply(&vc, vm("vm-1", PowerState::On));
        store.apply(&vc, InventoryEvent::Synced);
        assert_eq!(names(&store, None), ["vc-vm-1"]);
        store.forget(&vc);
        assert!(names(&store, None).is_empty());
    }

    #[test]
    fn another_stores_versions_are_expired_here() {
        let (one, other) = (Store::default(), Store::default());
        let vc = source("ns", "vc");
        for store in [&one, &other] {
            store.apply(&vc, vm("vm-1", PowerState::On));
            store.apply(&vc, vm("vm-1", PowerState::Off));
        }
        let (mine, theirs) = (
            one.virtual_machines(None).version,
            other.virtual_machines(None).version,
        );
        assert_ne!(mine, theirs, "each store starts at a random base");
        // Exact as a JavaScript number, with room for 2^33 changes.
        for _ in 0..100 {
            assert!(first_version() + (1 << VERSIONS_PER_BASE_BITS) <= 1 << 53);
        }
        assert!(one.changes_since(mine - 2).is_ok());
        for version in [theirs, theirs - 1, 0, 1] {
            assert_eq!(one.changes_since(version).unwrap_err(), Expired);
        }
    }

    #[test]
    fn modified_changes_carry_the_state_before_while_selectors_tell_it_apart() {
        let store = Store::default();
        let vc = source("ns", "vc");
        store.apply(&vc, vm("vm-1", PowerState::On));
        let added = store.virtual_machines(None).version;
        store.apply(&vc, vm("vm-1", PowerState::Off));
        let changes = store.changes_since(added).unwrap();
        let [change] = changes.as_slice() else {
            panic!("one change: {changes:?}")
        };
        assert_eq!(change.kind, ChangeType::Modified);
        let Some(Object::VirtualMachine(before)) = &change.previous else {
            panic!("no previous state")
        };
        assert_eq!(before.spec.power_state, PowerState::On);

        // More CPUs: no selectable field changed, so no state before is kept.
        let powered_off = store.virtual_machines(None).version;
        let InventoryEvent::Vm(mut spec) = vm("vm-1", PowerState::Off) else {
            unreachable!()
        };
        spec.cpus = 8;
        store.apply(&vc, InventoryEvent::Vm(spec));
        let changes = store.changes_since(powered_off).unwrap();
        assert!(changes[0].previous.is_none(), "{changes:?}");
    }

    fn on_network(id: &str, network: &str) -> InventoryEvent {
        InventoryEvent::Vm(VirtualMachineSpec {
            id: id.into(),
            display_name: "Web 01".into(),
            disks: vec![vmm_api::inventory::Disk::default()],
            nics: vec![vmm_api::inventory::Nic {
                network: Some(network.into()),
                ..Default::default()
            }],
            ..VirtualMachineSpec::default()
        })
    }

    fn reasons(store: &Store, namespace: &str, name: &str) -> Vec<String> {
        let vm = store.virtual_machine(namespace, name).unwrap();
        vm.status
            .concerns
            .iter()
            .map(|c| c.reason.clone())
            .collect()
    }

    #[test]
    fn concerns_follow_networks_and_cluster_facts() {
        use crate::concerns::NadVlans;

        let store = Store::default();
        let vc = source("team-a", "vc");
        store.apply(&vc, on_network("vm-1", "prod"));
        assert!(
            reasons(&store, "team-a", "vc-vm-1").is_empty(),
            "nothing known yet"
        );

        let facts = |nads: Vec<NadVlans>, vms: &[(&str, &str)]| ClusterFacts {
            nads: Some(nads),
            vms: Some(
                vms.iter()
                    .map(|(ns, n)| ((*ns).to_owned(), (*n).to_owned()))
                    .collect(),
            ),
            macs: Some(BTreeMap::new()),
        };
        store.set_cluster_facts(facts(vec![NadVlans::Vlan(100)], &[("team-a", "web-01")]));
        assert_eq!(reasons(&store, "team-a", "vc-vm-1"), ["NameTaken"]);

        // The source now says prod is VLAN 200: no NAD carries it.
        store.apply(
            &vc,
            InventoryEvent::Network(NetworkSpec {
                id: "net-1".into(),
                display_name: "prod".into(),
                vlan: Some(200),
                ..NetworkSpec::default()
            }),
        );
        assert_eq!(
            reasons(&store, "team-a", "vc-vm-1"),
            ["NoNetworkToMapTo", "NameTaken"]
        );
        let version = store.virtual_machines(None).version;
        store.set_cluster_facts(facts(vec![NadVlans::Vlan(200)], &[]));
        assert!(reasons(&store, "team-a", "vc-vm-1").is_empty());
        assert_eq!(
            store.changes_since(version).unwrap().len(),
            1,
            "the VM got one new version"
        );
    }

    #[test]
    fn sources_report_how_fresh_they_are_once_synced() {
        let store = Store::default();
        let vc = source("ns", "vc");
        store.apply(&vc, vm("vm-1", PowerState::On));
        assert!(store.sync_ages().is_empty(), "not synced yet");
        store.apply(&vc, InventoryEvent::Synced);
        store.apply(&vc, InventoryEvent::Current);
        let ages = store.sync_ages();
        assert_eq!(ages.len(), 1);
        assert_eq!(ages[0].0, vc);
        let [(changed, _)] = store.last_changes().try_into().unwrap();
        assert_eq!(changed, vc);
        store.forget(&vc);
        assert!(store.sync_ages().is_empty());
        assert!(store.last_changes().is_empty());
    }
}
