//! HTTP byte ranges: the `Range` an image importer sends the controller's disk
//! endpoint, and the `Content-Range` vCenter answers a resumed download with. A
//! range that parses lies inside the disk and reads back the same from its
//! canonical form (`bytes=a-b`); a Content-Range that parses does too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm_wire::range::{parse_content_range, parse_range};

/// Disk sizes at the edges: empty, one byte, a sector, a typical disk, the largest.
const CAPACITIES: &[u64] = &[0, 1, 512, 1000, 10 << 30, u64::MAX - 1, u64::MAX];

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        // A header value that is not UTF-8 never reaches the parsers (`to_str` fails).
        return;
    };
    for &capacity in CAPACITIES {
        if let Ok(range) = parse_range(header, capacity) {
            assert!(
                range.start < range.end && range.end <= capacity,
                "{header:?} gave {range:?} for {capacity} bytes"
            );
            let canonical = format!("bytes={}-{}", range.start, range.end - 1);
            assert_eq!(parse_range(&canonical, capacity), Ok(range), "{header:?}");
        }
    }
    if let Some((first, total)) = parse_content_range(header) {
        let total_text = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
        let canonical = format!("bytes {first}-{first}/{total_text}");
        assert_eq!(
            parse_content_range(&canonical),
            Some((first, total)),
            "{header:?}"
        );
    }
});
