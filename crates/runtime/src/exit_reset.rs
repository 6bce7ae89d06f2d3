//! Connections that the process's exit cuts end with a reset, not with a FIN
//! that may never arrive. A pod's network is torn down right after its
//! process exits, and a socket closed with bytes still queued sends its FIN
//! only after them: once the interface is gone the peer gets neither and waits
//! for its own idle timeout (Longhorn's downloader: 30 s; a client without
//! one: forever) before it retries. With `SO_LINGER` 0 the close drops the
//! queue and sends one RST at once. Only at exit: a connection closed in
//! normal operation keeps its FIN, so a response's last bytes still arrive,
//! and a process that drains its connections before it exits waits with
//! [`ResetOnExit::settled`] until each peer has read up to that FIN (else
//! the bytes still queued would go down with the pod's network too).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long a closed connection waits for its peer to close too.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Hands out listeners whose connections reset once [`exiting`](Self::exiting)
/// was called, when they are dropped (at the latest, with the runtime).
#[derive(Clone, Debug, Default)]
pub struct ResetOnExit {
    exiting: Arc<AtomicBool>,
    closing: Arc<Closing>,
}

/// Connections not yet closed at both ends: accepted and open, or closed
/// by us in normal operation and waiting for the peer to close too.
#[derive(Debug, Default)]
struct Closing {
    count: AtomicUsize,
    none_left: Notify,
}

impl Closing {
    fn release(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.none_left.notify_waiters();
        }
    }
}

impl ResetOnExit {
    pub fn listener(&self, inner: TcpListener) -> ResettingListener {
        ResettingListener {
            inner,
            shared: self.clone(),
        }
    }

    /// The process is about to exit: every connection still open resets
    /// when it is dropped.
    pub fn exiting(&self) {
        self.exiting.store(true, Ordering::SeqCst);
    }

    /// Waits, at most `limit`, until every connection is closed at both
    /// ends: each peer read everything sent, up to our FIN. For after the
    /// server stopped gracefully (its connections still close as it
    /// returns).
    pub async fn settled(&self, limit: Duration) {
        let all_closed = async {
            loop {
                let none_left = self.closing.none_left.notified();
                tokio::pin!(none_left);
                none_left.as_mut().enable();
                if self.closing.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                none_left.await;
            }
        };
        let _ = tokio::time::timeout(limit, all_closed).await;
    }
}

/// Sends our FIN after what is queued, then waits for the peer's.
async fn close_gracefully(mut stream: TcpStream, closing: Arc<Closing>) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let peer_closed = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(CLOSE_WAIT, peer_closed).await;
    closing.release();
}

/// A [`TcpListener`] for `axum::serve` (and [`crate::tls::serve_tls`]).
#[derive(Debug)]
pub struct ResettingListener {
    inner: TcpListener,
    shared: ResetOnExit,
}

impl axum::serve::Listener for ResettingListener {
    type Io = ResettingStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, remote) = axum::serve::Listener::accept(&mut self.inner).await;
        self.shared.closing.count.fetch_add(1, Ordering::SeqCst);
        let stream = ResettingStream {
            stream: Some(stream),
            shared: self.shared.clone(),
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
    /// Taken only when dropped.
    stream: Option<TcpStream>,
    shared: ResetOnExit,
}

impl ResettingStream {
    fn stream(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("a live connection has its stream")
    }
}

impl Drop for ResettingStream {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let closing = self.shared.closing.clone();
        if self.shared.exiting.load(Ordering::SeqCst) {
            // A zero linger never blocks the close (only a longer one does).
            let _ = stream.set_zero_linger();
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_gracefully(stream, closing));
            return;
        }
        closing.release();
    }
}

impl AsyncRead for ResettingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
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

    /// A server that stopped serving gracefully waits in `settled` until
    /// its client has read the whole response and closed, not only until
    /// the response was handed to the kernel.
    #[test]
    fn settled_waits_until_the_client_read_everything() {
        const BODY: usize = 8 << 20;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reset = ResetOnExit::default();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let finite = Router::new().route("/", get(|| async { vec![7u8; BODY] }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(
            axum::serve(reset.listener(listener), finite)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        let read_all = Arc::new(AtomicBool::new(false));
        let client = std::thread::spawn({
            let read_all = read_all.clone();
            move || {
                let mut client = std::net::TcpStream::connect(addr).unwrap();
                client
                    .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                    .unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0; 64 << 10];
                loop {
                    // Slower than the server writes: bytes stay queued.
                    std::thread::sleep(Duration::from_millis(2));
                    match client.read(&mut buf).unwrap() {
                        0 => break,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(got.len() > BODY, "{} bytes", got.len());
                read_all.store(true, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        stop.send(()).unwrap();
        runtime.block_on(async {
            served.await.unwrap().unwrap();
            reset.settled(Duration::from_secs(30)).await;
        });
        assert!(
            read_all.load(Ordering::SeqCst),
            "settled before the client read it all"
        );
        client.join().unwrap();
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
