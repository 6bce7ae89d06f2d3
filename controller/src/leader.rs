//! Leader election with a `coordination.k8s.io/v1` Lease, so that two
//! replicas are safe: only the holder reconciles and serves disks; the other
//! waits and takes over when the holder stops renewing.
//!
//! As client-go's leader election: a candidate takes the lease when it has no
//! holder, or when its record has not changed for the lease's duration as
//! measured on the candidate's own clock (so clock skew between replicas does
//! not matter); every write carries the resourceVersion read, so two
//! candidates never both win. A holder that cannot renew within the duration
//! has lost and must stop.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};

/// The Lease replicas elect a leader with.
/// charts/vm-migration/templates/controller-lease.yaml makes it under this name.
pub const LEASE_NAME: &str = "vm-migration-controller";

/// The label on the controller's pod that the disk endpoint's Service selects:
/// `serving` on the leader only, so Harvester's downloads reach the replica
/// that serves the job's disks; `standby` on the others.
pub const DISK_ENDPOINT_LABEL: &str = "vm-migration.harvesterhci.io/disk-endpoint";

/// Sets [`DISK_ENDPOINT_LABEL`] on our own pod.
pub async fn label_pod(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    serving: bool,
) -> Result<(), kube::Error> {
    let value = if serving { "serving" } else { "standby" };
    let patch = serde_json::json!({"metadata": {"labels": {DISK_ENDPOINT_LABEL: value}}});
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(pod, value, "disk endpoint label set");
    Ok(())
}

/// One candidate for one lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// The last record seen, and when it last changed (our clock).
struct Observed {
    record: Option<LeaseSpec>,
    since: Instant,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: String,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            duration,
        }
    }

    fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) {
        let mut observed = Observed {
            record: None,
            since: Instant::now(),
        };
        let mut waiting_logged = false;
        loop {
            match self.try_hold(&mut observed).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(false) if !waiting_logged => {
                    let holder = observed
                        .record
                        .as_ref()
                        .and_then(|r| r.holder_identity.clone());
                    tracing::info!(lease = %self.name, ?holder, "another replica leads; waiting");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "cannot read or write the lease")
                }
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the lease; returns once it is lost (not renewed within its
    /// duration, or taken by another candidate).
    pub async fn hold(&self) {
        let mut observed = Observed {
            record: None,
            since: Instant::now(),
        };
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            match self.try_hold(&mut observed).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another replica took the lease");
                    return;
                }
                Err(error) => tracing::warn!(lease = %self.name, %error, "cannot renew the lease"),
            }
            if renewed.elapsed() > self.duration {
                tracing::error!(lease = %self.name, "the lease was not renewed in time");
                return;
            }
        }
    }

    /// Gives the lease up (at shutdown), so another replica takes over at
    /// once instead of after the lease's duration.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.name, %error, "cannot release the lease");
        }
    }

    /// Takes or renews the lease if it is ours to take; whether we hold it.
    async fn try_hold(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let record = lease.spec.clone().unwrap_or_default();
        if observed.record.as_ref() != Some(&record) {
            observed.record = Some(record.clone());
            observed.since = Instant::now();
        }
        let holder = record.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        let expired = observed.since.elapsed() > self.duration;
        if !(ours || holder.is_none() || expired) {
            return Ok(false);
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
        if let Ok(lease) = &written {
            observed.record = lease.spec.clone();
            observed.since = Instant::now();
        }
        conflict_is_false(written)
    }
}

/// A write that lost a race (409) means another candidate holds the lease.
fn conflict_is_false(written: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
