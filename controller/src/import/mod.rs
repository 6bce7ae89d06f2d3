//! Import jobs: from a source VM to a running Harvester VM, as a resumable
//! state machine whose state lives in the job's status. One file per phase
//! (`phases/`), run by [`step_job`]:
//!
//! `Pending` (waits for a slot) → `Validating` (preflight, the source is not
//! touched) → `PoweringOff` → `Exporting` (the source's export, one image per
//! disk) → `Importing` (Harvester downloads each disk from our endpoint) →
//! `CreatingVM` → `Succeeded`; or `Failed` with a reason that names the fix.
//! A source that cannot be reached for now holds the job where it is, and
//! it tries again; anything else that stops a phase fails the job.
//!
//! Every step can run again after a restart without repeating finished work:
//! a finished disk is never copied again, an export left open is re-used or
//! ended. A finalizer ends the export and removes unfinished images when a
//! job is deleted; the source VM is never deleted.

pub mod images;
pub mod phases;
pub mod preflight;
pub mod scratch;
pub mod source;
pub mod status;
pub mod step;
pub mod target;
pub mod transfer;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use vmm_api::importjob::{ImportJob, ImportPhase};
use vmm_core::ExportEnd;

use crate::conditions::{Observed, READY};
use crate::context::Context;
use crate::error::Error;
use crate::import::phases::admit::{Admission, FreedSlots, queued_on_free_slot};
use crate::import::phases::{cleanup, create_vm, export, importing, power_off, validate};
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, PhaseError, Step};
use crate::import::target::JOB_LABEL;

pub const FINALIZER: &str = "importjob.harvesterhci.io/cleanup";
/// How long a job waits for a source that cannot be reached for now.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(15);

/// What the job reconciler works with.
pub struct Jobs {
    ctx: Arc<Context>,
    admission: Admission,
}

impl Jobs {
    /// `store`: every job the controller knows, for admission.
    pub fn new(ctx: Arc<Context>, store: reflector::Store<ImportJob>) -> Self {
        Self {
            ctx,
            admission: Admission::new(store),
        }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

/// Reconciles every import job until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (store, writer) = reflector::store();
    // Status writes don't trigger a reconcile (progress would loop); spec,
    // deletion and finalizer changes do; images' changes do through watches.
    let changes = |job: &ImportJob| {
        let mut hasher = DefaultHasher::new();
        job.metadata.generation.hash(&mut hasher);
        job.metadata.finalizers.hash(&mut hasher);
        Some(hasher.finish())
    };
    let (freed, slots) = FreedSlots::new();
    let jobs = watcher::watcher(
        Api::<ImportJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .inspect_ok(move |event| freed.observe(event))
    .applied_objects()
    .predicate_filter(changes, Default::default());
    let images =
        Api::<DynamicObject>::all_with(client, &vmm_api::external::virtual_machine_image());
    let _ = ctx.metrics.jobs.set(store.clone());
    if let Some(pool) = &ctx.transfers
        && let Err(error) = pool.sweep().await
    {
        tracing::warn!(%error, "cannot look for transfers left by an earlier leader");
    }
    let state = Arc::new(Jobs::new(ctx, store.clone()));
    Controller::for_stream(jobs, store.clone())
        .reconcile_on(queued_on_free_slot(slots, store))
        .watches_with(
            images,
            vmm_api::external::virtual_machine_image(),
            watcher::Config::default().labels(JOB_LABEL),
            |image| {
                let job = image.labels().get(JOB_LABEL)?.clone();
                Some(ObjectRef::<ImportJob>::new(&job).within(&image.namespace()?))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "import job reconcile");
            }
        })
        .await;
}

async fn reconcile(job: Arc<ImportJob>, jobs: Arc<Jobs>) -> Result<Action, Error> {
    let namespace = job.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "ImportJob",
        name: job.name_any(),
    })?;
    let api = Api::<ImportJob>::namespaced(jobs.ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            finalizer::Event::Apply(job) => step_job(&jobs, &job, &namespace).await,
            finalizer::Event::Cleanup(job) => {
                let step = Step::new(&jobs.ctx, &job, &namespace);
                let deleted = cleanup::deleted(&step).await;
                step.source.close().await;
                deleted
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(job: Arc<ImportJob>, error: &Error, _: Arc<Jobs>) -> Action {
    tracing::warn!(job = %job.name_any(), %error, "import job reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Runs the phase the job is in, then settles how it ended.
pub async fn step_job(jobs: &Jobs, job: &ImportJob, namespace: &str) -> Result<Action, Error> {
    let step = Step::new(&jobs.ctx, job, namespace);
    let outcome = match step.phase() {
        ImportPhase::Pending => jobs.admission.run(&step).await,
        ImportPhase::Validating => validate::run(&step).await,
        ImportPhase::PoweringOff => power_off::run(&step).await,
        ImportPhase::Exporting => export::run(&step).await,
        ImportPhase::Importing => importing::run(&step).await,
        ImportPhase::CreatingVm => create_vm::run(&step).await,
        ImportPhase::Succeeded | ImportPhase::Failed => cleanup::ended(&step).await,
    };
    let settled = settle(&step, outcome).await;
    step.source.close().await;
    settled
}

/// What a phase's [`Outcome`] means for the job.
async fn settle(step: &Step<'_>, outcome: Outcome) -> Result<Action, Error> {
    let stop = match outcome {
        Ok(action) => return Ok(action),
        Err(stop) => stop,
    };
    let job = step.job;
    match stop {
        PhaseError::Refused(refused) => {
            let mut failed = StatusUpdate::failed(job, &refused);
            // Kept for `cleanup::ended` to remove when the source could not.
            let ended = cleanup::end_export(step, ExportEnd::Abort("the import job failed")).await;
            if ended.is_err()
                && let Some(export) = &step.status.export
            {
                failed = failed.with_export(export);
            }
            step.write(&failed).await?;
            step.ctx.metrics.observe_duration(job, "failed");
            step.publish(EventType::Warning, refused.reason, &refused.message)
                .await;
            tracing::info!(job = %job.name_any(), reason = refused.reason, message = %refused.message, "import job failed");
            Ok(Action::await_change())
        }
        PhaseError::Retry(error) => {
            let phase = step.phase();
            let message = format!(
                "{}: the source cannot be reached for now ({error}); trying again in {}s",
                phase.as_str(),
                RETRY_DELAY.as_secs()
            );
            let waiting = Observed::new(READY, false, phase.as_str(), message.clone());
            step.write(&StatusUpdate::condition(job, &waiting)).await?;
            step.publish(EventType::Warning, error.reason().as_str(), &message)
                .await;
            tracing::info!(job = %job.name_any(), reason = %error.reason(), %error, "import job waits for its source");
            Ok(Action::requeue(RETRY_DELAY))
        }
        PhaseError::Kube(error) => Err(error),
    }
}
