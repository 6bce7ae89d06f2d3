//! `Importing` in transfer mode `jobs` (docs/scale-out.md): each disk not
//! yet imported has a transfer, made when a slot is free; once its worker
//! serves, the disk's image is made pointing at the transfer's Service.
//! A transfer of an export that was replaced is removed and made again for
//! the new one; an imported disk's transfer is removed at once.

use std::collections::HashMap;

use kube::ResourceExt;
use vmm_api::importjob::{DiskPhase, DiskStatus};

use crate::connect::{self, Refused};
use crate::disks;
use crate::import::images::{self, Outcome as ImageOutcome};
use crate::import::phases::export::make_image;
use crate::import::step::{PhaseError, Step, lost};
use crate::workers::TransferSpec;
use crate::workers::manifests::TransferRef;
use crate::workers::pool::{TransferPool, TransferState, export_of};

/// A disk's image as read this reconcile: none until its transfer serves.
pub type FoundImage = (Option<kube::api::DynamicObject>, ImageOutcome);

/// Why disks wait, as the Ready condition's reason and message.
pub type Waiting = (&'static str, String);

/// Moves each disk's transfer on; the bytes each serving worker has sent,
/// by disk index, and why disks wait, if any do: a transfer whose pod
/// cannot start says more than a full pool.
pub async fn run(
    step: &Step<'_>,
    pool: &TransferPool,
    export_id: &str,
    disks: &mut [DiskStatus],
    found: &[FoundImage],
) -> Result<(HashMap<usize, u64>, Option<Waiting>), PhaseError> {
    let uid = step.job.uid().ok_or_else(|| lost("the job's UID"))?;
    let mut transfers = pool.of_job(&uid).await?;
    let mut sent = HashMap::new();
    let mut queued = None;
    let mut stuck = None;
    for (index, (disk, (image, outcome))) in disks.iter_mut().zip(found).enumerate() {
        let name = TransferRef::name_for(&uid, index);
        let existing = transfers.remove(&name);
        if matches!(outcome, ImageOutcome::Imported { .. }) {
            if existing.is_some() {
                pool.remove(&name).await?;
            }
            continue;
        }
        let transfer = TransferRef {
            name,
            job: format!("{}/{}", step.namespace, step.job.name_any()),
            job_uid: uid.clone(),
            host: host_key(step),
            export_id: export_id.to_owned(),
        };
        let state = match &existing {
            // Made for an export that was replaced: made again next time.
            Some(job) if export_of(job) != Some(export_id) => {
                pool.remove(&transfer.name).await?;
                continue;
            }
            Some(job) => match pool.state(job).await? {
                TransferState::Starting(_) if !pool.is_whole(job).await? => {
                    // Left half-made by a leader that died: made again next time.
                    pool.remove(&transfer.name).await?;
                    continue;
                }
                state => state,
            },
            None => {
                let token = image
                    .as_ref()
                    .and_then(images::token)
                    .unwrap_or_else(disks::new_token);
                let spec = spec(step, index, export_id, token).await?;
                pool.start(&transfer, spec).await?
            }
        };
        match state {
            TransferState::Queued(why) => {
                disk.phase = DiskPhase::Queued;
                queued.get_or_insert(why);
            }
            TransferState::Starting(None) => {}
            TransferState::Starting(Some(why)) => {
                stuck.get_or_insert(format!(
                    "the transfer of {} is not serving: {why}",
                    disk.name
                ));
            }
            TransferState::Failed(why) => {
                return Err(Refused::new(
                    "TransferFailed",
                    format!(
                        "the transfer of {} gave up after its pods failed: {why}",
                        disk.name
                    ),
                )
                .into());
            }
            TransferState::Serving { pod_ip } => {
                if image.is_none() {
                    // Made only once Harvester's first download can get through.
                    if !pool.routed(&transfer.name, &pod_ip).await? {
                        continue;
                    }
                    let spec = pool.spec_of(&transfer.name).await?.ok_or_else(|| {
                        lost(&format!("the Secret of transfer {}", transfer.name))
                    })?;
                    make_image(
                        step,
                        index,
                        &spec.token,
                        Some(&transfer.url_base(&pool.template)),
                    )
                    .await?;
                    disk.phase = DiskPhase::Transferring;
                }
                if let Some(progress) = pool.progress(&pod_ip).await {
                    sent.insert(index, progress.sent);
                }
            }
        }
    }
    let queued = queued.map(|why| {
        (
            "TransferQueued",
            format!("disks wait for a transfer slot: {why}"),
        )
    });
    Ok((sent, stuck.map(|why| ("TransferStarting", why)).or(queued)))
}

/// What a worker needs for disk `index`: the source, a copy of its
/// credentials, the export, the disk and its token.
async fn spec(
    step: &Step<'_>,
    index: usize,
    export_id: &str,
    token: String,
) -> Result<TransferSpec, PhaseError> {
    let disk = &step.status.disks[index];
    let source = step.source.object().await?;
    let connection = &source.spec.connection;
    let credentials = connect::secret_data(step.ctx, step.namespace, connection).await?;
    Ok(TransferSpec {
        kind: step.job.spec.source_cluster.kind,
        source: source.spec.clone(),
        credentials_secret: connection.credentials.name.clone(),
        credentials,
        vm_id: step.source_vm()?.id.clone(),
        export_id: export_id.to_owned(),
        disk_key: disk
            .source_key
            .clone()
            .ok_or_else(|| lost(&format!("the source key of disk {}", disk.name)))?,
        capacity: u64::try_from(disk.capacity_bytes).unwrap_or(0),
        token,
    })
}

/// The job's source host, as transfers count it: one host of one source
/// (`<kind>/<namespace>/<source>/<host>`), empty when the source did not say.
fn host_key(step: &Step<'_>) -> String {
    let host = step
        .status
        .source_vm
        .as_ref()
        .and_then(|vm| vm.host.as_deref());
    let source = &step.job.spec.source_cluster;
    host.map(|host| {
        format!(
            "{}/{}/{}/{host}",
            source.kind.as_str(),
            step.namespace,
            source.name
        )
    })
    .unwrap_or_default()
}
