//! `meta.k8s.io/v1` Table output, what `kubectl get` asks for: each
//! resource's columns (`resources/`), a few by default and more under
//! `-o wide` (priority 1).

use serde_json::{Value, json};
use vmm_query::IncludeObject;

use crate::resources::InventoryResource;

/// A Table of `items`, with list metadata as kubectl expects it.
pub fn table<'a, T: InventoryResource>(
    items: impl IntoIterator<Item = &'a T>,
    list_metadata: Value,
    include: IncludeObject,
) -> Value {
    let columns: Vec<Value> = T::COLUMNS
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.metadata(),
                }),
                IncludeObject::Object => json!(item),
            };
            json!({"cells": item.cells(), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::virtual_machines::tests::vm;

    #[test]
    fn rows_carry_cells_and_as_much_object_as_asked() {
        let vm = vm();
        let table = table(
            [&vm],
            json!({"resourceVersion": "7"}),
            IncludeObject::Metadata,
        );
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["rows"][0]["cells"][1], "Web 01");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "vc-vm-1");
        let bare = super::table([&vm], json!({}), IncludeObject::None);
        assert!(bare["rows"][0]["object"].is_null());
    }
}
