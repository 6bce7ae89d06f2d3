//! Just enough of Harvester's VM controller (`pkg/controller/master/
//! virtualmachine`): `createPVCsFromAnnotation` creates each PVC of the VM's
//! `harvesterhci.io/volumeClaimTemplates` annotation that does not exist
//! yet (same name, the VM's namespace, annotations and spec as given, no
//! ownerReferences), and `SetOwnerOfPVCs` records the VM in the
//! `harvesterhci.io/owned-by` annotation of each PVC its volumes use.
//!
//! Admission is not played here: control planes with a controller run
//! Harvester's real VM webhook (`crate::admission`), which refuses a template
//! without a name. What this adds is a guard no Harvester code has: a
//! `harvesterhci.io/imageId` must be `<namespace>/<name>` of an existing
//! image whose `status.storageClassName` is the PVC's `storageClassName`,
//! because Longhorn would provision a PVC of another class as an empty
//! volume, a VM without its data that nothing reports. A template failing it
//! is not created; the reasons are recorded ([`VmRecord`](super::VmRecord))
//! and put on the VM as [`ERROR_ANNOTATION`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DynamicObject, Patch};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Ctx, ERROR_ANNOTATION, IMAGE_ID_ANNOTATION, OWNED_BY_ANNOTATION,
    VOLUME_CLAIM_TEMPLATES_ANNOTATION, VmRecord, image_resource, key, kubevirt_vm_resource,
};

/// Harvester's schema id for KubeVirt VMs in `owned-by`.
const VM_SCHEMA: &str = "kubevirt.io.virtualmachine";

/// Watches VMs until aborted; handles each value of a VM's annotation once.
pub(super) async fn run(ctx: Arc<Ctx>) {
    let api = ctx.api(&kubevirt_vm_resource());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // VM UID → the annotation value handled.
    let mut done: HashMap<String, String> = HashMap::new();
    while let Some(event) = events.next().await {
        let vm = match event {
            Ok(Event::Apply(vm) | Event::InitApply(vm)) => vm,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("harvester stand-in: VM watch: {e}");
                continue;
            }
        };
        let annotations = vm.metadata.annotations.clone().unwrap_or_default();
        let (Some(uid), Some(templates)) = (
            vm.metadata.uid.clone(),
            annotations.get(VOLUME_CLAIM_TEMPLATES_ANNOTATION),
        ) else {
            continue;
        };
        if vm.metadata.deletion_timestamp.is_some() || done.get(&uid) == Some(templates) {
            continue;
        }
        done.insert(uid, templates.clone());
        if let Err(e) = handle(&ctx, &vm, templates).await {
            tracing::warn!("harvester stand-in: VM {:?}: {e:#}", vm.metadata.name);
        }
    }
}

async fn handle(ctx: &Ctx, vm: &DynamicObject, templates: &str) -> Result<()> {
    let namespace = vm.metadata.namespace.clone().context("VM namespace")?;
    let name = vm.metadata.name.clone().context("VM name")?;
    let mut record = VmRecord {
        uid: vm.metadata.uid.clone().unwrap_or_default(),
        ..VmRecord::default()
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    match serde_json::from_str::<Vec<Value>>(templates) {
        Err(e) => record.errors.push(format!(
            "the volumeClaimTemplates annotation is invalid: {e}"
        )),
        Ok(templates) => {
            for template in templates {
                match create_pvc(ctx, &pvcs, &namespace, template).await {
                    Ok(Some(created)) => record.created_pvcs.push(created),
                    Ok(None) => {}
                    Err(e) => record.errors.push(format!("{e:#}")),
                }
            }
        }
    }
    for claim in claim_names(vm) {
        match add_owner(&pvcs, &claim, &format!("{namespace}/{name}")).await {
            Ok(true) => record.owned_pvcs.push(claim),
            Ok(false) => {}
            Err(e) => record.errors.push(format!("{e:#}")),
        }
    }
    if let Some(error) = record.error() {
        tracing::info!("harvester stand-in: VM {namespace}/{name} refused: {error}");
        let vms: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &kubevirt_vm_resource());
        let patch = json!({"metadata": {"annotations": {ERROR_ANNOTATION: error}}});
        vms.patch(&name, &super::patch_params(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("annotate VM {namespace}/{name}"))?;
    }
    ctx.shared
        .update(|s| s.vms.insert(key(&namespace, &name), record));
    Ok(())
}

/// Checks a template and creates its PVC if missing: its name when created.
async fn create_pvc(
    ctx: &Ctx,
    pvcs: &Api<PersistentVolumeClaim>,
    namespace: &str,
    template: Value,
) -> Result<Option<String>> {
    let mut pvc: PersistentVolumeClaim =
        serde_json::from_value(template).context("a volume claim template is not a PVC")?;
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    let image_id = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IMAGE_ID_ANNOTATION).cloned());
    if let Some(image_id) = image_id {
        check_image(ctx, &name, &image_id, class.as_deref()).await?;
    }
    if pvcs.get_opt(&name).await?.is_some() {
        return Ok(None);
    }
    pvc.metadata.namespace = Some(namespace.to_owned());
    match pvcs.create(&super::post_params(), &pvc).await {
        Ok(_) => Ok(Some(name)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("create PVC {namespace}/{name}"))),
    }
}

/// The image named by `image_id` exists and `class` is its storage class.
async fn check_image(ctx: &Ctx, pvc: &str, image_id: &str, class: Option<&str>) -> Result<()> {
    let (Some((ns, name)), 2) = (image_id.split_once('/'), image_id.split('/').count()) else {
        bail!("PVC {pvc}: {IMAGE_ID_ANNOTATION} {image_id:?} is not <namespace>/<name>");
    };
    let images: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &image_resource());
    let Some(image) = images.get_opt(name).await? else {
        bail!("PVC {pvc}: image {image_id} not found");
    };
    let image_class = image
        .data
        .pointer("/status/storageClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if image_class.is_empty() || Some(image_class) != class {
        bail!(
            "PVC {pvc}: storageClassName {class:?} is not the storage class of image {image_id} ({image_class:?})"
        );
    }
    Ok(())
}

/// `spec.template.spec.volumes[].persistentVolumeClaim.claimName`.
fn claim_names(vm: &DynamicObject) -> BTreeSet<String> {
    vm.data
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Adds `vm` (`<ns>/<name>`) to the PVC's `owned-by` annotation; false when
/// the PVC does not exist (a VM may name a missing PVC).
async fn add_owner(pvcs: &Api<PersistentVolumeClaim>, claim: &str, vm: &str) -> Result<bool> {
    let Some(pvc) = pvcs.get_opt(claim).await? else {
        return Ok(false);
    };
    let current = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OWNED_BY_ANNOTATION).cloned());
    let owners = with_owner(current.as_deref(), vm)
        .with_context(|| format!("PVC {claim}: {OWNED_BY_ANNOTATION}"))?;
    if current.as_deref() != Some(owners.as_str()) {
        let patch = json!({"metadata": {"annotations": {OWNED_BY_ANNOTATION: owners}}});
        pvcs.patch(claim, &super::patch_params(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("set the owner of PVC {claim}"))?;
    }
    Ok(true)
}

/// One entry of `owned-by` (Harvester's `AnnotationSchemaReference`).
#[derive(Debug, Serialize, Deserialize)]
struct SchemaOwners {
    schema: String,
    refs: BTreeSet<String>,
}

/// `[{"schema":"kubevirt.io.virtualmachine","refs":["<ns>/<name>"]}]` with
/// `vm` added (refs sorted, as Go's `sets.String.List()`).
fn with_owner(current: Option<&str>, vm: &str) -> Result<String> {
    let mut owners: Vec<SchemaOwners> = match current {
        Some(text) if !text.is_empty() => serde_json::from_str(text)?,
        _ => Vec::new(),
    };
    match owners.iter_mut().find(|o| o.schema == VM_SCHEMA) {
        Some(o) => {
            o.refs.insert(vm.to_owned());
        }
        None => owners.push(SchemaOwners {
            schema: VM_SCHEMA.to_owned(),
            refs: BTreeSet::from([vm.to_owned()]),
        }),
    }
    Ok(serde_json::to_string(&owners)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_annotation_matches_harvester() {
        assert_eq!(
            with_owner(None, "default/test").expect("owners"),
            r#"[{"schema":"kubevirt.io.virtualmachine","refs":["default/test"]}]"#
        );
        let two = with_owner(
            Some(r#"[{"schema":"kubevirt.io.virtualmachine","refs":["b/vm"]}]"#),
            "a/vm",
        )
        .expect("owners");
        assert!(two.contains(r#"["a/vm","b/vm"]"#), "{two}");
    }
}
