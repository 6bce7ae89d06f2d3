//! `Exporting`: the source's export is opened (or the one a previous run
//! recorded is re-opened), each disk is served at its own token, and one
//! VirtualMachineImage per disk points Harvester at it.

use std::sync::Mutex;

use async_trait::async_trait;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use vmm_api::importjob::{DiskPhase, DiskStatus, ImportPhase};
use vmm_core::{ExportRecorder, ProviderError, Reason};

use crate::crash;
use crate::disks::{self, Preparation};
use crate::error::Error;
use crate::import::images;
use crate::import::preflight;
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, PhaseError, Step, lost};
use crate::import::transfer::DiskToServe;

pub async fn run(step: &Step<'_>) -> Outcome {
    let ctx = step.ctx;
    // Handed to transfer Jobs, disks are served by workers, each made when
    // a slot is free (`handoff`): this process holds only the export.
    let handed_off = ctx.transfers.is_some();
    // Tokens of images made before a restart stay valid: Harvester keeps
    // their URLs.
    let mut tokens = Vec::new();
    for disk in &step.status.disks {
        let existing = images::get(&ctx.client, step.namespace, image_name(disk)?).await?;
        tokens.push(match existing {
            _ if handed_off => None,
            Some(image) => Some(images::token(&image).unwrap_or_else(disks::new_token)),
            None => Some(disks::new_token()),
        });
    }
    let export = serve(step, &tokens).await?;
    // Recorded before anything else: a restart re-opens it or ends it.
    step.write(&StatusUpdate::default().with_export(&export))
        .await?;
    crash::point(crash::EXPORT_OPENED);
    for (index, token) in tokens.iter().enumerate() {
        if let Some(token) = token {
            make_image(step, index, token, None).await?;
        }
    }
    let (phase, message) = if handed_off {
        (
            DiskPhase::Queued,
            "each disk is handed to a transfer Job as slots free up",
        )
    } else {
        (DiskPhase::Transferring, "Harvester is importing the disks")
    };
    let disks: Vec<DiskStatus> = step
        .status
        .disks
        .iter()
        .map(|d| DiskStatus { phase, ..d.clone() })
        .collect();
    step.advance(
        ImportPhase::Importing,
        message,
        StatusUpdate::default().with_disks(&disks),
    )
    .await
}

/// Makes (or leaves as it is) the image of disk `index`, downloading from
/// `base` (a transfer's Service) or else from this process's disk endpoint,
/// at `token`.
pub async fn make_image(
    step: &Step<'_>,
    index: usize,
    token: &str,
    base: Option<&str>,
) -> Result<(), PhaseError> {
    let ctx = step.ctx;
    let disk = &step.status.disks[index];
    let name = image_name(disk)?;
    let storage_class = preflight::storage_class(&ctx.client, step.job).await?;
    let base = base.unwrap_or_else(|| {
        ctx.disk_urls
            .for_backend(images::cdi_class(storage_class.as_ref()).is_some())
    });
    let url = format!("{base}{}", disks::path(token, &format!("{name}.img")));
    let manifest = images::manifest(
        step.job,
        step.target_name()?,
        index,
        disk,
        &url,
        storage_class.as_ref(),
    );
    images::apply(&ctx.client, step.namespace, &manifest).await?;
    Ok(())
}

/// The image a disk is imported into.
pub fn image_name(disk: &DiskStatus) -> Result<&str, PhaseError> {
    disk.image_name
        .as_deref()
        .ok_or_else(|| lost(&format!("the image of disk {}", disk.name)).into())
}

/// Opens (or re-opens) the source's export and serves each disk that has a
/// token at it; the export's id. An id the provider names in advance is
/// recorded before the export starts making anything at the source.
pub async fn serve(step: &Step<'_>, tokens: &[Option<String>]) -> Result<String, PhaseError> {
    let vm = step.source_vm()?;
    let mut wanted = Vec::new();
    for (index, (disk, token)) in step.status.disks.iter().zip(tokens).enumerate() {
        let Some(token) = token else {
            continue;
        };
        let key = disk
            .source_key
            .clone()
            .ok_or_else(|| lost(&format!("the source key of disk {}", disk.name)))?;
        wanted.push(DiskToServe {
            index,
            key,
            capacity: u64::try_from(disk.capacity_bytes).unwrap_or(0),
            token: token.clone(),
        });
    }
    let session = step.source.session().await?;
    let mut recorded = step.status.export.clone();
    if recorded.is_none()
        && let Some(id) = session.export_id_for(&vm.id, &step.job.uid().unwrap_or_default())
    {
        step.write(&StatusUpdate::default().with_export(&id))
            .await?;
        recorded = Some(id);
    }
    let recorder = RecordInStatus {
        step,
        failed: Mutex::new(None),
    };
    let started = step
        .ctx
        .exports
        .start(
            step.key(),
            session,
            &vm.id,
            recorded.as_deref(),
            &wanted,
            &recorder,
        )
        .await;
    let export = match started {
        Ok(export) => export,
        // The status write failed, not the source.
        Err(error) => {
            let failed = recorder.failed.into_inner();
            return Err(failed
                .unwrap_or_else(|p| p.into_inner())
                .map_or(error, PhaseError::Kube));
        }
    };
    // Say per disk which way it goes: users (and the e2e) see that a
    // streamOptimized disk never touches local storage.
    let prepared = step
        .ctx
        .exports
        .with(&step.key(), |active| {
            active
                .disks
                .iter()
                .map(|(index, disk)| (*index, disk.preparation))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
    for (index, preparation) in prepared {
        let name = step.status.disks.get(index).map_or("", |d| d.name.as_str());
        let (reason, note) = match preparation {
            Preparation::Streamed => (
                "DiskStreamed",
                format!(
                    "{name}: streamed from the source's export as Harvester downloads it, converted to raw on the way; nothing is stored locally"
                ),
            ),
            Preparation::Converted => (
                "DiskConverted",
                format!(
                    "{name}: its format cannot stream in one pass, so it was converted with qemu-img in the scratch directory first"
                ),
            ),
        };
        step.publish(EventType::Normal, reason, &note).await;
    }
    Ok(export)
}

/// Writes a new export's id to the job's status as soon as the source has
/// one (a vSphere lease, before vCenter readies it): a controller that dies
/// while it waits leaves an id the next one ends or re-attaches.
struct RecordInStatus<'a> {
    step: &'a Step<'a>,
    /// Why the write failed, to fail the reconcile with it.
    failed: Mutex<Option<Error>>,
}

#[async_trait]
impl ExportRecorder for RecordInStatus<'_> {
    async fn record(&self, id: &str) -> Result<(), ProviderError> {
        let update = StatusUpdate::default().with_export(id);
        self.step.write(&update).await.map_err(|error| {
            let refused = ProviderError::transient(
                Reason::EndpointError,
                format!("cannot record the export's id in the job's status: {error}"),
            );
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
            refused
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use vmm_api::importjob::{DiskPhase, ImportPhase};
    use vmm_api::inventory::PowerState;
    use vmm_core::{ExportEnd, ProviderError, Reason};

    use crate::testing::{DISK_BYTES, FakeSource, SourceCall, World, web_vm};

    const IMAGE: &str =
        "/apis/harvesterhci.io/v1beta1/namespaces/team-a/virtualmachineimages/web-disk-0";

    fn exporting(export: Option<&str>) -> Value {
        json!({"phase": "Exporting", "sourceVm": {"id": "vm-1", "poweredOffByJob": true},
            "targetName": "web-01", "export": export,
            "disks": [{"name": "Hard disk 1", "capacityBytes": DISK_BYTES, "sourceKey": "2000",
                "imageName": "web-disk-0"}]})
    }

    fn source() -> FakeSource {
        FakeSource::new(vec![web_vm(PowerState::Off)]).with_file("2000", &vec![7u8; DISK_BYTES])
    }

    #[tokio::test]
    async fn each_disk_gets_an_image_pointing_at_its_token() {
        let world = World::new(source());
        world.job(json!({}), exporting(None));
        world.reconcile().await.unwrap();
        let status = world.stored().status.unwrap();
        assert_eq!(status.phase, Some(ImportPhase::Importing));
        assert_eq!(status.export.as_deref(), Some("export-1"));
        assert_eq!(status.disks[0].phase, DiskPhase::Transferring);
        let image = world.kube.get(IMAGE).expect("the image");
        let url = image["spec"]["url"].as_str().unwrap();
        assert!(
            url.starts_with("http://ctl:8000/disks/") && url.ends_with("/web-disk-0.img"),
            "{url}"
        );
        // The disk is served at that token, from the export.
        let token = url.split('/').nth(4).unwrap();
        let served = world
            .jobs
            .context()
            .exports
            .registry
            .get(token)
            .expect("served");
        assert_eq!(served.capacity, DISK_BYTES as u64);
    }

    /// A restarted controller re-opens the export it recorded, and keeps the
    /// token Harvester already has.
    #[tokio::test]
    async fn a_recorded_export_is_resumed_with_its_tokens() {
        let world = World::new(source());
        world.kube.put(
            "virtualmachineimages",
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
                "metadata": {"name": "web-disk-0", "namespace": "team-a"},
                "spec": {"url": "http://ctl:8000/disks/kept-token/web-disk-0.img"}}),
        );
        world.job(json!({}), exporting(Some("lease-7")));
        world.reconcile().await.unwrap();
        assert!(world.source.calls().contains(&SourceCall::Export {
            vm: "vm-1".into(),
            resume: Some("lease-7".into())
        }));
        assert_eq!(
            world.stored().status.unwrap().export.as_deref(),
            Some("lease-7")
        );
        assert!(
            world
                .jobs
                .context()
                .exports
                .registry
                .get("kept-token")
                .is_some()
        );
    }

    #[tokio::test]
    async fn an_export_without_the_disk_fails_and_is_ended() {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::Off)]));
        world.job(json!({}), exporting(None));
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Failed);
        let (reason, message) = world.ready();
        assert_eq!(reason, "ExportIncomplete");
        assert!(message.contains("2000"), "{message}");
        assert!(world.stored().status.unwrap().export.is_none());
        assert!(
            world.kube.get(IMAGE).is_none(),
            "no image for a failed export"
        );
        assert!(world.source.calls().iter().any(|call| matches!(
            call,
            SourceCall::EndExport {
                how: ExportEnd::Abort(_),
                ..
            }
        )));
    }

    #[tokio::test]
    async fn an_export_the_source_cannot_start_yet_is_retried() {
        let world = World::new(source());
        world.job(json!({}), exporting(None));
        world.source.fail_once(
            "export",
            ProviderError::transient(Reason::EndpointUnreachable, "vc is unreachable"),
        );
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Exporting);
        assert!(world.kube.get(IMAGE).is_none());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Importing);
    }

    /// An export the provider names is recorded before it starts making
    /// anything, so a failure half-way (or a restart) still knows what to
    /// clean up, and the next attempt resumes it by that id.
    #[tokio::test]
    async fn a_named_export_is_recorded_before_it_starts() {
        let world = World::new(source().naming_exports());
        world.job(json!({}), exporting(None));
        world.source.fail_once(
            "export",
            ProviderError::transient(Reason::EndpointUnreachable, "the cloud is unreachable"),
        );
        world.reconcile().await.unwrap();
        let recorded = world.stored().status.unwrap().export.expect("recorded");
        assert!(recorded.starts_with("named-"), "{recorded}");
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Importing);
        let resumed: Vec<_> = world
            .source
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                SourceCall::Export { resume, .. } => Some(resume),
                _ => None,
            })
            .collect();
        assert_eq!(resumed, [Some(recorded.clone()), Some(recorded)]);
    }
}
