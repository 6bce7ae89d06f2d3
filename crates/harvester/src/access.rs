//! Whether the credentials may do what an import does at the remote
//! cluster, asked before the VM is touched: one SelfSubjectAccessReview per
//! verb and resource, in the VM's namespace.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::{HarvesterClient, HarvesterError, error};

/// What an import does: (API group, resource, verbs). Deleting a VM's
/// instance is only needed for a forced power-off, and is asked then.
const IMPORT_ACCESS: &[(&str, &str, &[&str])] = &[
    ("kubevirt.io", "virtualmachines", &["get", "patch"]),
    ("kubevirt.io", "virtualmachineinstances", &["get", "watch"]),
    (
        "export.kubevirt.io",
        "virtualmachineexports",
        &["create", "get", "watch", "delete"],
    ),
    ("", "secrets", &["create", "get", "delete"]),
];

impl HarvesterClient {
    /// [`HarvesterError::ImportForbidden`] for the first thing an import of
    /// VM `vm_id` needs that the credentials may not do.
    pub async fn check_import_access(&self, vm_id: &str) -> Result<(), HarvesterError> {
        let (namespace, _) = self.split_id(vm_id)?;
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        for (group, resource, verbs) in IMPORT_ACCESS {
            for verb in *verbs {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            group: Some((*group).to_owned()),
                            resource: Some((*resource).to_owned()),
                            verb: Some((*verb).to_owned()),
                            namespace: Some(namespace.to_owned()),
                            ..ResourceAttributes::default()
                        }),
                        ..SelfSubjectAccessReviewSpec::default()
                    },
                    ..SelfSubjectAccessReview::default()
                };
                let answer = reviews
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| {
                        error::classify(&self.url, "create selfsubjectaccessreview", &e)
                    })?;
                if !answer.status.is_some_and(|s| s.allowed) {
                    return Err(HarvesterError::ImportForbidden {
                        url: self.url.clone(),
                        verb,
                        resource,
                        namespace: namespace.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}
