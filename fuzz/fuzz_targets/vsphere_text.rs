//! What a vSphere source's user and vCenter give the client as text: the endpoint
//! URL (the source's `spec.endpoint`), the device keys and disk URLs of an NFC
//! lease, datastore paths and object names. An endpoint that is accepted
//! normalizes to a URL that is accepted as itself, with the same server; a device
//! key or datastore path that parses reads back the same from its canonical form;
//! a `*` host becomes the SDK's; and a URL shown in a message shows nothing of
//! its userinfo or query, where passwords and tickets travel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_wire::vsphere::{
    parse_device_key, parse_endpoint, redact_url, replace_star_host, split_datastore_path,
    unescape_name,
};

const SDK: &str = "https://vc.example.com:8443/sdk";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((url, server)) = parse_endpoint(&text) {
        assert_eq!(
            parse_endpoint(&url),
            Ok((url.clone(), server.clone())),
            "{text:?} normalized to {url:?}"
        );
        assert_eq!(
            parse_endpoint(&server),
            Ok((url.clone(), server.clone())),
            "{text:?} gave the server {server:?}"
        );
    }
    if let Some((controller, bus, unit)) = parse_device_key(&text) {
        let canonical = format!("/vm/{controller}{bus}:{unit}");
        assert_eq!(
            parse_device_key(&canonical),
            Some((controller, bus, unit)),
            "{text:?}"
        );
    }
    if let Some((datastore, file)) = split_datastore_path(&text) {
        let canonical = format!("[{datastore}] {file}");
        assert_eq!(
            split_datastore_path(&canonical),
            Some((datastore, file)),
            "{text:?}"
        );
    }
    assert!(unescape_name(&text).len() <= text.len());

    let replaced = replace_star_host(&text, SDK);
    if replaced != text {
        assert!(replaced.contains("://vc.example.com:8443"), "{text:?}");
    }
    let shown = redact_url(&text);
    // What redaction hides must not change what it shows: the same URL without
    // userinfo, query and fragment is shown the same.
    if let Ok(mut url) = url::Url::parse(&text)
        && url.set_username("").is_ok()
        && url.set_password(None).is_ok()
    {
        url.set_query(None);
        url.set_fragment(None);
        assert_eq!(redact_url(url.as_str()), shown, "{text:?} without {url}");
    }
});
