//! The controller's side of transfer Jobs: making a disk's transfer when a
//! slot is free (at most `max` at once, and `max_per_host` from one source
//! host), finding how it stands, reading its worker's progress, and
//! removing a job's transfers once they are done with (and, at start, any a
//! vanished import job left).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use vmm_api::importjob::{ImportJob, ImportPhase};

use crate::workers::manifests::{
    ADMIN_PORT, COMPONENT_LABEL, EXPORT_ANNOTATION, HOST_ANNOTATION, JOB_ANNOTATION, JOB_UID_LABEL,
    TRANSFER_LABEL, TransferRef, WorkerTemplate,
};
use crate::workers::{SPEC_KEY, TransferSpec, WorkerProgress};

/// How many transfers run at once.
#[derive(Clone, Copy, Debug)]
pub struct TransferLimits {
    /// In all.
    pub max: usize,
    /// From one source host (ESXi host, OpenStack compute host, remote
    /// Harvester node); disks whose host the source does not say count only
    /// toward `max`.
    pub max_per_host: usize,
}

impl TransferLimits {
    /// Whether one more transfer from `host` may start beside `running`;
    /// if not, which limit holds it.
    fn admit(&self, running: &[Job], host: &str) -> Result<(), String> {
        if running.len() >= self.max {
            return Err(format!(
                "{} of {} transfers run (the controller's --max-transfers)",
                running.len(),
                self.max
            ));
        }
        if host.is_empty() {
            return Ok(());
        }
        let on_host = running
            .iter()
            .filter(|job| job.annotations().get(HOST_ANNOTATION).map(String::as_str) == Some(host))
            .count();
        if on_host >= self.max_per_host {
            return Err(format!(
                "{on_host} of {} transfers run from source host {} (the controller's --max-transfers-per-host)",
                self.max_per_host,
                host_name(host)
            ));
        }
        Ok(())
    }
}

/// How a disk's transfer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferState {
    /// No transfer: every slot is taken; says which limit holds it.
    Queued(String),
    /// Made; its pod is not serving yet, and why, when its pod says (not
    /// scheduled, an image that cannot be pulled).
    Starting(Option<String>),
    /// A pod serves the disk (Ready), at this address.
    Serving { pod_ip: String },
    /// The Job gave up: what its last pod said.
    Failed(String),
}

pub struct TransferPool {
    client: Client,
    pub template: WorkerTemplate,
    limits: TransferLimits,
    /// Held from counting the slots to making a transfer, so two reconciles
    /// never both take the last one.
    admitting: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl TransferPool {
    pub fn new(client: Client, template: WorkerTemplate, limits: TransferLimits) -> Self {
        let tls = vmm_core::tls::client_config(None, false).expect("the default TLS configuration");
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(3))
            .build()
            .expect("an HTTP client");
        Self {
            client,
            template,
            limits,
            admitting: tokio::sync::Mutex::default(),
            http,
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.template.namespace)
    }

    /// Every transfer Job, or those of the import job with UID `uid`.
    async fn list(&self, uid: Option<&str>) -> kube::Result<Vec<Job>> {
        let mut selector = format!("{COMPONENT_LABEL}=transfer");
        if let Some(uid) = uid {
            selector.push_str(&format!(",{JOB_UID_LABEL}={uid}"));
        }
        Ok(self
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await?
            .items)
    }

    /// The transfers of the import job with UID `uid`, by name.
    pub async fn of_job(&self, uid: &str) -> kube::Result<BTreeMap<String, Job>> {
        Ok(self
            .list(Some(uid))
            .await?
            .into_iter()
            .map(|job| (job.name_any(), job))
            .collect())
    }

    /// Makes `transfer` if a slot is free; `Queued` saying which limit holds
    /// it if not.
    pub async fn start(
        &self,
        transfer: &TransferRef,
        spec: TransferSpec,
    ) -> kube::Result<TransferState> {
        let _admitting = self.admitting.lock().await;
        let running: Vec<Job> = self
            .list(None)
            .await?
            .into_iter()
            .filter(|job| finished(job).is_none())
            .collect();
        if let Err(why) = self.limits.admit(&running, &transfer.host) {
            return Ok(TransferState::Queued(why));
        }
        let job = match self
            .jobs()
            .create(&PostParams::default(), &self.template.job(transfer))
            .await
        {
            Ok(job) => job,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.jobs().get(&transfer.name).await?
            }
            Err(error) => return Err(error),
        };
        self.complete(transfer, &job, spec).await?;
        tracing::info!(transfer = %transfer.name, job = %transfer.job, host = %transfer.host, "transfer started");
        Ok(TransferState::Starting(None))
    }

    /// Makes the Job's Service, then its Secret: a transfer whose Secret is
    /// its Job's is whole (see `is_whole`).
    async fn complete(
        &self,
        transfer: &TransferRef,
        job: &Job,
        spec: TransferSpec,
    ) -> kube::Result<()> {
        let namespace = &self.template.namespace;
        create_owned(
            &Api::namespaced(self.client.clone(), namespace),
            &self.template.service(transfer, job),
            job,
        )
        .await?;
        create_owned(
            &Api::namespaced(self.client.clone(), namespace),
            &self.template.secret(transfer, job, &spec),
            job,
        )
        .await
    }

    /// Whether `job` has its own Secret, made last: a leader that died (or
    /// an API error) between making the Job and its Secret leaves a pod that
    /// waits for ever.
    pub async fn is_whole(&self, job: &Job) -> kube::Result<bool> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.template.namespace)
            .get_opt(&job.name_any())
            .await?;
        Ok(secret.is_some_and(|secret| owned_by(&secret, job)))
    }

    /// The spec an existing transfer was made with (its token, above all).
    pub async fn spec_of(&self, name: &str) -> kube::Result<Option<TransferSpec>> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.template.namespace)
            .get_opt(name)
            .await?;
        Ok(secret
            .and_then(|s| s.data)
            .and_then(|data| data.get(SPEC_KEY).cloned())
            .and_then(|body| serde_json::from_slice(&body.0).ok()))
    }

    /// How the existing transfer `job` stands.
    pub async fn state(&self, job: &Job) -> kube::Result<TransferState> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.template.namespace)
            .list(&ListParams::default().labels(&format!("{TRANSFER_LABEL}={}", job.name_any())))
            .await?
            .items;
        if let Some(why) = finished(job) {
            return Ok(TransferState::Failed(last_words(&pods).unwrap_or(why)));
        }
        let serving = pods.iter().find_map(|pod| {
            let status = pod.status.as_ref()?;
            condition(status, "Ready", "True")?;
            status.pod_ip.clone()
        });
        Ok(match serving {
            Some(pod_ip) => TransferState::Serving { pod_ip },
            None => TransferState::Starting(stuck(&pods)),
        })
    }

    /// Whether the Service `service` lists the pod at `pod_ip` as a ready
    /// endpoint. A pod turns Ready before the endpoint controller adds it,
    /// and kube-proxy refuses connections to a Service without one: an
    /// image made in between sees its first download refused and Harvester
    /// tries again only seconds later.
    pub async fn routed(&self, service: &str, pod_ip: &str) -> kube::Result<bool> {
        let slices =
            Api::<EndpointSlice>::namespaced(self.client.clone(), &self.template.namespace)
                .list(
                    &ListParams::default().labels(&format!("kubernetes.io/service-name={service}")),
                )
                .await?
                .items;
        Ok(slices
            .iter()
            .flat_map(|slice| slice.endpoints.iter().flatten())
            .any(|endpoint| {
                endpoint.addresses.iter().any(|address| address == pod_ip)
                    && endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false)
            }))
    }

    /// What the worker at `pod_ip` has sent; `None` when it cannot say.
    pub async fn progress(&self, pod_ip: &str) -> Option<WorkerProgress> {
        let url = format!("http://{}/progress", socket(pod_ip));
        let response = self.http.get(url).send().await.ok()?;
        response.error_for_status().ok()?.json().await.ok()
    }

    /// Removes a transfer (its pods, Secret and Service go with it).
    pub async fn remove(&self, name: &str) -> kube::Result<()> {
        match self.jobs().delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Removes every transfer of the import job with UID `uid`.
    pub async fn remove_all(&self, uid: &str) -> kube::Result<()> {
        for name in self.of_job(uid).await?.into_keys() {
            self.remove(&name).await?;
        }
        Ok(())
    }

    /// Removes transfers whose import job is gone, was replaced, or no
    /// longer transfers (a controller that died before removing them).
    pub async fn sweep(&self) -> kube::Result<()> {
        for job in self.list(None).await? {
            let Some((namespace, name)) = job
                .annotations()
                .get(JOB_ANNOTATION)
                .and_then(|owner| owner.split_once('/'))
            else {
                continue;
            };
            let import = Api::<ImportJob>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await?;
            let current = import.is_some_and(|import| {
                import.uid() == job.labels().get(JOB_UID_LABEL).cloned()
                    && matches!(
                        import.status.and_then(|s| s.phase),
                        Some(ImportPhase::Exporting | ImportPhase::Importing)
                    )
            });
            if !current {
                tracing::info!(transfer = %job.name_any(), owner = %format!("{namespace}/{name}"), "removing a transfer its import job no longer needs");
                self.remove(&job.name_any()).await?;
            }
        }
        Ok(())
    }
}

/// The export a transfer re-opens.
pub fn export_of(job: &Job) -> Option<&str> {
    job.annotations().get(EXPORT_ANNOTATION).map(String::as_str)
}

/// Why a Job ended, if it did (a worker never succeeds: it serves until
/// its Job is deleted).
fn finished(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| matches!(c.type_.as_str(), "Failed" | "Complete") && c.status == "True")
        .map(|c| c.message.clone().unwrap_or_else(|| c.type_.clone()))
}

/// The termination message of the last pod that ended with one.
fn last_words(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
            let ended = status.state.as_ref()?.terminated.as_ref()?;
            Some((ended.finished_at.clone(), ended.message.clone()?))
        })
        .max_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)))
        .map(|(_, message)| message.trim().to_owned())
}

/// Why the newest pod does not run, when it says: it is not scheduled, or
/// its container waits for something other than being created.
fn stuck(pods: &[Pod]) -> Option<String> {
    let pod = pods
        .iter()
        .max_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let status = pod.status.as_ref()?;
    if let Some(unscheduled) = condition(status, "PodScheduled", "False") {
        let why = unscheduled.message.as_deref().unwrap_or("no node fits");
        return Some(format!("pod {} is not scheduled: {why}", pod.name_any()));
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref())?;
    let reason = waiting.reason.as_deref()?;
    if matches!(reason, "ContainerCreating" | "PodInitializing") {
        return None;
    }
    let pod = pod.name_any();
    Some(match waiting.message.as_deref() {
        Some(message) => format!("pod {pod} waits: {reason}: {message}"),
        None => format!("pod {pod} waits: {reason}"),
    })
}

/// The pod's condition `type_` when its status is `value`.
fn condition<'a>(status: &'a PodStatus, type_: &str, value: &str) -> Option<&'a PodCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == value)
}

/// The host part of a host key (`<kind>/<namespace>/<source>/<host>`).
fn host_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// `ip:port` of the admin port, bracketing an IPv6 address.
fn socket(pod_ip: &str) -> String {
    if pod_ip.contains(':') {
        format!("[{pod_ip}]:{ADMIN_PORT}")
    } else {
        format!("{pod_ip}:{ADMIN_PORT}")
    }
}

/// Creates `object`, owned by `job`. One left by an earlier Job of that
/// name (a transfer made again before the garbage collector removed the old
/// one's) is replaced; the Job's own, from an earlier try, is kept.
async fn create_owned<K>(api: &Api<K>, object: &K, job: &Job) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    if let Some(existing) = api.get_opt(&name).await? {
        if owned_by(&existing, job) {
            return Ok(());
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    api.create(&PostParams::default(), object).await.map(drop)
}

fn owned_by(object: &impl kube::Resource, job: &Job) -> bool {
    let uid = job.uid();
    object
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::Job;

    use super::{HOST_ANNOTATION, TransferLimits, stuck};

    fn from(host: &str) -> Job {
        let mut job = Job::default();
        job.metadata.annotations = Some([(HOST_ANNOTATION.to_owned(), host.to_owned())].into());
        job
    }

    #[test]
    fn a_transfer_starts_only_within_both_limits() {
        let esx1 = "Vsphere/team-a/vc/esx-1";
        let esx2 = "Vsphere/team-a/vc/esx-2";
        let other_vc = "Vsphere/team-b/vc/esx-1";
        let limits = TransferLimits {
            max: 3,
            max_per_host: 2,
        };
        let cases: [(&[&str], &str, Option<&str>); 6] = [
            (&[], esx1, None),
            (&[esx1], esx1, None),
            (
                &[esx1, esx1],
                esx1,
                Some("2 of 2 transfers run from source host esx-1"),
            ),
            // The same host name at another source is another host.
            (&[esx1, esx1], other_vc, None),
            (&[esx1, esx2, esx2], esx1, Some("3 of 3 transfers run")),
            // A host the source does not name counts toward the total only.
            (&[esx1, esx1], "", None),
        ];
        for (running, host, refused) in cases {
            let running: Vec<Job> = running.iter().map(|h| from(h)).collect();
            let admitted = limits.admit(&running, host);
            match refused {
                None => assert_eq!(admitted, Ok(()), "{host} beside {running:?}"),
                Some(why) => {
                    let said = admitted.expect_err(host);
                    assert!(said.starts_with(why), "{said}");
                }
            }
        }
    }

    /// A pod's status as the kubelet and the scheduler write it.
    fn pod(
        name: &str,
        created: &str,
        status: serde_json::Value,
    ) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: Option<&str>) -> serde_json::Value {
        serde_json::json!({"containerStatuses": [{
            "name": "transfer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }]})
    }

    #[test]
    fn a_pod_that_cannot_start_says_why() {
        let unscheduled = serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient memory.",
        }]});
        let cases = [
            (vec![], None),
            (
                vec![pod("t-1", "2026-12-07T10:00:00Z", unscheduled.clone())],
                Some("pod t-1 is not scheduled: 0/2 nodes are available: 2 Insufficient memory."),
            ),
            (
                vec![pod(
                    "t-1",
                    "2026-12-07T10:00:00Z",
                    waiting("ErrImageNeverPull", Some("not present")),
                )],
                Some("pod t-1 waits: ErrImageNeverPull: not present"),
            ),
            (
                vec![pod(
                    "t-1",
                    "2026-12-07T10:00:00Z",
                    waiting("ImagePullBackOff", None),
                )],
                Some("pod t-1 waits: ImagePullBackOff"),
            ),
            // Being created is how every pod starts: nothing to say yet.
            (
                vec![pod(
                    "t-1",
                    "2026-12-07T10:00:00Z",
                    waiting("ContainerCreating", None),
                )],
                None,
            ),
            (
                vec![pod(
                    "t-1",
                    "2026-12-07T10:00:00Z",
                    serde_json::json!({"phase": "Running"}),
                )],
                None,
            ),
            // The newest pod speaks for the transfer: the old one failed.
            (
                vec![
                    pod("t-2", "2026-12-07T10:05:00Z", unscheduled),
                    pod(
                        "t-1",
                        "2026-12-07T10:00:00Z",
                        waiting("ErrImageNeverPull", None),
                    ),
                ],
                Some("pod t-2 is not scheduled: 0/2 nodes are available: 2 Insufficient memory."),
            ),
        ];
        for (pods, said) in cases {
            assert_eq!(stuck(&pods).as_deref(), said, "{pods:?}");
        }
    }
}
