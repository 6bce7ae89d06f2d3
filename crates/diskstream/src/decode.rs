//! The segment reader: a source in, `Data`/`Zero` segments out, in ascending offset order.
//!
//! A streamOptimized VMDK is a header, the front area (embedded descriptor, and with qemu-img the
//! grain directory and tables), then sector-aligned markers: grains (LBA, compressed size, zlib
//! data) in LBA order, interleaved with grain table, grain directory and footer metadata, and an
//! end-of-stream marker. Grain tables only repeat what the grain markers already say, so one
//! pass over the markers is enough: gaps between grains are zero regions, produced without
//! reading or inflating anything. Metadata is skipped by its size field.
//!
//! Memory stays at a few grains: the compressed bytes of the grain being read (reused), the
//! inflated grain handed to the consumer, and the read buffer.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Decompress;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, BufReader};

use crate::error::Error;
use crate::format::{SECTOR, SourceFormat, SparseHeader, VMDK_MAGIC, detect, marker};
use crate::inflate::{InflateError, inflate};
use crate::overhead::GrainCounter;
use crate::progress::{Counted, Progress};

/// Read buffer between the source and the decoder: markers are 12-byte reads, which must not
/// each reach an HTTP body or a file.
const READ_BUFFER: usize = 256 * 1024;

/// Bytes per `Data` segment of a flat (already raw) source.
pub const FLAT_CHUNK: usize = 1 << 20;

/// A piece of the virtual disk. Segments come in ascending offset order, back to back, and
/// together cover exactly `[0, capacity)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Bytes of the disk at `offset`.
    Data {
        /// Byte offset in the virtual disk.
        offset: u64,
        /// The bytes (an inflated grain, or a chunk of a flat extent).
        bytes: Bytes,
    },
    /// `len` zero bytes at `offset`: never stored in the source, never inflated.
    Zero {
        /// Byte offset in the virtual disk.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Segment {
    /// Byte offset in the virtual disk.
    pub fn offset(&self) -> u64 {
        match self {
            Segment::Data { offset, .. } | Segment::Zero { offset, .. } => *offset,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Data { bytes, .. } => bytes.len() as u64,
            Segment::Zero { len, .. } => *len,
        }
    }

    /// True for an empty segment (never produced by [`SegmentReader`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes one disk into [`Segment`]s. Build it with [`SegmentReader::vmdk`] or
/// [`SegmentReader::flat`], read [`capacity`](Self::capacity), then pull segments with
/// [`next_segment`](Self::next_segment), or turn it into a raw byte stream or sparse file
/// (see `raw.rs`).
pub struct SegmentReader<R> {
    input: BufReader<Counted<R>>,
    /// Source bytes consumed by the decoder (the read buffer may be ahead).
    pos: u64,
    capacity: u64,
    /// Disk offset where the next segment starts.
    next: u64,
    progress: Progress,
    kind: Kind,
    failed: bool,
}

enum Kind {
    Stream(Box<StreamState>),
    Flat,
}

struct StreamState {
    header: SparseHeader,
    phase: Phase,
    inflater: Decompress,
    compressed: Vec<u8>,
    last_lba: Option<u64>,
    /// A grain found after a gap: the gap's `Zero` goes out first.
    pending: Option<(u64, Bytes)>,
    grains_seen: u64,
    /// Grains the front grain tables list (qemu-img layout), once counted.
    grains_expected: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Overhead,
    Markers,
    End,
}

/// What one marker turned out to be.
enum Marker {
    Grain { offset: u64, bytes: Bytes },
    Metadata,
    EndOfStream,
    EndOfInput,
}

impl<R: AsyncRead + Unpin> SegmentReader<R> {
    /// Start decoding a streamOptimized VMDK: reads and checks the 512-byte header, so that
    /// [`capacity`](Self::capacity) is known before any data. Other formats are refused with
    /// [`Error::UnsupportedFormat`] (qcow2, descriptors, non-stream sparse VMDKs) or
    /// [`Error::BadHeader`]; use [`crate::sniff`] first to keep the bytes for a fallback.
    pub async fn vmdk(reader: R, progress: Progress) -> Result<Self, Error> {
        let mut input =
            BufReader::with_capacity(READ_BUFFER, Counted::new(reader, progress.clone()));
        let mut raw = [0u8; SECTOR as usize];
        let n = read_full(&mut input, &mut raw).await?;
        if n < VMDK_MAGIC.len() && VMDK_MAGIC.starts_with(&raw[..n]) {
            return Err(Error::Truncated {
                what: "sparse extent header",
                offset: 0,
            });
        }
        match detect(&raw[..n]) {
            SourceFormat::StreamOptimizedVmdk if n == raw.len() => {}
            SourceFormat::StreamOptimizedVmdk => {
                return Err(Error::Truncated {
                    what: "sparse extent header",
                    offset: 0,
                });
            }
            SourceFormat::Unknown => {
                return Err(Error::BadHeader(
                    "not a VMDK sparse extent (no KDMV magic)".into(),
                ));
            }
            format => return Err(Error::UnsupportedFormat { format }),
        }
        let header = SparseHeader::parse(&raw)?;
        if header.compress_algorithm != crate::format::COMPRESSION_DEFLATE {
            return Err(Error::Unsupported(format!(
                "compression algorithm {}",
                header.compress_algorithm
            )));
        }
        if header.overhead == 0 || header.overhead.checked_mul(SECTOR).is_none() {
            return Err(Error::BadHeader(format!(
                "overHead of {} sectors",
                header.overhead
            )));
        }
        let grain_bytes = header.grain_bytes() as usize;
        Ok(Self {
            input,
            pos: SECTOR,
            capacity: header.capacity_bytes(),
            next: 0,
            progress,
            kind: Kind::Stream(Box::new(StreamState {
                header,
                phase: Phase::Overhead,
                inflater: Decompress::new(true),
                compressed: Vec::with_capacity(grain_bytes),
                last_lba: None,
                pending: None,
                grains_seen: 0,
                grains_expected: None,
            })),
            failed: false,
        })
    }

    /// Pass through an already raw source (a flat extent such as `disk-flat.vmdk`) of
    /// `capacity` bytes. Bytes after `capacity` are not read; fewer is [`Error::Truncated`].
    pub fn flat(reader: R, capacity: u64, progress: Progress) -> Self {
        Self {
            input: BufReader::with_capacity(READ_BUFFER, Counted::new(reader, progress.clone())),
            pos: 0,
            capacity,
            next: 0,
            progress,
            kind: Kind::Flat,
            failed: false,
        }
    }

    /// Size of the virtual disk in bytes: the length of the raw image.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The sparse extent header, for a VMDK source.
    pub fn header(&self) -> Option<&SparseHeader> {
        match &self.kind {
            Kind::Stream(s) => Some(&s.header),
            Kind::Flat => None,
        }
    }

    /// The counters this reader updates.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The next segment, or `None` after the last one (which ends at the capacity). After an
    /// error the reader is done: every later call returns [`Error::AlreadyFailed`]. Not
    /// cancel-safe: dropping the future mid-read loses the reader's place.
    pub async fn next_segment(&mut self) -> Result<Option<Segment>, Error> {
        if self.failed {
            return Err(Error::AlreadyFailed);
        }
        let result = self.decode_next().await;
        self.failed = result.is_err();
        result
    }

    async fn decode_next(&mut self) -> Result<Option<Segment>, Error> {
        if matches!(self.kind, Kind::Flat) {
            return self.next_flat().await;
        }
        loop {
            let Kind::Stream(s) = &mut self.kind else {
                unreachable!("checked above")
            };
            if let Some((offset, bytes)) = s.pending.take() {
                return Ok(Some(self.emit(Segment::Data { offset, bytes })));
            }
            let phase = s.phase;
            match phase {
                Phase::Overhead => {
                    self.pass_overhead().await?;
                    self.stream().phase = Phase::Markers;
                }
                Phase::Markers => match self.read_marker().await? {
                    Marker::Grain { offset, bytes } => {
                        if offset > self.next {
                            let len = offset - self.next;
                            self.stream().pending = Some((offset, bytes));
                            return Ok(Some(self.emit(Segment::Zero {
                                offset: self.next,
                                len,
                            })));
                        }
                        return Ok(Some(self.emit(Segment::Data { offset, bytes })));
                    }
                    Marker::Metadata => {}
                    Marker::EndOfStream => {
                        self.check_grain_count("at its end-of-stream marker")?;
                        self.stream().phase = Phase::End;
                    }
                    Marker::EndOfInput => {
                        self.check_end_of_input()?;
                        self.stream().phase = Phase::End;
                    }
                },
                Phase::End if self.next < self.capacity => {
                    let len = self.capacity - self.next;
                    return Ok(Some(self.emit(Segment::Zero {
                        offset: self.next,
                        len,
                    })));
                }
                Phase::End => return Ok(None),
            }
        }
    }

    fn stream(&mut self) -> &mut StreamState {
        match &mut self.kind {
            Kind::Stream(s) => s,
            Kind::Flat => unreachable!("only called for streams"),
        }
    }

    fn emit(&mut self, segment: Segment) -> Segment {
        debug_assert_eq!(segment.offset(), self.next);
        self.next = segment.offset() + segment.len();
        segment
    }

    async fn next_flat(&mut self) -> Result<Option<Segment>, Error> {
        if self.next >= self.capacity {
            return Ok(None);
        }
        let want = (self.capacity - self.next).min(FLAT_CHUNK as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        while buf.len() < want {
            let room = want - buf.len();
            let n = self
                .input
                .read_buf(&mut (&mut buf).limit(room))
                .await
                .map_err(Error::Read)?;
            if n == 0 {
                return Err(Error::Truncated {
                    what: "flat extent",
                    offset: self.pos + buf.len() as u64,
                });
            }
        }
        self.pos += want as u64;
        Ok(Some(self.emit(Segment::Data {
            offset: self.next,
            bytes: buf.freeze(),
        })))
    }

    /// Skip from the end of the header to the first marker, counting front grain tables.
    async fn pass_overhead(&mut self) -> Result<(), Error> {
        let (end, mut counter) = {
            let s = self.stream();
            (s.header.overhead * SECTOR, GrainCounter::new(&s.header))
        };
        if counter.is_none() {
            return self
                .skip(end - self.pos, "front area (descriptor, grain tables)")
                .await;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        while self.pos < end {
            let want = (end - self.pos).min(chunk.len() as u64) as usize;
            let n = read_full(&mut self.input, &mut chunk[..want]).await?;
            if n < want {
                return Err(Error::Truncated {
                    what: "front area (descriptor, grain tables)",
                    offset: self.pos + n as u64,
                });
            }
            if let Some(c) = &mut counter
                && !c.feed(self.pos, &chunk[..n])
            {
                counter = None;
            }
            self.pos += n as u64;
        }
        self.stream().grains_expected = counter.and_then(GrainCounter::finish);
        Ok(())
    }

    async fn read_marker(&mut self) -> Result<Marker, Error> {
        let at = self.pos;
        let mut head = [0u8; marker::PREFIX as usize];
        let n = read_full(&mut self.input, &mut head).await?;
        self.pos += n as u64;
        if n == 0 {
            return Ok(Marker::EndOfInput);
        }
        if n < head.len() {
            return Err(Error::Truncated {
                what: "marker",
                offset: at,
            });
        }
        let value = u64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
        let size = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if size != 0 {
            return self.read_grain(at, value, u64::from(size)).await;
        }
        let mut rest = [0u8; (SECTOR - marker::PREFIX) as usize];
        if read_full(&mut self.input, &mut rest).await? < rest.len() {
            return Err(Error::Truncated {
                what: "metadata marker",
                offset: at,
            });
        }
        self.pos += rest.len() as u64;
        let kind = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        match kind {
            marker::EOS => Ok(Marker::EndOfStream),
            marker::GRAIN_TABLE | marker::GRAIN_DIRECTORY | marker::FOOTER => {
                let what = match kind {
                    marker::GRAIN_TABLE => "grain table",
                    marker::GRAIN_DIRECTORY => "grain directory",
                    _ => "footer",
                };
                let len = value
                    .checked_mul(SECTOR)
                    .ok_or(Error::Truncated { what, offset: at })?;
                self.skip(len, what).await?;
                Ok(Marker::Metadata)
            }
            kind => Err(Error::UnknownMarker { kind, offset: at }),
        }
    }

    async fn read_grain(&mut self, at: u64, lba: u64, size: u64) -> Result<Marker, Error> {
        let capacity = self.capacity;
        let s = self.stream();
        let grain_sectors = s.header.grain_sectors;
        let grain_bytes = s.header.grain_bytes();
        let bad = |detail: String| Error::BadGrain {
            lba,
            offset: at,
            detail,
        };
        if !lba.is_multiple_of(grain_sectors) {
            return Err(bad(format!(
                "not aligned to the grain size of {grain_sectors} sectors"
            )));
        }
        if lba >= capacity / SECTOR {
            return Err(bad(format!(
                "beyond the disk's {} sectors",
                capacity / SECTOR
            )));
        }
        if let Some(previous) = s.last_lba
            && lba <= previous
        {
            return Err(Error::OutOfOrder { lba, previous });
        }
        // zlib never needs much more than the input; qemu allows twice the grain as well.
        if size > 2 * grain_bytes {
            return Err(bad(format!(
                "claims {size} compressed bytes for a grain of {grain_bytes} bytes"
            )));
        }
        s.grains_seen += 1;
        if let Some(expected) = s.grains_expected
            && s.grains_seen > expected
        {
            return Err(bad(format!(
                "more grains than the {expected} the grain tables list"
            )));
        }
        s.last_lba = Some(lba);
        s.compressed.resize(size as usize, 0);
        let Kind::Stream(s) = &mut self.kind else {
            unreachable!("only called for streams")
        };
        let n = read_full(&mut self.input, &mut s.compressed).await?;
        if n < size as usize {
            return Err(Error::Truncated {
                what: "grain",
                offset: at,
            });
        }
        let padded = (marker::PREFIX + size).next_multiple_of(SECTOR);
        self.pos += size;
        self.skip(padded - marker::PREFIX - size, "grain padding")
            .await?;

        let offset = lba * SECTOR;
        let expected = (capacity - offset).min(grain_bytes);
        let s = self.stream();
        let mut bytes = match inflate(&mut s.inflater, &s.compressed, grain_bytes as usize) {
            Ok(bytes) => bytes,
            Err(InflateError::Corrupt(detail)) => {
                return Err(Error::Corrupt {
                    lba,
                    offset: at,
                    detail,
                });
            }
            Err(InflateError::TooLarge(actual)) => {
                return Err(Error::GrainSize {
                    lba,
                    actual,
                    expected,
                });
            }
        };
        self.progress.add_grain(bytes.len() as u64);
        // The last grain may be whole (VMware) or cut at the capacity (qemu); nothing else.
        let len = bytes.len() as u64;
        if len != expected && len != grain_bytes {
            return Err(Error::GrainSize {
                lba,
                actual: len,
                expected,
            });
        }
        bytes.truncate(expected as usize);
        Ok(Marker::Grain {
            offset,
            bytes: Bytes::from(bytes),
        })
    }

    /// The source ended without an end-of-stream marker: fine for qemu-img's layout when every
    /// grain its front tables list was seen; a cut-short download otherwise (and whenever the
    /// grains cannot be counted, since nothing else shows that the stream is complete).
    fn check_end_of_input(&mut self) -> Result<(), Error> {
        let offset = self.pos;
        let s = self.stream();
        if s.grains_expected.is_none() {
            return Err(Error::EndedEarly {
                offset,
                detail: format!(
                    "without an end-of-stream marker, after {} grains",
                    s.grains_seen
                ),
            });
        }
        self.check_grain_count("without an end-of-stream marker")
    }

    /// With front grain tables (qemu-img's layout), the stream must have held every grain they
    /// list; a zero-filled gap reads as an end-of-stream marker and is caught here too.
    fn check_grain_count(&mut self, how: &str) -> Result<(), Error> {
        let offset = self.pos;
        let s = self.stream();
        match s.grains_expected {
            Some(expected) if expected != s.grains_seen => Err(Error::EndedEarly {
                offset,
                detail: format!(
                    "{how} after {} of the {expected} grains its grain tables list",
                    s.grains_seen
                ),
            }),
            _ => Ok(()),
        }
    }

    async fn skip(&mut self, len: u64, what: &'static str) -> Result<(), Error> {
        let at = self.pos;
        let skipped = skip(&mut self.input, len).await?;
        self.pos += skipped;
        if skipped < len {
            return Err(Error::Truncated { what, offset: at });
        }
        Ok(())
    }
}

/// Fill `buf` unless the source ends first; returns the bytes read (less than `buf.len()` only
/// at the end of the source).
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).await.map_err(Error::Read)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Discard up to `len` bytes; returns how many there were.
async fn skip<R: AsyncBufRead + Unpin>(r: &mut R, len: u64) -> Result<u64, Error> {
    let mut limited = r.take(len);
    tokio::io::copy_buf(&mut limited, &mut tokio::io::sink())
        .await
        .map_err(Error::Read)
}
