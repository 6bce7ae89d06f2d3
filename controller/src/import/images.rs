//! One Harvester `VirtualMachineImage` per disk (`harvesterhci.io/v1beta1`,
//! `sourceType: download`) pointing at the disk endpoint, and how to read its
//! outcome the way Harvester reports it: `Imported=True`, or
//! `RetryLimitExceeded=True` (never an "ImportFailed" reason: no Harvester code
//! sets one; docs/harvester.md §1).
//!
//! Images carry the job's label but no owner reference: once the job has
//! succeeded they back the new VM's disks and must outlive the job. A job
//! deleted before that deletes them itself.

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use vmm_api::importjob::{DiskStatus, ImportJob};

use crate::import::target::JOB_LABEL;

pub const FIELD_MANAGER: &str = "vm-migration-controller";
/// Attempts Harvester makes per image before giving up (its maximum is 10):
/// each attempt is one full download, and a controller restart costs one.
const RETRY: i32 = 5;

fn api(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &vmm_api::external::virtual_machine_image(),
    )
}

/// `<job>-disk-<index>`, within the 253 characters of an object name.
pub fn name(job: &str, index: usize) -> String {
    let suffix = format!("-disk-{index}");
    let keep = job.len().min(253 - suffix.len());
    format!("{}{suffix}", &job[..keep])
}

/// The provisioner of Longhorn volumes: images on it use Harvester's default
/// `backingimage` backend.
pub const LONGHORN_PROVISIONER: &str = "driver.longhorn.io";

/// The class of a CDI image (any class but Longhorn's), which is also the
/// class of the VM's volumes. A Longhorn image gets a class Harvester makes
/// for it, so its volumes' class is known only once it exists.
pub fn cdi_class(storage_class: Option<&StorageClass>) -> Option<&str> {
    storage_class
        .filter(|class| class.provisioner != LONGHORN_PROVISIONER)
        .and_then(|class| class.metadata.name.as_deref())
}

/// The image for disk `index` of `job`, downloaded from `url`, on
/// `storage_class` (`None`: Harvester's default, Longhorn).
pub fn manifest(
    job: &ImportJob,
    target_name: &str,
    index: usize,
    disk: &DiskStatus,
    url: &str,
    storage_class: Option<&StorageClass>,
) -> Value {
    let job_name = job.metadata.name.as_deref().unwrap_or_default();
    // A display name is a label value: at most 63 characters, unique in the
    // namespace (Harvester's webhook checks).
    let suffix = format!("-disk-{index}");
    let keep = target_name.len().min(63 - suffix.len());
    let display_name = format!("{}{suffix}", &target_name[..keep]);
    let mut spec = json!({
        "displayName": display_name,
        "sourceType": "download",
        "url": url,
        "retry": RETRY,
        "description": format!("{} of {:?}, imported by job {job_name}", disk.name, job.spec.vm_name),
    });
    // As Harvester's UI does: a Longhorn class's parameters are copied to the
    // class Harvester makes for the image; any other class takes the image
    // through CDI (`backend: cdi`), which reads our endpoint with ranges.
    if let Some(class) = cdi_class(storage_class) {
        spec["backend"] = json!("cdi");
        spec["targetStorageClassName"] = json!(class);
    } else if let Some(class) = storage_class {
        spec["storageClassParameters"] = json!(class.parameters.clone().unwrap_or_default());
    }
    json!({
        "apiVersion": "harvesterhci.io/v1beta1",
        "kind": "VirtualMachineImage",
        "metadata": {
            "name": name(job_name, index),
            "namespace": job.metadata.namespace,
            "labels": {JOB_LABEL: job_name},
        },
        "spec": spec,
    })
}

/// Creates the image, or leaves an existing one as it is (server-side apply).
pub async fn apply(client: &kube::Client, namespace: &str, manifest: &Value) -> kube::Result<()> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    api(client, namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(manifest),
        )
        .await?;
    Ok(())
}

pub async fn get(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> kube::Result<Option<DynamicObject>> {
    api(client, namespace).get_opt(name).await
}

/// Every image of `job`, e.g. to clean up after a cancelled job.
pub async fn delete_all(client: &kube::Client, namespace: &str, job: &str) -> kube::Result<()> {
    let api = api(client, namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job}")))
        .await?;
    for image in listed {
        if let Some(name) = image.metadata.name {
            api.delete(&name, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}

/// Where an image's import stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Importing,
    Imported { storage_class: String },
    Failed { message: String },
}

pub fn outcome(image: &DynamicObject) -> Outcome {
    let status = &image.data["status"];
    let condition = |type_: &str| {
        status["conditions"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == type_))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let gave_up = condition("RetryLimitExceeded");
    if gave_up["status"] == "True" {
        let message = gave_up["message"]
            .as_str()
            .unwrap_or("retry limit exceeded");
        return Outcome::Failed {
            message: without_token(image, message),
        };
    }
    let storage_class = status["storageClassName"].as_str().unwrap_or_default();
    if condition("Imported")["status"] == "True" && !storage_class.is_empty() {
        return Outcome::Imported {
            storage_class: storage_class.to_owned(),
        };
    }
    Outcome::Importing
}

/// Harvester's `message` about `image` without the image's disk token:
/// Harvester quotes the URL in its failures (`got 404 status code from
/// <url>`), and the message goes on into the job's status and Events.
fn without_token(image: &DynamicObject, message: &str) -> String {
    let mut message = message.to_owned();
    if let Some(url) = image.data["spec"]["url"].as_str() {
        message = message.replace(url, &vmm_wire::vsphere::redact_url(url));
    }
    match token(image) {
        Some(token) if !token.is_empty() => message.replace(&token, "…"),
        _ => message,
    }
}

/// The disk endpoint token in an image's URL (`…/disks/<token>/<file>`), to
/// serve it again after a restart.
pub fn token(image: &DynamicObject) -> Option<String> {
    let url = image.data["spec"]["url"].as_str()?;
    let (_, rest) = url.split_once("/disks/")?;
    rest.split('/').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
            "metadata": {"name": "x"},
            "spec": {"url": "http://ctl:8000/disks/abc123/web-01-disk-0.img"},
            "status": status,
        }))
        .unwrap()
    }

    /// The backend follows the storage class, as Harvester's UI chooses it.
    #[test]
    fn the_storage_class_chooses_the_backend() {
        let job: ImportJob = serde_json::from_value(json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"sourceCluster": {"kind": "Vsphere", "name": "vc"}, "vmName": "web"},
        }))
        .unwrap();
        let class = |name: &str, provisioner: &str| -> StorageClass {
            serde_json::from_value(json!({
                "metadata": {"name": name}, "provisioner": provisioner,
                "parameters": {"numberOfReplicas": "2"},
            }))
            .unwrap()
        };
        let cases = [
            (None, json!(null), json!(null), json!(null)),
            (
                Some(class("fast", "driver.longhorn.io")),
                json!(null),
                json!(null),
                json!({"numberOfReplicas": "2"}),
            ),
            (
                Some(class("ceph", "rbd.csi.ceph.com")),
                json!("cdi"),
                json!("ceph"),
                json!(null),
            ),
        ];
        for (class, backend, target, parameters) in cases {
            let manifest = manifest(
                &job,
                "web",
                0,
                &DiskStatus::default(),
                "http://x",
                class.as_ref(),
            );
            let spec = &manifest["spec"];
            assert_eq!(spec["backend"], backend, "{class:?}");
            assert_eq!(spec["targetStorageClassName"], target, "{class:?}");
            assert_eq!(spec["storageClassParameters"], parameters, "{class:?}");
        }
    }

    #[test]
    fn outcomes_read_as_harvester_writes_them() {
        let cases = [
            (json!({}), Outcome::Importing),
            (
                json!({"conditions": [{"type": "Imported", "status": "Unknown", "reason": "Importing"}]}),
                Outcome::Importing,
            ),
            (
                json!({"storageClassName": "lh-1", "conditions": [{"type": "Imported", "status": "True"}]}),
                Outcome::Imported {
                    storage_class: "lh-1".into(),
                },
            ),
            (
                json!({"conditions": [
                    {"type": "Imported", "status": "False", "reason": "Importing"},
                    {"type": "RetryLimitExceeded", "status": "True", "message": "retry attempted 6/5 failed"}]}),
                Outcome::Failed {
                    message: "retry attempted 6/5 failed".into(),
                },
            ),
            (
                json!({"conditions": [{"type": "RetryLimitExceeded", "status": "True",
                    "message": "failed due to error: got 503 status code from http://ctl:8000/disks/abc123/web-01-disk-0.img (abc123)"}]}),
                Outcome::Failed {
                    message: "failed due to error: got 503 status code from http://ctl:8000/disks/…/web-01-disk-0.img (…)".into(),
                },
            ),
        ];
        for (status, want) in cases {
            assert_eq!(outcome(&image(status.clone())), want, "{status}");
        }
        assert_eq!(token(&image(json!({}))).as_deref(), Some("abc123"));
    }

    #[test]
    fn names_fit() {
        assert_eq!(name("web-01", 1), "web-01-disk-1");
        assert_eq!(name(&"j".repeat(253), 12).len(), 253);
    }
}
