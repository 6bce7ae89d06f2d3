//! Counters the controller reads to report bytes done and bytes per second.
//!
//! Atomics rather than a callback: the decoder runs inside an HTTP response body, the reporter
//! on a timer in another task, and neither should wait for the other.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

#[derive(Debug, Default)]
struct Counters {
    source_bytes: AtomicU64,
    raw_bytes: AtomicU64,
    grains_inflated: AtomicU64,
    inflated_bytes: AtomicU64,
}

/// Shared progress of one conversion; clone it before handing the reader over, and read it from
/// anywhere. All counters only grow.
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<Counters>);

impl Progress {
    /// Fresh counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read from the source so far (compressed VMDK bytes, or flat bytes).
    pub fn source_bytes(&self) -> u64 {
        self.0.source_bytes.load(Ordering::Relaxed)
    }

    /// Raw bytes handed to the consumer so far, zeros included: by the raw stream as it yields
    /// them, by the sparse writer as it writes or skips them. Ends equal to the capacity.
    pub fn raw_bytes(&self) -> u64 {
        self.0.raw_bytes.load(Ordering::Relaxed)
    }

    /// Grains inflated so far. Zero regions never count here: that is the point.
    pub fn grains_inflated(&self) -> u64 {
        self.0.grains_inflated.load(Ordering::Relaxed)
    }

    /// Bytes the inflater produced so far.
    pub fn inflated_bytes(&self) -> u64 {
        self.0.inflated_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn add_raw(&self, n: u64) {
        self.0.raw_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_grain(&self, inflated: u64) {
        self.0.grains_inflated.fetch_add(1, Ordering::Relaxed);
        self.0.inflated_bytes.fetch_add(inflated, Ordering::Relaxed);
    }
}

/// Counts every byte read from the source into [`Progress::source_bytes`].
#[derive(Debug)]
pub(crate) struct Counted<R> {
    inner: R,
    progress: Progress,
}

impl<R> Counted<R> {
    pub(crate) fn new(inner: R, progress: Progress) -> Self {
        Self { inner, progress }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.progress
            .0
            .source_bytes
            .fetch_add(read, Ordering::Relaxed);
        poll
    }
}
