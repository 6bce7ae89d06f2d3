//! The export server: virt-exportproxy's routing (`cmd/virt-exportproxy`:
//! the export path, the export, its phase) in front of the exporter's
//! (virt-exportserver: its volume paths, `tokenChecker`, the format
//! handlers of [`content`](super::content)). HTTPS, HTTP/1.1 only (the
//! proxy turns HTTP/2 off). Every request is recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::content::{self, Body, Reply};
use super::export::Exporter;
use super::{Ctx, ExportFormat, export_resource, key, lock};
use crate::pki::CertFiles;

/// The header and the query parameter that carry the token.
const TOKEN: &str = "x-kubevirt-export-token";

/// How a request presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVia {
    /// The `x-kubevirt-export-token` header.
    Header,
    /// The `x-kubevirt-export-token` query parameter.
    Query,
    /// Neither (or the request did not get as far as the token check).
    None,
}

/// One request the export server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub method: String,
    /// The path, without the query (which may hold the token).
    pub path: String,
    /// The export's namespace and name, empty when the path is not an
    /// export's.
    pub namespace: String,
    pub export: String,
    /// The claim, when the path is one of a volume the export serves.
    pub volume: Option<String>,
    pub format: Option<ExportFormat>,
    /// The way of the token that was accepted; else the query parameter
    /// if there was one (KubeVirt checks it first), else the header.
    pub token: TokenVia,
    /// The `Range` header.
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes sent so far (all of them once the client has read the
    /// whole response).
    pub bytes: u64,
}

/// A TLS acceptor for `serving`, offering HTTP/1.1 only.
pub(super) fn tls_acceptor(serving: &CertFiles) -> Result<TlsAcceptor> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            crate::tls::certs_from_pem(&serving.cert_pem)?,
            PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())
                .context("parse the export server key")?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves until aborted.
pub(super) async fn run(ctx: Arc<Ctx>, listener: TcpListener, acceptor: TlsAcceptor) {
    let app = Router::new().fallback(handle).with_state(ctx);
    let listener = TlsListener {
        tcp: listener,
        acceptor,
        handshakes: JoinSet::new(),
    };
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("kubevirt stand-in: export server: {e}");
    }
}

/// Connections whose TLS handshake is done; handshakes run side by side,
/// so a client that stalls in one holds up no other.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let handshake = self.acceptor.accept(stream);
                        self.handshakes.spawn(async move {
                            let tls = tokio::time::timeout(Duration::from_secs(10), handshake);
                            Some((tls.await.ok()?.ok()?, addr))
                        });
                    }
                    Err(e) => {
                        tracing::warn!("kubevirt stand-in: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(Ok(Some(connection))) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    return connection;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handle(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut record = ExportRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        namespace: String::new(),
        export: String::new(),
        volume: None,
        format: None,
        token: TokenVia::None,
        range: range.clone(),
        status: 0,
        bytes: 0,
    };
    let reply = answer(&ctx, &method, &uri, &headers, range.as_deref(), &mut record).await;
    record.status = reply.status.as_u16();
    let index = {
        let mut requests = lock(&ctx.requests);
        requests.push(record);
        requests.len() - 1
    };
    let count = move |n: usize| {
        if let Some(r) = lock(&ctx.requests).get_mut(index) {
            r.bytes += n as u64;
        }
    };
    let body = match reply.body {
        Body::Empty => AxumBody::empty(),
        Body::Text(text) => {
            count(text.len());
            AxumBody::from(text)
        }
        Body::Stream(chunks) => AxumBody::from_stream(chunks.map(move |chunk| {
            if let Ok(bytes) = &chunk {
                count(bytes.len());
            }
            chunk
        })),
    };
    let mut response = (reply.status, body).into_response();
    for (name, value) in reply.headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The proxy's, then the exporter's answer; fills in `record`.
async fn answer(
    ctx: &Ctx,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    range: Option<&str>,
    record: &mut ExportRequest,
) -> Reply {
    let Some((ns, name, target)) = proxy_target(uri.path()) else {
        return Reply::status(StatusCode::BAD_REQUEST);
    };
    record.namespace = ns.to_owned();
    record.export = name.to_owned();
    // A read from the API server rather than a cache: a deleted export is
    // gone at once.
    let export = match ctx.namespaced(ns, &export_resource()).get_opt(name).await {
        Ok(Some(export)) => export,
        Ok(None) => return Reply::status(StatusCode::NOT_FOUND),
        Err(e) => return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")),
    };
    if export.data["status"]["phase"] != "Ready" {
        return Reply::status(StatusCode::SERVICE_UNAVAILABLE);
    }
    let exporter = lock(&ctx.exporters)
        .get(&key(ns, name))
        .filter(|e| e.live() && export.metadata.uid.as_ref() == Some(&e.uid))
        .cloned();
    // Ready, but no exporter pod behind its Service (a status set by hand).
    let Some(exporter) = exporter else {
        return Reply::status(StatusCode::SERVICE_UNAVAILABLE);
    };
    let Some((claim, format, sub)) = served(&exporter, target) else {
        return Reply::status(StatusCode::NOT_FOUND);
    };
    record.volume = Some(claim.to_owned());
    record.format = Some(format);
    let Some(sub) = sub else {
        // ServeMux redirects before any handler, so before the token check.
        return content::dir_redirect(claim, uri.query());
    };
    let token = match token(ctx, ns, &exporter.token_secret).await {
        Ok(token) => token,
        Err(e) => return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.into_iter().find(|(k, _)| k == TOKEN).map(|(_, v)| v));
    let header = headers
        .get(TOKEN)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    // Go compares what is absent as "": an empty token would let anyone in.
    let accepts = |given: &Option<String>| given.as_deref().unwrap_or_default().as_bytes() == token;
    record.token = match (&query, &header) {
        (Some(_), _) if accepts(&query) => TokenVia::Query,
        (_, Some(_)) if accepts(&header) => TokenVia::Header,
        (Some(_), _) => TokenVia::Query,
        (None, Some(_)) => TokenVia::Header,
        (None, None) => TokenVia::None,
    };
    if !accepts(&query) && !accepts(&header) {
        return Reply::status(StatusCode::UNAUTHORIZED);
    }
    let volume = ctx.volume_path(ns, claim);
    let reply = match format {
        ExportFormat::Raw => content::raw(&volume, method, range).await,
        ExportFormat::Gzip => content::gzip(&volume, method).await,
        ExportFormat::TarGz => content::tar_gz(&volume, method).await,
        ExportFormat::Dir => content::dir(&volume, method, sub, range).await,
    };
    until_stopped(reply, exporter)
}

/// The proxy's `proxyPathMatcher`:
/// `/api/export.kubevirt.io/<v1alpha1|v1beta1>/namespaces/<ns>/virtualmachineexports/<name>/<target>`.
fn proxy_target(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/api/export.kubevirt.io/")?;
    let (version, rest) = rest.split_once('/')?;
    if !matches!(version, "v1alpha1" | "v1beta1") {
        return None;
    }
    let (ns, rest) = rest.strip_prefix("namespaces/")?.split_once('/')?;
    let (name, target) = rest
        .strip_prefix("virtualmachineexports/")?
        .split_once('/')?;
    (!ns.is_empty() && !name.is_empty()).then_some((ns, name, target))
}

/// The claim and format of an exporter path (`volumes/<claim>/…`) the
/// exporter serves, and for `dir` the path under `dir/` (`None` for `dir`
/// itself).
fn served<'a>(
    exporter: &Exporter,
    target: &'a str,
) -> Option<(&'a str, ExportFormat, Option<&'a str>)> {
    let (claim, file) = target.strip_prefix("volumes/")?.split_once('/')?;
    let (format, sub) = match file {
        "disk.img" => (ExportFormat::Raw, Some("")),
        "disk.img.gz" => (ExportFormat::Gzip, Some("")),
        "disk.tar.gz" => (ExportFormat::TarGz, Some("")),
        "dir" => (ExportFormat::Dir, None),
        other => (ExportFormat::Dir, Some(other.strip_prefix("dir/")?)),
    };
    exporter
        .volumes
        .iter()
        .any(|v| v.claim == claim && v.formats.contains(&format))
        .then_some((claim, format, sub))
}

/// The `token` of the Secret the exporter mounts, read now.
async fn token(ctx: &Ctx, ns: &str, secret: &str) -> Result<Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let found = secrets
        .get_opt(secret)
        .await?
        .with_context(|| format!("the token Secret {ns}/{secret} does not exist"))?;
    found
        .data
        .and_then(|mut data| data.remove("token"))
        .map(|token| token.0)
        .with_context(|| format!("the token Secret {ns}/{secret} has no key token"))
}

/// A download that breaks off once the exporter stops (its export was
/// deleted, or its VM runs again).
fn until_stopped(mut reply: Reply, exporter: Arc<Exporter>) -> Reply {
    if let Body::Stream(chunks) = reply.body {
        reply.body = Body::Stream(
            chunks
                .map(move |chunk| {
                    if exporter.live() {
                        chunk
                    } else {
                        Err(std::io::Error::other("the exporter stopped"))
                    }
                })
                .boxed(),
        );
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_match_as_kubevirt_matches_them() {
        let p = "/api/export.kubevirt.io/v1beta1/namespaces/ns/virtualmachineexports/e/volumes/c/disk.img";
        assert_eq!(proxy_target(p), Some(("ns", "e", "volumes/c/disk.img")));
        let alpha = p.replace("v1beta1", "v1alpha1");
        assert!(proxy_target(&alpha).is_some());
        assert!(proxy_target(&p.replace("v1beta1", "v1")).is_none());
        assert!(
            proxy_target("/api/export.kubevirt.io/v1beta1/namespaces/ns/virtualmachineexports/e")
                .is_none()
        );
    }
}
