//! virt-controller's VM part, as far as stopping goes: a halted VM loses its
//! instance [`Options::stop_delay`](super::Options::stop_delay) after the
//! stand-in first saw it halted (`Stopping` meanwhile), then shows
//! `Stopped`. VMs are reconciled on their own changes and on their
//! instances' (an instance belongs to the VM of the same name).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{Ctx, Failed, lock, vm_resource, vmi_resource};

/// Reconciles VMs until aborted.
pub(super) async fn run(ctx: Arc<Ctx>) {
    let vms = ctx.api(&vm_resource());
    let vmis = ctx.api(&vmi_resource());
    Controller::new_with(vms, watcher::Config::default(), vm_resource())
        .watches_with(vmis, vmi_resource(), watcher::Config::default(), |vmi| {
            let ns = vmi.metadata.namespace?;
            Some(ObjectRef::new_with(&vmi.metadata.name?, vm_resource()).within(&ns))
        })
        .run(reconcile, super::retry_soon, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) | Err(ControllerError::ObjectNotFound(_)) => {}
                Err(e) => tracing::warn!("kubevirt stand-in: VM controller: {e}"),
            }
        })
        .await;
}

/// `spec.runStrategy: Halted`, or `spec.running: false` without a run
/// strategy (KubeVirt refuses both at once).
fn halted(vm: &DynamicObject) -> bool {
    let spec = &vm.data["spec"];
    match spec["runStrategy"].as_str() {
        Some(strategy) => strategy == "Halted",
        None => spec["running"] == false,
    }
}

async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let (Some(ns), Some(name), Some(uid)) = (
        vm.metadata.namespace.as_deref(),
        vm.metadata.name.as_deref(),
        vm.metadata.uid.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    if !halted(&vm) || vm.metadata.deletion_timestamp.is_some() {
        lock(&ctx.halts).remove(uid);
        return Ok(Action::await_change());
    }
    let vmis = ctx.namespaced(ns, &vmi_resource());
    if vmis.get_opt(name).await?.is_some() {
        let seen = *lock(&ctx.halts)
            .entry(uid.to_owned())
            .or_insert_with(Instant::now);
        let left = (seen + ctx.options.stop_delay).saturating_duration_since(Instant::now());
        if !left.is_zero() {
            set_status(&ctx, &vm, json!({"printableStatus": "Stopping"})).await?;
            return Ok(Action::requeue(left));
        }
        tracing::info!("kubevirt stand-in: VM {ns}/{name} stopped");
        match vmis.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    lock(&ctx.halts).remove(uid);
    let stopped = json!({"printableStatus": "Stopped", "created": null, "ready": null});
    set_status(&ctx, &vm, stopped).await?;
    Ok(Action::await_change())
}

/// Merge-patches the VM's status (subresource) unless `printableStatus`
/// already says so.
async fn set_status(ctx: &Ctx, vm: &DynamicObject, status: Value) -> Result<()> {
    if vm.data["status"]["printableStatus"] == status["printableStatus"] {
        return Ok(());
    }
    let (ns, name) = (
        vm.metadata.namespace.as_deref().unwrap_or_default(),
        vm.metadata.name.as_deref().unwrap_or_default(),
    );
    ctx.namespaced(ns, &vm_resource())
        .patch_status(
            name,
            &super::patch_params(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .with_context(|| format!("set the status of VM {ns}/{name}"))?;
    Ok(())
}

/// [`KubeVirt::run_vm`](super::KubeVirt::run_vm).
pub(super) async fn run_vm(ctx: &Ctx, namespace: &str, name: &str) -> Result<()> {
    let vm = ctx
        .namespaced(namespace, &vm_resource())
        .get(name)
        .await
        .with_context(|| format!("get VM {namespace}/{name}"))?;
    if halted(&vm) {
        bail!("VM {namespace}/{name} is halted: KubeVirt would not run it");
    }
    let template = &vm.data["spec"]["template"];
    let vmi: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachine",
                "name": name,
                "uid": vm.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template["spec"],
        // No status subresource on this CRD: the status goes with the object.
        "status": {"phase": "Running", "nodeName": super::NODE},
    }))?;
    let vmis = ctx.namespaced(namespace, &vmi_resource());
    match vmis.create(&super::post_params(), &vmi).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let running = json!({"status": {"phase": "Running", "nodeName": super::NODE}});
            vmis.patch(name, &super::patch_params(), &Patch::Merge(&running))
                .await
                .with_context(|| format!("set instance {namespace}/{name} running"))?;
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("create instance {namespace}/{name}"))
            );
        }
    }
    let running = json!({"printableStatus": "Running", "created": true, "ready": true});
    set_status(ctx, &vm, running).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(spec: Value) -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn halted_by_run_strategy_or_the_legacy_field() {
        assert!(halted(&vm(json!({"runStrategy": "Halted"}))));
        assert!(!halted(&vm(json!({"runStrategy": "Always"}))));
        assert!(halted(&vm(json!({"running": false}))));
        assert!(!halted(&vm(json!({"running": true}))));
        assert!(!halted(&vm(json!({}))));
    }
}
