//! The small text formats the controller and the vSphere client read from their peers,
//! parsed without I/O: the `Range` an image importer asks the disk endpoint for and the
//! `Content-Range` vCenter answers a resumed download with ([`range`]); the endpoint URL a
//! vSphere source names, and what vCenter sends as text: NFC device keys and disk URLs,
//! datastore paths, object names; and what of such a URL a message may show ([`vsphere`]).
//!
//! They are outside input, so they live apart from the crates that use them, with a
//! small dependency tree the fuzz targets (`fuzz/`) build in seconds; the vSphere
//! client itself pulls vim_rs, far too big for that.
#![forbid(unsafe_code)]

mod error;
pub mod range;
pub mod vsphere;

pub use error::Error;
