//! `Pending`: a job waits for a slot, at most `max_jobs` running in all and
//! `max_jobs_per_source` per source; admission is serialized, so two jobs
//! never take the last slot. A slot that frees wakes the queued jobs at
//! once, oldest first ([`FreedSlots`]); the periodic recheck is only a
//! fallback.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
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

fn phase(job: &ImportJob) -> Option<ImportPhase> {
    job.status.as_ref().and_then(|s| s.phase)
}

fn running(job: &ImportJob) -> bool {
    phase(job).is_some_and(ImportPhase::is_running)
}

/// Sees, in the job watcher's events, a running job end or go away, and
/// says so on its channel: each message is a slot freed.
#[derive(Clone)]
pub struct FreedSlots {
    running: Arc<Mutex<HashSet<ObjectRef<ImportJob>>>>,
    freed: mpsc::UnboundedSender<()>,
}

impl FreedSlots {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<()>) {
        let (freed, slots) = mpsc::unbounded();
        let running = Arc::default();
        (Self { running, freed }, slots)
    }

    pub fn observe(&self, event: &watcher::Event<ImportJob>) {
        let (job, runs) = match event {
            watcher::Event::Apply(job) | watcher::Event::InitApply(job) => (job, running(job)),
            watcher::Event::Delete(job) => (job, false),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let key = ObjectRef::from(job);
        let mut known = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if runs {
            known.insert(key);
        } else if known.remove(&key) {
            // The receiver lives as long as the controller.
            let _ = self.freed.unbounded_send(());
        }
    }
}

/// For each slot freed, every queued job, oldest first: what the
/// controller reconciles next.
pub fn queued_on_free_slot(
    slots: mpsc::UnboundedReceiver<()>,
    jobs: Store<ImportJob>,
) -> impl Stream<Item = ObjectRef<ImportJob>> {
    slots.flat_map(move |()| {
        let mut queued: Vec<_> = jobs
            .state()
            .into_iter()
            .filter(|job| matches!(phase(job), None | Some(ImportPhase::Pending)))
            .collect();
        queued.sort_by_key(|job| job.creation_timestamp());
        futures::stream::iter(queued.into_iter().map(|job| ObjectRef::from(&*job)))
    })
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

    /// Only a running job that ends or goes away frees a slot; the queued
    /// jobs it wakes come oldest first.
    #[tokio::test]
    async fn a_slot_freed_wakes_the_queued_jobs_oldest_first() {
        use futures::StreamExt;
        use kube::runtime::reflector;
        use kube::runtime::watcher::Event;
        use vmm_api::importjob::ImportJob;

        let job = |name: &str, created: &str, phase: Option<&str>| -> ImportJob {
            let status = phase.map(|p| json!({"phase": p})).unwrap_or(json!(null));
            serde_json::from_value(json!({
                "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": name, "namespace": "team-a", "creationTimestamp": created},
                "spec": {"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": name},
                "status": status,
            }))
            .unwrap()
        };
        let (store, mut writer) = reflector::store();
        for queued in [
            job("newer", "2026-12-06T10:00:02Z", Some("Pending")),
            job("older", "2026-12-06T10:00:01Z", None),
            job("done", "2026-12-06T09:00:00Z", Some("Succeeded")),
        ] {
            writer.apply_watcher_event(&Event::Apply(queued));
        }
        let (freed, slots) = super::FreedSlots::new();
        let mut woken = super::queued_on_free_slot(slots, store);

        freed.observe(&Event::Apply(job(
            "a",
            "2026-12-06T08:00:00Z",
            Some("Pending"),
        )));
        freed.observe(&Event::Apply(job(
            "a",
            "2026-12-06T08:00:00Z",
            Some("Importing"),
        )));
        freed.observe(&Event::Apply(job(
            "b",
            "2026-12-06T08:00:00Z",
            Some("Exporting"),
        )));
        freed.observe(&Event::Apply(job(
            "a",
            "2026-12-06T08:00:00Z",
            Some("Succeeded"),
        )));
        freed.observe(&Event::Apply(job(
            "a",
            "2026-12-06T08:00:00Z",
            Some("Succeeded"),
        )));
        freed.observe(&Event::Delete(job(
            "b",
            "2026-12-06T08:00:00Z",
            Some("Exporting"),
        )));
        drop(freed);
        let names: Vec<String> = woken.by_ref().map(|r| r.name).collect().await;
        assert_eq!(names, ["older", "newer", "older", "newer"]);
    }
}
