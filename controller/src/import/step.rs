//! What each phase of an import is given, and how it ends: [`Step`] holds
//! the job, its status as read, the job's source (logged in to on first use)
//! and what every phase does alike (moving on, events, required status
//! fields); a phase returns an [`Outcome`].

use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use vmm_api::importjob::{ImportJob, ImportJobStatus, ImportPhase, SourceVm};
use vmm_core::ProviderError;

use crate::connect::Refused;
use crate::context::Context;
use crate::error::Error;
use crate::import::source::JobSource;
use crate::import::status::StatusUpdate;
use crate::import::transfer::JobKey;

/// How a phase ended when it did not finish: the job cannot go on, the
/// source cannot be reached for now, or a Kubernetes request failed.
#[derive(Debug)]
pub enum PhaseError {
    /// The job fails with this reason.
    Refused(Refused),
    /// The job stays where it is and tries again later.
    Retry(ProviderError),
    /// The reconcile fails and is retried (kube-runtime's error policy).
    Kube(Error),
}

impl From<Refused> for PhaseError {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

/// A provider error that a retry may cure waits; any other ends the job.
impl From<ProviderError> for PhaseError {
    fn from(error: ProviderError) -> Self {
        if error.is_transient() {
            Self::Retry(error)
        } else {
            Self::Refused(Refused::from(&error))
        }
    }
}

impl From<Error> for PhaseError {
    fn from(error: Error) -> Self {
        Self::Kube(error)
    }
}

impl From<kube::Error> for PhaseError {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error.into())
    }
}

pub type Outcome = Result<Action, PhaseError>;

/// One reconcile of one job.
pub struct Step<'a> {
    pub ctx: &'a Context,
    pub job: &'a ImportJob,
    pub namespace: &'a str,
    /// The job's status as this reconcile read it.
    pub status: ImportJobStatus,
    pub source: JobSource<'a>,
    pub api: Api<ImportJob>,
}

impl<'a> Step<'a> {
    pub fn new(ctx: &'a Context, job: &'a ImportJob, namespace: &'a str) -> Self {
        Self {
            ctx,
            job,
            namespace,
            status: job.status.clone().unwrap_or_default(),
            source: JobSource::new(ctx, namespace, job),
            api: Api::namespaced(ctx.client.clone(), namespace),
        }
    }

    pub fn phase(&self) -> ImportPhase {
        self.status.phase.unwrap_or_default()
    }

    /// `(namespace, name)`: the job's key in the exports in progress.
    pub fn key(&self) -> JobKey {
        (self.namespace.to_owned(), self.job.name_any())
    }

    pub async fn write(&self, update: &StatusUpdate) -> Result<(), Error> {
        update.write(&self.api, self.job).await
    }

    /// Moves the job to `next` with `update`, publishes an event saying so,
    /// and asks to go on at once.
    pub async fn advance(&self, next: ImportPhase, message: &str, update: StatusUpdate) -> Outcome {
        let update = update.merged_over(StatusUpdate::running(self.job, next, message));
        self.write(&update).await?;
        self.publish(EventType::Normal, next.as_str(), message)
            .await;
        Ok(Action::requeue(Duration::ZERO))
    }

    /// An Event on the job (at most 1000 characters of `note`).
    pub async fn publish(&self, type_: EventType, reason: &str, note: &str) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Import".into(),
            secondary: None,
        };
        if let Err(error) = self
            .ctx
            .recorder
            .publish(&event, &self.job.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "cannot publish an event");
        }
    }

    /// The source VM preflight found.
    pub fn source_vm(&self) -> Result<&SourceVm, Refused> {
        self.status
            .source_vm
            .as_ref()
            .ok_or_else(|| lost("its source VM"))
    }

    /// The name of the VM the job creates.
    pub fn target_name(&self) -> Result<&str, Refused> {
        self.status
            .target_name
            .as_deref()
            .ok_or_else(|| lost("the name of the VM it creates"))
    }
}

/// A status field a finished phase wrote is missing (someone edited the
/// status): the job cannot know what it did.
pub fn lost(what: &str) -> Refused {
    Refused::new(
        "StatusLost",
        format!("the job's status no longer holds {what}: delete and recreate the job"),
    )
}
