//! What virt-exportserver's handler for each format answers
//! (`exportserver.go`), from a volume file, streamed: `raw` is Go's
//! `http.ServeContent`, `gzip` and `tar.gz` are GET-only and compressed on
//! the fly (`pipeToGzip`, here on a blocking thread), `dir` is Go's
//! `http.FileServer` over a volume root that holds `disk.img`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, header};
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes per chunk read from a volume file.
const CHUNK: usize = 256 << 10;

/// GNU tar writes whole records of 20 blocks.
const TAR_RECORD: u64 = 20 * 512;

/// A response body.
pub(super) enum Body {
    Empty,
    Text(String),
    Stream(BoxStream<'static, io::Result<Bytes>>),
}

/// A response, before it is recorded and sent.
pub(super) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(header::HeaderName, String)>,
    pub body: Body,
}

impl Reply {
    /// A status and no body (what `w.WriteHeader` sends).
    pub fn status(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// A status and a plain-text body (Go's `http.Error`).
    pub fn text(status: StatusCode, text: impl Into<String>) -> Reply {
        Reply::status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .with_body(Body::Text(text.into()))
    }

    fn header(mut self, name: header::HeaderName, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn with_body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }

    /// The body, unless the request was a HEAD.
    fn body_unless_head(self, method: &Method, body: Body) -> Reply {
        if method == Method::HEAD {
            self
        } else {
            self.with_body(body)
        }
    }
}

fn not_written(path: &Path, e: &io::Error) -> Reply {
    Reply::text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "open {}: {e} (KubeVirt::write_volume writes it)",
            path.display()
        ),
    )
}

/// `raw` (and `dir/disk.img`): `http.ServeContent`: GET and HEAD, one
/// range honoured, several answered with the whole file.
pub(super) async fn raw(path: &Path, method: &Method, range: Option<&str>) -> Reply {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) => return not_written(path, &e),
    };
    let size = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(e) => return not_written(path, &e),
    };
    let mut reply = Reply::status(StatusCode::OK)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let (start, len) = match range.map(|r| parse_range(r, size)) {
        Some(Err(RangeError::NoOverlap)) => {
            return Reply::text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "invalid range: failed to overlap\n",
            )
            .header(header::CONTENT_RANGE, format!("bytes */{size}"));
        }
        Some(Err(RangeError::Invalid)) => {
            return Reply::text(StatusCode::RANGE_NOT_SATISFIABLE, "invalid range\n");
        }
        // Several ranges (Go: multipart) get the whole file.
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let (start, len) = ranges[0];
            reply.status = StatusCode::PARTIAL_CONTENT;
            let last = (start + len).saturating_sub(1);
            reply = reply.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{last}/{size}"),
            );
            (start, len)
        }
        _ => (0, size),
    };
    reply = reply.header(header::CONTENT_LENGTH, len);
    if let Err(e) = file.seek(io::SeekFrom::Start(start)).await {
        return not_written(path, &e);
    }
    reply.body_unless_head(method, Body::Stream(file_chunks(file, len)))
}

/// `gzip`: the volume gzipped on the fly, GET only (`gzipHandler`).
pub(super) async fn gzip(path: &Path, method: &Method) -> Reply {
    if method != Method::GET {
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return not_written(path, &e),
    };
    let body = gzipped(move |out| io::copy(&mut file, out).map(drop));
    Reply::status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-gzip")
        .with_body(Body::Stream(body))
}

/// `tar.gz`: `tar Scv .` of the volume root (`./` and `./disk.img`),
/// gzipped, GET only (`archiveHandler`).
pub(super) async fn tar_gz(path: &Path, method: &Method) -> Reply {
    if method != Method::GET {
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return not_written(path, &e),
    };
    let body = gzipped(move |out| write_tar(out, file));
    Reply::status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-gzip")
        .with_body(Body::Stream(body))
}

/// `dir`: `http.FileServer` of a volume root holding `disk.img`; `sub` is
/// the path under `dir/`.
pub(super) async fn dir(path: &Path, method: &Method, sub: &str, range: Option<&str>) -> Reply {
    match sub {
        "" => {
            let entry = match tokio::fs::try_exists(path).await {
                Ok(true) => "<a href=\"disk.img\">disk.img</a>\n",
                _ => "",
            };
            let listing = format!(
                "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n{entry}</pre>\n"
            );
            Reply::status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .body_unless_head(method, Body::Text(listing))
        }
        "disk.img" => raw(path, method, range).await,
        _ => Reply::text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// Go's ServeMux for `dir` without its slash: a redirect to the exporter's
/// own path, which KubeVirt's proxy passes on unchanged.
pub(super) fn dir_redirect(claim: &str, query: Option<&str>) -> Reply {
    let mut location = format!("/volumes/{claim}/dir/");
    if let Some(query) = query {
        location = format!("{location}?{query}");
    }
    Reply::text(
        StatusCode::MOVED_PERMANENTLY,
        format!("<a href=\"{location}\">Moved Permanently</a>.\n\n"),
    )
    .header(header::LOCATION, location)
}

enum RangeError {
    /// Go's `errNoOverlap`: every range starts past the end.
    NoOverlap,
    Invalid,
}

/// Go's `parseRange`: `(start, length)` of each range of a `Range` header.
fn parse_range(header: &str, size: u64) -> Result<Vec<(u64, u64)>, RangeError> {
    let specs = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or(RangeError::Invalid)?;
    let mut ranges = Vec::new();
    let mut no_overlap = false;
    for spec in specs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (first, last) = spec.split_once('-').ok_or(RangeError::Invalid)?;
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| RangeError::Invalid);
        if first.trim().is_empty() {
            // The last n bytes.
            let n = number(last)?.min(size);
            ranges.push((size - n, n));
            continue;
        }
        let start = number(first)?;
        if start >= size {
            no_overlap = true;
            continue;
        }
        let end = if last.trim().is_empty() {
            size - 1
        } else {
            let end = number(last)?;
            if start > end {
                return Err(RangeError::Invalid);
            }
            end.min(size - 1)
        };
        ranges.push((start, end - start + 1));
    }
    if no_overlap && ranges.is_empty() {
        return Err(RangeError::NoOverlap);
    }
    Ok(ranges)
}

/// `len` bytes of `file` from where it stands, in chunks.
fn file_chunks(file: tokio::fs::File, len: u64) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut chunk = vec![0; usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK)];
        match file.read(&mut chunk).await {
            Ok(0) => Some((Err(io::ErrorKind::UnexpectedEof.into()), (file, 0))),
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(Bytes::from(chunk)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
    .boxed()
}

/// What `write` writes, gzipped on a blocking thread and streamed. The
/// thread stops when the stream is dropped (the client went away).
fn gzipped(
    write: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
) -> BoxStream<'static, io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let sink = io::BufWriter::with_capacity(CHUNK, Chunks(tx.clone()));
        // Fast rather than Go's default level: the bytes differ, what they
        // decompress to does not, and large volumes stay quick on 2 cores.
        let mut gz = GzEncoder::new(sink, Compression::fast());
        let result = write(&mut gz).and_then(|()| gz.finish()?.flush());
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) }).boxed()
}

/// A writer that sends what it is given as chunks.
struct Chunks(tokio::sync::mpsc::Sender<io::Result<Bytes>>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tar of a volume root that holds `file` as `disk.img`: POSIX ustar,
/// padded to whole records as GNU tar does.
fn write_tar(out: &mut dyn Write, file: std::fs::File) -> io::Result<()> {
    let meta = file.metadata()?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    out.write_all(&tar_header("./", 0o755, 0, mtime, b'5')?)?;
    out.write_all(&tar_header("./disk.img", 0o644, meta.len(), mtime, b'0')?)?;
    let copied = io::copy(&mut file.take(meta.len()), out)?;
    if copied != meta.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // The last block's padding, two zero blocks, then the last record's.
    let padding = copied.next_multiple_of(512) - copied;
    let total = 2 * 512 + copied + padding + 2 * 512;
    let zeros = padding + 2 * 512 + (total.next_multiple_of(TAR_RECORD) - total);
    io::copy(&mut io::repeat(0).take(zeros), out)?;
    Ok(())
}

/// One ustar header block.
fn tar_header(name: &str, mode: u64, size: u64, mtime: u64, kind: u8) -> io::Result<[u8; 512]> {
    let mut block = [0u8; 512];
    block[..name.len()].copy_from_slice(name.as_bytes());
    for (range, value) in [
        (100..108, mode),
        (108..116, 0),
        (116..124, 0),
        (124..136, size),
        (136..148, mtime),
    ] {
        octal(&mut block[range], value)?;
    }
    block[148..156].fill(b' ');
    block[156] = kind;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(block)
}

/// `value` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) -> io::Result<()> {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    if digits.len() >= field.len() {
        return Err(io::Error::other(format!(
            "{value} does not fit a tar header"
        )));
    }
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(header: &str, size: u64) -> Option<Vec<(u64, u64)>> {
        parse_range(header, size).ok()
    }

    #[test]
    fn ranges_parse_as_go_parses_them() {
        assert_eq!(ranges("bytes=0-9", 100), Some(vec![(0, 10)]));
        assert_eq!(ranges("bytes=90-", 100), Some(vec![(90, 10)]));
        assert_eq!(ranges("bytes=90-200", 100), Some(vec![(90, 10)]));
        assert_eq!(ranges("bytes=-10", 100), Some(vec![(90, 10)]));
        assert_eq!(ranges("bytes=-200", 100), Some(vec![(0, 100)]));
        assert_eq!(ranges("bytes=0-1, 5-6", 100), Some(vec![(0, 2), (5, 2)]));
        assert!(matches!(
            parse_range("bytes=100-", 100),
            Err(RangeError::NoOverlap)
        ));
        assert!(matches!(
            parse_range("bytes=5-1", 100),
            Err(RangeError::Invalid)
        ));
        assert!(matches!(
            parse_range("items=0-1", 100),
            Err(RangeError::Invalid)
        ));
    }

    #[test]
    fn the_tar_holds_the_volume_in_whole_records() {
        let dir = crate::process::run_dir().unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, b"hello").unwrap();
        let mut tar = Vec::new();
        write_tar(&mut tar, std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(tar.len() as u64 % TAR_RECORD, 0);
        assert_eq!(&tar[..2], b"./");
        assert_eq!(&tar[512..522], b"./disk.img");
        assert_eq!(&tar[512 + 124..512 + 136], b"00000000005\0");
        assert_eq!(&tar[1024..1029], b"hello");
        assert!(tar[1029..].iter().all(|&b| b == 0));
        // The checksum covers the block with its own field as spaces.
        let mut block = tar[512..1024].to_vec();
        let stored = std::str::from_utf8(&block[148..154]).unwrap().to_owned();
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(u32::from_str_radix(&stored, 8).unwrap(), sum);
    }
}
