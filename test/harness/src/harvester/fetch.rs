//! HTTP the way Harvester's, Longhorn's and CDI's Go clients do it: normal
//! certificate verification against the given roots only, redirects
//! followed, the body streamed (never buffered whole) into SHA-256 (unless
//! [`Hashing::Off`]) and SHA-512 (when the image has a `checksum`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use ring::digest;
use tokio::io::AsyncWriteExt;

use super::{Hashing, Options};

/// Go's default User-Agent: what every one of these clients sends.
const GO_USER_AGENT: &str = "Go-http-client/1.1";

/// The three clients of the real system.
pub(super) struct Http {
    /// Harvester's image controller (trusts `additional-ca`).
    pub harvester: reqwest::Client,
    /// Longhorn's data-source pod (trusts `additional-ca`; drops Referer on
    /// redirects, like its `CheckRedirect`).
    pub longhorn: reqwest::Client,
    /// Harvester's CDI probes and CDI's importer.
    pub cdi: reqwest::Client,
}

impl Http {
    pub fn new(options: &Options) -> Result<Self> {
        let extra: Vec<&str> = options.additional_ca_pem.as_deref().into_iter().collect();
        let build = |roots: &[&str], referer: bool| -> Result<reqwest::Client> {
            reqwest::Client::builder()
                .tls_backend_preconfigured(crate::tls::client_config(roots, None)?)
                .user_agent(GO_USER_AGENT)
                .referer(referer)
                .redirect(reqwest::redirect::Policy::limited(10))
                .connect_timeout(options.idle_timeout)
                .build()
                .context("build HTTP client")
        };
        let cdi_roots: &[&str] = if options.cdi_uses_additional_ca {
            &extra
        } else {
            &[]
        };
        Ok(Self {
            harvester: build(&extra, true)?,
            longhorn: build(&extra, false)?,
            cdi: build(cdi_roots, true)?,
        })
    }
}

/// The Content-Length header (not `Response::content_length`, which is 0
/// for every HEAD).
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `bytes <first>-<last>/<total>` of a Content-Range header.
pub(super) fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let value = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// `200 OK`, as Go's `resp.Status`.
pub(super) fn status_text(status: reqwest::StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// The next piece of the body; an error if none comes within `idle`
/// (Longhorn's `IdleTimeoutCopy`) or the body breaks off (e.g. shorter than
/// its Content-Length).
pub(super) async fn next_chunk(
    response: &mut reqwest::Response,
    idle: Duration,
) -> Result<Option<impl std::ops::Deref<Target = [u8]> + use<>>> {
    match tokio::time::timeout(idle, response.chunk()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("read the response body")),
        Err(_) => bail!("no data for {idle:?}: idle timeout, the copy was cancelled"),
    }
}

/// What a finished download saw.
#[derive(Debug)]
pub(super) struct Digest {
    pub sha256: Option<String>,
    pub sha512: Option<String>,
    pub bytes: u64,
    pub kept: Option<PathBuf>,
}

/// The bytes of one download attempt, hashed in order as they arrive.
pub(super) struct Sink {
    sha256: Option<digest::Context>,
    sha512: Option<digest::Context>,
    bytes: u64,
    file: Option<(tokio::fs::File, PathBuf)>,
    /// At most this many bytes per second ([`Options::download_rate`]).
    rate: Option<u64>,
    started: Instant,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sink {
    /// `keep`: also write the bytes there. `sha512`: also compute SHA-512
    /// (the algorithm of `spec.checksum`).
    pub async fn new(keep: Option<&Path>, hashing: Hashing, sha512: bool) -> Result<Self> {
        let file = match keep {
            None => None,
            Some(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let file = tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("create {}", path.display()))?;
                Some((file, path.to_path_buf()))
            }
        };
        Ok(Self {
            sha256: (hashing == Hashing::Sha256).then(|| digest::Context::new(&digest::SHA256)),
            sha512: sha512.then(|| digest::Context::new(&digest::SHA512)),
            bytes: 0,
            file,
            rate: None,
            started: Instant::now(),
        })
    }

    /// Takes no more than `rate` bytes per second (none: as fast as they come).
    pub fn limited_to(mut self, rate: Option<u64>) -> Self {
        self.rate = rate.filter(|&r| r > 0);
        self
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        for context in [&mut self.sha256, &mut self.sha512].into_iter().flatten() {
            context.update(chunk);
        }
        self.bytes += chunk.len() as u64;
        if let Some((file, path)) = &mut self.file {
            file.write_all(chunk)
                .await
                .with_context(|| format!("write {}", path.display()))?;
        }
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            if let Some(early) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(early).await;
            }
        }
        Ok(())
    }

    pub async fn finish(self) -> Result<Digest> {
        let kept = match self.file {
            None => None,
            Some((mut file, path)) => {
                file.flush().await?;
                Some(path)
            }
        };
        Ok(Digest {
            sha256: self.sha256.map(|c| hex(c.finish().as_ref())),
            sha512: self.sha512.map(|c| hex(c.finish().as_ref())),
            bytes: self.bytes,
            kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes 0-127/4096".parse().expect("header"),
        );
        assert_eq!(content_range(&h), Some((0, 127, 4096)));
        h.insert(
            reqwest::header::CONTENT_RANGE,
            "bytes */4096".parse().expect("header"),
        );
        assert_eq!(content_range(&h), None);
    }

    #[tokio::test]
    async fn hashes_in_order() {
        let mut sink = Sink::new(None, Hashing::Sha256, true).await.expect("sink");
        sink.write(b"ab").await.expect("write");
        sink.write(b"c").await.expect("write");
        let d = sink.finish().await.expect("finish");
        assert_eq!(d.bytes, 3);
        assert_eq!(
            d.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(d.sha512.is_some_and(|s| s.starts_with("ddaf35a193617aba")));
    }

    #[tokio::test]
    async fn a_rate_limit_paces_the_download() {
        let mut sink = Sink::new(None, Hashing::Off, false)
            .await
            .expect("sink")
            .limited_to(Some(1000));
        let t0 = Instant::now();
        for _ in 0..4 {
            sink.write(&[0; 100]).await.expect("write");
        }
        // 400 bytes at 1000 bytes/s.
        assert!(
            t0.elapsed() >= Duration::from_millis(390),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn hashing_off_counts_only() {
        let mut sink = Sink::new(None, Hashing::Off, false).await.expect("sink");
        sink.write(b"abc").await.expect("write");
        let d = sink.finish().await.expect("finish");
        assert_eq!((d.bytes, d.sha256, d.sha512), (3, None, None));
    }
}
