//! What a source's inventory watch reports, whatever the kind of source,
//! and [`Reported`], which turns a provider's whole current inventory into
//! the events of what changed since it last reported.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use vmm_api::inventory::{NetworkSpec, VirtualMachineSpec};

/// Everything a source holds, read at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InventorySnapshot {
    pub vms: Vec<VirtualMachineSpec>,
    pub networks: Vec<NetworkSpec>,
}

/// One change of a source's inventory, as a watch reports it.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "most events are VMs: boxing them would allocate once per event to shrink the rare others"
)]
pub enum InventoryEvent {
    /// A VM was seen for the first time or changed: its whole spec.
    Vm(VirtualMachineSpec),
    VmRemoved {
        id: String,
    },
    Network(NetworkSpec),
    NetworkRemoved {
        id: String,
    },
    /// The full set was sent: what was not reported before this is gone.
    /// Sent once per watch, after the initial events.
    Synced,
    /// After `Synced`: the source confirmed that every change up to now was
    /// sent (a long poll returned). How fresh the inventory is, for metrics.
    Current,
}

/// What a watch has reported, by id, to report only changes.
#[derive(Default)]
pub struct Reported {
    vms: BTreeMap<String, VirtualMachineSpec>,
    networks: BTreeMap<String, NetworkSpec>,
}

impl Reported {
    /// Sends the difference between `vms` and `networks` (the whole
    /// inventory now, by id) and what was sent before, then `done`. False
    /// when the receiver is gone.
    pub async fn report(
        &mut self,
        vms: BTreeMap<String, VirtualMachineSpec>,
        networks: BTreeMap<String, NetworkSpec>,
        events: &mpsc::Sender<InventoryEvent>,
        done: InventoryEvent,
    ) -> bool {
        let mut changes = Vec::new();
        diff(
            &self.networks,
            &networks,
            &mut changes,
            InventoryEvent::Network,
            |id| InventoryEvent::NetworkRemoved { id },
        );
        diff(&self.vms, &vms, &mut changes, InventoryEvent::Vm, |id| {
            InventoryEvent::VmRemoved { id }
        });
        self.networks = networks;
        self.vms = vms;
        for event in changes.into_iter().chain([done]) {
            if events.send(event).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn diff<T: Clone + PartialEq>(
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    changes: &mut Vec<InventoryEvent>,
    changed: impl Fn(T) -> InventoryEvent,
    removed: impl Fn(String) -> InventoryEvent,
) {
    for (id, spec) in after {
        if before.get(id) != Some(spec) {
            changes.push(changed(spec.clone()));
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        changes.push(removed(id.clone()));
    }
}
