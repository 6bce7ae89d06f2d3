//! A job's source within one reconcile: its object read once, and a session
//! logged in to at most once, only when a phase needs one, and logged out
//! when the reconcile ends.

use std::sync::Arc;

use kube::Api;
use tokio::sync::OnceCell;
use vmm_api::importjob::ImportJob;
use vmm_api::source::AnySource;
use vmm_core::Session;

use crate::connect::{self, Refused};
use crate::context::Context;
use crate::import::step::PhaseError;

pub struct JobSource<'a> {
    ctx: &'a Context,
    namespace: &'a str,
    job: &'a ImportJob,
    object: OnceCell<AnySource>,
    session: OnceCell<Arc<dyn Session>>,
}

impl<'a> JobSource<'a> {
    pub fn new(ctx: &'a Context, namespace: &'a str, job: &'a ImportJob) -> Self {
        Self {
            ctx,
            namespace,
            job,
            object: OnceCell::new(),
            session: OnceCell::new(),
        }
    }

    /// The source object the job names, in the job's namespace.
    pub async fn object(&self) -> Result<&AnySource, Refused> {
        self.object.get_or_try_init(|| self.read()).await
    }

    async fn read(&self) -> Result<AnySource, Refused> {
        let reference = &self.job.spec.source_cluster;
        let kind = reference.kind;
        let namespace = self.namespace;
        Api::<AnySource>::namespaced_with(self.ctx.client.clone(), namespace, &kind.api_resource())
            .get_opt(&reference.name)
            .await
            .map_err(|e| Refused::new("SourceUnreadable", format!("cannot read the source: {e}")))?
            .ok_or_else(|| {
                Refused::new(
                    "SourceNotFound",
                    format!(
                        "there is no {kind} source {:?} in namespace {namespace}: create it, or name an existing one in spec.sourceCluster",
                        reference.name
                    ),
                )
            })
    }

    /// The session, logged in to on first use. A source that cannot be
    /// reached for now is [`PhaseError::Retry`]; one that refuses us ends the job.
    pub async fn session(&self) -> Result<&dyn Session, PhaseError> {
        let session = self.session.get_or_try_init(|| self.connect()).await?;
        Ok(session.as_ref())
    }

    async fn connect(&self) -> Result<Arc<dyn Session>, PhaseError> {
        let object = self.object().await?;
        let session = connect::session(
            self.ctx,
            self.namespace,
            self.job.spec.source_cluster.kind,
            &object.spec,
        )
        .await?;
        Ok(session)
    }

    /// Logs out, if a phase logged in.
    pub async fn close(self) {
        if let Some(session) = self.session.into_inner() {
            session.logout().await;
        }
    }
}
