//! Connections that the process's exit cuts end with a reset, not with a FIN
//! that may never arrive. A pod's network is torn down right after its
//! process exits, and a socket closed with bytes still queued sends its FIN
//! only after them: once the interface is gone the peer gets neither and waits
//! for its own idle timeout (Longhorn's downloader: 30 s; a client without
//! one: forever) before it retries. With `SO_LINGER` 0 the close drops the
//! queue and sends one RST at once. Only at exit: a connection closed in
//! normal operation keeps its FIN, so a response's last bytes still arrive.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Hands out listeners whose connections reset once [`exiting`](Self::exiting)
/// was called, when they are dropped (at the latest, with the runtime).
#[derive(Clone, Debug, Default)]
pub struct ResetOnExit(Arc<AtomicBool>);

impl ResetOnExit {
    pub fn listener(&self, inner: TcpListener) -> ResettingListener {
        ResettingListener {
            inner,
            exiting: self.0.clone(),
        }
    }

    /// The process is about to exit: every connection still open resets
    /// when it is dropped.
    pub fn exiting(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A [`TcpListener`] for `axum::serve` (and [`crate::tls::serve_tls`]).
#[derive(Debug)]
pub struct ResettingListener {
    inner: TcpListener,
    exiting: Arc<AtomicBool>,
}

impl axum::serve::Listener for ResettingListener {
    type Io = ResettingStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, remote) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = ResettingStream {
            stream,
            exiting: self.exiting.clone(),
        };
        (stream, remote)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One accepted connection.
#[derive(Debug)]
pub struct ResettingStream {
    stream: TcpStream,
    exiting: Arc<AtomicBool>,
}

impl Drop for ResettingStream {
    fn drop(&mut self) {
        if self.exiting.load(Ordering::SeqCst) {
            // A zero linger never blocks the close (only a longer one does).
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::routing::get;

    use super::*;

    /// A response that never ends, as a disk far larger than the socket
    /// buffers: the server always has bytes queued when it stops.
    fn endless() -> Router {
        Router::new().route(
            "/",
            get(|| async {
                let chunk = Bytes::from(vec![7u8; 64 << 10]);
                let chunks =
                    futures::stream::repeat_with(move || Ok::<_, io::Error>(chunk.clone()));
                Body::from_stream(chunks)
            }),
        )
    }

    /// How a client reading a response sees its server's runtime end
    /// (the process exiting), after `exiting` was called or not.
    fn end_seen_by_client(exiting: bool) -> io::Result<()> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reset = ResetOnExit::default();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(axum::serve(reset.listener(listener), endless()).into_future());

        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut buf = vec![0; 64 << 10];
        client.read_exact(&mut buf).unwrap();
        // The server's queue fills while the client does not read.
        std::thread::sleep(Duration::from_millis(200));
        if exiting {
            reset.exiting();
        }
        drop(runtime);
        loop {
            if client.read(&mut buf)? == 0 {
                return Ok(());
            }
        }
    }

    #[test]
    fn a_connection_open_at_exit_resets_and_only_then() {
        for (exiting, reset) in [(true, true), (false, false)] {
            let ended = end_seen_by_client(exiting);
            let was_reset = matches!(&ended, Err(e) if e.kind() == io::ErrorKind::ConnectionReset);
            assert_eq!(was_reset, reset, "exiting: {exiting}: {ended:?}");
            if !reset {
                // The FIN came after every queued byte.
                assert!(ended.is_ok(), "{ended:?}");
            }
        }
    }
}
