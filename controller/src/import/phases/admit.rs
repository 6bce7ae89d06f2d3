//! `Pending`: a job waits for a slot, at most `max_jobs` running in all and
//! `max_jobs_per_source` per source; admission is serialized, so two jobs
//! never take the last slot.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use vmm_api::importjob::{ImportJob, ImportPhase};

use crate::conditions::{Observed, READY};
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, Step};

/// How often a queued job looks for a slot again.
const QUEUED_RECHECK: Duration = Duration::from_secs(10);

/// The jobs the controller knows of, and the turn to admit one.
pub struct Admission {
    jobs: Store<ImportJob>,
    turn: tokio::sync::Mutex<()>,
}

impl Admission {
    pub fn new(jobs: Store<ImportJob>) -> Self {
        Self {
            jobs,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn run(&self, step: &Step<'_>) -> Outcome {
        let _turn = self.turn.lock().await;
        let job = step.job;
        let running = |other: &ImportJob| {
            other
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(ImportPhase::is_running)
        };
        let all = self.jobs.state();
        let total = all.iter().filter(|j| running(j)).count();
        let same_source = all
            .iter()
            .filter(|j| {
                running(j)
                    && j.namespace() == job.namespace()
                    && j.spec.source_cluster == job.spec.source_cluster
            })
            .count();
        let limits = &step.ctx.limits;
        if total >= limits.max_jobs || same_source >= limits.max_jobs_per_source {
            let message = format!(
                "waiting for a free slot: {total} jobs running (at most {}), {same_source} from this source (at most {})",
                limits.max_jobs, limits.max_jobs_per_source
            );
            let queued = Observed::new(READY, false, "Queued", message);
            step.write(&StatusUpdate::phase(job, ImportPhase::Pending, &queued))
                .await?;
            return Ok(Action::requeue(QUEUED_RECHECK));
        }
        step.advance(
            ImportPhase::Validating,
            "checking the source, the VM, its networks and the target before touching anything",
            StatusUpdate::default(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vmm_api::importjob::ImportPhase;
    use vmm_api::inventory::PowerState;

    use crate::testing::{FakeSource, World, web_vm};

    #[tokio::test]
    async fn a_free_slot_starts_validation() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        world.job(json!({}), json!({}));
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Validating);
        assert_eq!(world.ready().0, "Validating");
        assert_eq!(world.kube.event_reasons(), ["Validating"]);
        assert!(
            world.source.calls().is_empty(),
            "admission never touches the source"
        );
    }

    #[tokio::test]
    async fn without_a_slot_the_job_is_queued() {
        let world = World::with_limits(FakeSource::new(vec![web_vm(PowerState::On)]), 1);
        let mut other = world.job(json!({}), json!({"phase": "Importing"}));
        other.metadata.name = Some("other".into());
        world.remember(&other);
        world.job(json!({}), json!({}));
        let action = world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Pending);
        let (reason, message) = world.ready();
        assert_eq!(reason, "Queued");
        assert!(message.contains("1 jobs running (at most 1)"), "{message}");
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(super::QUEUED_RECHECK)
        );
    }

    /// A status write that fails is the reconcile's error: kube-runtime's
    /// error policy retries it, and nothing moved.
    #[tokio::test]
    async fn a_failed_write_is_retried() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::On)]));
        world.job(json!({}), json!({}));
        world
            .kube
            .fail_once(http::Method::PATCH, "/apis/importjob.harvesterhci.io", 500);
        assert!(world.reconcile().await.is_err());
        assert_eq!(world.phase(), ImportPhase::Pending);
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Validating);
    }
}
