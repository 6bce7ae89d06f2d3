//! Where the per-source sync tasks deliver what providers report. The inventory
//! store implements it; tests implement it to record what arrives.

use vmm_api::SourceKind;
use vmm_core::InventoryEvent;

/// A source object: its namespace is where its inventory appears.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub namespace: String,
    pub kind: SourceKind,
    pub name: String,
}

pub trait InventorySink: Send + Sync + 'static {
    /// A new watch of the source begins: it sends its full set, then
    /// `Synced`; what the sink held for the source and was not re-sent by
    /// then is gone (whatever the previous watch sent before it broke).
    fn resync(&self, source: &SourceId);

    /// One event of a source's watch, in the order the provider sent it.
    fn apply(&self, source: &SourceId, event: InventoryEvent);

    /// The source is gone, or may no longer be read (its Secret was removed or
    /// now lives elsewhere): drop all it had.
    fn forget(&self, source: &SourceId);
}
