//! Counting the grains a stream should contain, from grain tables placed before the first grain.
//!
//! VMware streams end with an end-of-stream marker, so a cut-short download is obvious. qemu-img
//! writes its streamOptimized files differently: grain directory and tables at the front (inside
//! the header's `overHead`), grains after them, and no end-of-stream marker at all. A file cut at
//! a grain boundary would then look complete and silently decode as zeros. While the decoder
//! passes over the front tables anyway, this counts their allocated entries, so the end of input
//! can be checked against it. Memory: the grain directory only (4 bytes per grain table, 128 KiB
//! for a 1 TiB disk); the tables themselves are counted as they stream by.

use crate::format::{FLAG_ZERO_GRAIN, GD_AT_END, SECTOR, SparseHeader};

/// Largest grain directory we keep to count grains (16 MiB, a ~128 TiB disk at 64 KiB grains);
/// larger ones are passed over uncounted.
const MAX_GD_BYTES: u64 = 16 << 20;

/// A grain table's byte range in the file, and how many of its entries lie inside the disk.
#[derive(Clone, Copy, Debug)]
struct Table {
    start: u64,
    len: u64,
    valid_entries: u64,
}

/// Fed with the bytes of `[512, overHead × 512)` in order; tells how many grains the front grain
/// tables list, when they can be read that way.
#[derive(Debug)]
pub(crate) struct GrainCounter {
    gd_start: u64,
    gd: Vec<u8>,
    gd_len: u64,
    overhead_end: u64,
    gtes_per_gt: u64,
    grains: u64,
    zero_grain_flag: bool,
    /// Sorted, disjoint; `None` until the directory has been read.
    tables: Option<Vec<Table>>,
    next_table: usize,
    count: u64,
}

impl GrainCounter {
    /// `None` when the header puts the grain directory at the end, or outside the front area,
    /// or it is too large to keep: then there is nothing to count.
    pub(crate) fn new(h: &SparseHeader) -> Option<Self> {
        let overhead_end = h.overhead.checked_mul(SECTOR)?;
        if h.gd_offset == GD_AT_END || h.gd_offset == 0 || h.gtes_per_gt == 0 {
            return None;
        }
        let gtes = u64::from(h.gtes_per_gt);
        let grains = h.capacity.div_ceil(h.grain_sectors);
        let gd_len = grains.div_ceil(gtes).checked_mul(4)?;
        let gd_start = h.gd_offset.checked_mul(SECTOR)?;
        if gd_start < SECTOR
            || gd_start.checked_add(gd_len)? > overhead_end
            || gd_len > MAX_GD_BYTES
        {
            return None;
        }
        Some(Self {
            gd_start,
            gd: Vec::with_capacity(gd_len as usize),
            gd_len,
            overhead_end,
            gtes_per_gt: gtes,
            grains,
            zero_grain_flag: h.flags & FLAG_ZERO_GRAIN != 0,
            tables: None,
            next_table: 0,
            count: 0,
        })
    }

    /// The next bytes of the front area, starting at file offset `pos` (a multiple of 512).
    /// Returns `false` once counting turned out impossible; the caller then stops feeding.
    pub(crate) fn feed(&mut self, pos: u64, chunk: &[u8]) -> bool {
        let end = pos + chunk.len() as u64;
        if self.tables.is_none() {
            let gd_end = self.gd_start + self.gd_len;
            let (from, to) = (pos.max(self.gd_start), end.min(gd_end));
            if from < to {
                self.gd
                    .extend_from_slice(&chunk[(from - pos) as usize..(to - pos) as usize]);
            }
            if self.gd.len() as u64 == self.gd_len {
                match self.tables_from_directory() {
                    Some(tables) => self.tables = Some(tables),
                    None => return false,
                }
            } else {
                return true;
            }
        }
        let Some(tables) = &self.tables else {
            return true;
        };
        while let Some(t) = tables.get(self.next_table) {
            if t.start >= end {
                break;
            }
            // Tables start after the directory (`tables_from_directory`), so none was passed
            // before the directory was complete: `from` is where counting resumes.
            let (from, to) = (pos.max(t.start), end.min(t.start + t.len));
            for (i, e) in chunk[(from - pos) as usize..(to - pos) as usize]
                .chunks_exact(4)
                .enumerate()
            {
                let index = (from - t.start) / 4 + i as u64;
                let gte = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                let zeroed = self.zero_grain_flag && gte == 1;
                if index < t.valid_entries && gte != 0 && !zeroed {
                    self.count += 1;
                }
            }
            if to < t.start + t.len {
                break;
            }
            self.next_table += 1;
        }
        true
    }

    /// Grain tables named by the directory, or `None` if they cannot all be counted in one pass
    /// over the front area (placed before the directory's end, past the front area, overlapping).
    fn tables_from_directory(&self) -> Option<Vec<Table>> {
        let gd_end = self.gd_start + self.gd_len;
        let table_len = self.gtes_per_gt * 4;
        let mut tables = Vec::new();
        for (i, e) in self.gd.chunks_exact(4).enumerate() {
            let sector = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
            if sector == 0 {
                continue;
            }
            let start = sector * SECTOR;
            if start < gd_end || start + table_len > self.overhead_end {
                return None;
            }
            let first = i as u64 * self.gtes_per_gt;
            let valid_entries = self.grains.saturating_sub(first).min(self.gtes_per_gt);
            tables.push(Table {
                start,
                len: table_len,
                valid_entries,
            });
        }
        tables.sort_by_key(|t| t.start);
        if tables
            .windows(2)
            .any(|w| w[0].start + w[0].len > w[1].start)
        {
            return None;
        }
        Some(tables)
    }

    /// Grains the tables list, if the whole directory and every table were seen.
    pub(crate) fn finish(self) -> Option<u64> {
        let tables = self.tables?;
        (self.next_table == tables.len()).then_some(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(gd_offset: u64, overhead: u64) -> SparseHeader {
        SparseHeader {
            version: 3,
            flags: 0x30003,
            capacity: 4096 * 128, // 4096 grains: 8 grain tables of 512
            grain_sectors: 128,
            descriptor_offset: 1,
            descriptor_sectors: 20,
            gtes_per_gt: 512,
            rgd_offset: 21,
            gd_offset,
            overhead,
            compress_algorithm: 1,
        }
    }

    /// Front area bytes `[512, overhead)`: a directory at sector 30 naming tables 1 and 5 at
    /// sectors 31 and 35, with 3 and 2 allocated entries.
    fn front(overhead: u64) -> Vec<u8> {
        let mut f = vec![0u8; (overhead * 512 - 512) as usize];
        let mut put = |sector: u64, index: usize, value: u32| {
            let at = (sector * 512 - 512) as usize + index * 4;
            f[at..at + 4].copy_from_slice(&value.to_le_bytes());
        };
        put(30, 1, 31);
        put(30, 5, 35);
        for i in [0, 7, 511] {
            put(31, i, 200 + i as u32);
        }
        put(35, 3, 900);
        put(35, 4, 901);
        f
    }

    #[test]
    fn counts_front_tables_whatever_the_chunking() {
        for chunk in [512, 1024, 4096, 64 * 1024] {
            let mut c = GrainCounter::new(&header(30, 64)).expect("countable");
            let f = front(64);
            for (i, piece) in f.chunks(chunk).enumerate() {
                assert!(c.feed(512 + (i * chunk) as u64, piece));
            }
            assert_eq!(c.finish(), Some(5), "chunks of {chunk}");
        }
    }

    #[test]
    fn gives_up_when_tables_cannot_be_counted_in_one_pass() {
        assert!(
            GrainCounter::new(&header(GD_AT_END, 64)).is_none(),
            "directory at the end"
        );
        assert!(
            GrainCounter::new(&header(70, 64)).is_none(),
            "directory past the front area"
        );
        // Tables past the front area.
        let mut c = GrainCounter::new(&header(30, 34)).expect("directory fits");
        let f = front(64);
        assert!(!c.feed(512, &f[..33 * 512]));
        // A stream cut inside the front area never finishes counting.
        let mut c = GrainCounter::new(&header(30, 64)).expect("countable");
        assert!(c.feed(512, &front(64)[..32 * 512]));
        assert_eq!(c.finish(), None);
    }
}
