//! The disk endpoint: serves each disk being imported as a raw image at an
//! unguessable URL, the way Harvester's default image backend reads it
//! (`shared/notes/harvester-conventions.md` §1): `HEAD` answers 200 with the
//! raw size without touching the source; `GET` answers 200 with the whole
//! image in one streamed response, converted from the source as it is read,
//! zeros included, so the importer's 30 s idle timeout never fires and no
//! local copy is made. A URL works only while its job registers it.
//!
//! Range requests (the `cdi` backend) are refused with 416 and a message: a
//! streamOptimized export cannot seek (docs/decisions.md).

use std::collections::HashMap;
use std::io;
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
use futures::{StreamExt, TryStreamExt};

/// The raw bytes of one disk, in order, from the start.
pub type RawStream = BoxStream<'static, io::Result<Bytes>>;

/// Where a disk's bytes come from: opened once per GET (an importer that
/// retries reads the disk again from the start).
pub trait DiskSource: Send + Sync + 'static {
    fn open(&self) -> BoxFuture<'static, io::Result<RawStream>>;
}

/// One registered disk and what has been served of it.
pub struct ServedDisk {
    /// The raw size: the importer's Content-Length and the image's size.
    pub capacity: u64,
    pub source: Arc<dyn DiskSource>,
    /// Raw bytes sent by the current (latest) GET.
    pub sent: AtomicU64,
    /// GETs served, finished or not.
    pub reads: AtomicU64,
}

impl ServedDisk {
    pub fn new(capacity: u64, source: Arc<dyn DiskSource>) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            source,
            sent: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// The disks the endpoint serves, by token.
#[derive(Default)]
pub struct Registry {
    disks: Mutex<HashMap<String, Arc<ServedDisk>>>,
    /// Raw bytes sent in all, for metrics.
    pub served_total: AtomicU64,
}

impl Registry {
    pub fn register(&self, token: &str, disk: Arc<ServedDisk>) {
        self.lock().insert(token.to_owned(), disk);
    }

    pub fn unregister(&self, token: &str) {
        self.lock().remove(token);
    }

    pub fn get(&self, token: &str) -> Option<Arc<ServedDisk>> {
        self.lock().get(token).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ServedDisk>>> {
        self.disks.lock().unwrap_or_else(|p| p.into_inner())
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
    Path((token, _file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(disk) = registry.get(&token) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no disk is served at this URL (any more): its import job finished, failed or was deleted",
        );
    };
    if headers.contains_key(header::RANGE) {
        return refuse(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range reads are not served: the disk is converted as it streams; use Harvester's default (backingimage) image backend",
        );
    }
    let length = [(header::CONTENT_LENGTH, disk.capacity.to_string())];
    let kind = [(header::CONTENT_TYPE, "application/octet-stream")];
    if method == Method::HEAD {
        return (StatusCode::OK, length, kind).into_response();
    }
    let stream = match disk.source.open().await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot open a disk at its source");
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("cannot read the disk from its source: {error}"),
            );
        }
    };
    disk.reads.fetch_add(1, Ordering::Relaxed);
    disk.sent.store(0, Ordering::Relaxed);
    let counted = disk.clone();
    let expected = disk.capacity;
    let body = exact_length(stream, expected).inspect_ok(move |chunk| {
        let len = chunk.len() as u64;
        counted.sent.fetch_add(len, Ordering::Relaxed);
        registry.served_total.fetch_add(len, Ordering::Relaxed);
    });
    (StatusCode::OK, length, kind, Body::from_stream(body)).into_response()
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
        let disk = ServedDisk::new(capacity, Arc::new(Fixed { chunks, opens }));
        registry.register("t0k3n", disk.clone());
        (router(registry), disk)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        range: bool,
    ) -> (StatusCode, HeaderMap, Result<Bytes, String>) {
        let mut request = Request::builder().method(method).uri(path);
        if range {
            request = request.header(header::RANGE, "bytes=0-127");
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
        let (status, headers, body) = call(&app, "HEAD", url, false).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_LENGTH], "6");
        assert!(body.unwrap().is_empty());
        assert_eq!(
            disk.reads.load(Ordering::Relaxed),
            0,
            "HEAD does not open the source"
        );

        let (status, _, body) = call(&app, "GET", url, false).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), "abcdef");
        assert_eq!(disk.sent(), 6);

        let cases = [
            (
                "GET",
                "/disks/wrong/disk-0.img",
                false,
                StatusCode::NOT_FOUND,
            ),
            ("GET", url, true, StatusCode::RANGE_NOT_SATISFIABLE),
        ];
        for (method, path, range, want) in cases {
            assert_eq!(
                call(&app, method, path, range).await.0,
                want,
                "{method} {path}"
            );
        }
    }

    #[tokio::test]
    async fn a_source_that_breaks_its_promise_cuts_the_response() {
        for chunks in [vec![b"abc".to_vec()], vec![b"abcdefgh".to_vec()]] {
            let (app, _) = app(6, chunks, true);
            let (status, _, body) = call(&app, "GET", "/disks/t0k3n/d.img", false).await;
            assert_eq!(status, StatusCode::OK, "the status is sent before the body");
            assert!(
                body.is_err(),
                "a short or long body must fail, not end cleanly"
            );
        }
        let (app, _) = app(6, vec![], false);
        let (status, _, body) = call(&app, "GET", "/disks/t0k3n/d.img", false).await;
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
