//! The ends of a job: a job that ended lets go of its export; a job being
//! deleted ends its export and removes its images unless they back the VM it
//! created. An export whose temporaries the source could not remove yet
//! stays recorded and is tried again (a deleted job keeps its finalizer
//! meanwhile), since those never expire by themselves. The source VM is
//! never touched here.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use vmm_api::importjob::ImportPhase;
use vmm_core::{ExportEnd, ProviderError};

use crate::error::Error;
use crate::import::images;
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, PhaseError, Step};

/// How soon removing an export's temporaries is tried again.
pub const RELEASE_RETRY: Duration = Duration::from_secs(30);
/// The Event reason of an export the source still holds.
const NOT_RELEASED: &str = "ExportNotReleased";

/// `Succeeded` or `Failed`: the export is ended, and its record cleared
/// once the source holds nothing of it.
pub async fn ended(step: &Step<'_>) -> Outcome {
    if let Err(error) = end_export(step, ExportEnd::Abort("the import job ended")).await {
        not_released(step, &error).await;
        return Ok(Action::requeue(RELEASE_RETRY));
    }
    if step.status.export.is_some() {
        step.write(&StatusUpdate::default().without_export())
            .await?;
    }
    Ok(Action::await_change())
}

/// The job is being deleted: it keeps its finalizer until its export's
/// temporaries are gone from the source.
pub async fn deleted(step: &Step<'_>) -> Result<Action, Error> {
    if let Err(error) = end_export(step, ExportEnd::Abort("the import job was deleted")).await {
        not_released(step, &error).await;
        return Err(error);
    }
    if step.phase() != ImportPhase::Succeeded {
        images::delete_all(&step.ctx.client, step.namespace, &step.job.name_any()).await?;
    }
    Ok(Action::await_change())
}

/// Ends the job's export (its transfer Jobs removed first): the one this process holds, or else the one a
/// previous process left open (its id is in status). An error when the
/// source still holds something of it that does not expire, or cannot be
/// reached for now; a source that is gone or refuses us for good (deleted,
/// its Secret wrong) is not waited for: an Event names the export to remove
/// there by hand.
pub async fn end_export(step: &Step<'_>, how: ExportEnd) -> Result<(), Error> {
    // Workers first: they stop serving before the export ends under them.
    if let Some(pool) = &step.ctx.transfers
        && let Some(uid) = step.job.uid()
    {
        pool.remove_all(&uid).await?;
    }
    if let Some(ended) = step.ctx.exports.finish(&step.key(), how).await {
        return ended.map_err(held);
    }
    let Some(export) = &step.status.export else {
        return Ok(());
    };
    let refused = match step.source.session().await {
        Ok(session) => return session.release_export(export, how).await.map_err(held),
        Err(PhaseError::Retry(unreachable)) => return Err(held(unreachable)),
        Err(PhaseError::Kube(error)) => return Err(error),
        Err(PhaseError::Refused(refused)) => refused,
    };
    tracing::warn!(job = %step.job.name_any(), export, reason = refused.reason, message = %refused.message, "cannot use the source to end a left-over export");
    let note = format!(
        "the source cannot be used to end export {export} ({}); if it made anything that does not expire, remove it there by hand",
        refused.message
    );
    step.publish(EventType::Warning, NOT_RELEASED, &note).await;
    Ok(())
}

fn held(error: ProviderError) -> Error {
    Error::ExportNotReleased(error.to_string())
}

async fn not_released(step: &Step<'_>, error: &Error) {
    let note = format!("{error}; trying again (a deleted job keeps its finalizer meanwhile)");
    step.publish(EventType::Warning, NOT_RELEASED, &note).await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vmm_api::inventory::PowerState;
    use vmm_core::{ExportEnd, ProviderError, Reason};

    use crate::import::step::Step;
    use crate::testing::{FakeSource, NS, SourceCall, World, web_vm};

    const IMAGES: &str = "/apis/harvesterhci.io/v1beta1/namespaces/team-a/virtualmachineimages/";

    fn world() -> World {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::Off)]));
        world.kube.put(
            "virtualmachineimages",
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
                "metadata": {"name": "web-disk-0", "namespace": NS,
                    "labels": {"importjob.harvesterhci.io/job": "web"}}}),
        );
        world
    }

    /// A job deleted mid-import ends its export and removes its images; the
    /// source VM is left as it is.
    #[tokio::test]
    async fn a_deleted_job_leaves_nothing_behind() {
        let world = world();
        let job = world.job(
            json!({}),
            json!({"phase": "Importing", "export": "lease-9"}),
        );
        let step = Step::new(world.jobs.context(), &job, NS);
        super::deleted(&step).await.unwrap();
        step.source.close().await;
        assert!(world.kube.list(IMAGES).is_empty());
        assert!(world.source.calls().contains(&SourceCall::ReleaseExport {
            id: "lease-9".into(),
            how: ExportEnd::Abort("the import job was deleted")
        }));
        assert!(
            !world
                .source
                .calls()
                .iter()
                .any(|c| matches!(c, SourceCall::PowerOff(_)))
        );
    }

    fn temporaries_left() -> ProviderError {
        ProviderError::transient(
            Reason::EndpointError,
            "2 temporaries of export vmm-1 are still at the cloud",
        )
    }

    /// A deleted job whose source could not remove the export's
    /// temporaries keeps its finalizer (the cleanup fails) and its images,
    /// and is removed once a later try succeeds.
    #[tokio::test]
    async fn a_deleted_job_waits_until_its_export_is_released() {
        let world = world();
        let job = world.job(json!({}), json!({"phase": "Importing", "export": "vmm-1"}));
        world.source.fail_once("release_export", temporaries_left());
        let step = Step::new(world.jobs.context(), &job, NS);
        let error = super::deleted(&step).await.unwrap_err();
        assert!(error.to_string().contains("still at the cloud"), "{error}");
        assert_eq!(world.kube.list(IMAGES).len(), 1, "nothing removed yet");
        super::deleted(&step).await.unwrap();
        assert!(world.kube.list(IMAGES).is_empty());
        let releases = world
            .source
            .calls()
            .iter()
            .filter(|c| matches!(c, SourceCall::ReleaseExport { .. }))
            .count();
        assert_eq!(releases, 2);
    }

    /// The images of a job that succeeded back its VM's disks: they stay.
    #[tokio::test]
    async fn a_succeeded_jobs_images_stay() {
        let world = world();
        let job = world.job(json!({}), json!({"phase": "Succeeded"}));
        let step = Step::new(world.jobs.context(), &job, NS);
        super::deleted(&step).await.unwrap();
        assert_eq!(world.kube.list(IMAGES).len(), 1);
    }
}
