//! On-disk structures: format detection, the VMDK sparse extent header, stream markers and the
//! text descriptor.
//!
//! Layouts follow VMware's "Virtual Disk Format 5.0" specification and what `qemu-img` (the
//! reference reader) accepts; all integers are little-endian.

use std::fmt;
use std::io::Cursor;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::Error;

/// Bytes in a sector: every VMDK offset and size is counted in these.
pub const SECTOR: u64 = 512;

/// `KDMV`: the magic number of a VMDK sparse extent header (`0x564d444b` little-endian).
pub const VMDK_MAGIC: &[u8; 4] = b"KDMV";
/// `QFI\xfb`: the qcow2 magic.
pub const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// The VHDX file type identifier.
pub const VHDX_MAGIC: &[u8; 8] = b"vhdxfile";

/// Header flag: the four newline check bytes are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Header flag: grain table entry 1 means "zeroed grain".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Header flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Header flag: grains and metadata are preceded by markers (stream format).
pub const FLAG_MARKERS: u32 = 1 << 17;

/// `gdOffset` value meaning "the grain directory is found through the footer".
pub const GD_AT_END: u64 = u64::MAX;

/// The only `compressAlgorithm` VMDK defines: zlib-wrapped deflate (RFC 1950).
pub const COMPRESSION_DEFLATE: u16 = 1;

/// Largest grain this crate accepts: 16 MiB. VMware and qemu write 64 KiB grains (128
/// sectors); a bigger grain would make the per-grain buffers, which bound memory, too large.
pub const MAX_GRAIN_SECTORS: u64 = 32 * 1024;

/// What the first bytes of a disk say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// A VMDK sparse extent with compressed grains and markers: what an NFC export lease serves.
    StreamOptimizedVmdk,
    /// A VMDK sparse extent without markers (monolithicSparse and the like): grains may be
    /// anywhere in the file, so it cannot be read in one pass.
    SparseVmdk,
    /// A VMDK text descriptor (monolithicFlat, split or ESXi VMFS disks): the data is in the
    /// extent files it names; a flat extent is raw and passes through.
    VmdkDescriptor,
    /// qcow2.
    Qcow2,
    /// VHDX.
    Vhdx,
    /// None of the above: raw, or a format only `qemu-img` knows.
    Unknown,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFormat::StreamOptimizedVmdk => "streamOptimized VMDK",
            SourceFormat::SparseVmdk => "sparse (non-stream) VMDK",
            SourceFormat::VmdkDescriptor => "VMDK descriptor",
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Vhdx => "VHDX",
            SourceFormat::Unknown => "unrecognised (raw?)",
        })
    }
}

/// How many leading bytes [`detect`] wants to see (fewer is fine at the end of a short input).
pub const DETECT_LEN: usize = 512;

/// Tell the format from the first bytes of a disk. Pure: no I/O.
pub fn detect(prefix: &[u8]) -> SourceFormat {
    if prefix.starts_with(VMDK_MAGIC) {
        let flags = prefix
            .get(8..12)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        return if flags & FLAG_MARKERS != 0 && flags & FLAG_COMPRESSED != 0 {
            SourceFormat::StreamOptimizedVmdk
        } else {
            SourceFormat::SparseVmdk
        };
    }
    if prefix.starts_with(QCOW2_MAGIC) {
        return SourceFormat::Qcow2;
    }
    if prefix.starts_with(VHDX_MAGIC) {
        return SourceFormat::Vhdx;
    }
    if looks_like_descriptor(prefix) {
        return SourceFormat::VmdkDescriptor;
    }
    SourceFormat::Unknown
}

/// A descriptor is short ASCII text with a `createType` line. VMware starts it with
/// `# Disk DescriptorFile`, but the comment is optional.
fn looks_like_descriptor(prefix: &[u8]) -> bool {
    let text = match prefix.iter().position(|&b| b == 0) {
        Some(end) => &prefix[..end],
        None => prefix,
    };
    if text.is_empty() || !text.iter().all(|b| b.is_ascii() && *b != 0x7f) {
        return false;
    }
    let text = String::from_utf8_lossy(text);
    text.trim_start().starts_with("# Disk DescriptorFile")
        || text
            .lines()
            .any(|l| l.trim_start().starts_with("createType"))
}

/// The reader [`sniff`] hands back: the bytes it looked at, then the rest of the source.
pub type Sniffed<R> = tokio::io::Chain<Cursor<Vec<u8>>, R>;

/// Read the first [`DETECT_LEN`] bytes of `reader`, [`detect`] the format, and return a reader
/// that still yields every byte: the caller can hand it to the decoder, or spool it for
/// `qemu-img` when the format is not one this crate streams, without a second download.
pub async fn sniff<R: AsyncRead + Unpin>(
    mut reader: R,
) -> Result<(SourceFormat, Sniffed<R>), Error> {
    let mut prefix = vec![0u8; DETECT_LEN];
    let mut filled = 0;
    while filled < prefix.len() {
        let n = reader
            .read(&mut prefix[filled..])
            .await
            .map_err(Error::Read)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    prefix.truncate(filled);
    let format = detect(&prefix);
    Ok((format, Cursor::new(prefix).chain(reader)))
}

/// The fields of a VMDK `SparseExtentHeader` this crate uses (sector 0 of a sparse extent, and
/// the footer of a stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version: 1, 2 or 3 (3 for streamOptimized).
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Virtual disk size in sectors.
    pub capacity: u64,
    /// Grain (allocation unit) size in sectors.
    pub grain_sectors: u64,
    /// Sector of the embedded descriptor.
    pub descriptor_offset: u64,
    /// Sectors of the embedded descriptor.
    pub descriptor_sectors: u64,
    /// Entries in one grain table.
    pub gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// 1 for deflate.
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parse and validate a 512-byte header. Rejects what the stream decoder cannot read with
    /// [`Error::Unsupported`] or [`Error::BadHeader`], never by panicking.
    pub fn parse(b: &[u8; SECTOR as usize]) -> Result<Self, Error> {
        if &b[0..4] != VMDK_MAGIC {
            return Err(Error::BadHeader("no KDMV magic".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let h = SparseHeader {
            version: u32_at(4),
            flags: u32_at(8),
            capacity: u64_at(12),
            grain_sectors: u64_at(20),
            descriptor_offset: u64_at(28),
            descriptor_sectors: u64_at(36),
            gtes_per_gt: u32_at(44),
            rgd_offset: u64_at(48),
            gd_offset: u64_at(56),
            overhead: u64_at(64),
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        if !(1..=3).contains(&h.version) {
            return Err(Error::Unsupported(format!(
                "sparse extent version {}",
                h.version
            )));
        }
        // qemu refuses these too: a text-mode transfer turned "\n" into "\r\n" somewhere.
        if h.flags & FLAG_NL_DETECT != 0 && b[73..77] != [b'\n', b' ', b'\r', b'\n'] {
            return Err(Error::BadHeader(
                "newline check bytes are damaged (was the file transferred in text mode?)".into(),
            ));
        }
        if h.grain_sectors == 0 || !h.grain_sectors.is_power_of_two() {
            return Err(Error::BadHeader(format!(
                "grain size of {} sectors is not a power of two",
                h.grain_sectors
            )));
        }
        if h.grain_sectors > MAX_GRAIN_SECTORS {
            return Err(Error::Unsupported(format!(
                "grain size of {} sectors (at most {MAX_GRAIN_SECTORS})",
                h.grain_sectors
            )));
        }
        if h.capacity > u64::MAX / SECTOR {
            return Err(Error::BadHeader(format!(
                "capacity of {} sectors",
                h.capacity
            )));
        }
        Ok(h)
    }

    /// True for a stream (compressed grains with markers).
    pub fn is_stream(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0 && self.flags & FLAG_MARKERS != 0
    }

    /// Virtual disk size in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * SECTOR
    }
}

/// Marker types of a stream's metadata markers (a marker whose `size` field is 0).
pub mod marker {
    /// End of stream.
    pub const EOS: u32 = 0;
    /// A grain table follows.
    pub const GRAIN_TABLE: u32 = 1;
    /// A grain directory follows.
    pub const GRAIN_DIRECTORY: u32 = 2;
    /// The footer (a copy of the header with the real gdOffset) follows.
    pub const FOOTER: u32 = 3;
    /// Bytes of the marker fields every marker starts with: `u64` LBA or sector count, `u32`
    /// size. A grain's compressed data follows them directly.
    pub const PREFIX: u64 = 12;
}

/// One extent line of a text descriptor, e.g. `RW 2097152 FLAT "disk-flat.vmdk" 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in sectors.
    pub sectors: u64,
    /// `FLAT`, `SPARSE`, `ZERO`, `VMFS`, `VMFSSPARSE`, ...
    pub kind: String,
    /// The extent file name (relative to the descriptor), absent for `ZERO`.
    pub file: Option<String>,
    /// Offset of the data inside the file, in sectors (flat extents).
    pub offset: u64,
}

impl Extent {
    /// A flat extent is raw bytes: it passes through unchanged.
    pub fn is_flat(&self) -> bool {
        matches!(self.kind.as_str(), "FLAT" | "VMFS")
    }
}

/// A parsed VMDK text descriptor: enough to find and pass through flat extents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`, e.g. `monolithicFlat`, `vmfs`, `streamOptimized`.
    pub create_type: String,
    /// The extents in disk order.
    pub extents: Vec<Extent>,
}

impl Descriptor {
    /// Parse descriptor text. Lines other than `createType` and extents are ignored.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut create_type = None;
        let mut extents = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "createType" {
                    create_type = Some(value.trim().trim_matches('"').to_string());
                }
                continue;
            }
            let mut words = line.splitn(3, char::is_whitespace);
            let access = words.next().unwrap_or_default();
            if !matches!(access, "RW" | "RDONLY" | "NOACCESS") {
                continue;
            }
            let bad = || Error::BadDescriptor(format!("extent line {line:?}"));
            let sectors = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
            let rest = words.next().ok_or_else(bad)?.trim_start();
            let (kind, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let rest = rest.trim();
            let (file, offset) = if let Some(quoted) = rest.strip_prefix('"') {
                let (name, after) = quoted.split_once('"').ok_or_else(bad)?;
                let offset = match after.trim() {
                    "" => 0,
                    o => o.parse().map_err(|_| bad())?,
                };
                (Some(name.to_string()), offset)
            } else if rest.is_empty() {
                (None, 0)
            } else {
                return Err(bad());
            };
            extents.push(Extent {
                access: access.to_string(),
                sectors,
                kind: kind.to_string(),
                file,
                offset,
            });
        }
        let create_type =
            create_type.ok_or_else(|| Error::BadDescriptor("no createType".into()))?;
        if extents.is_empty() {
            return Err(Error::BadDescriptor("no extent lines".into()));
        }
        Ok(Descriptor {
            create_type,
            extents,
        })
    }

    /// Virtual disk size in bytes: the sum of the extents.
    pub fn capacity_bytes(&self) -> u64 {
        self.extents
            .iter()
            .map(|e| e.sectors.saturating_mul(SECTOR))
            .fold(0, u64::saturating_add)
    }

    /// The extent of a single-file flat disk (monolithicFlat, ESXi `vmfs`), which passes
    /// through as raw; `None` for anything that needs `qemu-img`.
    pub fn single_flat_extent(&self) -> Option<&Extent> {
        match self.extents.as_slice() {
            [e] if e.is_flat() && e.file.is_some() => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..4].copy_from_slice(VMDK_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS).to_le_bytes());
        h[12..20].copy_from_slice(&2049u64.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
        h[64..72].copy_from_slice(&128u64.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes());
        h
    }

    #[test]
    fn parses_a_vmware_stream_header() {
        let h = SparseHeader::parse(&header()).expect("valid");
        assert!(h.is_stream());
        assert_eq!(
            (h.capacity, h.grain_sectors, h.gd_offset, h.overhead),
            (2049, 128, GD_AT_END, 128)
        );
        assert_eq!((h.capacity_bytes(), h.grain_bytes()), (2049 * 512, 65536));
    }

    #[test]
    fn detects_formats_from_their_first_bytes() {
        let mut sparse = header();
        sparse[8..12].copy_from_slice(&(FLAG_NL_DETECT).to_le_bytes());
        let cases: &[(&[u8], SourceFormat)] = &[
            (&header(), SourceFormat::StreamOptimizedVmdk),
            (&sparse, SourceFormat::SparseVmdk),
            (b"KDMV", SourceFormat::SparseVmdk),
            (b"QFI\xfb\0\0\0\x03", SourceFormat::Qcow2),
            (b"vhdxfile", SourceFormat::Vhdx),
            (
                b"# Disk DescriptorFile\nversion=1\n",
                SourceFormat::VmdkDescriptor,
            ),
            (
                b"version=1\ncreateType=\"vmfs\"\n",
                SourceFormat::VmdkDescriptor,
            ),
            (b"\xeb\x63\x90 boot sector", SourceFormat::Unknown),
            (b"", SourceFormat::Unknown),
            (b"just some text\n", SourceFormat::Unknown),
        ];
        for (prefix, expected) in cases {
            assert_eq!(
                detect(prefix),
                *expected,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn parses_descriptors() {
        let esxi = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n\
                    parentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\n\
                    RW 41943040 VMFS \"web 01-flat.vmdk\"\n\n# The Disk Data Base\n#DDB\n\
                    ddb.adapterType = \"lsilogic\"\n";
        let d = Descriptor::parse(esxi).expect("parses");
        assert_eq!(d.create_type, "vmfs");
        assert_eq!(d.capacity_bytes(), 41943040 * 512);
        let e = d.single_flat_extent().expect("flat");
        assert_eq!(
            (e.file.as_deref(), e.offset, e.access.as_str()),
            (Some("web 01-flat.vmdk"), 0, "RW")
        );

        let split = "createType=\"twoGbMaxExtentFlat\"\nRW 4192256 FLAT \"d-f001.vmdk\" 0\n\
                     RW 4192256 FLAT \"d-f002.vmdk\" 0\nRW 100 ZERO\n";
        let d = Descriptor::parse(split).expect("parses");
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[2].file, None);
        assert!(
            d.single_flat_extent().is_none(),
            "several extents need qemu-img"
        );

        let sparse = "createType=\"monolithicSparse\"\nRW 2048 SPARSE \"d.vmdk\"\n";
        assert!(
            Descriptor::parse(sparse)
                .expect("parses")
                .single_flat_extent()
                .is_none()
        );

        for bad in [
            "RW 10 FLAT \"x.vmdk\" 0\n",                              // no createType
            "createType=\"monolithicFlat\"\n",                        // no extent
            "createType=\"monolithicFlat\"\nRW ten FLAT \"x\" 0\n",   // bad size
            "createType=\"monolithicFlat\"\nRW 10 FLAT \"x 0\n",      // unclosed quote
            "createType=\"monolithicFlat\"\nRW 10 FLAT \"x\" zero\n", // bad offset
        ] {
            assert!(
                matches!(Descriptor::parse(bad), Err(Error::BadDescriptor(_))),
                "{bad:?}"
            );
        }
    }
}
