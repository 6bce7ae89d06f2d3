//! Preflight against the namespace's ResourceQuotas: what the import adds
//! must fit, or it would power the source off, copy every disk, and then be
//! refused the VM, its volumes or its pod (Harvester's importer loops on the
//! same for space: harvester#8849). It adds one image and one PVC of the
//! disk's size per disk, one VirtualMachine, and, when it starts the VM, a
//! virt-launcher pod whose limits are at least the guest's CPUs and memory,
//! and whose requests are at least what Harvester's webhook derives from them
//! with its `overcommit-config` setting (KubeVirt adds overhead on top, so
//! this check is a lower bound).

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::Api;
use kube::api::ListParams;
use vmm_api::quantity::{gib, milli_units};

use crate::connect::Refused;
use crate::import::preflight::settings::Overcommit;

/// What an import adds to its namespace.
pub struct Request<'a> {
    /// The capacity of each disk, in bytes.
    pub disks: &'a [i64],
    /// The volumes' storage class, when known before the images exist.
    pub class: Option<&'a str>,
    /// The guest, when the import starts the VM.
    pub running: Option<Guest>,
}

/// A guest as its virt-launcher pod will ask for it.
pub struct Guest {
    pub cpus: i128,
    pub memory_bytes: i128,
    /// Harvester's overcommit percentages, when the cluster has them.
    pub overcommit: Option<Overcommit>,
}

impl Guest {
    /// `requests.cpu` and `requests.memory` as Harvester's VM webhook sets
    /// them: limits × 100 / overcommit, memory truncated to whole MiB.
    fn requests(&self) -> Option<(i128, i128)> {
        let overcommit = self.overcommit.filter(|o| o.cpu > 0 && o.memory > 0)?;
        let millicores = self.cpus * 1000 * 100 / overcommit.cpu;
        const MIB: i128 = 1 << 20;
        let memory = self.memory_bytes * 100 / overcommit.memory / MIB * MIB;
        Some((millicores, memory))
    }
}

impl Request<'_> {
    /// Each quota resource the request counts against, in thousandths.
    fn amounts(&self) -> Vec<(String, i128)> {
        const WHOLE: i128 = 1000;
        let claims = self.disks.len() as i128 * WHOLE;
        let bytes = self.disks.iter().map(|&b| i128::from(b)).sum::<i128>() * WHOLE;
        let mut amounts = vec![
            ("count/virtualmachines.kubevirt.io".to_owned(), WHOLE),
            (
                "count/virtualmachineimages.harvesterhci.io".to_owned(),
                claims,
            ),
            ("persistentvolumeclaims".to_owned(), claims),
            ("requests.storage".to_owned(), bytes),
        ];
        if let Some(class) = self.class {
            let per_class = format!("{class}.storageclass.storage.k8s.io");
            amounts.push((format!("{per_class}/persistentvolumeclaims"), claims));
            amounts.push((format!("{per_class}/requests.storage"), bytes));
        }
        if let Some(guest) = &self.running {
            amounts.push(("pods".to_owned(), WHOLE));
            amounts.push(("limits.cpu".to_owned(), guest.cpus * WHOLE));
            amounts.push(("limits.memory".to_owned(), guest.memory_bytes * WHOLE));
            if let Some((millicores, memory)) = guest.requests() {
                // `cpu` and `memory` are a quota's other names for the requests.
                for name in ["requests.cpu", "cpu"] {
                    amounts.push((name.to_owned(), millicores));
                }
                for name in ["requests.memory", "memory"] {
                    amounts.push((name.to_owned(), memory * WHOLE));
                }
            }
        }
        amounts
    }
}

/// Refuses a request that some ResourceQuota of `namespace` has no room for.
pub async fn check(
    client: &kube::Client,
    namespace: &str,
    request: &Request<'_>,
) -> Result<(), Refused> {
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            Refused::new(
                "QuotaUnreadable",
                format!("cannot read the ResourceQuotas of namespace {namespace}: {e}"),
            )
        })?;
    quotas
        .items
        .iter()
        .try_for_each(|quota| fits(quota, request))
}

fn fits(quota: &ResourceQuota, request: &Request<'_>) -> Result<(), Refused> {
    let name = quota.metadata.name.as_deref().unwrap_or_default();
    let status = quota.status.as_ref();
    // `hard` in status is what the quota controller enforces; the spec's
    // until it has caught up.
    let hard = status
        .and_then(|s| s.hard.as_ref())
        .or_else(|| quota.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let used = status.and_then(|s| s.used.as_ref());
    for (resource, need) in request.amounts() {
        let Some(limit) = hard.and_then(|h| h.get(&resource)) else {
            continue;
        };
        let limit = milli_units(&limit.0).unwrap_or(i128::MAX);
        let in_use = used
            .and_then(|u| u.get(&resource))
            .and_then(|q| milli_units(&q.0))
            .unwrap_or(0);
        let room = limit.saturating_sub(in_use).max(0);
        if need > room {
            return Err(Refused::new(
                "QuotaExceeded",
                format!(
                    "ResourceQuota {name} leaves room for {} of {resource} in this namespace, and the import needs {}: raise the quota or free some first",
                    shown(&resource, room),
                    shown(&resource, need)
                ),
            ));
        }
    }
    Ok(())
}

/// An amount in thousandths as a person reads it: bytes in GiB, CPUs and
/// counts as numbers.
fn shown(resource: &str, milli: i128) -> String {
    if resource.ends_with("requests.storage") || resource.ends_with("memory") {
        format!("{} GiB", gib(milli / 1000))
    } else {
        // Precision does not matter in a message.
        #[allow(clippy::cast_precision_loss)]
        let units = milli as f64 / 1000.0;
        format!("{units}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ResourceQuotaSpec, ResourceQuotaStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    /// Quota resources and their amounts.
    type Amounts<'a> = &'a [(&'a str, &'a str)];

    fn quota(hard: Amounts, used: Amounts) -> ResourceQuota {
        let map = |pairs: Amounts| -> BTreeMap<String, Quantity> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                .collect()
        };
        ResourceQuota {
            metadata: kube::api::ObjectMeta {
                name: Some("team".into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: Some(map(hard)),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                hard: Some(map(hard)),
                used: Some(map(used)),
            }),
        }
    }

    #[test]
    fn a_request_fits_or_names_the_quota_and_resource() {
        let two_disks = Request {
            disks: &[10 << 30, 20 << 30],
            class: Some("fast"),
            running: Some(Guest {
                cpus: 4,
                memory_bytes: 8 << 30,
                // Harvester's default: 4 CPUs ask for 400m, 8 GiB for 5461 MiB.
                overcommit: Some(Overcommit {
                    cpu: 1000,
                    memory: 150,
                }),
            }),
        };
        // (hard, used, the resource or room the refusal names; None: it fits)
        let cases: &[(Amounts, Amounts, Option<&str>)] = &[
            (
                &[("requests.storage", "100Gi")],
                &[("requests.storage", "70Gi")],
                None,
            ),
            (
                &[("requests.storage", "100Gi")],
                &[("requests.storage", "71Gi")],
                Some("requests.storage"),
            ),
            (
                &[("persistentvolumeclaims", "3")],
                &[("persistentvolumeclaims", "1")],
                None,
            ),
            (
                &[("persistentvolumeclaims", "3")],
                &[("persistentvolumeclaims", "2")],
                Some("persistentvolumeclaims"),
            ),
            (
                &[("fast.storageclass.storage.k8s.io/requests.storage", "10Gi")],
                &[],
                Some("fast.storageclass.storage.k8s.io/requests.storage"),
            ),
            // Another class's quota, and resources an import does not use.
            (
                &[
                    ("slow.storageclass.storage.k8s.io/requests.storage", "1Gi"),
                    ("services", "0"),
                ],
                &[],
                None,
            ),
            (
                &[("count/virtualmachines.kubevirt.io", "5")],
                &[("count/virtualmachines.kubevirt.io", "5")],
                Some("count/virtualmachines.kubevirt.io"),
            ),
            (
                &[("limits.cpu", "8")],
                &[("limits.cpu", "4500m")],
                Some("limits.cpu"),
            ),
            (&[("limits.cpu", "8")], &[("limits.cpu", "4")], None),
            (
                &[("limits.memory", "16Gi")],
                &[("limits.memory", "8Gi")],
                None,
            ),
            (
                &[("limits.memory", "16Gi")],
                &[("limits.memory", "9Gi")],
                Some("7.00 GiB"),
            ),
            (&[("pods", "10")], &[("pods", "10")], Some("pods")),
            (&[("requests.cpu", "1")], &[("requests.cpu", "600m")], None),
            (&[("cpu", "1")], &[("cpu", "601m")], Some("cpu")),
            (
                &[("requests.memory", "8Gi")],
                &[("requests.memory", "2731Mi")],
                None,
            ),
            (
                &[("memory", "8Gi")],
                &[("memory", "2732Mi")],
                Some("5.33 GiB"),
            ),
            // Already over (the quota was lowered): no room, not negative room.
            (
                &[("requests.storage", "1Gi")],
                &[("requests.storage", "5Gi")],
                Some("0.00 GiB"),
            ),
        ];
        for (hard, used, refused_for) in cases {
            let got = fits(&quota(hard, used), &two_disks);
            match (refused_for, got) {
                (None, Ok(())) => {}
                (Some(needle), Err(refused)) => {
                    assert_eq!(refused.reason, "QuotaExceeded");
                    assert!(
                        refused.message.contains(needle) && refused.message.contains("team"),
                        "{hard:?}: {}",
                        refused.message
                    );
                }
                (want, got) => panic!(
                    "{hard:?} {used:?}: want {want:?}, got {:?}",
                    got.err().map(|r| r.message)
                ),
            }
        }
    }
}
