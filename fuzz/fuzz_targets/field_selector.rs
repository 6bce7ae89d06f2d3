//! `?fieldSelector=`: any text parses or is refused with a message. What parses
//! prints to a selector that parses back to the same one, every value survives
//! escaping, and a selector that pins a field matches no object with another value.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use vmm_query::selector::{FieldSelector, escape_value, unescape_value};

/// The paths virtual machines select on (`apiserver/src/resources/`).
const SUPPORTED: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.displayName",
    "spec.powerState",
    "spec.source.kind",
    "spec.source.name",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(selector) = FieldSelector::parse(&text, SUPPORTED) else {
        return;
    };
    let printed = selector.to_string();
    assert_eq!(
        FieldSelector::parse(&printed, SUPPORTED).as_ref(),
        Ok(&selector),
        "{text:?} printed as {printed:?}"
    );
    for requirement in selector.requirements() {
        let escaped = escape_value(&requirement.value);
        assert_eq!(
            unescape_value(&escaped).as_deref(),
            Ok(requirement.value.as_str()),
            "{escaped:?}"
        );
    }
    for path in SUPPORTED {
        if let Some(value) = selector.exact_value(path) {
            let other = format!("{value}x");
            let with_other = |field: &str| (field == *path).then(|| Cow::Owned(other.clone()));
            assert!(
                !selector.matches_with(with_other),
                "{printed:?} pins {path}={value} but matches {other:?}"
            );
        }
    }
});
