//! Preflight against the namespace's ResourceQuotas: the VM's volumes (one
//! PVC per disk, each the disk's size) must fit, or the import would power
//! the source off, copy every disk, and then leave a VM whose volumes the
//! quota refuses (Harvester's importer loops on this: harvester#8849).

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::Api;
use kube::api::ListParams;
use vmm_api::quantity::whole_units;

use crate::connect::Refused;

/// What the VM's volumes will request.
pub struct Request<'a> {
    pub claims: i128,
    pub bytes: i128,
    /// Their storage class, when known before the images exist.
    pub class: Option<&'a str>,
}

impl Request<'_> {
    /// Each quota resource the request counts against, with its amount.
    fn amounts(&self) -> Vec<(String, i128)> {
        let mut amounts = vec![
            ("persistentvolumeclaims".to_owned(), self.claims),
            ("requests.storage".to_owned(), self.bytes),
        ];
        if let Some(class) = self.class {
            let per_class = format!("{class}.storageclass.storage.k8s.io");
            amounts.push((format!("{per_class}/persistentvolumeclaims"), self.claims));
            amounts.push((format!("{per_class}/requests.storage"), self.bytes));
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
        let limit = whole_units(&limit.0).unwrap_or(i128::MAX);
        let in_use = used
            .and_then(|u| u.get(&resource))
            .and_then(|q| whole_units(&q.0))
            .unwrap_or(0);
        let room = limit.saturating_sub(in_use).max(0);
        if need > room {
            return Err(Refused::new(
                "QuotaExceeded",
                format!(
                    "ResourceQuota {name} leaves room for {} of {resource} in this namespace, and the VM's volumes need {}: raise the quota or free some first",
                    shown(&resource, room),
                    shown(&resource, need)
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes in GiB with two decimals, counts as they are.
fn shown(resource: &str, amount: i128) -> String {
    if resource.ends_with("requests.storage") {
        // Precision does not matter in a message; i128 → f64 is lossy only
        // beyond 2^53 bytes.
        #[allow(clippy::cast_precision_loss)]
        let gib = amount as f64 / f64::from(1u32 << 30);
        format!("{gib:.2} GiB")
    } else {
        amount.to_string()
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
            claims: 2,
            bytes: 30 << 30,
            class: Some("fast"),
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
            // Another class's quota, and resources volumes do not use.
            (
                &[
                    ("slow.storageclass.storage.k8s.io/requests.storage", "1Gi"),
                    ("pods", "0"),
                ],
                &[],
                None,
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
