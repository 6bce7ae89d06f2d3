//! What authorization reads from a request's query, before any handler parses it: the
//! part of kube-apiserver's `RequestInfo` a collection GET's query decides.

use crate::list::flag;
use crate::selector::FieldSelector;

/// The verb and object a collection GET's query asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// A true `watch` parameter (not `0` or `false`, in any case): the verb is `watch`, not `list`.
    pub watch: bool,
    /// The object a field selector `metadata.name=<n>` pins, if `<n>` could be an
    /// object name: the list or watch is then about that object.
    pub name: Option<String>,
}

impl RequestInfo {
    /// Reads the raw query (`application/x-www-form-urlencoded`); the first of
    /// repeated parameters counts, as upstream's `url.Values.Get` has it.
    pub fn from_query(query: &str) -> Self {
        let params = query_params(query);
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        Self {
            watch: flag(param("watch")),
            name: param("fieldSelector").and_then(pinned_name),
        }
    }
}

/// The `metadata.name` a field selector requires exactly, if any, and if it could
/// be an object name (upstream's `IsValidPathSegmentName`). The selector is parsed
/// as the handler parses it, escapes and all: read apart, `metadata.name=a\=b` was
/// the object `a\=b` to authorization and `a=b` to the handler (fuzzing found it).
fn pinned_name(selector: &str) -> Option<String> {
    let selector = FieldSelector::parse_any(selector).ok()?;
    let name = selector.exact_value("metadata.name")?;
    let valid = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
    valid.then(|| name.to_owned())
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " "));
            (decode(key), decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes (a path segment, a query key or value); a `%` not
/// followed by two hex digits stays, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Two hex digits exactly: `from_str_radix` alone would also take `+4` (fuzzing found it).
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_verb_and_the_pinned_name() {
        let info = RequestInfo::from_query("fieldSelector=metadata.name%3Dvm-1&watch=true");
        assert_eq!(
            info,
            RequestInfo {
                watch: true,
                name: Some("vm-1".into())
            }
        );
        for not_a_name in [
            "metadata.name%21%3Dvm-1",
            "metadata.name%3D..",
            "metadata.name%3Da%2Fb",
        ] {
            let info = RequestInfo::from_query(&format!("fieldSelector={not_a_name}"));
            assert_eq!(info.name, None, "{not_a_name}");
        }
        // The name the handler selects, escapes undone (`a\=b` selects `a=b`).
        let escaped = RequestInfo::from_query("fieldSelector=metadata.name%3Da%5C%3Db");
        assert_eq!(escaped.name.as_deref(), Some("a=b"));
    }

    #[test]
    fn percent_decoding_takes_two_hex_digits_only() {
        assert_eq!(percent_decode("team%2Da%2fb"), "team-a/b");
        // `%+4` is no escape, though `u8::from_str_radix("+4", 16)` is 4.
        for kept in ["%+41", "%4", "%zz", "100%"] {
            assert_eq!(percent_decode(kept), kept);
        }
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
