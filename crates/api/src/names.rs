//! Stable object names for inventory objects: derived from the source's name and
//! the provider's id only, so a renamed VM keeps its object, and valid DNS-1123
//! labels whatever the ids contain. And the Harvester VM name an import derives
//! from the source VM's display name.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Longest name we make: a DNS-1123 label, so it also fits in label values.
pub const MAX_NAME_LEN: usize = 63;

/// `<source>-<id>` when that is already a valid DNS-1123 label (the common case:
/// `dc-east-vm-42`); otherwise a readable prefix of it plus a hash of the exact
/// source and id, so distinct ids never share a name.
pub fn object_name(source: &str, id: &str) -> String {
    let plain = format!("{source}-{id}");
    if plain.len() <= MAX_NAME_LEN && is_dns1123_label(&plain) {
        return plain;
    }
    let suffix = format!(
        "{:016x}",
        fnv1a64(&[source.as_bytes(), b"/", id.as_bytes()])
    );
    let suffix = &suffix[..10];
    let mut readable = slug(&plain);
    readable.truncate(MAX_NAME_LEN - suffix.len() - 1);
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("x-{suffix}")
    } else {
        format!("{readable}-{suffix}")
    }
}

/// The Harvester VM name an import job uses when it names none: the source's
/// display name as a DNS-1123 label (`Web 01` → `web-01`), letters transliterated
/// first (`Ünïcödé-VM €` → `unicode-vm-eur`). Readable, not unique: a clash is a
/// concern the user settles with `spec.targetName`. The UI's import wizard shows
/// the same name from the same table (ui-extension/pkg/vm-migration/utils/names.ts).
pub fn target_vm_name(display_name: &str) -> String {
    let mut name = slug(&transliterate(display_name));
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_matches('-');
    if name.is_empty() {
        "vm".to_owned()
    } else {
        name.to_owned()
    }
}

pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Letters of other scripts and with diacritics spelled in ASCII (`ü` → `u`,
/// `ß` → `ss`, `Ж` → `Zh`, `€` → `EUR`), from `transliteration.json`: Latin
/// letters reduced to their base letter by Unicode's decompositions, a few
/// letters and currency signs that have none, and the Cyrillic and Greek
/// alphabets. Characters it does not list are kept (and `slug` drops them).
fn transliterate(text: &str) -> String {
    static TABLE: OnceLock<HashMap<char, String>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let entries: HashMap<String, String> =
            serde_json::from_str(include_str!("transliteration.json"))
                .expect("transliteration.json is a map of strings");
        entries
            .into_iter()
            .filter_map(|(from, to)| {
                let mut chars = from.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some((c, to)),
                    _ => None,
                }
            })
            .collect()
    });
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match table.get(&c) {
            Some(ascii) => out.push_str(ascii),
            None => out.push(c),
        }
    }
    out
}

/// Lowercase ASCII letters and digits kept, every other run of characters one `-`.
fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out
}

/// FNV-1a, 64 bit: tiny, and stable across Rust versions and replicas, unlike
/// std's `DefaultHasher`.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_valid_and_distinct() {
        let cases = [
            ("dc-east", "vm-42", "dc-east-vm-42"),
            ("dc-east", "VM-42", "dc-east-vm-42-"),
            ("dc.east", "vm-42", "dc-east-vm-42-"),
            ("old", "team-a/web 01", "old-team-a-web-01-"),
            ("src", "ünïcødé/名前", "src-n-c-d-"),
            ("src", "---", "src-"),
        ];
        for (source, id, want_prefix) in cases {
            let name = object_name(source, id);
            assert!(is_dns1123_label(&name), "{source}/{id} → {name:?}");
            assert!(name.starts_with(want_prefix), "{source}/{id} → {name:?}");
            assert_eq!(name, object_name(source, id), "not stable");
        }
        // Lossy forms of different ids never collide.
        assert_ne!(object_name("s", "VM-1"), object_name("s", "vm-1"));
        assert_ne!(object_name("s", "a/b"), object_name("s", "a b"));
    }

    #[test]
    fn target_names_read_like_the_display_name() {
        // The same cases drive the wizard's test (ui-extension/.../names.test.ts).
        let cases: Vec<(String, String)> =
            serde_json::from_str(include_str!("target-names.json")).unwrap();
        for (display, want) in cases {
            assert_eq!(target_vm_name(&display), want, "{display:?}");
        }
        let long = target_vm_name(&format!("{}-x", "a".repeat(62)));
        assert_eq!(long, "a".repeat(62), "cut to 63, then trailing '-' trimmed");
        assert!(is_dns1123_label(&long));
    }

    #[test]
    fn the_table_maps_single_characters_to_ascii() {
        let entries: HashMap<String, String> =
            serde_json::from_str(include_str!("transliteration.json")).unwrap();
        for (from, to) in entries {
            assert_eq!(from.chars().count(), 1, "{from:?} is not one character");
            assert!(
                to.chars().all(|c| c.is_ascii_alphabetic()),
                "{from:?} → {to:?}"
            );
        }
    }

    #[test]
    fn inventory_object_names_do_not_transliterate() {
        // Object names are API (the_hash_is_fixed_forever): only target names changed.
        assert!(object_name("src", "ünïcødé").starts_with("src-n-c-d-"));
    }

    #[test]
    fn long_names_are_cut_to_a_label() {
        let id = "x".repeat(300);
        let name = object_name("source", &id);
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(is_dns1123_label(&name));
        assert_ne!(name, object_name("source", &"x".repeat(299)));
    }

    #[test]
    fn the_hash_is_fixed_forever() {
        // Object names are API: changing this hash renames every object. The
        // value is FNV-1a 64 of "s/A" as computed independently (Python).
        assert_eq!(object_name("s", "A"), "s-a-81767e195c");
    }
}
