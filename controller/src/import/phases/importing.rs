//! `Importing`: Harvester downloads each disk from the disk endpoint. Each
//! reconcile reads every image's outcome once, serves the disks again when
//! this process has no export (a restart) or the source ended it, and writes
//! the bytes served, bytes/s and ETA of each disk; once every image is
//! imported the export is completed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;
use vmm_api::importjob::{DiskPhase, ImportPhase};
use vmm_core::ExportEnd;

use crate::conditions::{Observed, READY};
use crate::connect::Refused;
use crate::crash;
use crate::import::images::{self, Outcome as ImageOutcome};
use crate::import::phases::cleanup::end_export;
use crate::import::phases::export::{image_name, serve};
use crate::import::phases::handoff::{self, FoundImage};
use crate::import::status::{self, StatusUpdate};
use crate::import::step::{Outcome, Step};

/// How often progress is written while disks transfer.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

pub async fn run(step: &Step<'_>) -> Outcome {
    let ctx = step.ctx;
    let key = step.key();
    let mut disks = step.status.disks.clone();
    // Each disk's image and where its import stands, read once. Handed to
    // transfer Jobs, a disk still queued has no image yet.
    let mut found: Vec<FoundImage> = Vec::new();
    for disk in &disks {
        let name = image_name(disk)?;
        let image = images::get(&ctx.client, step.namespace, name).await?;
        if image.is_none() && !(ctx.transfers.is_some() && disk.phase == DiskPhase::Queued) {
            return Err(Refused::new(
                "ImageDeleted",
                format!("VirtualMachineImage {name} was deleted while importing: delete and recreate the job"),
            )
            .into());
        }
        let outcome = image
            .as_ref()
            .map_or(ImageOutcome::Importing, images::outcome);
        found.push((image, outcome));
    }
    let failed = disks
        .iter()
        .zip(&found)
        .find_map(|(disk, (_, outcome))| match outcome {
            ImageOutcome::Failed { message } => Some((disk.name.clone(), message.clone())),
            _ => None,
        });
    if let Some((disk, message)) = failed {
        return Err(Refused::new(
            "ImageImportFailed",
            format!("Harvester could not import {disk}: {message}"),
        )
        .into());
    }
    let imported = found
        .iter()
        .filter(|(_, outcome)| matches!(outcome, ImageOutcome::Imported { .. }))
        .count();
    let all_imported = imported == found.len();
    // An imported disk is not served again: its URL, which anyone who may
    // read the image can see, stops working now rather than when the job
    // ends.
    for (image, outcome) in &found {
        if matches!(outcome, ImageOutcome::Imported { .. })
            && let Some(token) = image.as_ref().and_then(images::token)
        {
            ctx.exports.registry.unregister(&token);
        }
    }
    if imported > 0 && !all_imported {
        crash::point(crash::ONE_DISK_IMPORTED);
    }

    if all_imported {
        crash::point(crash::ALL_DISKS_IMPORTED);
        disks.iter_mut().for_each(status::imported);
        // An export the source could not remove yet stays recorded: the
        // ended job removes it (`cleanup::ended`).
        let mut update = StatusUpdate::default().with_disks(&disks);
        if end_export(step, ExportEnd::Complete).await.is_ok() {
            update = update.without_export();
        }
        return step
            .advance(
                ImportPhase::CreatingVm,
                "every disk is imported; creating the VM",
                update,
            )
            .await;
    }

    // After a restart, or when the source ended the export: serve the disks
    // not yet imported again (handed to transfer Jobs: hold the export
    // again; the workers re-open it).
    let broken = ctx
        .exports
        .with(&key, |active| active.broken())
        .await
        .flatten();
    if let Some(why) = &broken {
        tracing::warn!(job = %step.job.name_any(), why, "the export ended early; exporting again");
        ctx.exports
            .finish(&key, ExportEnd::Abort("the export broke"))
            .await;
    }
    let export = match ctx
        .exports
        .with(&key, |active| active.export_id().map(str::to_owned))
        .await
        .flatten()
    {
        Some(export) => export,
        None => {
            let tokens: Vec<Option<String>> = found
                .iter()
                .map(|(image, outcome)| match outcome {
                    ImageOutcome::Importing if ctx.transfers.is_none() => {
                        image.as_ref().and_then(images::token)
                    }
                    _ => None,
                })
                .collect();
            let export = serve(step, &tokens).await?;
            step.write(&StatusUpdate::default().with_export(&export))
                .await?;
            export
        }
    };

    // Progress: bytes served per disk since the last sample, by this
    // process or by each disk's worker.
    let (workers_sent, waiting) = match &ctx.transfers {
        Some(pool) => handoff::run(step, pool, &export, &mut disks, &found).await?,
        None => Default::default(),
    };
    let sample = ctx
        .exports
        .with(&key, |active| {
            let elapsed = active.sampled.elapsed();
            active.sampled = Instant::now();
            let mut sent: HashMap<usize, u64> = active
                .disks
                .iter()
                .map(|(index, disk)| (*index, disk.sent()))
                .collect();
            sent.extend(&workers_sent);
            (elapsed, sent)
        })
        .await;
    if let Some((elapsed, sent)) = sample {
        for (index, (disk, (_, outcome))) in disks.iter_mut().zip(&found).enumerate() {
            match outcome {
                ImageOutcome::Imported { .. } => status::imported(disk),
                _ => {
                    if let Some(&bytes) = sent.get(&index) {
                        status::advance(disk, bytes, elapsed);
                    }
                }
            }
        }
        let percent = status::percent(&disks);
        ctx.exports
            .with(&key, |active| active.report(percent))
            .await;
        let mut update = StatusUpdate::default().with_disks(&disks);
        if ctx.transfers.is_some() {
            let (reason, message) = waiting.unwrap_or_else(|| {
                (
                    ImportPhase::Importing.as_str(),
                    "Harvester is importing the disks".to_owned(),
                )
            });
            let ready = Observed::new(READY, false, reason, message);
            update = update.merged_over(StatusUpdate::condition(step.job, &ready));
        }
        step.write(&update).await?;
    }
    Ok(Action::requeue(PROGRESS_INTERVAL))
}

#[cfg(test)]
mod tests {
    use kube::runtime::controller::Action;
    use serde_json::{Value, json};
    use vmm_api::importjob::{DiskPhase, ImportPhase};
    use vmm_api::inventory::PowerState;
    use vmm_core::{ExportEnd, ProviderError, Reason};

    use crate::import::phases::cleanup;
    use crate::testing::{DISK_BYTES, FakeSource, SourceCall, World, web_vm};

    fn importing() -> Value {
        json!({"phase": "Importing", "sourceVm": {"id": "vm-1", "poweredOffByJob": true},
            "targetName": "web-01", "export": "lease-3",
            "disks": [{"name": "Hard disk 1", "capacityBytes": DISK_BYTES, "sourceKey": "2000",
                "imageName": "web-disk-0", "phase": "Transferring"}]})
    }

    fn image(world: &World, status: Value) {
        world.kube.put(
            "virtualmachineimages",
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
                "metadata": {"name": "web-disk-0", "namespace": "team-a",
                    "labels": {"importjob.harvesterhci.io/job": "web"}},
                "spec": {"url": "http://ctl:8000/disks/tok-0/web-disk-0.img"},
                "status": status}),
        );
    }

    /// A job importing one image that Harvester gave up on.
    fn given_up_on() -> World {
        let world = World::new(source());
        image(
            &world,
            json!({"conditions": [{"type": "RetryLimitExceeded", "status": "True",
                "message": "download failed 5 times"}]}),
        );
        world.job(json!({}), importing());
        world
    }

    fn source() -> FakeSource {
        FakeSource::new(vec![web_vm(PowerState::Off)]).with_file("2000", &vec![1u8; DISK_BYTES])
    }

    /// Every image imported: the export left by an earlier process is
    /// completed at the source, and the VM is next.
    #[tokio::test]
    async fn imported_disks_complete_the_export() {
        let world = World::new(source());
        image(
            &world,
            json!({"storageClassName": "longhorn-web-disk-0",
                "conditions": [{"type": "Imported", "status": "True"}]}),
        );
        world.job(json!({}), importing());
        world.reconcile().await.unwrap();
        let status = world.stored().status.unwrap();
        assert_eq!(status.phase, Some(ImportPhase::CreatingVm));
        assert!(status.export.is_none());
        assert_eq!(status.disks[0].phase, DiskPhase::Imported);
        assert_eq!(status.disks[0].bytes_done, DISK_BYTES as i64);
        assert!(world.source.calls().contains(&SourceCall::ReleaseExport {
            id: "lease-3".into(),
            how: ExportEnd::Complete
        }));
    }

    /// After a restart no export is held here: the recorded one is opened
    /// again and the disk is served at the token its image already has.
    #[tokio::test]
    async fn a_restart_serves_the_disks_again() {
        let world = World::new(source());
        image(&world, json!({}));
        world.job(json!({}), importing());
        let action = world.reconcile().await.unwrap();
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(super::PROGRESS_INTERVAL)
        );
        assert_eq!(world.phase(), ImportPhase::Importing);
        assert!(world.source.calls().contains(&SourceCall::Export {
            vm: "vm-1".into(),
            resume: Some("lease-3".into())
        }));
        assert!(world.jobs.context().exports.registry.get("tok-0").is_some());
    }

    /// Once one disk's image is imported its token is refused, while the
    /// other disk is still served.
    #[tokio::test]
    async fn an_imported_disk_is_no_longer_served() {
        let mut vm = web_vm(PowerState::Off);
        let mut second = vm.disks[0].clone();
        second.key = "2001".into();
        vm.disks.push(second);
        let source = FakeSource::new(vec![vm])
            .with_file("2000", &vec![1u8; DISK_BYTES])
            .with_file("2001", &vec![2u8; DISK_BYTES]);
        let world = World::new(source);
        let put = |index: usize, status: Value| {
            world.kube.put(
                "virtualmachineimages",
                json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
                    "metadata": {"name": format!("web-disk-{index}"), "namespace": "team-a",
                        "labels": {"importjob.harvesterhci.io/job": "web"}},
                    "spec": {"url": format!("http://ctl:8000/disks/tok-{index}/web-disk-{index}.img")},
                    "status": status}),
            );
        };
        put(0, json!({}));
        put(1, json!({}));
        let mut status = importing();
        let first = status["disks"][0].clone();
        status["disks"] = json!([first, {"name": "Hard disk 2", "capacityBytes": DISK_BYTES,
            "sourceKey": "2001", "imageName": "web-disk-1", "phase": "Transferring"}]);
        world.job(json!({}), status);
        world.reconcile().await.unwrap();
        let registry = &world.jobs.context().exports.registry;
        assert!(registry.get("tok-0").is_some() && registry.get("tok-1").is_some());

        put(
            0,
            json!({"storageClassName": "longhorn-web-disk-0",
                "conditions": [{"type": "Imported", "status": "True"}]}),
        );
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Importing);
        assert!(registry.get("tok-0").is_none(), "the imported disk's token");
        assert!(registry.get("tok-1").is_some(), "the disk still importing");
    }

    /// A job that fails while its export cannot be released keeps the
    /// export's id; the ended job tries again and forgets it once released.
    #[tokio::test]
    async fn a_failed_jobs_export_is_released_later_and_then_forgotten() {
        let world = given_up_on();
        let left = || ProviderError::transient(Reason::EndpointError, "2 temporaries are left");
        world.source.fail_once("release_export", left());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Failed);
        let export = || world.stored().status.unwrap().export;
        assert_eq!(export().as_deref(), Some("lease-3"));

        world.source.fail_once("release_export", left());
        let again = world.reconcile().await.unwrap();
        assert_eq!(again, Action::requeue(cleanup::RELEASE_RETRY));
        assert_eq!(export().as_deref(), Some("lease-3"));

        world.reconcile().await.unwrap();
        assert_eq!(export(), None);
        assert_eq!(world.phase(), ImportPhase::Failed);
    }

    #[tokio::test]
    async fn an_image_harvester_gave_up_on_fails_the_job() {
        let world = given_up_on();
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Failed);
        let (reason, message) = world.ready();
        assert_eq!(reason, "ImageImportFailed");
        assert!(message.contains("download failed 5 times"), "{message}");
        assert!(world.source.calls().contains(&SourceCall::ReleaseExport {
            id: "lease-3".into(),
            how: ExportEnd::Abort("the import job failed")
        }));
    }

    #[tokio::test]
    async fn a_source_that_cannot_export_again_yet_is_retried() {
        let world = World::new(source());
        image(&world, json!({}));
        world.job(json!({}), importing());
        world.source.fail_once(
            "export",
            ProviderError::transient(Reason::EndpointUnreachable, "vc is unreachable"),
        );
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Importing);
        assert!(world.ready().1.contains("vc is unreachable"));
        world.reconcile().await.unwrap();
        assert!(world.jobs.context().exports.registry.get("tok-0").is_some());
    }
}
