//! The served inventory resources, one module each: the object's Table
//! columns and cells, its selectable fields, and where the store keeps it.
//! [`visit_all`] names every one; routing, discovery and the OpenAPI
//! documents are built from it, so a third resource is one new module and
//! one line there.

pub mod networks;
pub mod virtual_machines;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use vmm_api::inventory::ResourceNames;
use vmm_query::selector::{FieldSelector, FieldTable, LabelSelector};

use crate::store::{Object, Snapshot, Store};

/// A resource of the inventory API.
pub trait InventoryResource:
    Serialize + JsonSchema + Clone + PartialEq + Send + Sync + Sized + 'static
{
    const NAMES: ResourceNames;
    /// What `fieldSelector` may name.
    const FIELDS: FieldTable<Self>;
    /// The Table columns, in order; [`cells`](Self::cells) fills them.
    const COLUMNS: &'static [Column];

    fn cells(&self) -> Vec<Value>;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;

    /// Every object of this resource (in `namespace`), at one version.
    fn snapshot(store: &Store, namespace: Option<&str>) -> Snapshot<Self>;
    fn one(store: &Store, namespace: &str, name: &str) -> Option<Arc<Self>>;
    /// This object as a change carries it.
    fn wrap(object: Arc<Self>) -> Object;
    /// This resource's object in a change, if the change is of it.
    fn of(object: &Object) -> Option<&Arc<Self>>;
}

/// What is done for each resource: see [`visit_all`].
pub trait Visitor {
    fn visit<T: InventoryResource>(&mut self);
}

/// Every served resource, in discovery order.
pub fn visit_all(visitor: &mut impl Visitor) {
    visitor.visit::<vmm_api::inventory::VirtualMachine>();
    visitor.visit::<vmm_api::inventory::Network>();
}

/// One Table column, as `columnDefinitions` describes it.
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

pub const fn column(
    name: &'static str,
    kind: &'static str,
    priority: i32,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

/// The first column of every resource.
pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name of the object, derived from the source and the source's id",
    priority: 0,
};

/// The source's name, for the `Source` column.
pub fn source_name(source: Option<&vmm_api::inventory::SourceReference>) -> &str {
    source.map(|s| s.name.as_str()).unwrap_or("")
}

/// Whether `item` passes both selectors.
pub fn selected<T: InventoryResource>(
    item: &T,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> bool {
    static NO_LABELS: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    labels.matches(item.metadata().labels.as_ref().unwrap_or(&NO_LABELS))
        && T::FIELDS.matches(fields, item)
}

/// Whether every pair of selectors selects both `a` and `b` or neither: they
/// have the same labels and selectable fields.
pub fn selected_alike<T: InventoryResource>(a: &T, b: &T) -> bool {
    a.metadata().labels == b.metadata().labels && T::FIELDS.same(a, b)
}

/// A field's value as text, for field selectors: enums as serde spells them.
pub fn text<T: Serialize>(value: &T) -> Option<std::borrow::Cow<'static, str>> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(|s| std::borrow::Cow::Owned(s.to_owned())))
}
