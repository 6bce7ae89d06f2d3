//! Writing an import job's status: phase moves, failures with a reason that
//! names the fix, and per-disk progress (bytes, bytes/s, ETA) with a
//! one-line summary for `kubectl get`.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use vmm_api::importjob::{DiskStatus, ImportJob, ImportJobStatus, ImportPhase};

use crate::conditions::{self, Observed, READY};
use crate::connect::Refused;
use crate::error::Error;

/// Merges `status` fields into the job's status.
pub async fn patch(api: &Api<ImportJob>, job: &ImportJob, status: Value) -> Result<(), Error> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

/// The job's status with `phase` and the `Ready` condition as they now are.
pub fn phase(job: &ImportJob, phase: ImportPhase, ready: Observed) -> Value {
    let status = job.status.clone().unwrap_or_default();
    let conditions = conditions::set(&status.conditions, &ready, job.metadata.generation);
    json!({
        "phase": phase,
        "conditions": conditions,
        "observedGeneration": job.metadata.generation,
    })
}

/// A phase's name as the API spells it (`CreatingVM`): also the `Ready`
/// reason and the Event reason while the job is in it.
pub fn phase_name(phase: ImportPhase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Moving on to `next`: `Ready` is False while the job runs.
pub fn running(job: &ImportJob, next: ImportPhase, message: &str) -> Value {
    let ready = Observed {
        type_: READY,
        status: false,
        reason: phase_name(next),
        message: message.to_owned(),
    };
    phase(job, next, ready)
}

/// The end of a job that cannot go on, with why and what to change.
pub fn failed(job: &ImportJob, refused: &Refused) -> Value {
    phase(
        job,
        ImportPhase::Failed,
        Observed::new(READY, false, refused.reason, refused.message.clone()),
    )
}

/// `3.2/10.0 GiB (32%)`.
pub fn summary(disks: &[DiskStatus]) -> String {
    let done: i64 = disks.iter().map(|d| d.bytes_done).sum();
    let total: i64 = disks.iter().map(|d| d.capacity_bytes).sum();
    let gib = |bytes: i64| bytes as f64 / f64::from(1u32 << 30);
    let percent = if total > 0 { done * 100 / total } else { 0 };
    format!("{:.1}/{:.1} GiB ({percent}%)", gib(done), gib(total))
}

/// One disk's progress from two samples `elapsed` apart: bytes/s over the
/// interval and the time left at that rate.
pub fn advance(disk: &mut DiskStatus, bytes_done: u64, elapsed: Duration) {
    let bytes_done = i64::try_from(bytes_done).unwrap_or(i64::MAX);
    let moved = bytes_done.saturating_sub(disk.bytes_done);
    disk.bytes_done = bytes_done;
    if elapsed.is_zero() {
        return;
    }
    let rate = (moved as f64 / elapsed.as_secs_f64()) as i64;
    disk.bytes_per_second = Some(rate);
    let left = disk.capacity_bytes.saturating_sub(bytes_done);
    disk.eta_seconds = (rate > 0).then(|| left / rate);
}

/// The job's status, or an empty one.
pub fn of(job: &ImportJob) -> ImportJobStatus {
    job.status.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_kubectl_users_expect() {
        let mut disk = DiskStatus {
            name: "Hard disk 1".into(),
            capacity_bytes: 10 << 30,
            ..DiskStatus::default()
        };
        advance(&mut disk, 2 << 30, Duration::from_secs(10));
        assert_eq!(disk.bytes_per_second, Some((2 << 30) / 10));
        assert_eq!(disk.eta_seconds, Some(40));
        advance(&mut disk, 2 << 30, Duration::from_secs(10));
        assert_eq!(disk.bytes_per_second, Some(0));
        assert_eq!(disk.eta_seconds, None, "no rate, no estimate");
        let other = DiskStatus {
            capacity_bytes: 6 << 30,
            bytes_done: 0,
            ..DiskStatus::default()
        };
        assert_eq!(summary(&[disk, other]), "2.0/16.0 GiB (12%)");
        assert_eq!(summary(&[]), "0.0/0.0 GiB (0%)");
    }
}
