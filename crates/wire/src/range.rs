//! HTTP byte ranges (RFC 9110 §14): the one range a disk reader asks for, and where
//! a partial answer starts.

use std::ops::Range;

use crate::Error;

/// A `Range` header for a disk of `capacity` bytes, as a byte range: one
/// range per request (`bytes=a-b`, `bytes=a-` or `bytes=-n`).
pub fn parse_range(header: &str, capacity: u64) -> Result<Range<u64>, Error> {
    let spec = header
        .strip_prefix("bytes=")
        .ok_or_else(|| Error::RangeUnit {
            header: header.to_owned(),
        })?;
    if spec.contains(',') {
        return Err(Error::RangeCount {
            header: header.to_owned(),
        });
    }
    let malformed = || Error::RangeMalformed {
        header: header.to_owned(),
    };
    let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| malformed());
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => capacity.saturating_sub(number(suffix)?)..capacity,
        (start, "") => number(start)?..capacity,
        (start, end) => number(start)?..number(end)?.saturating_add(1).min(capacity),
    };
    if range.start >= range.end {
        return Err(Error::RangeOutside {
            header: header.to_owned(),
            capacity,
        });
    }
    Ok(range)
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes 100-199/*` → (100, None).
pub fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        let ok = [
            ("bytes=0-127", 0..128),
            ("bytes=10-", 10..1000),
            ("bytes=-100", 900..1000),
            ("bytes=990-5000", 990..1000),
            ("bytes=-5000", 0..1000),
        ];
        for (header, want) in ok {
            assert_eq!(parse_range(header, 1000), Ok(want), "{header}");
        }
        for header in [
            "bytes=1000-",
            "bytes=5-4",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=a-b",
            "bytes=-0",
            "bytes=12",
        ] {
            assert!(parse_range(header, 1000).is_err(), "{header}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
