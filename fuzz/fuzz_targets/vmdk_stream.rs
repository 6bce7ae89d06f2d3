//! A disk download, decoded as the controller decodes it: `sniff` the format, then
//! the streamOptimized VMDK decoder over the whole stream (header, front grain
//! tables, markers, zlib grains, footer). Whatever the bytes, the decoder refuses
//! them with an error or yields segments back to back from offset 0 that never go
//! past the capacity its header declares, end exactly there, and no longer than a
//! grain; after an error it stays failed. A text descriptor parses or is refused.
#![no_main]

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use vmm_diskstream::{Descriptor, Error, Progress, Segment, SegmentReader, SourceFormat, sniff};

/// Runs a future whose reader is a byte slice, so it never waits on anything.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok((format, sniffed)) = ready(sniff(data)) else {
        unreachable!("reading a byte slice cannot fail");
    };
    if format == SourceFormat::VmdkDescriptor
        && let Ok(descriptor) = Descriptor::parse(&String::from_utf8_lossy(data))
    {
        let _ = (descriptor.capacity_bytes(), descriptor.single_flat_extent());
    }
    let mut reader = match ready(SegmentReader::vmdk(sniffed, Progress::new())) {
        Ok(reader) => reader,
        Err(error) => {
            assert!(error.is_format_error(), "{error}");
            return;
        }
    };
    assert_eq!(format, SourceFormat::StreamOptimizedVmdk);
    let capacity = reader.capacity();
    let grain = reader.header().expect("a VMDK has a header").grain_bytes();
    let mut next = 0u64;
    loop {
        match ready(reader.next_segment()) {
            Ok(Some(segment)) => {
                assert_eq!(segment.offset(), next, "segments are back to back");
                assert!(!segment.is_empty());
                if let Segment::Data { bytes, .. } = &segment {
                    assert!(bytes.len() as u64 <= grain, "more than a grain");
                }
                next += segment.len();
                assert!(next <= capacity, "past the capacity of {capacity} bytes");
            }
            Ok(None) => {
                assert_eq!(next, capacity, "ended before the capacity");
                return;
            }
            Err(error) => {
                assert!(error.is_format_error(), "{error}");
                assert!(matches!(
                    ready(reader.next_segment()),
                    Err(Error::AlreadyFailed)
                ));
                return;
            }
        }
    }
});
