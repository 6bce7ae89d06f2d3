//! Disk transfers as Kubernetes Jobs (`--transfer-mode=jobs`,
//! docs/scale-out.md): instead of serving every disk from the leader's pod,
//! the controller hands each disk to a worker pod of its own, a Job running
//! this binary's `transfer` subcommand ([`worker`]). The worker re-opens the
//! job's export by its id through the provider seam, serves that one disk at
//! its token through a Service of its own, and ends only when the controller
//! deletes its Job once the image is imported. The controller keeps the
//! phase machine and the export (it ends it), limits transfers globally and
//! per source host ([`pool`]), and reads each worker's progress from its
//! admin port.
//!
//! What a worker needs is in one Secret ([`TransferSpec`], mounted as a file,
//! never in the pod spec or its environment); the worker has no Kubernetes
//! API access at all.

pub mod manifests;
pub mod pool;
pub mod worker;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};
use vmm_api::source::{SourceKind, SourceSpec};

/// The Secret key (and the file in the worker) holding the [`TransferSpec`].
pub const SPEC_KEY: &str = "transfer.json";

/// Everything one worker needs to serve one disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferSpec {
    pub kind: SourceKind,
    pub source: SourceSpec,
    /// The source's credentials: its Secret's name (for messages) and data.
    pub credentials_secret: String,
    pub credentials: BTreeMap<String, ByteString>,
    pub vm_id: String,
    /// The export the controller opened and holds.
    pub export_id: String,
    /// The disk's key at the source, raw size, and URL token.
    pub disk_key: String,
    pub capacity: u64,
    pub token: String,
}

/// What a worker reports on its admin port's `/progress`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerProgress {
    /// Raw bytes sent by the latest download.
    pub sent: u64,
    /// Times the source's disk was opened (a retried download opens again).
    pub reads: u64,
}
