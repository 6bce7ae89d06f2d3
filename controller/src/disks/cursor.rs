//! Ranged reads of a disk that can only be read in order. A cursor keeps
//! the raw stream open where the last read stopped, with the last
//! [`SPOOL_BYTES`] it yielded kept in memory, so each read continues the
//! stream, repeats a recent stretch from memory, or skips ahead; only a read
//! before the spool opens the source again. Memory stays bounded and nothing
//! is written to local disk.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use axum::body::Bytes;
use futures::StreamExt;

use super::RawStream;

/// Raw bytes kept behind the cursor. The real importers' reads all fall in
/// the first 513 bytes; this leaves room for a reader of a few parallel
/// ranges at a time while bounding memory per disk (docs/decisions.md §48).
pub const SPOOL_BYTES: u64 = 4 << 20;

/// A raw stream, where it stands, and what it yielded last.
pub struct Cursor {
    stream: RawStream,
    /// Offset of the next byte the stream yields.
    position: u64,
    /// The bytes just before `position`, oldest first.
    kept: VecDeque<Bytes>,
    kept_bytes: u64,
    capacity: u64,
}

impl Cursor {
    pub fn new(stream: RawStream, capacity: u64) -> Self {
        Self {
            stream,
            position: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            capacity,
        }
    }

    /// How far the stream has been read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether a read from `offset` can be served without reopening.
    pub fn reaches(&self, offset: u64) -> bool {
        offset >= self.position - self.kept_bytes
    }

    /// The bytes from `range.start` on, at most up to `range.end`: a
    /// non-empty piece, from memory or from the stream.
    pub async fn read(&mut self, range: Range<u64>) -> io::Result<Bytes> {
        debug_assert!(self.reaches(range.start) && range.start < range.end);
        loop {
            if range.start < self.position {
                return Ok(self.kept_piece(range));
            }
            let chunk = match self.stream.next().await {
                Some(chunk) => chunk?,
                None => {
                    return Err(io::Error::other(format!(
                        "the source ended after {} of {} bytes",
                        self.position, self.capacity
                    )));
                }
            };
            self.keep(chunk)?;
        }
    }

    fn keep(&mut self, chunk: Bytes) -> io::Result<()> {
        self.position += chunk.len() as u64;
        if self.position > self.capacity {
            return Err(io::Error::other(format!(
                "the source gave more than the {} bytes announced",
                self.capacity
            )));
        }
        self.kept_bytes += chunk.len() as u64;
        self.kept.push_back(chunk);
        while let Some(oldest) = self.kept.front()
            && self.kept_bytes - oldest.len() as u64 >= SPOOL_BYTES
        {
            self.kept_bytes -= oldest.len() as u64;
            self.kept.pop_front();
        }
        Ok(())
    }

    /// The kept bytes from `range.start` (which is kept) to the end of its
    /// chunk or `range.end`.
    fn kept_piece(&self, range: Range<u64>) -> Bytes {
        let mut chunk_start = self.position - self.kept_bytes;
        for chunk in &self.kept {
            let chunk_end = chunk_start + chunk.len() as u64;
            if range.start < chunk_end {
                let from = (range.start - chunk_start) as usize;
                let to = (range.end.min(chunk_end) - chunk_start) as usize;
                return chunk.slice(from..to);
            }
            chunk_start = chunk_end;
        }
        unreachable!("kept_piece is called for a kept offset")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(data: &[u8], chunk: usize) -> Cursor {
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Cursor::new(futures::stream::iter(chunks).boxed(), data.len() as u64)
    }

    async fn read_all(cursor: &mut Cursor, mut range: Range<u64>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while range.start < range.end {
            let piece = cursor.read(range.clone()).await?;
            range.start += piece.len() as u64;
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_continue_repeat_and_skip_without_reopening() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut c = cursor(&data, 700);
        for range in [0..128, 0..4096, 2000..6000, 5990..6000, 8000..10_000] {
            let got = read_all(&mut c, range.clone()).await.unwrap();
            assert_eq!(got, &data[range.start as usize..range.end as usize]);
        }
        assert_eq!(c.position(), 10_000);
    }

    #[tokio::test]
    async fn a_source_shorter_or_longer_than_announced_fails() {
        let mut short = cursor(b"abc", 2);
        short.capacity = 6;
        assert!(read_all(&mut short, 0..6).await.is_err());
        let mut long = cursor(b"abcdefgh", 4);
        long.capacity = 6;
        assert!(read_all(&mut long, 0..6).await.is_err());
    }
}
