//! `networks.inventory.harvesterhci.io` (`inet`): a network at a source.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use vmm_api::inventory::{self, Network, ResourceNames};
use vmm_query::selector::FieldTable;

use super::{Column, InventoryResource, NAME, column, source_name, text};
use crate::store::{Object, Snapshot, Store};

impl InventoryResource for Network {
    const NAMES: ResourceNames = inventory::NETWORKS;

    const FIELDS: FieldTable<Self> = FieldTable::new(&[
        ("metadata.name", |n| {
            n.metadata.name.as_deref().map(Cow::Borrowed)
        }),
        ("metadata.namespace", |n| {
            n.metadata.namespace.as_deref().map(Cow::Borrowed)
        }),
        ("spec.displayName", |n| {
            Some(Cow::Borrowed(&n.spec.display_name))
        }),
        ("spec.kind", |n| text(&n.spec.kind)),
        ("spec.source.kind", |n| {
            n.spec.source.as_ref().and_then(|s| text(&s.kind))
        }),
        ("spec.source.name", |n| {
            n.spec
                .source
                .as_ref()
                .map(|s| Cow::Borrowed(s.name.as_str()))
        }),
    ]);

    const COLUMNS: &'static [Column] = &[
        NAME,
        column(
            "Display Name",
            "string",
            0,
            "The network's name at its source",
        ),
        column("Kind", "string", 0, "Kind of network at the source"),
        column("VLAN", "string", 0, "VLAN id, when the network has one"),
        column(
            "Source",
            "string",
            0,
            "The source object the network is read from",
        ),
        column(
            "Switch",
            "string",
            1,
            "Virtual switch the network belongs to",
        ),
    ];

    fn cells(&self) -> Vec<Value> {
        let spec = &self.spec;
        vec![
            json!(self.metadata.name),
            json!(spec.display_name),
            json!(spec.kind),
            json!(spec.vlan.map(|v| v.to_string()).unwrap_or_default()),
            json!(source_name(spec.source.as_ref())),
            json!(spec.switch.as_deref().unwrap_or("")),
        ]
    }

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn snapshot(store: &Store, namespace: Option<&str>) -> Snapshot<Self> {
        store.networks(namespace)
    }

    fn one(store: &Store, namespace: &str, name: &str) -> Option<Arc<Self>> {
        store.network(namespace, name)
    }

    fn wrap(object: Arc<Self>) -> Object {
        Object::Network(object)
    }

    fn of(object: &Object) -> Option<&Arc<Self>> {
        match object {
            Object::Network(network) => Some(network),
            Object::VirtualMachine(_) => None,
        }
    }
}
