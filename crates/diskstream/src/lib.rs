//! Streaming conversion of VMware disks to raw, without a local copy.
//!
//! The controller exports a vSphere disk through an NFC lease that serves a **streamOptimized
//! VMDK**: a header, then deflate-compressed grains in LBA order with markers, grain tables, a
//! footer and an end-of-stream marker. Harvester's image importer wants the **raw** disk in one
//! full GET. This crate sits in between: [`SegmentReader`] reads the VMDK once, front to back,
//! and yields [`Segment`]s (`Data` for inflated grains, `Zero` for the gaps, which cost neither
//! reading nor inflating); [`SegmentReader::into_raw_stream`] turns them into the raw bytes
//! (zeros from one static buffer), [`SegmentReader::write_sparse`] into a sparse file for the
//! spool case. Flat extents (`-flat.vmdk`) are raw already and pass through
//! ([`SegmentReader::flat`]).
//!
//! Anything else (qcow2, non-stream sparse VMDKs, grains out of order) is an [`Error`] that
//! tells the caller to use `qemu-img`, which is also the reference this crate's output is tested
//! against byte for byte. [`sniff`] detects the format without losing the bytes it looked at.
//!
//! No network, no blocking I/O: any `tokio::io::AsyncRead` is a source. Progress is shared
//! through [`Progress`].

mod decode;
mod error;
mod format;
mod inflate;
mod overhead;
mod progress;
mod raw;

pub use decode::{FLAT_CHUNK, Segment, SegmentReader};
pub use error::Error;
pub use format::{
    DETECT_LEN, Descriptor, Extent, SECTOR, Sniffed, SourceFormat, SparseHeader, detect, sniff,
};
pub use progress::Progress;
pub use raw::ZERO_CHUNK;
