//! The source-neutral core that both binaries build on, and that every
//! provider (`crates/providers`) implements. Nothing here talks to a source
//! or to Kubernetes: no vendor client is in this crate's dependency tree.
//!
//! | module | what |
//! |---|---|
//! | [`provider`] | the traits a source kind implements: [`Provider`] (log in), [`Session`] (inventory, VMs, power, exports), [`Export`] and [`DiskFile`] |
//! | [`inventory`] | what a source's watch reports: [`InventoryEvent`], [`InventorySnapshot`] |
//! | [`vm`] | a VM as an import sees it: the inventory spec plus each disk's key and whether it can be exported |
//! | [`error`] | [`ProviderError`]: a condition [`Reason`], a message that names the fix, and whether a retry may cure it |
//! | [`credentials`] | a source's Secret read per kind; secret values never print |
//! | [`tls`] | the TLS client configuration every provider uses: a source's CA bundle, or the platform's trust store |
#![forbid(unsafe_code)]

pub mod credentials;
pub mod error;
pub mod inventory;
pub mod provider;
pub mod tls;
pub mod vm;

pub use credentials::{Credentials, CredentialsError, SecretString};
pub use error::{ProviderError, Reason};
pub use inventory::{InventoryEvent, InventorySnapshot, Reported};
pub use provider::{ByteStream, DiskFile, Export, ExportEnd, ExportRecorder, Provider, Session};
pub use vm::{Vm, VmDisk};
