//! The ends of a job: a job that ended lets go of its export; a job being
//! deleted ends its export and removes its images unless they back the VM it
//! created. The source VM is never touched here.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use vmm_api::importjob::ImportPhase;
use vmm_core::ExportEnd;

use crate::error::Error;
use crate::import::images;
use crate::import::step::{Outcome, Step};

/// `Succeeded` or `Failed`: nothing is left to do.
pub async fn ended(step: &Step<'_>) -> Outcome {
    step.ctx
        .exports
        .finish(&step.key(), ExportEnd::Abort("the import job ended"))
        .await;
    Ok(Action::await_change())
}

/// The job is being deleted.
pub async fn deleted(step: &Step<'_>) -> Result<Action, Error> {
    end_export(step, ExportEnd::Abort("the import job was deleted")).await;
    if step.phase() != ImportPhase::Succeeded {
        images::delete_all(&step.ctx.client, step.namespace, &step.job.name_any()).await?;
    }
    Ok(Action::await_change())
}

/// Ends the job's export: the one this process holds, or else the one a
/// previous process left open (its id is in status).
pub async fn end_export(step: &Step<'_>, how: ExportEnd) {
    if step.ctx.exports.finish(&step.key(), how).await {
        return;
    }
    let Some(export) = &step.status.export else {
        return;
    };
    match step.source.session().await {
        Ok(session) => session.release_export(export, how).await,
        Err(stop) => tracing::warn!(
            job = %step.job.name_any(),
            export,
            ?stop,
            "cannot reach the source to end a left-over export (it times out by itself)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vmm_api::inventory::PowerState;
    use vmm_core::ExportEnd;

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
