//! The crate's one error type.
//!
//! Every variant names what was wrong and where (byte offset in the source, LBA of the grain),
//! because the caller logs it and then falls back to `qemu-img` on a spooled copy: the message is
//! what an operator reads when a disk took the slow path.

use std::io;

use crate::format::SourceFormat;

/// What can go wrong while decoding a disk stream or writing its raw image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the source failed (network, file system). Not a format problem.
    #[error("reading the source: {0}")]
    Read(#[source] io::Error),

    /// Writing the raw output (sparse file) failed.
    #[error("writing the raw image: {0}")]
    Write(#[source] io::Error),

    /// The input is a format this converter does not stream; convert it with `qemu-img`.
    #[error("{format} input is not handled by the stream converter; convert it with qemu-img")]
    UnsupportedFormat {
        /// What the input was detected as.
        format: SourceFormat,
    },

    /// A VMDK sparse extent whose version, flags or compression this converter does not read.
    #[error("unsupported VMDK: {0}; convert it with qemu-img")]
    Unsupported(String),

    /// The sparse extent header is inconsistent (sizes, offsets, damaged check bytes).
    #[error("invalid VMDK header: {0}")]
    BadHeader(String),

    /// The source ended before `what` was complete.
    #[error("truncated {what} at byte {offset}: the source ended early")]
    Truncated {
        /// The structure being read: "sparse extent header", "grain", "grain marker", ...
        what: &'static str,
        /// Source offset where the structure started.
        offset: u64,
    },

    /// The source ended without an end-of-stream marker, or with fewer grains than its grain
    /// tables list.
    #[error("the stream ended at byte {offset} {detail}")]
    EndedEarly {
        /// Source offset of the end.
        offset: u64,
        /// What was still missing.
        detail: String,
    },

    /// A grain's LBA is not after the previous grain's: the file is not written in LBA order, so
    /// it cannot be converted in one pass.
    #[error(
        "grain at LBA {lba} out of order (after {previous}): not a sequential streamOptimized VMDK"
    )]
    OutOfOrder {
        /// LBA (in sectors) of the offending grain.
        lba: u64,
        /// LBA of the grain before it.
        previous: u64,
    },

    /// A grain's LBA is not a multiple of the grain size, or lies beyond the disk.
    #[error("grain at LBA {lba} (byte {offset}): {detail}")]
    BadGrain {
        /// LBA (in sectors) from the grain marker.
        lba: u64,
        /// Source offset of the grain marker.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },

    /// The compressed bytes of a grain are not a valid zlib stream.
    #[error("compressed grain at LBA {lba} (byte {offset}) is corrupt: {detail}")]
    Corrupt {
        /// LBA (in sectors) of the grain.
        lba: u64,
        /// Source offset of the grain marker.
        offset: u64,
        /// What the inflater said.
        detail: String,
    },

    /// A grain inflated to a size other than the grain size (or the rest of the disk, for the
    /// last grain).
    #[error("compressed grain at LBA {lba} inflates to {actual} bytes, expected {expected}")]
    GrainSize {
        /// LBA (in sectors) of the grain.
        lba: u64,
        /// Bytes it inflated to (a lower bound when it was far too large).
        actual: u64,
        /// Bytes it should have inflated to.
        expected: u64,
    },

    /// A metadata marker of a type the stream format does not define.
    #[error("unknown marker type {kind} at byte {offset}")]
    UnknownMarker {
        /// The marker's type field.
        kind: u32,
        /// Source offset of the marker.
        offset: u64,
    },

    /// `next_segment` was called again after it returned an error.
    #[error("the disk decoder already failed; start a new conversion")]
    AlreadyFailed,

    /// A text descriptor that cannot be read.
    #[error("invalid VMDK descriptor: {0}")]
    BadDescriptor(String),
}

impl Error {
    /// True when the input itself is the problem (as opposed to I/O): the caller may still
    /// convert it with `qemu-img`, which reads formats and layouts this crate does not.
    pub fn is_format_error(&self) -> bool {
        !matches!(self, Error::Read(_) | Error::Write(_))
    }
}

/// For consumers that want `io::Error` (for example `tokio_util::io::StreamReader`): format
/// errors become `InvalidData`, keeping this error as the source.
impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Read(e) | Error::Write(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
