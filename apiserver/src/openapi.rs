//! OpenAPI documents of the inventory types, generated from the Rust types, so
//! `kubectl explain virtualmachines.inventory.harvesterhci.io.spec` works like
//! for a built-in: v3 (an index plus one document per group-version, what
//! kubectl reads) and v2 (what the aggregator still merges).

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use vmm_api::inventory::{API_VERSION, GROUP, VERSION};

use crate::resources::{self, InventoryResource, Visitor};

/// The documents, built once.
#[derive(Clone, Debug)]
pub struct OpenApi {
    pub v2: Value,
    pub v3_index: Value,
    pub v3_group_version: Value,
}

/// Where the group-version's v3 document is served.
pub fn v3_path() -> String {
    format!("/openapi/v3/apis/{GROUP}/{VERSION}")
}

impl OpenApi {
    pub fn new() -> Self {
        let info = json!({"title": API_VERSION, "version": VERSION});
        let v3_group_version = json!({
            "openapi": "3.0.0",
            "info": info,
            "paths": get_paths(),
            "components": {"schemas": definitions(SchemaSettings::openapi3())},
        });
        // The hash lets clients cache the document until it changes.
        let hash = fnv1a64(v3_group_version.to_string().as_bytes());
        let v3_index = json!({"paths": {
            format!("apis/{GROUP}/{VERSION}"): {"serverRelativeURL": format!("{}?hash={hash:016X}", v3_path())},
        }});
        let v2 = json!({
            "swagger": "2.0",
            "info": info,
            "paths": {},
            "definitions": definitions(SchemaSettings::openapi3().with(|s| s.definitions_path = "/definitions".into())),
        });
        Self {
            v2,
            v3_index,
            v3_group_version,
        }
    }
}

impl Default for OpenApi {
    fn default() -> Self {
        Self::new()
    }
}

/// The `get` operation of each kind: `kubectl explain` finds a resource's schema
/// through the operation on its path, not through the schemas alone.
fn get_paths() -> Value {
    struct Paths(Map<String, Value>);
    impl Visitor for Paths {
        fn visit<T: InventoryResource>(&mut self) {
            let names = T::NAMES;
            let path = format!(
                "/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{}/{{name}}",
                names.plural
            );
            let response = json!({"$ref": format!("#/components/schemas/{}", T::schema_name())});
            self.0.insert(
                path,
                json!({"get": {
                    "operationId": format!("read{}", names.kind),
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": {"group": GROUP, "version": VERSION, "kind": names.kind},
                    "responses": {"200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": response}},
                    }},
                }}),
            );
        }
    }
    let mut paths = Paths(Map::new());
    resources::visit_all(&mut paths);
    Value::Object(paths.0)
}

/// The schemas of every served kind and what they refer to, each served kind
/// tagged with its group, version and kind as kubectl looks them up.
fn definitions(settings: SchemaSettings) -> Map<String, Value> {
    struct Schemas {
        generator: SchemaGenerator,
        kinds: Vec<(String, &'static str)>,
    }
    impl Visitor for Schemas {
        fn visit<T: InventoryResource>(&mut self) {
            self.generator.subschema_for::<T>();
            self.kinds
                .push((T::schema_name().into_owned(), T::NAMES.kind));
        }
    }
    let mut schemas = Schemas {
        generator: settings.into_generator(),
        kinds: Vec::new(),
    };
    resources::visit_all(&mut schemas);
    let mut definitions = schemas.generator.take_definitions(true);
    for (schema, kind) in schemas.kinds {
        if let Some(Value::Object(schema)) = definitions.get_mut(&schema) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": GROUP, "version": VERSION, "kind": kind}]),
            );
        }
    }
    definitions
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_the_kinds_and_resolve_their_refs() {
        let openapi = OpenApi::new();
        let schemas = &openapi.v3_group_version["components"]["schemas"];
        let vm = &schemas["VirtualMachine"];
        assert_eq!(
            vm["x-kubernetes-group-version-kind"][0]["kind"],
            "VirtualMachine"
        );
        assert_eq!(
            schemas["Network"]["x-kubernetes-group-version-kind"][0]["group"],
            GROUP
        );
        // Every $ref points at a schema in the same document.
        let text = openapi.v3_group_version.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap();
            let name = target.strip_prefix("#/components/schemas/").expect(target);
            assert!(schemas.get(name).is_some(), "dangling {target}");
        }
        let url =
            openapi.v3_index["paths"]["apis/inventory.harvesterhci.io/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap();
        assert!(
            url.starts_with("/openapi/v3/apis/inventory.harvesterhci.io/v1?hash="),
            "{url}"
        );
        assert!(openapi.v2["definitions"]["VirtualMachine"].is_object());
        assert!(
            !openapi.v2.to_string().contains("#/components/"),
            "v2 refs point at definitions"
        );
    }
}
