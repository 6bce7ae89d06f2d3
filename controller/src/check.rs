//! `vmm-controller check`: what the chart's `helm test` runs in a pod of the
//! release. It looks at the release the way a user depends on it, not at
//! whether its pods run: the inventory API answers through kube-apiserver's
//! aggregator, the import job API is served, one controller replica leads,
//! and the disk Service sends Harvester's downloads to that replica. Each
//! failure says what to look at.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

/// The result of one check: what was found, or what is wrong and where to
/// look.
#[derive(Debug)]
pub struct Finding {
    pub check: &'static str,
    pub result: Result<String, String>,
}

/// Where the release's parts are.
#[derive(Debug, Clone)]
pub struct Release {
    pub namespace: String,
    /// The Lease the controller replicas elect a leader with.
    pub lease: String,
    /// The Service Harvester downloads disks through.
    pub disk_service: String,
}

/// Runs every check, in order.
pub async fn run(client: &kube::Client, release: &Release) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (check, group, resource) in [
        (
            "inventory API",
            vmm_api::inventory::GROUP,
            "virtualmachines",
        ),
        ("source API", vmm_api::source::GROUP, "vspheres"),
        ("import job API", vmm_api::importjob::GROUP, "importjobs"),
    ] {
        findings.push(Finding {
            check,
            result: served(client, group, resource).await,
        });
    }
    let leader = leader(client, release).await;
    let disks = match &leader {
        Ok(pod) => disk_endpoint(client, release, pod).await,
        Err(_) => Err("not checked: no leader".to_owned()),
    };
    findings.push(Finding {
        check: "controller leader",
        result: leader.map(|pod| format!("{pod} leads")),
    });
    findings.push(Finding {
        check: "disk endpoint",
        result: disks,
    });
    findings
}

/// Whether discovery of `<group>/v1` lists `resource`.
async fn served(client: &kube::Client, group: &str, resource: &str) -> Result<String, String> {
    let group_version = format!("{group}/v1");
    let list = client
        .list_api_group_resources(&group_version)
        .await
        .map_err(|e| {
            format!(
                "{group_version} is not served ({e}): see `kubectl get apiservice \
                 v1.{group} -o yaml` and the logs of the pods behind it"
            )
        })?;
    if list.resources.iter().any(|r| r.name == resource) {
        Ok(format!("{group_version} serves {resource}"))
    } else {
        Err(format!(
            "{group_version} is served without {resource}: the CRDs or the \
             apiserver image are of another version than the chart"
        ))
    }
}

/// The pod holding the Lease, which must exist and be Ready.
async fn leader(client: &kube::Client, release: &Release) -> Result<String, String> {
    let namespace = &release.namespace;
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&release.lease)
        .await
        .map_err(|e| format!("cannot read Lease {namespace}/{}: {e}", release.lease))?
        .ok_or_else(|| {
            format!(
                "no Lease {namespace}/{}: no replica has started",
                release.lease
            )
        })?;
    let holder = lease
        .spec
        .and_then(|spec| spec.holder_identity)
        .filter(|holder| !holder.is_empty())
        .ok_or_else(|| {
            format!(
                "no replica leads (Lease {namespace}/{} has no holder): see the \
                 controller pods' logs",
                release.lease
            )
        })?;
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(&holder)
        .await
        .map_err(|e| format!("cannot read pod {namespace}/{holder}: {e}"))?
        .ok_or_else(|| {
            format!(
                "the leader {holder} is not a pod of {namespace}: another \
                 controller shares the Lease {}",
                release.lease
            )
        })?;
    let ready = pod
        .status
        .and_then(|status| status.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        Ok(holder)
    } else {
        Err(format!(
            "the leader {holder} is not Ready: `kubectl describe pod -n {namespace} {holder}`"
        ))
    }
}

/// Whether the disk Service's ready endpoints are exactly the leader's pod.
async fn disk_endpoint(
    client: &kube::Client,
    release: &Release,
    leader: &str,
) -> Result<String, String> {
    let namespace = &release.namespace;
    let service = &release.disk_service;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| {
            format!("cannot list the EndpointSlices of Service {namespace}/{service}: {e}")
        })?;
    let mut pods: Vec<String> = slices
        .items
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.target_ref.as_ref()?.name.clone())
        .collect();
    pods.sort();
    pods.dedup();
    if pods == [leader] {
        Ok(format!("Service {service} sends downloads to {leader}"))
    } else {
        Err(format!(
            "Service {namespace}/{service} sends downloads to {pods:?}, not to the \
             leader {leader}: its selector must match only the pod labelled \
             {}=serving",
            crate::leader::DISK_ENDPOINT_LABEL
        ))
    }
}
