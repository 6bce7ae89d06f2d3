//! Preflight: everything that can be checked before the source VM is touched.
//! Any failure ends the job with a reason and a message that says what to
//! change, and the source VM keeps running.

pub mod quota;
pub mod settings;
pub mod space;

use std::collections::BTreeSet;

use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use vmm_api::external;
use vmm_api::importjob::ImportJob;
use vmm_api::names::target_vm_name;
use vmm_api::source::AnySource;
use vmm_core::{Reason, Vm};

use crate::conditions::{self, READY};
use crate::connect::Refused;
use crate::import::images;
use crate::import::step::{PhaseError, Step};
use crate::import::target::JOB_LABEL;

/// What preflight found: the one VM to import and where it goes.
pub struct Passed {
    pub vm: Vm,
    pub target_name: String,
}

/// Why a source's last check can fail that says nothing about the next
/// one: the endpoint or the Kubernetes API was down for a moment. Such a
/// source is tried anyway for [`DOWN_GRACE`]; if it is still down, the
/// session fails transiently and the job waits instead of failing (CI saw a
/// job fail for a Keystone connection closed once, a second before the
/// source was Ready).
const PASSING: [Reason; 2] = [Reason::EndpointUnreachable, Reason::SecretUnreadable];

/// How long a source may have been down for a [`PASSING`] reason before a
/// job against it fails `SourceNotReady`: longer than a blip, so that a
/// moment's outage costs nothing, short enough that a job against a source
/// that is really down says so soon.
pub const DOWN_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// A source that its check found unusable is not used: the job fails with
/// why, rather than each job finding out on its own.
fn ready(source: &AnySource, name: &str, now: Timestamp) -> Result<(), Refused> {
    let ready = source
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY));
    let blip = |r: &Condition| {
        PASSING.iter().any(|p| p.as_str() == r.reason)
            && now.duration_since(r.last_transition_time.0) < DOWN_GRACE
    };
    let unusable = |r: &&Condition| r.status != "True" && !blip(r);
    match ready.filter(unusable) {
        Some(ready) => Err(Refused::new(
            "SourceNotReady",
            format!(
                "source {name} is not Ready ({}: {}): fix it first; the job checks again only when recreated",
                ready.reason, ready.message
            ),
        )),
        None => Ok(()),
    }
}

/// Every check, in the order a person would fix them.
pub async fn run(step: &Step<'_>) -> Result<Passed, PhaseError> {
    let client = &step.ctx.client;
    let namespace = step.namespace;
    let job = step.job;
    ready(
        step.source.object().await?,
        &job.spec.source_cluster.name,
        Timestamp::now(),
    )?;
    let session = step.source.session().await?;
    let found = session
        .find_vms(&job.spec.vm_name, job.spec.path.as_deref())
        .await?;
    let vm = match <[Vm; 1]>::try_from(found) {
        Ok([vm]) => vm,
        Err(found) if found.is_empty() => {
            let where_ = job
                .spec
                .path
                .as_deref()
                .map(|p| format!(" under {p}"))
                .unwrap_or_default();
            return Err(Refused::new(
                "VmNotFound",
                format!(
                    "no VM named {:?}{where_} at the source: check spec.vmName (exact, case-sensitive) and spec.path",
                    job.spec.vm_name
                ),
            )
            .into());
        }
        Err(found) => {
            let paths: Vec<String> = found
                .iter()
                .map(|vm| vm.spec.path.clone().unwrap_or_else(|| vm.spec.id.clone()))
                .collect();
            return Err(Refused::new(
                "VmNotUnique",
                format!(
                    "{} VMs are named {:?}: set spec.path to the one to import, one of {paths:?}",
                    found.len(),
                    job.spec.vm_name
                ),
            )
            .into());
        }
    };
    disks(&vm)?;
    session.check_import(&vm.spec.id).await?;
    networks(client, namespace, job, &vm).await?;
    macs(client, job, &vm).await?;
    let class = storage_class(client, job).await?;
    let disks: Vec<i64> = vm.disks.iter().map(|d| d.capacity_bytes).collect();
    let adds = quota::Request {
        disks: &disks,
        class: images::cdi_class(class.as_ref()),
        running: match job.spec.power_on {
            true => Some(quota::Guest {
                cpus: i128::from(vm.spec.cpus),
                memory_bytes: i128::from(
                    vm.spec.memory_mib + settings::reserved_memory_mib(client).await?,
                ) << 20,
                overcommit: settings::overcommit(client).await?,
            }),
            false => None,
        },
    };
    quota::check(client, namespace, &adds).await?;
    space::check(client, class.as_ref(), &disks).await?;
    let target_name = target(client, namespace, job, &vm).await?;
    Ok(Passed { vm, target_name })
}

fn disks(vm: &Vm) -> Result<(), Refused> {
    if vm.disks.is_empty() {
        return Err(Refused::new(
            "NoDisks",
            "the VM has no disks: there is nothing to import",
        ));
    }
    match vm.disks.iter().find_map(|disk| disk.unsupported.clone()) {
        Some(why) => Err(Refused::new("UnsupportedDisk", why)),
        None => Ok(()),
    }
}

async fn networks(
    client: &kube::Client,
    namespace: &str,
    job: &ImportJob,
    vm: &Vm,
) -> Result<(), Refused> {
    let mut used = BTreeSet::new();
    for nic in &vm.spec.nics {
        let network = nic.network.as_deref().ok_or_else(|| {
            Refused::new(
                "NicWithoutNetwork",
                format!(
                    "{} is on no network the source can name, so it cannot be mapped",
                    nic.name
                ),
            )
        })?;
        let mapping = job
            .spec
            .mapping
            .iter()
            .find(|m| m.source_network == network)
            .ok_or_else(|| {
                Refused::new(
                    "NetworkNotMapped",
                    format!(
                        "{} is on source network {network:?}, which spec.mapping does not map: add {{sourceNetwork: {network:?}, destinationNetwork: <NAD>}}",
                        nic.name
                    ),
                )
            })?;
        used.insert(mapping.destination_network.clone());
    }
    for nad in used {
        let (nad_namespace, name) = nad.split_once('/').unwrap_or((namespace, &nad));
        let found = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            nad_namespace,
            &external::network_attachment_definition(),
        )
        .get_opt(name)
        .await
        .map_err(|e| {
            Refused::new(
                "NetworkUnreadable",
                format!("cannot read NetworkAttachmentDefinition {nad_namespace}/{name}: {e}"),
            )
        })?;
        if found.is_none() {
            return Err(Refused::new(
                "NetworkNotFound",
                format!(
                    "NetworkAttachmentDefinition {nad_namespace}/{name} does not exist: create the VM network in Harvester, or map to an existing one"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a VM whose MAC address a KubeVirt VM in the cluster already has
/// (one not made by this job): two guests with one MAC on a network break
/// each other's traffic, and the clash shows only after the source is off.
async fn macs(client: &kube::Client, job: &ImportJob, vm: &Vm) -> Result<(), Refused> {
    let wanted: Vec<(&str, String)> = vm
        .spec
        .nics
        .iter()
        .filter_map(|nic| {
            Some((
                nic.name.as_str(),
                nic.mac_address.as_deref()?.to_ascii_lowercase(),
            ))
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let api = Api::<DynamicObject>::all_with(client.clone(), &external::kubevirt_vm());
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.map_err(|e| {
            Refused::new(
                "VirtualMachinesUnreadable",
                format!("cannot list KubeVirt VirtualMachines to check MAC addresses: {e}"),
            )
        })?;
        for existing in page.items.iter().filter(|vm| !made_by(vm, job)) {
            for mac in external::kubevirt_vm_macs(&existing.data) {
                if let Some((nic, _)) = wanted.iter().find(|(_, m)| *m == mac) {
                    return Err(Refused::new(
                        "MacAddressInUse",
                        format!(
                            "{nic} has MAC address {mac}, which VirtualMachine {}/{} already has: delete that VM (an earlier import of this one?) or change its MAC first",
                            existing.metadata.namespace.as_deref().unwrap_or_default(),
                            existing.metadata.name.as_deref().unwrap_or_default(),
                        ),
                    ));
                }
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Whether `vm` is the one `job` creates (a resumed job meets its own VM).
fn made_by(vm: &DynamicObject, job: &ImportJob) -> bool {
    vm.metadata.namespace == job.metadata.namespace
        && vm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(JOB_LABEL))
            .is_some_and(|j| Some(j.as_str()) == job.metadata.name.as_deref())
}

/// The job's storage class, or `None` for Harvester's default.
pub async fn storage_class(
    client: &kube::Client,
    job: &ImportJob,
) -> Result<Option<StorageClass>, Refused> {
    let Some(name) = &job.spec.storage_class else {
        return Ok(None);
    };
    let class = Api::<StorageClass>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|e| Refused::new("StorageClassUnreadable", format!("cannot read StorageClass {name}: {e}")))?
        .ok_or_else(|| {
            Refused::new(
                "StorageClassNotFound",
                format!("StorageClass {name} does not exist: name an existing one in spec.storageClass, or leave it unset for the default"),
            )
        })?;
    Ok(Some(class))
}

/// The Harvester VM's name, free in the namespace (or already this job's,
/// when resuming).
async fn target(
    client: &kube::Client,
    namespace: &str,
    job: &ImportJob,
    vm: &Vm,
) -> Result<String, Refused> {
    let name = job
        .spec
        .target_name
        .clone()
        .unwrap_or_else(|| target_vm_name(&vm.spec.display_name));
    let existing =
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &external::kubevirt_vm())
            .get_opt(&name)
            .await
            .map_err(|e| {
                Refused::new(
                    "TargetUnreadable",
                    format!("cannot read VirtualMachine {name}: {e}"),
                )
            })?;
    let ours = existing.as_ref().is_some_and(|vm| made_by(vm, job));
    if existing.is_some() && !ours {
        return Err(Refused::new(
            "TargetNameTaken",
            format!(
                "a VirtualMachine named {name} already exists in namespace {namespace}: set spec.targetName to a free name"
            ),
        ));
    }
    Ok(name)
}
