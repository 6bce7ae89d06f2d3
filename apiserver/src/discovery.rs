//! Legacy discovery (`/apis`, `/apis/<group>`, `/apis/<group>/<version>`): what
//! the aggregator polls and kubectl caches. Aggregated discovery v2 is not served;
//! the aggregator falls back to these documents by itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery,
};
use vmm_api::inventory::{API_VERSION, GROUP, VERSION};

use crate::resources::{self, InventoryResource, Visitor};

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
    struct Listed(Vec<APIResource>);
    impl Visitor for Listed {
        fn visit<T: InventoryResource>(&mut self) {
            let to_strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
            let names = T::NAMES;
            self.0.push(APIResource {
                name: names.plural.to_owned(),
                singular_name: names.singular.to_owned(),
                kind: names.kind.to_owned(),
                namespaced: true,
                verbs: to_strings(&VERBS),
                short_names: Some(to_strings(names.short_names)),
                categories: Some(to_strings(names.categories)),
                ..APIResource::default()
            });
        }
    }
    let mut listed = Listed(Vec::new());
    resources::visit_all(&mut listed);
    APIResourceList {
        group_version: API_VERSION.to_owned(),
        resources: listed.0,
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
