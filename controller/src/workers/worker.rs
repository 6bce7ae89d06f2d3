//! The `transfer` subcommand's work: log in to the source with the
//! credentials in the [`TransferSpec`], re-open the export the controller
//! holds, and serve the one disk at its token with the same disk endpoint
//! ([`crate::disks`]) the in-process mode uses, until the pod is stopped.
//! The export is never ended here: the controller ends it once every disk
//! is imported, so the worker only lets go of it ([`Worker::detach`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use vmm_core::{Credentials, ExportRecorder, Provider, ProviderError, Reason};

use crate::connect::Refused;
use crate::disks::Registry;
use crate::import::scratch::Scratch;
use crate::import::step::PhaseError;
use crate::import::transfer::{DiskToServe, Exports, JobKey};
use crate::workers::{TransferSpec, WorkerProgress};

/// How long a worker tries to reach a source that cannot be reached for now
/// before it fails (its Job then starts another pod, up to its backoff limit).
const REACH_FOR: Duration = Duration::from_secs(120);

/// One disk served from a re-opened export.
pub struct Worker {
    exports: Exports,
    spec: TransferSpec,
}

impl Worker {
    pub fn new(spec: TransferSpec, scratch: Scratch) -> Self {
        Self {
            exports: Exports::new(scratch),
            spec,
        }
    }

    /// Logs in and re-opens the export, then serves the disk; a source that
    /// cannot be reached is tried again for [`REACH_FOR`]. The error says
    /// why the disk cannot be served.
    pub async fn open(&self, provider: &dyn Provider) -> Result<(), Refused> {
        let mut delay = Duration::from_secs(1);
        let mut waited = Duration::ZERO;
        loop {
            let transient = match self.try_open(provider).await {
                Ok(()) => return Ok(()),
                Err(PhaseError::Retry(error)) => Refused::from(&error),
                Err(PhaseError::Refused(refused)) => return Err(refused),
                Err(PhaseError::Kube(error)) => Refused::new("WorkerError", error.to_string()),
            };
            if waited >= REACH_FOR {
                return Err(transient);
            }
            tracing::warn!(reason = transient.reason, message = %transient.message, "the source cannot be reached for now; trying again");
            tokio::time::sleep(delay).await;
            waited += delay;
            delay = (delay * 2).min(Duration::from_secs(15));
        }
    }

    async fn try_open(&self, provider: &dyn Provider) -> Result<(), PhaseError> {
        let spec = &self.spec;
        let credentials =
            Credentials::from_secret(spec.kind, &spec.credentials_secret, &spec.credentials)
                .map_err(|e| ProviderError::permanent(Reason::SecretInvalid, e.to_string()))?;
        let session = provider.connect(&spec.source, &credentials).await?;
        let disk = DiskToServe {
            index: 0,
            key: spec.disk_key.clone(),
            capacity: spec.capacity,
            token: spec.token.clone(),
        };
        let opened = self
            .exports
            .start(
                key(),
                session.as_ref(),
                &spec.vm_id,
                Some(&spec.export_id),
                &[disk],
                &NotRecorded,
            )
            .await;
        session.logout().await;
        opened.map(drop)
    }

    /// The disk endpoint's registry: the one disk, once open.
    pub fn registry(&self) -> Arc<Registry> {
        self.exports.registry.clone()
    }

    /// Why the export stopped being usable, if the source ended it.
    pub async fn broken(&self) -> Option<String> {
        self.exports
            .with(&key(), |active| active.broken())
            .await
            .flatten()
    }

    /// Stops serving and lets go of the export without ending it.
    pub async fn detach(&self) {
        self.exports.detach(&key()).await;
    }

    /// `/progress`: what has been sent of the disk, for the controller.
    pub fn progress_router(&self) -> Router {
        let registry = self.registry();
        let token = self.spec.token.clone();
        Router::new()
            .route("/progress", get(progress))
            .with_state((registry, token))
    }
}

async fn progress(
    State((registry, token)): State<(Arc<Registry>, String)>,
) -> axum::Json<WorkerProgress> {
    let progress = registry
        .get(&token)
        .map(|disk| WorkerProgress {
            sent: disk.sent(),
            reads: disk.reads.load(std::sync::atomic::Ordering::Relaxed),
        })
        .unwrap_or_default();
    axum::Json(progress)
}

/// The worker's one export, under a key of its own.
fn key() -> JobKey {
    (String::new(), "transfer".to_owned())
}

/// A worker only re-opens the export the controller recorded: a source
/// that would start a new one instead (the recorded one is gone) is told no,
/// which ends the new one before it is used, and the controller exports again.
struct NotRecorded;

#[async_trait]
impl ExportRecorder for NotRecorded {
    async fn record(&self, id: &str) -> Result<(), ProviderError> {
        Err(ProviderError::permanent(
            Reason::EndpointError,
            format!(
                "the source started a new export {id} instead of re-opening the recorded one: it is gone; the controller exports again"
            ),
        ))
    }
}
