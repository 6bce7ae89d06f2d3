//! The third-party kinds we read and write, as dynamic API resources (we keep
//! no typed copies of KubeVirt's or Harvester's APIs): one definition each,
//! for the apiserver, the controller and the tests.

use kube::core::{ApiResource, GroupVersionKind};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// KubeVirt's `VirtualMachine` (`kubevirt.io/v1`).
pub fn kubevirt_vm() -> ApiResource {
    resource("kubevirt.io", "v1", "VirtualMachine", "virtualmachines")
}

/// The MAC addresses a KubeVirt VM's interfaces ask for (in lower case: MACs
/// compare without case), from the object's JSON.
pub fn kubevirt_vm_macs(vm: &serde_json::Value) -> Vec<String> {
    vm.pointer("/spec/template/spec/domain/devices/interfaces")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten()
        .filter_map(|interface| interface["macAddress"].as_str())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Multus' `NetworkAttachmentDefinition`: a Harvester VM network.
pub fn network_attachment_definition() -> ApiResource {
    resource(
        "k8s.cni.cncf.io",
        "v1",
        "NetworkAttachmentDefinition",
        "network-attachment-definitions",
    )
}

/// Harvester's `VirtualMachineImage` (`harvesterhci.io/v1beta1`).
pub fn virtual_machine_image() -> ApiResource {
    resource(
        "harvesterhci.io",
        "v1beta1",
        "VirtualMachineImage",
        "virtualmachineimages",
    )
}

/// Harvester's `Setting` (`harvesterhci.io/v1beta1`, cluster-scoped): its
/// `value`, or its `default` when the value is empty.
pub fn harvester_setting() -> ApiResource {
    resource("harvesterhci.io", "v1beta1", "Setting", "settings")
}

/// Longhorn's `Node` (`longhorn.io/v1beta2`): its disks' sizes and what is
/// scheduled on them.
pub fn longhorn_node() -> ApiResource {
    resource("longhorn.io", "v1beta2", "Node", "nodes")
}

/// Longhorn's `Setting` (`longhorn.io/v1beta2`): one named setting, its `value` a string.
pub fn longhorn_setting() -> ApiResource {
    resource("longhorn.io", "v1beta2", "Setting", "settings")
}
