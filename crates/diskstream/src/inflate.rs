//! Inflating one grain: a zlib stream (RFC 1950), as qemu's `uncompress()` reads it.

use flate2::{Decompress, FlushDecompress, Status};

/// Why a grain did not inflate.
#[derive(Debug)]
pub(crate) enum InflateError {
    /// Not a valid zlib stream (bad header, bad data, checksum mismatch, cut short).
    Corrupt(String),
    /// Inflates to more than the buffer allows: this many bytes (a lower bound when far too
    /// large, counting stops at [`COUNT_LIMIT`] times the buffer).
    TooLarge(u64),
}

/// How far past the buffer an oversized grain is inflated, only to report its size.
const COUNT_LIMIT: u64 = 16;

/// Inflate `input` into a new buffer of at most `max` bytes. `Ok` holds the output, whatever its
/// length up to `max`; the caller decides which lengths are acceptable. Bytes after the end of
/// the zlib stream are ignored, as zlib's `uncompress()` (and so qemu) ignores them.
///
/// One call with `Finish` into a buffer that holds a whole grain: the inflater then writes
/// straight into it (no copy through its window), which is the fast path for every valid grain.
pub(crate) fn inflate(
    z: &mut Decompress,
    input: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    z.reset(true);
    let mut out = Vec::with_capacity(max);
    match z.decompress_vec(input, &mut out, FlushDecompress::Finish) {
        Ok(Status::StreamEnd) if out.len() <= max => Ok(out),
        Ok(Status::StreamEnd) => Err(InflateError::TooLarge(out.len() as u64)),
        Ok(_) if out.len() >= max => Err(InflateError::TooLarge(measure(z, input, max))),
        Ok(_) => Err(InflateError::Corrupt("compressed data ends early".into())),
        Err(e) => Err(InflateError::Corrupt(e.to_string())),
    }
}

/// Inflate an oversized grain again into scratch space, only to tell its size. Error path only.
fn measure(z: &mut Decompress, input: &[u8], max: usize) -> u64 {
    z.reset(true);
    let limit = COUNT_LIMIT * max as u64;
    let mut scratch = vec![0u8; 64 * 1024];
    while z.total_out() < limit {
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let rest = &input[(in_before as usize).min(input.len())..];
        match z.decompress(rest, &mut scratch, FlushDecompress::None) {
            Ok(Status::StreamEnd) | Err(_) => break,
            Ok(_) if z.total_out() == out_before && z.total_in() == in_before => break,
            Ok(_) => {}
        }
    }
    z.total_out()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::ZlibEncoder;

    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(data).expect("compress");
        z.finish().expect("compress")
    }

    #[test]
    fn inflates_exact_short_and_oversized_grains() {
        let mut z = Decompress::new(true);
        let grain: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(inflate(&mut z, &zlib(&grain), 65536).expect("exact"), grain);
        assert_eq!(
            inflate(&mut z, &zlib(&grain[..512]), 65536).expect("short"),
            &grain[..512]
        );
        // Trailing bytes after the zlib stream are ignored, as by zlib's uncompress().
        let mut padded = zlib(&grain);
        padded.extend_from_slice(&[0xee; 7]);
        assert_eq!(inflate(&mut z, &padded, 65536).expect("padded"), grain);
        let big = vec![3u8; 200_000];
        assert!(matches!(
            inflate(&mut z, &zlib(&big), 65536),
            Err(InflateError::TooLarge(200_000))
        ));
        let cut = zlib(&grain);
        assert!(matches!(
            inflate(&mut z, &cut[..cut.len() / 2], 65536),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(&mut z, b"not zlib", 65536),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            inflate(&mut z, &[], 65536),
            Err(InflateError::Corrupt(_))
        ));
    }
}
