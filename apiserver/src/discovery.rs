//! Legacy discovery (`/apis`, `/apis/<group>`, `/apis/<group>/<version>`): what
//! the aggregator polls and kubectl caches. Aggregated discovery v2 is not served;
//! the aggregator falls back to these documents by itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery,
};
use vmm_api::inventory::{API_VERSION, GROUP, RESOURCES, VERSION};

/// The verbs of every inventory resource: read-only.
pub const VERBS: [&str; 3] = ["get", "list", "watch"];

pub fn api_group() -> APIGroup {
    let version = GroupVersionForDiscovery {
        group_version: API_VERSION.to_owned(),
        version: VERSION.to_owned(),
    };
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: Some(version.clone()),
        versions: vec![version],
        server_address_by_client_cidrs: None,
    }
}

pub fn api_group_list() -> APIGroupList {
    APIGroupList {
        groups: vec![api_group()],
    }
}

pub fn api_resource_list() -> APIResourceList {
    let to_strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    APIResourceList {
        group_version: API_VERSION.to_owned(),
        resources: RESOURCES
            .iter()
            .map(|r| APIResource {
                name: r.plural.to_owned(),
                singular_name: r.singular.to_owned(),
                kind: r.kind.to_owned(),
                namespaced: true,
                verbs: to_strings(&VERBS),
                short_names: Some(to_strings(r.short_names)),
                categories: Some(to_strings(r.categories)),
                ..APIResource::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_names_kind_verbs_and_short_names() {
        let list = serde_json::to_value(api_resource_list()).unwrap();
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], "inventory.harvesterhci.io/v1");
        let vms = &list["resources"][0];
        assert_eq!(vms["name"], "virtualmachines");
        assert_eq!(vms["kind"], "VirtualMachine");
        assert_eq!(vms["namespaced"], true);
        assert_eq!(vms["verbs"], serde_json::json!(["get", "list", "watch"]));
        assert_eq!(vms["shortNames"], serde_json::json!(["ivm"]));
    }
}
