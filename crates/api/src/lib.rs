//! Types of the VM migration APIs, shared by the apiserver, the controller, the tests
//! and (through the generated CRDs) the UI. Pure data: no I/O lives here.
//!
//! - [`source`]: `source.harvesterhci.io/v1` `Vsphere`, `Openstack`, `Harvester` (CRDs)
//! - [`external`]: KubeVirt's and Harvester's kinds we use, as dynamic resources
//! - [`importjob`]: `importjob.harvesterhci.io/v1` `VirtualMachine`, Rust name [`ImportJob`] (CRD)
#![forbid(unsafe_code)]
// kube-derive takes one `printcolumn(...)` per column, which this lint misreads
// as the same attribute repeated.
#![allow(clippy::duplicated_attributes)]

pub mod crds;
pub mod external;
pub mod importjob;
pub mod inventory;
pub mod names;
pub mod quantity;
pub mod source;

pub use importjob::{ImportJob, ImportJobSpec, ImportJobStatus};
pub use source::{Harvester, Openstack, SourceKind, SourceStatus, Vsphere};

/// Every kind of ours is in this category, so `kubectl get migration` lists them all.
pub const CATEGORY: &str = "migration";
