//! The CRDs generated from these types, as the chart installs them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Harvester, ImportJob, Openstack, Vsphere};

/// Every CRD of ours with the file name it has under `charts/vm-migration/crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("source.harvesterhci.io_vspheres.yaml", Vsphere::crd()),
        ("source.harvesterhci.io_openstacks.yaml", Openstack::crd()),
        ("source.harvesterhci.io_harvesters.yaml", Harvester::crd()),
        (
            "importjob.harvesterhci.io_importjobs.yaml",
            ImportJob::crd(),
        ),
    ]
}
