//! `?labelSelector=`: any text parses or is refused with a message. What parses
//! prints (upstream's `String()`) to a selector that parses back to the same one,
//! and a selector that pins a key never matches an object without that key.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vmm_query::selector::LabelSelector;

fuzz_target!(|data: &[u8]| {
    // The query extractor hands the handler text, with bad UTF-8 replaced.
    let text = String::from_utf8_lossy(data);
    let Ok(selector) = LabelSelector::parse(&text) else {
        return;
    };
    let printed = selector.to_string();
    assert_eq!(
        LabelSelector::parse(&printed).as_ref(),
        Ok(&selector),
        "{text:?} printed as {printed:?}"
    );

    // Labels made from the selector's own values, so matching reaches every operator.
    let mut labels = BTreeMap::new();
    for requirement in selector.requirements() {
        let value = requirement.values().first().cloned().unwrap_or_default();
        labels.entry(requirement.key().to_owned()).or_insert(value);
    }
    let _ = selector.matches(&labels);
    for requirement in selector.requirements() {
        if let Some(value) = selector.requires_exact_match(requirement.key()) {
            let mut without = labels.clone();
            without.remove(requirement.key());
            assert!(
                !selector.matches(&without),
                "{printed:?} pins {}={value} but matches without it",
                requirement.key()
            );
        }
    }
});
