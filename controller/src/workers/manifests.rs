//! The objects of one transfer, all in the release's namespace and named
//! alike: a Job whose pod runs `vmm-controller transfer`, the Secret it
//! reads its [`TransferSpec`] from, and the Service Harvester's importer
//! downloads through (its URL outlives a replaced pod). The Secret and the
//! Service are owned by the Job: deleting the Job removes all three.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::json;

use crate::workers::{SPEC_KEY, TransferSpec};

/// Every transfer's objects carry this label (value `transfer`) with
/// `app.kubernetes.io/name=vm-migration`, to list them all.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The transfer's name: its pod's selector.
pub const TRANSFER_LABEL: &str = "vm-migration.harvesterhci.io/transfer";
/// The UID of the import job a transfer belongs to.
pub const JOB_UID_LABEL: &str = "vm-migration.harvesterhci.io/import-job-uid";
/// `namespace/name` of that import job, for people and the orphan sweep.
pub const JOB_ANNOTATION: &str = "vm-migration.harvesterhci.io/import-job";
/// Where the disk comes from: `<kind>/<source namespace>/<source>/<host>`.
pub const HOST_ANNOTATION: &str = "vm-migration.harvesterhci.io/source-host";
/// The export the worker re-opens.
pub const EXPORT_ANNOTATION: &str = "vm-migration.harvesterhci.io/export";
/// The port the worker serves its disk on, in the pod and the Service.
pub const DISK_PORT: u16 = 8000;
/// The worker's admin port: probes and `/progress`.
pub const ADMIN_PORT: u16 = 8080;
/// Where the worker finds its spec.
pub const SPEC_DIR: &str = "/etc/vm-migration/transfer";
/// Pods a Job may fail (not counting evictions) before the transfer fails.
pub const BACKOFF_LIMIT: i32 = 3;

/// How every worker pod is made, from the controller's flags.
#[derive(Clone, Debug)]
pub struct WorkerTemplate {
    /// The release's namespace: every transfer object lives there.
    pub namespace: String,
    /// The controller's own image.
    pub image: String,
    pub pull_policy: String,
    /// Labels every object gets (the chart's: name, instance, ...).
    pub labels: BTreeMap<String, String>,
    /// The scratch emptyDir's size limit (`Quantity`), for disks converted
    /// with qemu-img first.
    pub scratch_size: String,
}

/// One transfer: which disk of which import job.
#[derive(Clone, Debug)]
pub struct TransferRef {
    pub name: String,
    /// `namespace/name` and UID of the import job.
    pub job: String,
    pub job_uid: String,
    pub host: String,
    pub export_id: String,
}

impl TransferRef {
    /// The transfer of disk `index` of the job with UID `job_uid`: a name
    /// that is a valid Service name and stable across restarts.
    pub fn name_for(job_uid: &str, index: usize) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, job_uid.as_bytes());
        let short: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("vmm-transfer-{short}-{index}")
    }

    /// The disk's URL base as Harvester reaches it, through the Service.
    pub fn url_base(&self, template: &WorkerTemplate) -> String {
        format!(
            "http://{}.{}.svc:{DISK_PORT}",
            self.name, template.namespace
        )
    }
}

impl WorkerTemplate {
    fn labels(&self, transfer: &TransferRef) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(COMPONENT_LABEL.into(), "transfer".into());
        labels.insert(TRANSFER_LABEL.into(), transfer.name.clone());
        labels.insert(JOB_UID_LABEL.into(), transfer.job_uid.clone());
        labels
    }

    /// The Job; its pod spreads over nodes with the other transfers.
    pub fn job(&self, transfer: &TransferRef) -> Job {
        let labels = self.labels(transfer);
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": transfer.name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {
                    JOB_ANNOTATION: transfer.job,
                    HOST_ANNOTATION: transfer.host,
                    EXPORT_ANNOTATION: transfer.export_id,
                },
            },
            "spec": {
                "backoffLimit": BACKOFF_LIMIT,
                // An evicted or preempted pod is replaced without counting.
                "podFailurePolicy": {"rules": [{
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget"}],
                }]},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        // The worker needs no Kubernetes API.
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "topologySpreadConstraints": [{
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": {COMPONENT_LABEL: "transfer"}},
                        }],
                        "containers": [{
                            "name": "transfer",
                            "image": self.image,
                            "imagePullPolicy": self.pull_policy,
                            "args": [
                                "transfer",
                                format!("--spec-file={SPEC_DIR}/{SPEC_KEY}"),
                                format!("--disk-listen-addr=0.0.0.0:{DISK_PORT}"),
                                format!("--admin-addr=0.0.0.0:{ADMIN_PORT}"),
                                "--scratch-dir=/scratch",
                                "--log-format=json",
                            ],
                            "ports": [
                                {"name": "disks", "containerPort": DISK_PORT},
                                {"name": "admin", "containerPort": ADMIN_PORT},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "admin"},
                                "periodSeconds": 2,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "privileged": false,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "spec", "mountPath": SPEC_DIR, "readOnly": true},
                                {"name": "scratch", "mountPath": "/scratch"},
                            ],
                        }],
                        "volumes": [
                            {"name": "spec", "secret": {"secretName": transfer.name}},
                            {"name": "scratch", "emptyDir": {"sizeLimit": self.scratch_size}},
                        ],
                    },
                },
            },
        });
        serde_json::from_value(job).expect("a valid Job")
    }

    /// The Secret with the worker's spec, owned by `job`.
    pub fn secret(&self, transfer: &TransferRef, job: &Job, spec: &TransferSpec) -> Secret {
        let body = serde_json::to_vec(spec).expect("a spec serializes");
        Secret {
            metadata: self.owned_metadata(transfer, job),
            data: Some(BTreeMap::from([(SPEC_KEY.to_owned(), ByteString(body))])),
            ..Secret::default()
        }
    }

    /// The Service Harvester downloads through, owned by `job`.
    pub fn service(&self, transfer: &TransferRef, job: &Job) -> Service {
        let service = json!({
            "metadata": self.owned_metadata(transfer, job),
            "spec": {
                "selector": {TRANSFER_LABEL: transfer.name},
                "ports": [{"name": "disks", "port": DISK_PORT, "targetPort": "disks"}],
            },
        });
        serde_json::from_value(service).expect("a valid Service")
    }

    fn owned_metadata(
        &self,
        transfer: &TransferRef,
        job: &Job,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: transfer.name.clone(),
            uid: job.meta().uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(transfer.name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(transfer)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TransferRef;

    /// A transfer's name is its Service's: a DNS-1035 label, the same for
    /// the same disk after a restart, another for another disk or job.
    #[test]
    fn transfer_names_are_stable_service_names() {
        let uid = "0b6e3c9a-5f7e-4c1b-9d2a-7e1f3c5b9a11";
        let name = TransferRef::name_for(uid, 12);
        assert_eq!(name, TransferRef::name_for(uid, 12));
        assert_ne!(name, TransferRef::name_for(uid, 1));
        assert_ne!(name, TransferRef::name_for("another-uid", 12));
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}
