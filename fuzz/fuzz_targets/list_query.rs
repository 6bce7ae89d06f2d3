//! A list or watch URL's query, read twice as the apiserver reads it: by
//! authorization (`RequestInfo`, from the raw query, before routing) and by the
//! handler (axum's `Query` into `ListQuery`, then each parameter's check). The two
//! must agree on what is asked: the verb (`watch` or `list`) and the object a
//! `metadata.name` field selector pins, or a user allowed one thing gets another.
//! Each parameter's check either refuses with a message or gives a value that
//! prints back to itself; path segments decode as axum's `Path` decodes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_query::selector::{FieldOperator, FieldTable, LabelSelector};
use vmm_query::{ContinueToken, ListQuery, RequestInfo, percent_decode};

/// An object with the virtual machines' selectable paths (`apiserver/src/resources/`).
struct Object;

static FIELDS: FieldTable<Object> = FieldTable::new(&[
    ("metadata.name", |_| None),
    ("metadata.namespace", |_| None),
    ("spec.displayName", |_| None),
    ("spec.powerState", |_| None),
    ("spec.source.kind", |_| None),
    ("spec.source.name", |_| None),
]);

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);

    // Authorization's percent-decoding of a path segment is axum's where axum
    // accepts the segment (valid UTF-8 once decoded).
    if let Ok(reference) = percent_encoding::percent_decode_str(&query).decode_utf8() {
        assert_eq!(percent_decode(&query), reference, "{query:?}");
    }

    let info = RequestInfo::from_query(&query);
    // What axum's `Query` extractor does; a refusal is a 400 before any handler.
    let Ok(list) = serde_urlencoded::from_str::<ListQuery>(&query) else {
        return;
    };
    assert_eq!(info.watch, list.wants_watch(), "watch in {query:?}");
    if let (Some(name), Ok(fields)) = (&info.name, list.field_selector(&FIELDS)) {
        assert!(
            fields
                .requirements()
                .iter()
                .any(|r| r.field == "metadata.name"
                    && r.operator == FieldOperator::Equals
                    && r.value == *name),
            "authorized for {name:?}, but {query:?} selects with {fields}"
        );
    }
    if let Ok(labels) = list.label_selector() {
        assert_eq!(LabelSelector::parse(&labels.to_string()), Ok(labels));
    }
    if let Ok(Some(token)) = list.continue_token() {
        assert_eq!(ContinueToken::parse(&token.to_string()), Ok(token));
    }
    let _ = (list.include_object(), list.limit(), list.timeout());
    let _ = (list.send_initial_events(), list.allow_watch_bookmarks());
    if let Ok(Some(_)) = list.watch_from() {
        assert!(
            !list.send_initial_events(),
            "a streaming list from a version"
        );
    }
});
