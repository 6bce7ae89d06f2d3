//! The disk endpoint: serves each disk being imported as a raw image at an
//! unguessable URL, the way Harvester's default image backend reads it
//! (docs/harvester.md §1): `HEAD` answers 200 with the
//! raw size without touching the source; `GET` answers 200 with the whole
//! image in one streamed response, converted from the source as it is read,
//! zeros included, so the importer's 30 s idle timeout never fires and no
//! local copy is made. A URL works only while its job registers it.
//!
//! Range requests are answered 206 from a [`cursor::Cursor`] kept per disk:
//! the converted stream read in order, with a small spool behind it, since a
//! streamOptimized export cannot seek. The real importers read ranges only at
//! the start of a disk (the `cdi` backend: Harvester's probe of bytes 0-127,
//! CDI's importer 0-512 before its whole GETs; docs/decisions.md §48), so a
//! whole GET drops the cursor and the source connection it holds open.

mod cursor;

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use cursor::Cursor;
use futures::{StreamExt, TryStreamExt};

/// The raw bytes of one disk, in order, from the start.
pub type RawStream = BoxStream<'static, io::Result<Bytes>>;

/// Where a disk's bytes come from: opened once per GET (an importer that
/// retries reads the disk again from the start).
pub trait DiskSource: Send + Sync + 'static {
    fn open(&self) -> BoxFuture<'static, io::Result<RawStream>>;
}

/// One registered disk and what has been served of it.
/// How a disk's raw bytes are made from the source's export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preparation {
    /// Converted to raw as Harvester downloads it: nothing stored locally.
    Streamed,
    /// A format that cannot stream in one pass, converted with qemu-img in
    /// the scratch directory first.
    Converted,
}

impl Preparation {
    pub const ALL: [Self; 2] = [Self::Streamed, Self::Converted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streamed => "streamed",
            Self::Converted => "converted",
        }
    }
}

pub struct ServedDisk {
    /// The raw size: the importer's Content-Length and the image's size.
    pub capacity: u64,
    pub source: Arc<dyn DiskSource>,
    pub preparation: Preparation,
    /// Raw bytes sent by the current (latest) GET.
    pub sent: AtomicU64,
    /// Times the source was opened (full GETs, and ranged reads that could
    /// not continue an open cursor).
    pub reads: AtomicU64,
    /// Where ranged reads stand; taken by the read in progress.
    cursor: Mutex<Option<Cursor>>,
}

impl ServedDisk {
    pub fn new(capacity: u64, source: Arc<dyn DiskSource>, preparation: Preparation) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            source,
            preparation,
            sent: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            cursor: Mutex::new(None),
        })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn open(&self) -> io::Result<RawStream> {
        let stream = self.source.open().await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// The cursor if it can read from `offset`, else a new one (the source
    /// opened again).
    async fn cursor_for(&self, offset: u64) -> io::Result<Cursor> {
        let kept = lock(&self.cursor).take_if(|c| c.reaches(offset));
        match kept {
            Some(cursor) => Ok(cursor),
            None => Ok(Cursor::new(self.open().await?, self.capacity)),
        }
    }

    /// Gives a cursor back; of two, the one further along stays.
    fn put_back(&self, cursor: Cursor) {
        let mut slot = lock(&self.cursor);
        if slot
            .as_ref()
            .is_none_or(|c| c.position() < cursor.position())
        {
            *slot = Some(cursor);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The disks the endpoint serves, by token.
#[derive(Default)]
pub struct Registry {
    disks: Mutex<HashMap<String, Arc<ServedDisk>>>,
    /// Raw bytes sent in all, for metrics.
    pub served_total: AtomicU64,
    /// Disks registered, by [`Preparation`] (index as in `Preparation::ALL`).
    pub prepared_total: [AtomicU64; 2],
}

impl Registry {
    pub fn register(&self, token: &str, disk: Arc<ServedDisk>) {
        self.prepared_total[disk.preparation as usize].fetch_add(1, Ordering::Relaxed);
        self.lock().insert(token.to_owned(), disk);
    }

    pub fn unregister(&self, token: &str) {
        self.lock().remove(token);
    }

    pub fn get(&self, token: &str) -> Option<Arc<ServedDisk>> {
        self.lock().get(token).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ServedDisk>>> {
        lock(&self.disks)
    }
}

/// A new unguessable token: 256 random bits, hex.
pub fn new_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path a disk is served at (the file name is for people reading logs).
pub fn path(token: &str, file: &str) -> String {
    format!("/disks/{token}/{file}")
}

/// The endpoint's routes.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/disks/{token}/{file}", get(serve).head(serve))
        .with_state(registry)
}

async fn serve(
    State(registry): State<Arc<Registry>>,
    Path((token, file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // The file name only: the token is the disk's credential.
    let range = headers.get(header::RANGE).and_then(|r| r.to_str().ok());
    tracing::debug!(%method, file, range, "disk request");
    let Some(disk) = registry.get(&token) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no disk is served at this URL (any more): its import job finished, failed or was deleted",
        );
    };
    let kind = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        (header::ACCEPT_RANGES, "bytes"),
    ];
    if method == Method::HEAD {
        let length = [(header::CONTENT_LENGTH, disk.capacity.to_string())];
        return (StatusCode::OK, length, kind).into_response();
    }
    if let Some(range) = headers.get(header::RANGE) {
        return serve_range(registry, disk, range.to_str().unwrap_or_default()).await;
    }
    // The importer has moved on from ranges: no source stream stays open
    // beside this one for the rest of the transfer.
    lock(&disk.cursor).take();
    let stream = match disk.open().await {
        Ok(stream) => stream,
        Err(error) => return unreadable(&error),
    };
    disk.sent.store(0, Ordering::Relaxed);
    let counted = disk.clone();
    let expected = disk.capacity;
    let body = exact_length(stream, expected).inspect_ok(move |chunk| {
        let len = chunk.len() as u64;
        counted.sent.fetch_add(len, Ordering::Relaxed);
        registry.served_total.fetch_add(len, Ordering::Relaxed);
    });
    let length = [(header::CONTENT_LENGTH, expected.to_string())];
    (StatusCode::OK, length, kind, Body::from_stream(body)).into_response()
}

/// 206 with the bytes of one range, or 416 saying why not.
async fn serve_range(registry: Arc<Registry>, disk: Arc<ServedDisk>, range: &str) -> Response {
    let range = match vmm_wire::range::parse_range(range, disk.capacity) {
        Ok(range) => range,
        Err(error) => {
            let mut refused = refuse(StatusCode::RANGE_NOT_SATISFIABLE, &error.to_string());
            if let Ok(all) = format!("bytes */{}", disk.capacity).parse() {
                refused.headers_mut().insert(header::CONTENT_RANGE, all);
            }
            return refused;
        }
    };
    let cursor = match disk.cursor_for(range.start).await {
        Ok(cursor) => cursor,
        Err(error) => return unreadable(&error),
    };
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (
            header::CONTENT_LENGTH,
            (range.end - range.start).to_string(),
        ),
        (
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", range.start, range.end - 1, disk.capacity),
        ),
    ];
    let body = ranged(registry, disk, cursor, range);
    (
        StatusCode::PARTIAL_CONTENT,
        headers,
        Body::from_stream(body),
    )
        .into_response()
}

fn unreadable(error: &io::Error) -> Response {
    tracing::warn!(%error, "cannot open a disk at its source");
    refuse(
        StatusCode::BAD_GATEWAY,
        &format!("cannot read the disk from its source: {error}"),
    )
}

/// A cursor lent to one ranged read: given back to its disk when the
/// response ends, however it ends.
struct LentCursor {
    disk: Arc<ServedDisk>,
    cursor: Option<Cursor>,
}

impl Drop for LentCursor {
    fn drop(&mut self) {
        if let Some(cursor) = self.cursor.take() {
            self.disk.put_back(cursor);
        }
    }
}

/// `range` of the disk, read through `cursor`. Progress is how far into the
/// disk ranged reads have got.
fn ranged(
    registry: Arc<Registry>,
    disk: Arc<ServedDisk>,
    cursor: Cursor,
    range: Range<u64>,
) -> RawStream {
    let lent = LentCursor {
        disk,
        cursor: Some(cursor),
    };
    futures::stream::unfold(Some((lent, range)), move |state| {
        let registry = registry.clone();
        async move {
            let (mut lent, range) = state?;
            if range.start >= range.end {
                return None;
            }
            let cursor = lent.cursor.as_mut()?;
            match cursor.read(range.clone()).await {
                Ok(piece) => {
                    let next = range.start + piece.len() as u64;
                    lent.disk.sent.fetch_max(next, Ordering::Relaxed);
                    registry
                        .served_total
                        .fetch_add(piece.len() as u64, Ordering::Relaxed);
                    Some((Ok(piece), Some((lent, next..range.end))))
                }
                // A broken cursor is not given back.
                Err(error) => {
                    lent.cursor = None;
                    Some((Err(error), None))
                }
            }
        }
    })
    .boxed()
}

/// Fails the stream (so the client sees a cut connection, not a short image
/// it might accept) when the source yields more or fewer bytes than promised.
fn exact_length(stream: RawStream, expected: u64) -> RawStream {
    futures::stream::unfold(Some((stream, 0u64)), move |state| async move {
        let (mut stream, total) = state?;
        match stream.next().await {
            Some(Ok(chunk)) => {
                let total = total + chunk.len() as u64;
                if total > expected {
                    let error = format!("the source gave more than the {expected} bytes announced");
                    return Some((Err(io::Error::other(error)), None));
                }
                Some((Ok(chunk), Some((stream, total))))
            }
            Some(Err(error)) => Some((Err(error), None)),
            None if total == expected => None,
            None => {
                let error = format!("the source ended after {total} of {expected} bytes");
                Some((Err(io::Error::other(error)), None))
            }
        }
    })
    .boxed()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{message}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// A disk of `len` bytes of `byte`, or a source that fails to open.
    struct Fixed {
        chunks: Vec<Vec<u8>>,
        opens: bool,
    }

    impl DiskSource for Fixed {
        fn open(&self) -> BoxFuture<'static, io::Result<RawStream>> {
            let chunks: Vec<io::Result<Bytes>> = self
                .chunks
                .iter()
                .map(|c| Ok(Bytes::from(c.clone())))
                .collect();
            let opens = self.opens;
            Box::pin(async move {
                if !opens {
                    return Err(io::Error::other("vCenter said no"));
                }
                Ok(futures::stream::iter(chunks).boxed())
            })
        }
    }

    fn app(capacity: u64, chunks: Vec<Vec<u8>>, opens: bool) -> (Router, Arc<ServedDisk>) {
        let registry = Arc::new(Registry::default());
        let disk = ServedDisk::new(
            capacity,
            Arc::new(Fixed { chunks, opens }),
            Preparation::Streamed,
        );
        registry.register("t0k3n", disk.clone());
        (router(registry), disk)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        range: Option<&str>,
    ) -> (StatusCode, HeaderMap, Result<Bytes, String>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(range) = range {
            request = request.header(header::RANGE, range);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string());
        (status, headers, body)
    }

    #[tokio::test]
    async fn answers_as_harvesters_importer_expects() {
        let (app, disk) = app(6, vec![b"abc".to_vec(), b"def".to_vec()], true);
        let url = "/disks/t0k3n/disk-0.img";
        let (status, headers, body) = call(&app, "HEAD", url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_LENGTH], "6");
        assert!(body.unwrap().is_empty());
        assert_eq!(
            disk.reads.load(Ordering::Relaxed),
            0,
            "HEAD does not open the source"
        );

        assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
        let (status, _, body) = call(&app, "GET", url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), "abcdef");
        assert_eq!(disk.sent(), 6);

        let cases = [
            ("/disks/wrong/disk-0.img", None, StatusCode::NOT_FOUND),
            (url, Some("bytes=9-"), StatusCode::RANGE_NOT_SATISFIABLE),
            (
                url,
                Some("bytes=0-1,3-4"),
                StatusCode::RANGE_NOT_SATISFIABLE,
            ),
        ];
        for (path, range, want) in cases {
            let got = call(&app, "GET", path, range).await;
            assert_eq!(got.0, want, "{path} {range:?}");
        }
    }

    /// The `cdi` backend: Harvester's probe of the first 128 bytes, then the
    /// importer's ranged reads, all from one opening of the source; a whole
    /// GET drops the cursor (a range after it opens the source again).
    #[tokio::test]
    async fn ranged_reads_continue_one_stream_until_a_whole_get() {
        let (app, disk) = app(6, vec![b"abc".to_vec(), b"def".to_vec()], true);
        let url = "/disks/t0k3n/disk-0.img";
        let reads = [
            ("bytes=0-127", "abcdef", "bytes 0-5/6"),
            ("bytes=0-1", "ab", "bytes 0-1/6"),
            ("bytes=2-4", "cde", "bytes 2-4/6"),
            ("bytes=-1", "f", "bytes 5-5/6"),
        ];
        for (range, want, content_range) in reads {
            let (status, headers, body) = call(&app, "GET", url, Some(range)).await;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(headers[header::CONTENT_RANGE], content_range);
            assert_eq!(headers[header::CONTENT_LENGTH], want.len().to_string());
            assert_eq!(body.unwrap(), want, "{range}");
        }
        assert_eq!(disk.reads.load(Ordering::Relaxed), 1);
        assert_eq!(disk.sent(), 6);

        let (status, _, body) = call(&app, "GET", url, None).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, "abcdef".into()));
        assert_eq!(disk.reads.load(Ordering::Relaxed), 2);
        assert!(
            lock(&disk.cursor).is_none(),
            "the whole GET kept the cursor"
        );
        let (status, _, body) = call(&app, "GET", url, Some("bytes=1-2")).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::PARTIAL_CONTENT, "bc".into())
        );
        assert_eq!(disk.reads.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_source_that_breaks_its_promise_cuts_the_response() {
        for chunks in [vec![b"abc".to_vec()], vec![b"abcdefgh".to_vec()]] {
            let (app, _) = app(6, chunks, true);
            let (status, _, body) = call(&app, "GET", "/disks/t0k3n/d.img", None).await;
            assert_eq!(status, StatusCode::OK, "the status is sent before the body");
            assert!(
                body.is_err(),
                "a short or long body must fail, not end cleanly"
            );
        }
        let (app, _) = app(6, vec![], false);
        let (status, _, body) = call(&app, "GET", "/disks/t0k3n/d.img", None).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(
            body.unwrap()
                .starts_with(b"cannot read the disk from its source")
        );
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
