//! Import jobs: from a source VM to a running Harvester VM, as a resumable
//! state machine whose state lives in the job's status:
//!
//! `Pending` (waits for a slot) → `Validating` (preflight, the source is not
//! touched) → `PoweringOff` → `Exporting` (the source's export, one image per
//! disk) → `Importing` (Harvester downloads each disk from our endpoint) →
//! `CreatingVM` → `Succeeded`; or `Failed` with a reason that names the fix.
//!
//! Every step can run again after a restart without repeating finished work:
//! a finished disk is never copied again, an export left open is re-used or
//! ended. A finalizer ends the export and removes unfinished images when a
//! job is deleted; the source VM is never deleted.

pub mod images;
pub mod preflight;
pub mod quota;
pub mod scratch;
pub mod settings;
pub mod space;
pub mod status;
pub mod target;
pub mod transfer;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use vmm_api::importjob::{DiskPhase, DiskStatus, ImportJob, ImportPhase, SourceVm};
use vmm_api::inventory::PowerState;
use vmm_providers::vsphere::VsphereError;

use crate::conditions::{Observed, READY};
use crate::connect::{Refused, vsphere_refused};
use crate::context::Context;
use crate::crash;
use crate::error::Error;
use crate::import::images::Outcome;
use crate::import::target::JOB_LABEL;
use crate::import::transfer::{Ending, JobKey, Wanted};

pub const FINALIZER: &str = "importjob.harvesterhci.io/cleanup";
/// How often progress is written while disks transfer.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

/// What the job reconciler works with.
struct Jobs {
    ctx: Arc<Context>,
    store: Store<ImportJob>,
    /// Serializes admission, so two jobs never take the last slot.
    admission: tokio::sync::Mutex<()>,
}

/// Reconciles every import job until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (store, writer) = reflector::store();
    // Status writes don't trigger a reconcile (progress would loop); spec,
    // deletion and finalizer changes do; images' changes do through watches.
    let changes = |job: &ImportJob| {
        let mut hasher = DefaultHasher::new();
        job.metadata.generation.hash(&mut hasher);
        job.metadata.finalizers.hash(&mut hasher);
        Some(hasher.finish())
    };
    let jobs = watcher::watcher(
        Api::<ImportJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(changes, Default::default());
    let images =
        Api::<DynamicObject>::all_with(client, &vmm_api::external::virtual_machine_image());
    let _ = ctx.metrics.jobs.set(store.clone());
    let state = Arc::new(Jobs {
        ctx,
        store: store.clone(),
        admission: tokio::sync::Mutex::new(()),
    });
    Controller::for_stream(jobs, store)
        .watches_with(
            images,
            vmm_api::external::virtual_machine_image(),
            watcher::Config::default().labels(JOB_LABEL),
            |image| {
                let job = image.labels().get(JOB_LABEL)?.clone();
                Some(ObjectRef::<ImportJob>::new(&job).within(&image.namespace()?))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "import job reconcile");
            }
        })
        .await;
}

async fn reconcile(job: Arc<ImportJob>, jobs: Arc<Jobs>) -> Result<Action, Error> {
    let namespace = job.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "ImportJob",
        name: job.name_any(),
    })?;
    let api = Api::<ImportJob>::namespaced(jobs.ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            finalizer::Event::Apply(job) => step(&jobs, &api, &job).await,
            finalizer::Event::Cleanup(job) => cleanup(&jobs.ctx, &job).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(job: Arc<ImportJob>, error: &Error, _: Arc<Jobs>) -> Action {
    tracing::warn!(job = %job.name_any(), %error, "import job reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

fn key(job: &ImportJob) -> JobKey {
    (job.namespace().unwrap_or_default(), job.name_any())
}

/// Runs the step the job is at; a step that finishes moves the job on and
/// asks to be called again at once.
async fn step(jobs: &Jobs, api: &Api<ImportJob>, job: &ImportJob) -> Result<Action, Error> {
    let ctx = &jobs.ctx;
    let phase = status::of(job).phase.unwrap_or_default();
    let outcome = match phase {
        ImportPhase::Pending => admit(jobs, api, job).await,
        ImportPhase::Validating => validate(ctx, api, job).await,
        ImportPhase::PoweringOff => power_off(ctx, api, job).await,
        ImportPhase::Exporting => export(ctx, api, job).await,
        ImportPhase::Importing => importing(ctx, api, job).await,
        ImportPhase::CreatingVm => create_vm(ctx, api, job).await,
        ImportPhase::Succeeded | ImportPhase::Failed => {
            ctx.exports
                .finish(&key(job), Ending::Abort("the import job ended"))
                .await;
            return Ok(Action::await_change());
        }
    };
    match outcome {
        Ok(action) => Ok(action),
        Err(Stop::Refused(refused)) => {
            end_export(ctx, job, Ending::Abort("the import job failed")).await;
            let mut failed = status::failed(job, &refused);
            failed["export"] = serde_json::Value::Null;
            status::patch(api, job, failed).await?;
            observe_duration(ctx, job, "failed");
            publish(
                ctx,
                job,
                EventType::Warning,
                refused.reason,
                &refused.message,
            )
            .await;
            tracing::info!(job = %job.name_any(), reason = refused.reason, message = %refused.message, "import job failed");
            Ok(Action::await_change())
        }
        Err(Stop::Kube(error)) => Err(error),
    }
}

/// Why a step did not finish: the job cannot go on, or a Kubernetes request
/// failed (retried).
enum Stop {
    Refused(Refused),
    Kube(Error),
}

impl From<Refused> for Stop {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Self::Kube(error)
    }
}

impl From<kube::Error> for Stop {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error.into())
    }
}

type Step = Result<Action, Stop>;

/// Moves the job to `next` and publishes an event saying so.
async fn advance(
    ctx: &Context,
    api: &Api<ImportJob>,
    job: &ImportJob,
    next: ImportPhase,
    message: &str,
    mut fields: serde_json::Value,
) -> Step {
    let update = status::running(job, next, message);
    if let (Some(fields), Some(update)) = (fields.as_object_mut(), update.as_object()) {
        fields.extend(update.clone());
    }
    status::patch(api, job, fields).await?;
    publish(
        ctx,
        job,
        EventType::Normal,
        &status::phase_name(next),
        message,
    )
    .await;
    Ok(Action::requeue(Duration::ZERO))
}

async fn publish(ctx: &Context, job: &ImportJob, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Import".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &job.object_ref(&())).await {
        tracing::warn!(%error, "cannot publish an event");
    }
}

/// Starts the job when a slot is free: at most `max_jobs` running in all and
/// `max_jobs_per_source` per source.
async fn admit(jobs: &Jobs, api: &Api<ImportJob>, job: &ImportJob) -> Step {
    let _turn = jobs.admission.lock().await;
    let running = |other: &ImportJob| {
        matches!(
            status::of(other).phase,
            Some(
                ImportPhase::Validating
                    | ImportPhase::PoweringOff
                    | ImportPhase::Exporting
                    | ImportPhase::Importing
                    | ImportPhase::CreatingVm
            )
        )
    };
    let all = jobs.store.state();
    let total = all.iter().filter(|j| running(j)).count();
    let same_source = all
        .iter()
        .filter(|j| {
            running(j)
                && j.namespace() == job.namespace()
                && j.spec.source_cluster == job.spec.source_cluster
        })
        .count();
    let limits = &jobs.ctx.limits;
    if total >= limits.max_jobs || same_source >= limits.max_jobs_per_source {
        let message = format!(
            "waiting for a free slot: {total} jobs running (at most {}), {same_source} from this source (at most {})",
            limits.max_jobs, limits.max_jobs_per_source
        );
        let queued = status::phase(
            job,
            ImportPhase::Pending,
            Observed::new(READY, false, "Queued", message),
        );
        status::patch(api, job, queued).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    advance(
        &jobs.ctx,
        api,
        job,
        ImportPhase::Validating,
        "checking the source, the VM, its networks and the target before touching anything",
        json!({}),
    )
    .await
}

async fn validate(ctx: &Context, api: &Api<ImportJob>, job: &ImportJob) -> Step {
    let namespace = job.namespace().unwrap_or_default();
    let checked = preflight::run(&ctx.client, &namespace, job).await?;
    let job_name = job.name_any();
    let disks: Vec<DiskStatus> = checked
        .vm
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| DiskStatus {
            name: disk.label.clone(),
            capacity_bytes: disk.capacity_bytes,
            source_key: Some(disk.key.to_string()),
            image_name: Some(images::name(&job_name, index)),
            ..DiskStatus::default()
        })
        .collect();
    let source_vm = SourceVm {
        id: checked.vm.spec.id.clone(),
        path: checked.vm.spec.path.clone(),
        powered_off_by_job: false,
    };
    if let Err(error) = checked.client.logout().await {
        tracing::debug!(%error, "logout after preflight");
    }
    crash::point(crash::VALIDATED);
    advance(
        ctx,
        api,
        job,
        ImportPhase::PoweringOff,
        &format!("preflight passed; powering off {:?}", job.spec.vm_name),
        json!({
            "targetName": checked.target_name,
            "sourceVm": source_vm,
            "disks": disks,
            "progress": status::summary(&disks),
        }),
    )
    .await
}

fn source_vm(job: &ImportJob) -> Result<SourceVm, Refused> {
    status::of(job).source_vm.ok_or_else(|| {
        Refused::new(
            "StatusLost",
            "the job's status no longer names its source VM: delete and recreate the job",
        )
    })
}

async fn power_off(ctx: &Context, api: &Api<ImportJob>, job: &ImportJob) -> Step {
    let namespace = job.namespace().unwrap_or_default();
    let mut vm = source_vm(job)?;
    let client = preflight::source(&ctx.client, &namespace, job).await?;
    let state = client
        .power_state(&vm.id)
        .await
        .map_err(|e| vsphere_refused(&e))?;
    if state != PowerState::Off {
        vm.powered_off_by_job = true;
        // Recorded before the call: a restart mid-way still knows.
        status::patch(api, job, json!({"sourceVm": vm})).await?;
        let timeout = Duration::from_secs(
            u64::try_from(job.spec.graceful_shutdown_timeout_seconds).unwrap_or(0),
        );
        let graceful = match client.shutdown_guest(&vm.id).await {
            Ok(()) => {
                crash::point(crash::SHUTDOWN_REQUESTED);
                client.wait_powered_off(&vm.id, timeout).await
            }
            Err(error) => Err(error),
        };
        match graceful {
            Ok(()) => {}
            Err(
                error @ (VsphereError::ToolsUnavailable { .. }
                | VsphereError::PowerOffTimeout { .. }),
            ) => {
                if !job.spec.force_power_off {
                    return Err(Refused::new(
                        "ShutdownFailed",
                        format!("{error}; or set spec.forcePowerOff to power it off hard"),
                    )
                    .into());
                }
                client
                    .set_power(&vm.id, false)
                    .await
                    .map_err(|e| vsphere_refused(&e))?;
            }
            Err(error) => return Err(vsphere_refused(&error).into()),
        }
    }
    if let Err(error) = client.logout().await {
        tracing::debug!(%error, "logout after power-off");
    }
    advance(
        ctx,
        api,
        job,
        ImportPhase::Exporting,
        "the source VM is off; exporting its disks",
        json!({"sourceVm": vm}),
    )
    .await
}

/// Starts (or re-opens) the source's export and serves each disk not yet
/// imported at its token; returns the export's id.
async fn serve_disks(
    ctx: &Context,
    job: &ImportJob,
    tokens: &[Option<String>],
) -> Result<String, Stop> {
    let namespace = job.namespace().unwrap_or_default();
    let status = status::of(job);
    let vm = source_vm(job)?;
    let client = preflight::source(&ctx.client, &namespace, job).await?;
    let mut wanted = Vec::new();
    for (index, (disk, token)) in status.disks.iter().zip(tokens).enumerate() {
        let (Some(key), Some(token)) = (disk.source_key.as_deref(), token) else {
            continue;
        };
        let device_key = key.parse().map_err(|_| {
            Refused::new(
                "StatusLost",
                format!(
                    "disk {} has no valid device key: recreate the job",
                    disk.name
                ),
            )
        })?;
        wanted.push(Wanted {
            index,
            device_key,
            capacity: u64::try_from(disk.capacity_bytes).unwrap_or(0),
            token: token.clone(),
        });
    }
    let id = ctx
        .exports
        .start(key(job), &client, &vm.id, status.export.as_deref(), &wanted)
        .await?;
    Ok(id)
}

fn disk_url(ctx: &Context, token: &str, image: &str) -> String {
    format!(
        "{}{}",
        ctx.disk_url.trim_end_matches('/'),
        crate::disks::path(token, &format!("{image}.img"))
    )
}

async fn export(ctx: &Context, api: &Api<ImportJob>, job: &ImportJob) -> Step {
    let namespace = job.namespace().unwrap_or_default();
    let status = status::of(job);
    // Tokens of images made before a restart stay valid: Harvester keeps
    // their URLs.
    let mut tokens = Vec::new();
    for disk in &status.disks {
        let name = disk.image_name.clone().unwrap_or_default();
        let existing = images::get(&ctx.client, &namespace, &name).await?;
        tokens.push(Some(
            existing
                .as_ref()
                .and_then(images::token)
                .unwrap_or_else(crate::disks::new_token),
        ));
    }
    let export = serve_disks(ctx, job, &tokens).await?;
    // Recorded before anything else: a restart re-attaches to it or ends it.
    status::patch(api, job, json!({"export": export})).await?;
    crash::point(crash::EXPORT_OPENED);
    let target_name = status.target_name.clone().unwrap_or_default();
    let storage_class = preflight::storage_class(&ctx.client, job).await?;
    for (index, (disk, token)) in status.disks.iter().zip(&tokens).enumerate() {
        let name = disk.image_name.clone().unwrap_or_default();
        let url = disk_url(ctx, token.as_deref().unwrap_or_default(), &name);
        let manifest =
            images::manifest(job, &target_name, index, disk, &url, storage_class.as_ref());
        images::apply(&ctx.client, &namespace, &manifest).await?;
    }
    let disks: Vec<DiskStatus> = status
        .disks
        .iter()
        .map(|d| DiskStatus {
            phase: DiskPhase::Transferring,
            ..d.clone()
        })
        .collect();
    advance(
        ctx,
        api,
        job,
        ImportPhase::Importing,
        "Harvester is importing the disks",
        json!({"disks": disks}),
    )
    .await
}

async fn importing(ctx: &Context, api: &Api<ImportJob>, job: &ImportJob) -> Step {
    let namespace = job.namespace().unwrap_or_default();
    let job_key = key(job);
    let mut status = status::of(job);
    // Each disk's image and where its import stands, read once.
    let mut found = Vec::new();
    for disk in &status.disks {
        let name = disk.image_name.clone().unwrap_or_default();
        let image = images::get(&ctx.client, &namespace, &name).await?.ok_or_else(|| {
            Refused::new(
                "ImageDeleted",
                format!("VirtualMachineImage {name} was deleted while importing: delete and recreate the job"),
            )
        })?;
        let outcome = images::outcome(&image);
        found.push((image, outcome));
    }
    if let Some((disk, message)) =
        status
            .disks
            .iter()
            .zip(&found)
            .find_map(|(disk, (_, outcome))| match outcome {
                Outcome::Failed { message } => Some((disk.name.clone(), message.clone())),
                _ => None,
            })
    {
        return Err(Refused::new(
            "ImageImportFailed",
            format!("Harvester could not import {disk}: {message}"),
        )
        .into());
    }
    let imported = found
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Imported { .. }))
        .count();
    let all_imported = imported == found.len();
    if imported > 0 && !all_imported {
        crash::point(crash::ONE_DISK_IMPORTED);
    }

    // After a restart, or when the export broke: serve the disks again.
    let broken = ctx
        .exports
        .with(&job_key, |active| active.broken())
        .await
        .flatten();
    if let Some(why) = &broken {
        tracing::warn!(job = %job.name_any(), why, "the export ended early; exporting again");
        ctx.exports
            .finish(&job_key, Ending::Abort("the export broke"))
            .await;
    }
    if !all_imported && !ctx.exports.is_active(&job_key).await {
        let tokens: Vec<Option<String>> = found
            .iter()
            .map(|(image, outcome)| match outcome {
                Outcome::Importing => images::token(image),
                _ => None,
            })
            .collect();
        let export = serve_disks(ctx, job, &tokens).await?;
        status::patch(api, job, json!({"export": export})).await?;
    }

    if all_imported {
        crash::point(crash::ALL_DISKS_IMPORTED);
        end_export(ctx, job, Ending::Complete).await;
        for disk in &mut status.disks {
            disk.phase = DiskPhase::Imported;
            disk.bytes_done = disk.capacity_bytes;
            disk.bytes_per_second = None;
            disk.eta_seconds = None;
        }
        return advance(
            ctx,
            api,
            job,
            ImportPhase::CreatingVm,
            "every disk is imported; creating the VM",
            json!({"disks": status.disks, "progress": status::summary(&status.disks), "export": null}),
        )
        .await;
    }

    // Progress: bytes served per disk since the last sample.
    let sample = ctx
        .exports
        .with(&job_key, |active| {
            let elapsed = active.sampled.elapsed();
            active.sampled = Instant::now();
            let sent: HashMap<usize, u64> = active
                .disks
                .iter()
                .map(|(index, disk)| (*index, disk.sent()))
                .collect();
            (elapsed, sent)
        })
        .await;
    if let Some((elapsed, sent)) = sample {
        for (index, (disk, (_, outcome))) in status.disks.iter_mut().zip(&found).enumerate() {
            match outcome {
                Outcome::Imported { .. } => {
                    disk.phase = DiskPhase::Imported;
                    disk.bytes_done = disk.capacity_bytes;
                    disk.bytes_per_second = None;
                    disk.eta_seconds = None;
                }
                _ => {
                    if let Some(&bytes) = sent.get(&index) {
                        status::advance(disk, bytes, elapsed);
                    }
                }
            }
        }
        let done: i64 = status.disks.iter().map(|d| d.bytes_done).sum();
        let total: i64 = status
            .disks
            .iter()
            .map(|d| d.capacity_bytes)
            .sum::<i64>()
            .max(1);
        let percent = u8::try_from(done * 100 / total).unwrap_or(100);
        ctx.exports
            .with(&job_key, |active| active.report(percent))
            .await;
        status::patch(
            api,
            job,
            json!({"disks": status.disks, "progress": status::summary(&status.disks)}),
        )
        .await?;
    }
    Ok(Action::requeue(PROGRESS_INTERVAL))
}

async fn create_vm(ctx: &Context, api: &Api<ImportJob>, job: &ImportJob) -> Step {
    let namespace = job.namespace().unwrap_or_default();
    let status = status::of(job);
    let vm = source_vm(job)?;
    let client = preflight::source(&ctx.client, &namespace, job).await?;
    let spec = client.vm(&vm.id).await.map_err(|e| vsphere_refused(&e))?;
    if let Err(error) = client.logout().await {
        tracing::debug!(%error, "logout after reading the VM");
    }
    let mut imported = Vec::new();
    for disk in &status.disks {
        let name = disk.image_name.clone().unwrap_or_default();
        let image = images::get(&ctx.client, &namespace, &name).await?;
        let Some(Outcome::Imported { storage_class }) = image.as_ref().map(images::outcome) else {
            return Err(Refused::new(
                "ImageDeleted",
                format!("VirtualMachineImage {name} is gone or no longer imported: delete and recreate the job"),
            )
            .into());
        };
        imported.push(target::ImportedDisk {
            image_name: name,
            storage_class,
            capacity_bytes: disk.capacity_bytes,
        });
    }
    let name = status.target_name.clone().unwrap_or_default();
    let reserve = self::settings::reserved_memory_mib(&ctx.client).await?;
    let manifest = target::virtual_machine(job, &name, &spec, &imported, reserve)
        .map_err(|e| Refused::new("CannotBuildVM", e.to_string()))?;
    let vms = Api::<DynamicObject>::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &vmm_api::external::kubevirt_vm(),
    );
    let params = PatchParams::apply(images::FIELD_MANAGER).validation_strict();
    match vms.patch(&name, &params, &Patch::Apply(&manifest)).await {
        Ok(_) => {}
        // Some Harvester versions cap sockets at 1: the same vCPUs as cores.
        Err(kube::Error::Api(refusal))
            if refusal.message.contains(target::MAX_SOCKETS_REFUSAL)
                && let Some(flat) = target::single_socket(&manifest) =>
        {
            vms.patch(&name, &params, &Patch::Apply(&flat)).await?;
            let note = format!(
                "Harvester refused {} CPU sockets (its VM webhook allows one when CPU hotplug is off): the VM has one socket with all {} vCPUs as cores",
                manifest["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"], spec.cpus
            );
            publish(ctx, job, EventType::Warning, "OneSocket", &note).await;
        }
        Err(error) => return Err(error.into()),
    }
    crash::point(crash::VM_APPLIED);
    let message = format!(
        "VirtualMachine {namespace}/{name} created from {:?}",
        job.spec.vm_name
    );
    let done = status::phase(
        job,
        ImportPhase::Succeeded,
        Observed::new(READY, true, "Succeeded", message.clone()),
    );
    status::patch(api, job, done).await?;
    observe_duration(ctx, job, "succeeded");
    publish(ctx, job, EventType::Normal, "Succeeded", &message).await;
    Ok(Action::await_change())
}

/// Ends the job's export: the one this process holds, or else the one a
/// previous process left open (its id is in status).
async fn end_export(ctx: &Context, job: &ImportJob, how: Ending) {
    if ctx.exports.finish(&key(job), how).await {
        return;
    }
    let Some(lease) = status::of(job).export else {
        return;
    };
    let namespace = job.namespace().unwrap_or_default();
    match preflight::source(&ctx.client, &namespace, job).await {
        Ok(client) => transfer::release(&client, &lease, how).await,
        Err(refused) => {
            tracing::warn!(job = %job.name_any(), lease, reason = refused.reason, "cannot reach the source to end a left-over export (it times out by itself)")
        }
    }
}

fn observe_duration(ctx: &Context, job: &ImportJob, outcome: &'static str) {
    if let Some(created) = &job.metadata.creation_timestamp {
        let seconds = k8s_openapi::jiff::Timestamp::now()
            .duration_since(created.0)
            .as_secs_f64();
        ctx.metrics
            .durations
            .get_or_create(&crate::metrics::OutcomeLabel { outcome })
            .observe(seconds.max(0.0));
    }
}

/// The job is being deleted: end its export, and remove its images unless
/// they back the VM it created. Never touches the source VM.
async fn cleanup(ctx: &Context, job: &ImportJob) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    end_export(ctx, job, Ending::Abort("the import job was deleted")).await;
    let status = status::of(job);
    if status.phase != Some(ImportPhase::Succeeded) {
        images::delete_all(&ctx.client, &namespace, &job.name_any()).await?;
    }
    Ok(Action::await_change())
}
