//! From segments to raw: the byte stream served to the image importer, and the sparse file for
//! the spool case.

use std::io::SeekFrom;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt};

use crate::decode::{Segment, SegmentReader};
use crate::error::Error;

/// Bytes per zero chunk of the raw stream. Zero regions are sliced from one static buffer of
/// this size, so a 1 TiB hole costs no allocation and no memory beyond it.
pub const ZERO_CHUNK: usize = 1 << 20;

static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

impl<R: AsyncRead + Unpin + Send + 'static> SegmentReader<R> {
    /// The whole raw disk as a byte stream: exactly [`capacity`](Self::capacity) bytes, zeros
    /// included, for one full HTTP GET (`axum::body::Body::from_stream`). Counts what it yields
    /// in [`Progress::raw_bytes`](crate::Progress::raw_bytes). An error ends the stream; the
    /// bytes already sent are correct, so the importer sees a short body and fails.
    pub fn into_raw_stream(self) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        futures::stream::try_unfold((self, 0u64), |(mut reader, mut zeros)| async move {
            if zeros == 0 {
                match reader.next_segment().await? {
                    None => return Ok(None),
                    Some(Segment::Data { bytes, .. }) => {
                        reader.progress().add_raw(bytes.len() as u64);
                        return Ok(Some((bytes, (reader, 0))));
                    }
                    Some(Segment::Zero { len, .. }) => zeros = len,
                }
            }
            let n = zeros.min(ZERO_CHUNK as u64);
            reader.progress().add_raw(n);
            Ok(Some((
                Bytes::from_static(&ZEROS[..n as usize]),
                (reader, zeros - n),
            )))
        })
    }
}

impl<R: AsyncRead + Unpin> SegmentReader<R> {
    /// Write the raw disk into `file` as a sparse file: its length is set to the capacity
    /// first, then only non-zero data is written (all-zero grains and chunks are seeked over
    /// too), so holes stay holes. The file's previous content is discarded. Returns the
    /// capacity. For the spool/fallback case and for Range reads that a stream cannot answer.
    pub async fn write_sparse(mut self, file: &mut tokio::fs::File) -> Result<u64, Error> {
        let capacity = self.capacity();
        file.set_len(0).await.map_err(Error::Write)?;
        file.set_len(capacity).await.map_err(Error::Write)?;
        let mut cursor = file.seek(SeekFrom::Start(0)).await.map_err(Error::Write)?;
        while let Some(segment) = self.next_segment().await? {
            if let Segment::Data { offset, bytes } = &segment
                && !is_zero(bytes)
            {
                if cursor != *offset {
                    cursor = file
                        .seek(SeekFrom::Start(*offset))
                        .await
                        .map_err(Error::Write)?;
                }
                file.write_all(bytes).await.map_err(Error::Write)?;
                cursor += bytes.len() as u64;
            }
            self.progress().add_raw(segment.len());
        }
        file.flush().await.map_err(Error::Write)?;
        Ok(capacity)
    }
}

/// True when every byte is zero. Word-wise over 4 KiB blocks so the compiler vectorises it and
/// a grain with data returns early.
fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut buf = vec![0u8; 65536];
        assert!(is_zero(&buf));
        assert!(is_zero(&[]));
        for at in [0, 4095, 4096, 65535] {
            buf[at] = 1;
            assert!(!is_zero(&buf), "byte {at}");
            buf[at] = 0;
        }
    }
}
