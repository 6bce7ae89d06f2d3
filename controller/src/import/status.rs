//! Writing an import job's status: a typed [`StatusUpdate`] merged into it,
//! phase moves with the `Ready` condition, failures with a reason that names
//! the fix, and per-disk progress (bytes, bytes/s, ETA) with a one-line
//! summary for `kubectl get`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::json;
use vmm_api::importjob::{DiskStatus, ImportJob, ImportPhase, SourceVm};

use crate::conditions::{self, Observed, READY};
use crate::connect::Refused;
use crate::error::Error;

/// The fields of a job's status to change; those left `None` stay as they
/// are (a JSON merge patch).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<ImportPhase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conditions: Option<Vec<Condition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_vm: Option<SourceVm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disks: Option<Vec<DiskStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    /// `Some(None)` removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    export: Option<Option<String>>,
}

impl StatusUpdate {
    /// `phase`, with the `Ready` condition as `ready` says.
    pub fn phase(job: &ImportJob, phase: ImportPhase, ready: &Observed) -> Self {
        Self {
            phase: Some(phase),
            ..Self::condition(job, ready)
        }
    }

    /// Only the `Ready` condition, as `ready` says.
    pub fn condition(job: &ImportJob, ready: &Observed) -> Self {
        let current = job
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        Self {
            conditions: Some(conditions::set(current, ready, job.metadata.generation)),
            observed_generation: job.metadata.generation,
            ..Self::default()
        }
    }

    /// Moving on to `next`: `Ready` is False while the job runs, with the
    /// phase's name as its reason.
    pub fn running(job: &ImportJob, next: ImportPhase, message: &str) -> Self {
        Self::phase(
            job,
            next,
            &Observed::new(READY, false, next.as_str(), message),
        )
    }

    /// The end of a job that cannot go on, with why and what to change; the
    /// export is gone with it.
    pub fn failed(job: &ImportJob, refused: &Refused) -> Self {
        Self::phase(
            job,
            ImportPhase::Failed,
            &Observed::new(READY, false, refused.reason, refused.message.clone()),
        )
        .without_export()
    }

    pub fn with_target_name(mut self, name: &str) -> Self {
        self.target_name = Some(name.to_owned());
        self
    }

    pub fn with_source_vm(mut self, vm: &SourceVm) -> Self {
        self.source_vm = Some(vm.clone());
        self
    }

    /// The disks, and the progress summary of them.
    pub fn with_disks(mut self, disks: &[DiskStatus]) -> Self {
        self.progress = Some(summary(disks));
        self.disks = Some(disks.to_vec());
        self
    }

    pub fn with_export(mut self, id: &str) -> Self {
        self.export = Some(Some(id.to_owned()));
        self
    }

    pub fn without_export(mut self) -> Self {
        self.export = Some(None);
        self
    }

    /// This update's fields, and `base`'s where this one leaves them out.
    pub fn merged_over(self, base: StatusUpdate) -> StatusUpdate {
        StatusUpdate {
            phase: self.phase.or(base.phase),
            conditions: self.conditions.or(base.conditions),
            observed_generation: self.observed_generation.or(base.observed_generation),
            target_name: self.target_name.or(base.target_name),
            source_vm: self.source_vm.or(base.source_vm),
            disks: self.disks.or(base.disks),
            progress: self.progress.or(base.progress),
            export: self.export.or(base.export),
        }
    }

    /// Merges this into `job`'s status.
    pub async fn write(&self, api: &Api<ImportJob>, job: &ImportJob) -> Result<(), Error> {
        let name = job.metadata.name.as_deref().unwrap_or_default();
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": self })),
        )
        .await?;
        Ok(())
    }
}

/// `3.2/10.0 GiB (32%)`.
pub fn summary(disks: &[DiskStatus]) -> String {
    let done: i64 = disks.iter().map(|d| d.bytes_done).sum();
    let total: i64 = disks.iter().map(|d| d.capacity_bytes).sum();
    let percent = if total > 0 { done * 100 / total } else { 0 };
    format!("{:.1}/{:.1} GiB ({percent}%)", gib(done), gib(total))
}

fn gib(bytes: i64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// How far all disks are, 0–100.
pub fn percent(disks: &[DiskStatus]) -> u8 {
    let done: i64 = disks.iter().map(|d| d.bytes_done).sum();
    let total: i64 = disks.iter().map(|d| d.capacity_bytes).sum::<i64>().max(1);
    u8::try_from(done * 100 / total).unwrap_or(100)
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

/// A disk whose image is imported: all its bytes are done.
pub fn imported(disk: &mut DiskStatus) {
    disk.phase = vmm_api::importjob::DiskPhase::Imported;
    disk.bytes_done = disk.capacity_bytes;
    disk.bytes_per_second = None;
    disk.eta_seconds = None;
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
        assert_eq!(percent(&[disk.clone(), other.clone()]), 12);
        assert_eq!(summary(&[disk, other]), "2.0/16.0 GiB (12%)");
        assert_eq!(summary(&[]), "0.0/0.0 GiB (0%)");
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let job: ImportJob = serde_json::from_value(json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "ns", "generation": 2},
            "spec": {"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": "web"},
        }))
        .unwrap();
        let update = serde_json::to_value(
            StatusUpdate::running(&job, ImportPhase::CreatingVm, "creating").with_export("lease-1"),
        )
        .unwrap();
        assert_eq!(update["phase"], "CreatingVM");
        assert_eq!(update["observedGeneration"], 2);
        assert_eq!(update["conditions"][0]["reason"], "CreatingVM");
        assert_eq!(update["export"], "lease-1");
        assert!(update.get("disks").is_none() && update.get("targetName").is_none());
        let failed = serde_json::to_value(StatusUpdate::failed(
            &job,
            &Refused::new("VmNotFound", "no VM"),
        ))
        .unwrap();
        assert_eq!(failed["phase"], "Failed");
        assert!(
            failed["export"].is_null() && failed.get("export").is_some(),
            "cleared"
        );
    }
}
