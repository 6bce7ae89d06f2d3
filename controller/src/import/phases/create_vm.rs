//! `CreatingVM`: the KubeVirt VM from the source VM as it is now and its
//! imported images, applied server-side (so a restart applies the same VM
//! again); then the job has succeeded.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use vmm_api::importjob::ImportPhase;

use crate::conditions::{Observed, READY};
use crate::connect::Refused;
use crate::crash;
use crate::import::RETRY_DELAY;
use crate::import::images::{self, Outcome as ImageOutcome};
use crate::import::phases::export::image_name;
use crate::import::preflight::settings;
use crate::import::status::StatusUpdate;
use crate::import::step::{Outcome, Step};
use crate::import::target;

pub async fn run(step: &Step<'_>) -> Outcome {
    let ctx = step.ctx;
    let job = step.job;
    let namespace = step.namespace;
    let source_vm = step.source_vm()?;
    let vm = step.source.session().await?.vm(&source_vm.id).await?;
    let mut imported = Vec::new();
    for disk in &step.status.disks {
        let name = image_name(disk)?;
        let image = images::get(&ctx.client, namespace, name).await?;
        let Some(ImageOutcome::Imported { storage_class }) = image.as_ref().map(images::outcome)
        else {
            return Err(Refused::new(
                "ImageDeleted",
                format!("VirtualMachineImage {name} is gone or no longer imported: delete and recreate the job"),
            )
            .into());
        };
        imported.push(target::ImportedDisk {
            image_name: name.to_owned(),
            storage_class,
            capacity_bytes: disk.capacity_bytes,
            bus: vm
                .disks
                .iter()
                .find(|d| disk.source_key.as_ref() == Some(&d.key))
                .and_then(|d| d.bus),
        });
    }
    let name = step.target_name()?;
    let reserve = settings::reserved_memory_mib(&ctx.client).await?;
    let manifest = target::virtual_machine(job, name, &vm, &imported, reserve)
        .map_err(|e| Refused::new("CannotBuildVM", e.to_string()))?;
    let vms = Api::<DynamicObject>::namespaced_with(
        ctx.client.clone(),
        namespace,
        &vmm_api::external::kubevirt_vm(),
    );
    let params = PatchParams::apply(images::FIELD_MANAGER).validation_strict();
    let applied = match vms.patch(name, &params, &Patch::Apply(&manifest)).await {
        // Some Harvester versions cap sockets at 1: the same vCPUs as cores.
        Err(kube::Error::Api(refusal))
            if refusal.message.contains(target::MAX_SOCKETS_REFUSAL)
                && let Some(flat) = target::single_socket(&manifest) =>
        {
            let applied = vms.patch(name, &params, &Patch::Apply(&flat)).await;
            if applied.is_ok() {
                let note = format!(
                    "Harvester refused {} CPU sockets (its VM webhook allows one when CPU hotplug is off): the VM has one socket with all {} vCPUs as cores",
                    manifest["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"], vm.spec.cpus
                );
                step.publish(EventType::Warning, "OneSocket", &note).await;
            }
            applied
        }
        applied => applied,
    };
    match applied {
        Ok(_) => {}
        Err(kube::Error::Api(refusal)) if refused_by_admission(&refusal) => {
            return hold(step, &refusal.message).await;
        }
        Err(error) => return Err(error.into()),
    }
    crash::point(crash::VM_APPLIED);
    let message = format!(
        "VirtualMachine {namespace}/{name} created from {:?}",
        job.spec.vm_name
    );
    let done = Observed::new(READY, true, "Succeeded", message.clone());
    step.write(&StatusUpdate::phase(job, ImportPhase::Succeeded, &done))
        .await?;
    step.ctx.metrics.observe_duration(job, "succeeded");
    step.publish(EventType::Normal, "Succeeded", &message).await;
    Ok(Action::await_change())
}

/// A webhook denied the VM (Harvester's answer 500 with "denied the
/// request", KubeVirt's 422) or its schema refused it.
fn refused_by_admission(refusal: &kube::core::Status) -> bool {
    refusal.code == 422 || refusal.message.contains("denied the request")
}

/// The cluster refused the VM: the job stays here and says why, as what a
/// webhook names (a MAC another VM took since preflight, a network deleted)
/// can be fixed without copying the disks again.
async fn hold(step: &Step<'_>, why: &str) -> Outcome {
    let message = format!(
        "the cluster refused the VM: {why}; once that is fixed the job creates it (tried again every {}s)",
        RETRY_DELAY.as_secs()
    );
    let waiting = Observed::new(READY, false, "VMRefused", message.clone());
    step.write(&StatusUpdate::condition(step.job, &waiting))
        .await?;
    step.publish(EventType::Warning, "VMRefused", &message)
        .await;
    Ok(Action::requeue(RETRY_DELAY))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use vmm_api::importjob::ImportPhase;
    use vmm_api::inventory::PowerState;
    use vmm_core::{ProviderError, Reason};

    use crate::testing::{DISK_BYTES, FakeSource, World, web_vm};

    const VM: &str = "/apis/kubevirt.io/v1/namespaces/team-a/virtualmachines/web-01";

    fn creating() -> Value {
        json!({"phase": "CreatingVM", "sourceVm": {"id": "vm-1", "poweredOffByJob": true},
            "targetName": "web-01",
            "disks": [{"name": "Hard disk 1", "capacityBytes": DISK_BYTES, "sourceKey": "2000",
                "imageName": "web-disk-0", "phase": "Imported"}]})
    }

    fn world() -> World {
        let world = World::new(FakeSource::new(vec![web_vm(PowerState::Off)]));
        world.kube.put(
            "virtualmachineimages",
            json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
                "metadata": {"name": "web-disk-0", "namespace": "team-a"},
                "status": {"storageClassName": "longhorn-web-disk-0",
                    "conditions": [{"type": "Imported", "status": "True"}]}}),
        );
        world
    }

    #[tokio::test]
    async fn the_vm_is_created_from_the_source_and_its_images() {
        let world = world();
        world.job(json!({}), creating());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Succeeded);
        let vm = world.kube.get(VM).expect("the KubeVirt VM");
        let domain = &vm["spec"]["template"]["spec"]["domain"];
        assert_eq!(
            domain["cpu"]["cores"].as_i64().unwrap() * domain["cpu"]["sockets"].as_i64().unwrap(),
            2
        );
        assert_eq!(
            domain["devices"]["interfaces"][0]["macAddress"],
            "00:50:56:00:00:01"
        );
        assert!(world.kube.event_reasons().contains(&"Succeeded".to_owned()));
    }

    #[tokio::test]
    async fn a_missing_image_fails_the_job() {
        let world = world();
        world.kube.fail_once(
            http::Method::GET,
            "/apis/harvesterhci.io/v1beta1/namespaces/team-a/virtualmachineimages/web-disk-0",
            404,
        );
        world.job(json!({}), creating());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Failed);
        assert_eq!(world.ready().0, "ImageDeleted");
        assert!(world.kube.get(VM).is_none());
    }

    #[tokio::test]
    async fn a_vm_the_cluster_refuses_holds_the_job_and_says_why() {
        let world = world();
        world.job(json!({}), creating());
        world.kube.fail_once(http::Method::PATCH, VM, 422);
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::CreatingVm);
        let (reason, message) = world.ready();
        assert_eq!(reason, "VMRefused");
        assert!(message.contains("injected failure"), "{message}");
        assert!(world.kube.event_reasons().contains(&"VMRefused".to_owned()));
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Succeeded);
    }

    #[tokio::test]
    async fn a_source_that_cannot_be_read_yet_is_retried() {
        let world = world();
        world.job(json!({}), creating());
        world.source.fail_once(
            "vm",
            ProviderError::transient(Reason::EndpointUnreachable, "vc is unreachable"),
        );
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::CreatingVm);
        assert!(world.kube.get(VM).is_none());
        world.reconcile().await.unwrap();
        assert_eq!(world.phase(), ImportPhase::Succeeded);
    }
}
