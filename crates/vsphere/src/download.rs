//! Disk downloads over the session's own TLS trust: export lease URLs (NFC)
//! and the datastore's `/folder` endpoint (the fallback for flat disks).
//!
//! Downloads use a second reqwest client built from the same TLS config and
//! cookie jar as the SOAP session, without the SOAP client's overall request
//! timeout (a disk takes longer than one SOAP call), but with a read timeout
//! so a stalled transfer fails instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use reqwest::cookie::CookieStore;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, COOKIE, HeaderValue, RANGE};
use vmm_wire::range::parse_content_range;
use vmm_wire::vsphere::{redact_url, split_datastore_path};

use super::disks::DiskDetails;
use super::error::scrub;
use super::{VsphereClient, VsphereError};

/// The cookie vCenter and ESXi keep the SOAP session in. ESXi's NFC server
/// wants it on disk URLs, which point at the host rather than at vCenter, so
/// the jar alone would not send it.
const SESSION_COOKIE: &str = "vmware_soap_session";
/// A transfer that receives nothing for this long fails (and can resume).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP client for transfers: same TLS trust and cookies as the session.
pub(crate) fn transfer_client(
    url: &str,
    tls: rustls::ClientConfig,
    cookies: Arc<reqwest::cookie::Jar>,
    connect_timeout: Duration,
) -> Result<reqwest::Client, VsphereError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .cookie_provider(cookies)
        .connect_timeout(connect_timeout)
        .read_timeout(READ_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(|e| VsphereError::Fault {
            url: url.to_owned(),
            call: "build HTTP transfer client",
            detail: e.to_string(),
        })
}

/// An open disk download: the response of a GET, positioned at `start`.
pub struct DiskDownload {
    response: reqwest::Response,
    url: String,
    start: u64,
    total_size: Option<u64>,
}

impl std::fmt::Debug for DiskDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the response: its Debug shows the URL with the ticket.
        f.debug_struct("DiskDownload")
            .field("url", &self.url)
            .field("status", &self.response.status())
            .field("start", &self.start)
            .field("total_size", &self.total_size)
            .finish()
    }
}

impl DiskDownload {
    /// The offset of the first byte of the body in the file (the requested
    /// offset: a server that ignores `Range` is an error, see
    /// [`VsphereError::RangeIgnored`]).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The size of the whole file, when the server says
    /// (`Content-Range` or `Content-Length`).
    pub fn total_size(&self) -> Option<u64> {
        self.total_size
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, VsphereError> {
        let url = &self.url;
        self.response
            .chunk()
            .await
            .map_err(|e| transfer_error(url, None, &e))
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, VsphereError>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut download = state?;
            match download.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(download))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

impl VsphereClient {
    /// Opens `url` (an [`ExportDisk`](super::ExportDisk) URL or a datastore
    /// URL from [`datastore_file_url`](Self::datastore_file_url)) for reading
    /// from byte `offset`, with the session cookie.
    ///
    /// `offset > 0` sends `Range: bytes=<offset>-`. vcsim's export URLs and
    /// the `/folder` endpoint honour it; real NFC servers may not: then this
    /// fails with [`VsphereError::RangeIgnored`] and the caller starts over
    /// from 0 (never silently re-reading from the start).
    pub fn open_disk<'a>(
        &'a self,
        url: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<DiskDownload, VsphereError>> {
        Box::pin(async move {
            let shown = redact_url(url);
            let mut request = self.transfer.get(url);
            if let Some(cookie) = self.session_cookie() {
                request = request.header(COOKIE, cookie);
            }
            if offset > 0 {
                request = request.header(RANGE, format!("bytes={offset}-"));
            }
            let response = request
                .send()
                .await
                .map_err(|e| transfer_error(&shown, None, &e))?;
            let status = response.status();
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            let length = header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
            let total_size = match status.as_u16() {
                200 if offset > 0 => {
                    return Err(VsphereError::RangeIgnored { url: shown, offset });
                }
                200 => length,
                206 => {
                    let (first, total) = header(CONTENT_RANGE)
                        .as_deref()
                        .and_then(parse_content_range)
                        .ok_or_else(|| VsphereError::Download {
                            url: shown.clone(),
                            status: Some(206),
                            detail: "a partial answer without a valid Content-Range".into(),
                        })?;
                    if first != offset {
                        return Err(VsphereError::Download {
                            url: shown,
                            status: Some(206),
                            detail: format!("asked for offset {offset}, got {first}"),
                        });
                    }
                    total.or(length.map(|l| l + offset))
                }
                _ => return Err(status_error(shown, status, response).await),
            };
            Ok(DiskDownload {
                response,
                url: shown,
                start: offset,
                total_size,
            })
        })
    }

    /// The size of the file at `url` (HEAD, Content-Length). Works for the
    /// datastore endpoint and vcsim's export URLs; real NFC URLs may not
    /// answer HEAD (use the lease's `file_size` there).
    pub async fn content_length(&self, url: &str) -> Result<u64, VsphereError> {
        let shown = redact_url(url);
        let mut request = self.transfer.head(url);
        if let Some(cookie) = self.session_cookie() {
            request = request.header(COOKIE, cookie);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transfer_error(&shown, None, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(shown, status, response).await);
        }
        response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or(VsphereError::Download {
                url: shown,
                status: Some(status.as_u16()),
                detail: "no Content-Length in the answer to HEAD".into(),
            })
    }

    /// `https://<vCenter>/folder/<path>?dcPath=<datacenter>&dsName=<datastore>`:
    /// a file on a datastore through vCenter's datastore HTTP endpoint
    /// (session cookie; GET with Range, HEAD). `path` is relative to the
    /// datastore root, as in `[ds] <path>`.
    pub fn datastore_file_url(&self, datacenter_path: &str, datastore: &str, path: &str) -> String {
        let base = self.url.strip_suffix("/sdk").unwrap_or(&self.url);
        let path: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(encode_component)
            .collect();
        format!(
            "{base}/folder/{}?dcPath={}&dsName={}",
            path.join("/"),
            encode_component(datacenter_path),
            encode_component(datastore),
        )
    }

    /// The datastore URL of a flat disk's data file (`<name>-flat.vmdk`),
    /// the fallback when export is not available. `None` for disks without
    /// one (sparse, delta, raw device mappings) or without a known
    /// datacenter. The data is raw, with the disk's capacity as its size.
    pub fn flat_file_url(&self, disk: &DiskDetails) -> Option<String> {
        let (datastore, path) = split_datastore_path(disk.flat_file.as_deref()?)?;
        Some(self.datastore_file_url(disk.datacenter_path.as_deref()?, datastore, path))
    }

    /// `vmware_soap_session=<key>` as the jar holds it for the SDK URL.
    fn session_cookie(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.url).ok()?;
        let cookies = self.cookies.cookies(&url)?;
        session_cookie_of(cookies.to_str().ok()?)
    }
}

/// The `vmware_soap_session=…` pair of a `Cookie` header value.
fn session_cookie_of(header: &str) -> Option<String> {
    header
        .split(';')
        .map(str::trim)
        .find(|c| {
            c.split_once('=')
                .is_some_and(|(name, _)| name == SESSION_COOKIE)
        })
        .map(str::to_owned)
}

async fn status_error(
    url: String,
    status: reqwest::StatusCode,
    response: reqwest::Response,
) -> VsphereError {
    // The body of an error page can say why; keep it short.
    let body = response.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(200).collect();
    let hint = match status.as_u16() {
        401 | 403 => ": the session or the lease's ticket is not accepted (lease ended?)",
        404 => ": not found (the lease ended or is not ready, or the file does not exist)",
        _ => "",
    };
    VsphereError::Download {
        url,
        status: Some(status.as_u16()),
        detail: if body.is_empty() {
            format!("HTTP {status}{hint}")
        } else {
            format!("HTTP {status}{hint}: {body}")
        },
    }
}

fn transfer_error(url: &str, status: Option<u16>, err: &reqwest::Error) -> VsphereError {
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = e.source();
    }
    // reqwest names the URL in its messages: keep the ticket out.
    let full = err.url().map(|u| u.as_str().to_owned());
    let detail = match full {
        Some(full) => detail.replace(&full, url),
        None => detail,
    };
    VsphereError::Download {
        url: url.to_owned(),
        status: status.or(err.status().map(|s| s.as_u16())),
        detail: scrub(detail, None),
    }
}

/// Percent-encodes all but unreserved characters (so `%2f` in a vSphere name
/// stays the three characters it is on the datastore).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_is_picked() {
        assert_eq!(
            session_cookie_of("a=1; vmware_soap_session=\"52f0\"; b=2").as_deref(),
            Some("vmware_soap_session=\"52f0\"")
        );
        assert_eq!(session_cookie_of("vmware_soap_sessionx=1"), None);
    }

    #[test]
    fn datastore_path_components() {
        assert_eq!(encode_component("Web 01%2fx"), "Web%2001%252fx");
    }
}
