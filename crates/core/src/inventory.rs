//! What a source's inventory watch reports, whatever the kind of source.

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
