//! Shared by the test binaries: qemu-img as the reference, disk patterns, a hand-built
//! VMware-layout stream, and decoding helpers.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use flate2::Compression;
use flate2::write::ZlibEncoder;
use futures::TryStreamExt;
use vmm_diskstream::{Error, Progress, Segment, SegmentReader};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// Run qemu-img (installed by hack/install-deps.sh as qemu-utils); panics with its stderr.
pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img not found: install qemu-utils (hack/install-deps.sh)");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img convert -f FMT -O raw`, read back: the reference bytes.
pub fn qemu_raw(input: &Path, format: &str) -> Vec<u8> {
    let out = input.with_extension("reference.raw");
    qemu_img(&[
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        path(input),
        path(&out),
    ]);
    std::fs::read(&out).expect("read qemu-img output")
}

/// Write `raw` and convert it with qemu-img to `-O vmdk -o subformat=SUBFORMAT`.
pub fn qemu_vmdk(dir: &Path, name: &str, raw: &[u8], subformat: &str) -> PathBuf {
    let raw_path = dir.join(format!("{name}.raw"));
    std::fs::write(&raw_path, raw).expect("write raw");
    let vmdk = dir.join(format!("{name}.vmdk"));
    let opt = format!("subformat={subformat}");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        &opt,
        path(&raw_path),
        path(&vmdk),
    ]);
    vmdk
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

pub fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible bytes that look like text, which inflate slower than random (stored) blocks.
pub fn texty(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "disk ",
        "grain ",
        "vsphere ",
        "harvester ",
        "the ",
        "of ",
        "0x7f3a ",
        "\n",
    ];
    let picks = random(len, seed);
    let mut out = Vec::with_capacity(len + 16);
    for p in picks {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(WORDS[p as usize % WORDS.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// Decode a streamOptimized VMDK through the raw byte stream.
pub async fn decode(input: Vec<u8>) -> Result<(Vec<u8>, Progress), Error> {
    let progress = Progress::new();
    let reader = SegmentReader::vmdk(Cursor::new(input), progress.clone()).await?;
    let capacity = reader.capacity();
    let raw: Vec<u8> = reader
        .into_raw_stream()
        .try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await?;
    assert_eq!(
        raw.len() as u64,
        capacity,
        "raw stream length is the capacity"
    );
    Ok((raw, progress))
}

/// Walk the segments and check their invariants: back to back from 0 to the capacity, no empty
/// segment, data no larger than `max_data`.
pub async fn check_segments(input: Vec<u8>, max_data: u64) -> Vec<Segment> {
    let mut reader = SegmentReader::vmdk(Cursor::new(input), Progress::new())
        .await
        .expect("header");
    let mut next = 0;
    let mut all = Vec::new();
    while let Some(s) = reader.next_segment().await.expect("decodes") {
        assert_eq!(s.offset(), next, "segments are back to back");
        assert!(!s.is_empty(), "no empty segment");
        if let Segment::Data { bytes, .. } = &s {
            assert!(
                bytes.len() as u64 <= max_data,
                "data segment of {} bytes",
                bytes.len()
            );
        }
        next += s.len();
        all.push(s);
    }
    assert_eq!(next, reader.capacity(), "segments end at the capacity");
    all
}

/// Writes streamOptimized VMDKs the way VMware (and so an NFC export lease) lays them out:
/// header with gdOffset = GD_AT_END, descriptor, grains with markers, each grain table after its
/// grains, the grain directory, footer and end-of-stream marker. Also lets tests write what
/// VMware never would (out-of-order grains, odd markers) to check the errors.
pub struct StreamBuilder {
    pub out: Vec<u8>,
    grain_sectors: u64,
    /// (grain table index, entries) of the table being filled.
    table: Option<(u64, Vec<u32>)>,
    /// Grain directory: sector of each grain table's data, 0 for none.
    directory: Vec<u32>,
    header: [u8; 512],
    /// Compression level of grains; `none()` (stored deflate blocks) keeps big tests fast.
    pub level: Compression,
}

pub const GTES: u64 = 512;

impl StreamBuilder {
    pub fn new(capacity_sectors: u64, grain_sectors: u64) -> Self {
        let mut h = [0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
        h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&grain_sectors.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES as u32).to_le_bytes());
        h[48..56].copy_from_slice(&0u64.to_le_bytes());
        h[56..64].copy_from_slice(&u64::MAX.to_le_bytes()); // GD_AT_END
        h[64..72].copy_from_slice(&128u64.to_le_bytes()); // overHead
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        let mut out = h.to_vec();
        let desc = format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"streamOptimized\"\n\n# Extent description\n\
             RW {capacity_sectors} SPARSE \"built.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
             ddb.adapterType = \"lsilogic\"\nddb.virtualHWVersion = \"4\"\n"
        );
        out.extend_from_slice(desc.as_bytes());
        out.resize(128 * 512, 0);
        let gd_entries = capacity_sectors.div_ceil(grain_sectors).div_ceil(GTES);
        Self {
            out,
            grain_sectors,
            table: None,
            directory: vec![0; gd_entries as usize],
            header: h,
            level: Compression::fast(),
        }
    }

    /// Change header bytes (before anything is read from it).
    pub fn patch_header(&mut self, at: usize, bytes: &[u8]) {
        self.out[at..at + bytes.len()].copy_from_slice(bytes);
        self.header[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A whole builder from a raw image: all-zero grains left out, the last grain padded to
    /// the full grain size as VMware does.
    pub fn from_raw(raw: &[u8], grain_sectors: u64, level: Compression) -> Vec<u8> {
        let sectors = (raw.len() as u64).div_ceil(512);
        let mut b = Self::new(sectors, grain_sectors);
        b.level = level;
        let grain = (grain_sectors * 512) as usize;
        for (i, chunk) in raw.chunks(grain).enumerate() {
            if chunk.iter().any(|&x| x != 0) {
                let mut data = chunk.to_vec();
                data.resize(grain, 0);
                b.grain(i as u64 * grain_sectors, &data);
            }
        }
        b.finish()
    }

    fn sector(&self) -> u64 {
        assert_eq!(self.out.len() % 512, 0);
        self.out.len() as u64 / 512
    }

    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(512);
        self.out.resize(len, 0);
    }

    /// A grain of uncompressed `data` at `lba`, recorded in its grain table.
    pub fn grain(&mut self, lba: u64, data: &[u8]) {
        let mut z = ZlibEncoder::new(Vec::new(), self.level);
        z.write_all(data).expect("compress");
        self.compressed_grain(lba, &z.finish().expect("compress"));
    }

    /// A grain marker with these compressed bytes, as given.
    pub fn compressed_grain(&mut self, lba: u64, compressed: &[u8]) {
        let grain_index = lba / self.grain_sectors;
        let table_index = grain_index / GTES;
        if self.table.as_ref().is_some_and(|(t, _)| *t != table_index) {
            self.flush_table();
        }
        let sector = self.sector() as u32;
        let (_, entries) = self
            .table
            .get_or_insert_with(|| (table_index, vec![0; GTES as usize]));
        if let Some(e) = entries.get_mut((grain_index % GTES) as usize) {
            *e = sector;
        }
        self.out.extend_from_slice(&lba.to_le_bytes());
        self.out
            .extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        self.out.extend_from_slice(compressed);
        self.pad();
    }

    /// A metadata marker of `kind` followed by `payload` (padded to sectors).
    pub fn metadata(&mut self, kind: u32, payload: &[u8]) -> u64 {
        let sectors = (payload.len() as u64).div_ceil(512);
        let mut m = [0u8; 512];
        m[0..8].copy_from_slice(&sectors.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        self.out.extend_from_slice(&m);
        let at = self.sector();
        self.out.extend_from_slice(payload);
        self.pad();
        at
    }

    fn flush_table(&mut self) {
        if let Some((index, entries)) = self.table.take() {
            let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            let at = self.metadata(1, &bytes);
            if let Some(d) = self.directory.get_mut(index as usize) {
                *d = at as u32;
            }
        }
    }

    /// Grain table, grain directory, footer, end-of-stream marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.flush_table();
        let gd: Vec<u8> = self
            .directory
            .iter()
            .flat_map(|e| e.to_le_bytes())
            .collect();
        let gd_at = self.metadata(2, &gd);
        let mut footer = self.header;
        footer[56..64].copy_from_slice(&gd_at.to_le_bytes());
        self.metadata(3, &footer);
        self.out.extend_from_slice(&[0u8; 512]); // EOS
        self.out
    }
}
