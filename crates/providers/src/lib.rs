//! The providers: one module per kind of source, each implementing the
//! traits of `vmm-core` (`crates/core`), and [`provider`], the one place a
//! source kind is mapped to its provider. Only this crate names a vendor's
//! client library.
#![forbid(unsafe_code)]

pub mod harvester;
pub mod openstack;
pub mod vsphere;

use std::sync::Arc;

use vmm_api::SourceKind;
use vmm_core::Provider;

/// The provider of a kind of source; `None` for a kind none serves.
pub fn provider(kind: SourceKind) -> Option<Arc<dyn Provider>> {
    match kind {
        SourceKind::Vsphere => Some(Arc::new(vsphere::Vsphere)),
        SourceKind::Openstack => Some(Arc::new(openstack::Openstack)),
        SourceKind::Harvester => Some(Arc::new(harvester::Harvester)),
    }
}
