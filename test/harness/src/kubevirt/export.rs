//! The export controller for VirtualMachine sources (`export.go`,
//! `vm-source.go`): exports are reconciled on their own changes and on
//! those of VMs, instances and PVCs in their namespace. While the source is
//! exportable an [`Exporter`] stands for the exporter pod: it is `Ready`
//! [`Options::ready_delay`](super::Options::ready_delay) after it was made,
//! and is what the server serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Map, Value, json};

use super::links::{self, ExportedVolume};
use super::{Ctx, Failed, Key, export_resource, key, lock, vm_resource, vmi_resource};

/// KubeVirt's `requeueTime`: how soon an export whose volumes are not all
/// there is looked at again.
const REQUEUE: Duration = Duration::from_secs(3);

/// KubeVirt's `DefaultDurationTTL`.
const DEFAULT_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// The exporter pod of one export: what it serves, fixed when it is made.
#[derive(Debug)]
pub(super) struct Exporter {
    pub uid: String,
    made: Instant,
    /// The Secret whose `token` it accepts.
    pub token_secret: String,
    pub volumes: Vec<ExportedVolume>,
    live: AtomicBool,
}

impl Exporter {
    /// False once the pod is gone: downloads in flight end.
    pub fn live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.live.store(false, Ordering::Relaxed);
    }
}

/// Reconciles exports until aborted.
pub(super) async fn run(ctx: Arc<Ctx>) {
    let config = watcher::Config::default;
    let controller = Controller::new_with(ctx.api(&export_resource()), config(), export_resource());
    let exports = controller.store();
    let by_source = |exports: Store<DynamicObject>| {
        move |object: DynamicObject| {
            let (ns, name) = (object.metadata.namespace, object.metadata.name);
            related(&exports, ns.as_deref(), |source| {
                Some(source) == name.as_deref()
            })
        }
    };
    let in_namespace = {
        let exports = exports.clone();
        move |pvc: PersistentVolumeClaim| {
            related(&exports, pvc.metadata.namespace.as_deref(), |_| true)
        }
    };
    let pvcs: Api<PersistentVolumeClaim> = match &ctx.options.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    controller
        .watches_with(
            ctx.api(&vm_resource()),
            vm_resource(),
            config(),
            by_source(exports.clone()),
        )
        .watches_with(
            ctx.api(&vmi_resource()),
            vmi_resource(),
            config(),
            by_source(exports),
        )
        .watches(pvcs, config(), in_namespace)
        .run(reconcile, super::retry_soon, ctx.clone())
        .for_each(|result| {
            match result {
                Ok(_) => {}
                // The export was deleted: its pod goes with it.
                Err(ControllerError::ObjectNotFound(gone)) => {
                    let ns = gone.namespace.clone().unwrap_or_default();
                    stop_exporter(&ctx, &key(&ns, &gone.name));
                }
                Err(e) => tracing::warn!("kubevirt stand-in: export controller: {e}"),
            }
            async {}
        })
        .await;
}

/// The exports in `namespace` whose VM source's name passes `source`.
fn related(
    exports: &Store<DynamicObject>,
    namespace: Option<&str>,
    source: impl Fn(&str) -> bool,
) -> Vec<ObjectRef<DynamicObject>> {
    exports
        .state()
        .iter()
        .filter(|e| e.metadata.namespace.as_deref() == namespace)
        .filter(|e| vm_source(e).is_some_and(&source))
        .map(|e| ObjectRef::from_obj_with(e.as_ref(), export_resource()))
        .collect()
}

/// The VM's name, for an export whose source is a VirtualMachine
/// (`isSourceVM`: the API group must be given).
fn vm_source(export: &DynamicObject) -> Option<&str> {
    let source = &export.data["spec"]["source"];
    (source["apiGroup"] == "kubevirt.io" && source["kind"] == "VirtualMachine")
        .then(|| source["name"].as_str())
        .flatten()
}

fn stop_exporter(ctx: &Ctx, key: &Key) {
    if let Some(exporter) = lock(&ctx.exporters).remove(key) {
        exporter.stop();
    }
}

/// What the source offers (`sourceVolumes`).
struct Source {
    volumes: Vec<ExportedVolume>,
    in_use: bool,
    populated: bool,
    message: String,
}

impl Source {
    /// An exporter pod runs only for this (`isSourceAvailable` and volumes).
    fn exportable(&self) -> bool {
        !self.in_use && self.populated && !self.volumes.is_empty()
    }
}

/// `getPVCFromSourceVM`.
async fn source(ctx: &Ctx, namespace: &str, vm_name: &str) -> Result<Source> {
    let vm = ctx
        .namespaced(namespace, &vm_resource())
        .get_opt(vm_name)
        .await?;
    let (volumes, populated) = match vm {
        Some(vm) => claims(ctx, namespace, &vm).await?,
        None => (Vec::new(), false),
    };
    if !volumes.is_empty() && !populated {
        return Ok(Source {
            volumes,
            in_use: false,
            populated,
            message: format!(
                "Not all volumes in the Virtual Machine {namespace}/{vm_name} are populated"
            ),
        });
    }
    // `isSourceInUseVM`: an instance counts until it has ended.
    let vmi = ctx
        .namespaced(namespace, &vmi_resource())
        .get_opt(vm_name)
        .await?;
    let running = vmi.is_some_and(|vmi| {
        !matches!(
            vmi.data["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
    });
    Ok(Source {
        volumes,
        in_use: running,
        populated,
        message: if running {
            format!("Virtual Machine {namespace}/{vm_name} is running")
        } else {
            String::new()
        },
    })
}

/// The template's claims whose PVCs exist, in template order, and whether
/// every dataVolume has its PVC (`getPVCsFromVM`).
async fn claims(
    ctx: &Ctx,
    namespace: &str,
    vm: &DynamicObject,
) -> Result<(Vec<ExportedVolume>, bool)> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let mut volumes: Vec<ExportedVolume> = Vec::new();
    let mut populated = true;
    let template_volumes = vm.data["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for volume in template_volumes {
        // `PVCNameFromVirtVolume`.
        let claim = volume["dataVolume"]["name"]
            .as_str()
            .or_else(|| volume["persistentVolumeClaim"]["claimName"].as_str())
            .or_else(|| volume["memoryDump"]["claimName"].as_str())
            .unwrap_or_default();
        if claim.is_empty() || volumes.iter().any(|v| v.claim == claim) {
            continue;
        }
        match pvcs.get_opt(claim).await? {
            Some(pvc) => volumes.push(ExportedVolume {
                claim: claim.to_owned(),
                formats: links::formats(&pvc),
            }),
            None if volume.get("dataVolume").is_some() => populated = false,
            None => {}
        }
    }
    Ok((volumes, populated))
}

async fn reconcile(export: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let meta = &export.metadata;
    let (Some(ns), Some(name), Some(uid)) = (
        meta.namespace.as_deref(),
        meta.name.as_deref(),
        meta.uid.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    let Some(vm_name) = vm_source(&export) else {
        return Ok(Action::await_change());
    };
    if meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let source = source(&ctx, ns, vm_name).await?;
    let current = export.data.get("status").filter(|s| s.is_object());
    let mut status = match current {
        Some(current) => Status::of(current),
        None => Status::initial(&export),
    };
    // `handleVMExportToken`.
    if let Some(secret) = export.data["spec"]["tokenSecretRef"].as_str() {
        status.token_secret_ref = Some(secret.to_owned());
    } else if source.exportable() {
        let secret = status
            .token_secret_ref
            .get_or_insert_with(|| links::token_secret_name(name))
            .clone();
        create_token_secret(&ctx, &export, &secret).await?;
    }
    status.vm_name = vm_name.to_owned();
    status.service_name = links::service_name(name);
    status.links = None;
    let mut next = Action::await_change();
    let export_key = key(ns, name);
    if source.exportable() {
        let left = expires_in(&export);
        if left.is_zero() {
            tracing::info!("kubevirt stand-in: export {ns}/{name} expired");
            delete_export(&ctx, ns, name).await?;
            return Ok(Action::await_change());
        }
        let exporter = exporter(&ctx, &export_key, uid, &status, source.volumes);
        let ready_in =
            (exporter.made + ctx.options.ready_delay).saturating_duration_since(Instant::now());
        if ready_in.is_zero() {
            status.set_ready("True", "PodReady", "");
            status.phase = "Ready".into();
            status.links = Some(links_of(&ctx, ns, name, &status.service_name, &exporter));
            next = Action::requeue(left);
        } else {
            status.set_ready("False", "PodPending", "");
            status.phase = "Pending".into();
            next = Action::requeue(ready_in);
        }
    } else {
        stop_exporter(&ctx, &export_key);
        status.set_ready("False", "InUse", &source.message);
        status.phase = "Pending".into();
        if source.volumes.is_empty() {
            status.set_ready("False", "VMNoVolumes", &source.message);
            status.phase = "Skipped".into();
        }
        if !source.populated {
            next = Action::requeue(REQUEUE);
        }
    }
    if current != Some(&status.stored()) {
        ctx.namespaced(ns, &export_resource())
            .patch_status(
                name,
                &super::patch_params(),
                &Patch::Merge(json!({"status": status.patch()})),
            )
            .await
            .with_context(|| format!("set the status of export {ns}/{name}"))?;
    }
    Ok(next)
}

/// The export's exporter, made now unless it has one (its volumes stay as
/// they were when it was made, like a pod's environment).
fn exporter(
    ctx: &Ctx,
    key: &Key,
    uid: &str,
    status: &Status,
    volumes: Vec<ExportedVolume>,
) -> Arc<Exporter> {
    let mut exporters = lock(&ctx.exporters);
    if let Some(existing) = exporters.get(key)
        && existing.uid == uid
    {
        return existing.clone();
    }
    let exporter = Arc::new(Exporter {
        uid: uid.to_owned(),
        made: Instant::now(),
        token_secret: status.token_secret_ref.clone().unwrap_or_default(),
        volumes,
        live: AtomicBool::new(true),
    });
    if let Some(old) = exporters.insert(key.clone(), exporter.clone()) {
        old.stop();
    }
    exporter
}

/// `status.links` of a ready export.
fn links_of(ctx: &Ctx, ns: &str, name: &str, service: &str, exporter: &Exporter) -> Value {
    let internal = links::internal_host(ns, service);
    let external = format!("{}{}", ctx.host, links::external_base(ns, name));
    json!({
        "internal": links::link(&internal, &ctx.ca_pem, &exporter.volumes),
        "external": links::link(&external, &ctx.ca_pem, &exporter.volumes),
    })
}

/// The export's token Secret, owned by the export, unless it exists.
async fn create_token_secret(ctx: &Ctx, export: &DynamicObject, name: &str) -> Result<()> {
    let ns = export.metadata.namespace.clone().unwrap_or_default();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "export.kubevirt.io/v1beta1".into(),
                kind: "VirtualMachineExport".into(),
                name: export.metadata.name.clone().unwrap_or_default(),
                uid: export.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(random_token()?.into_bytes()),
        )])),
        ..Secret::default()
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    match secrets.create(&super::post_params(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("create Secret {ns}/{name}"))),
    }
}

/// `GenerateVMExportToken`: 20 random letters and digits.
fn random_token() -> Result<String> {
    use ring::rand::SecureRandom;
    const ALPHANUMS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let random = ring::rand::SystemRandom::new();
    let mut token = String::new();
    let mut byte = [0u8];
    while token.len() < 20 {
        random
            .fill(&mut byte)
            .map_err(|_| anyhow::anyhow!("no random bytes"))?;
        // Below 248 (4 × 62) every character is as likely.
        if byte[0] < 248 {
            token.push(char::from(
                ALPHANUMS[usize::from(byte[0]) % ALPHANUMS.len()],
            ));
        }
    }
    Ok(token)
}

async fn delete_export(ctx: &Ctx, ns: &str, name: &str) -> Result<()> {
    match ctx
        .namespaced(ns, &export_resource())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("delete export {ns}/{name}"))),
    }
}

/// `creationTimestamp + spec.ttlDuration` (`getExpirationTime`).
fn expiration(export: &DynamicObject) -> Timestamp {
    let created = export
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let ttl = export.data["spec"]["ttlDuration"]
        .as_str()
        .and_then(parse_go_duration)
        .unwrap_or(DEFAULT_TTL);
    SignedDuration::try_from(ttl)
        .ok()
        .and_then(|ttl| created.checked_add(ttl).ok())
        .unwrap_or(Timestamp::MAX)
}

/// How long until the export expires (zero once it has).
fn expires_in(export: &DynamicObject) -> Duration {
    let left = expiration(export).duration_since(Timestamp::now());
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// Go's `time.ParseDuration` for what a `metav1.Duration` holds: a
/// sequence of numbers (fractions allowed) with units `h`, `m`, `s`, `ms`,
/// `us`/`µs`, `ns`, or a bare `0`.
fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A `metav1.Time`: RFC 3339, whole seconds, UTC.
fn meta_time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// The export status fields this controller writes
/// (`VirtualMachineExportStatus`).
struct Status {
    phase: String,
    /// `{internal, external}` when ready; `{}` otherwise.
    links: Option<Value>,
    token_secret_ref: Option<String>,
    ttl_expiration_time: Option<String>,
    service_name: String,
    vm_name: String,
    conditions: Vec<Value>,
}

impl Status {
    /// `populateInitialVMExportStatus`.
    fn initial(export: &DynamicObject) -> Self {
        let mut status = Status {
            phase: "Pending".into(),
            links: None,
            token_secret_ref: None,
            ttl_expiration_time: Some(meta_time(expiration(export))),
            service_name: String::new(),
            vm_name: String::new(),
            conditions: Vec::new(),
        };
        status.set_condition("Ready", "False", "Initializing", "");
        status.set_condition("PVCReady", "False", "Unknown", "");
        status
    }

    /// The fields as they are now.
    fn of(current: &Value) -> Self {
        let text = |field: &str| current[field].as_str().map(str::to_owned);
        Status {
            phase: text("phase").unwrap_or_default(),
            links: None,
            token_secret_ref: text("tokenSecretRef"),
            ttl_expiration_time: text("ttlExpirationTime"),
            service_name: text("serviceName").unwrap_or_default(),
            vm_name: text("virtualMachineName").unwrap_or_default(),
            conditions: current["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn set_ready(&mut self, status: &str, reason: &str, message: &str) {
        self.set_condition("Ready", status, reason, message);
    }

    /// `updateCondition`: a condition is replaced (and its transition time
    /// stamped) only when its status, reason or message changes.
    fn set_condition(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let field = |c: &Value, f: &str| c[f].as_str().unwrap_or_default().to_owned();
        let mut condition = json!({
            "type": type_,
            "status": status,
            "lastProbeTime": null,
            "lastTransitionTime": meta_time(Timestamp::now()),
        });
        // `omitempty`.
        for (f, v) in [("reason", reason), ("message", message)] {
            if !v.is_empty() {
                condition[f] = json!(v);
            }
        }
        match self.conditions.iter_mut().find(|c| c["type"] == type_) {
            Some(c) => {
                let same = field(c, "status") == status
                    && field(c, "reason") == reason
                    && field(c, "message") == message;
                if !same {
                    *c = condition;
                }
            }
            None => self.conditions.push(condition),
        }
    }

    /// A merge patch that makes the status this (null removes a field).
    fn patch(&self) -> Value {
        let text = |v: &str| if v.is_empty() { Value::Null } else { json!(v) };
        let links = self
            .links
            .clone()
            .unwrap_or_else(|| json!({"internal": null, "external": null}));
        json!({
            "phase": text(&self.phase),
            "links": links,
            "tokenSecretRef": self.token_secret_ref,
            "ttlExpirationTime": self.ttl_expiration_time,
            "serviceName": text(&self.service_name),
            "virtualMachineName": text(&self.vm_name),
            "conditions": self.conditions,
        })
    }

    /// The status as stored once [`patch`](Self::patch) is applied.
    fn stored(&self) -> Value {
        fn without_nulls(value: Value) -> Value {
            match value {
                Value::Object(map) => Value::Object(
                    map.into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| match k.as_str() {
                            "links" => (k, without_nulls(v)),
                            _ => (k, v),
                        })
                        .collect::<Map<_, _>>(),
                ),
                other => other,
            }
        }
        without_nulls(self.patch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let d = |s| parse_go_duration(s);
        assert_eq!(d("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("10m0s"), Some(Duration::from_secs(600)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("5"), None);
        assert_eq!(d("h"), None);
        assert_eq!(d("-1s"), None);
    }

    #[test]
    fn conditions_change_only_when_they_differ() {
        let export: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
            "metadata": {"name": "e", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm"},
                     "ttlDuration": "1h"}}))
        .unwrap();
        let mut status = Status::initial(&export);
        assert_eq!(
            status.ttl_expiration_time.as_deref(),
            Some("2025-01-01T01:00:00Z")
        );
        status.conditions[0]["lastTransitionTime"] = json!("then");
        status.set_ready("False", "Initializing", "");
        assert_eq!(status.conditions[0]["lastTransitionTime"], "then");
        status.set_ready("False", "InUse", "Virtual Machine ns/vm is running");
        assert_ne!(status.conditions[0]["lastTransitionTime"], "then");
        assert_eq!(status.conditions[1]["type"], "PVCReady");
        let stored = status.stored();
        assert_eq!(stored["links"], json!({}));
        assert!(stored.get("tokenSecretRef").is_none());
        assert_eq!(status.patch()["links"]["external"], Value::Null);
    }
}
