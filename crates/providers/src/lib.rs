//! Everything that talks to a source lives here, one module per kind of source
//! behind one trait, [`InventoryProvider`]. What is common to all kinds: reading
//! credentials out of the source's Secret, and the inventory events.
#![forbid(unsafe_code)]

use std::future::Future;

use tokio::sync::mpsc;
use vmm_api::inventory::{NetworkSpec, VirtualMachineSpec};

pub mod credentials;
pub mod vsphere;

pub use credentials::{Credentials, CredentialsError, SecretString};

/// Everything a source holds, read at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InventorySnapshot {
    pub vms: Vec<VirtualMachineSpec>,
    pub networks: Vec<NetworkSpec>,
}

/// One change of a source's inventory, as a watch reports it.
#[derive(Clone, Debug, PartialEq)]
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

/// A connected source that can list and watch its inventory.
pub trait InventoryProvider: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Product and version of the endpoint, for `status.endpointVersion`.
    fn endpoint_version(&self) -> String;

    /// Every VM and network, once.
    fn inventory(&self) -> impl Future<Output = Result<InventorySnapshot, Self::Error>> + Send;

    /// Sends the full inventory, then [`InventoryEvent::Synced`], then changes,
    /// until `events` is closed (`Ok`) or the source fails (`Err`).
    fn watch(
        &self,
        events: mpsc::Sender<InventoryEvent>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
