//! HTTP the way Harvester's own Go clients do it: normal certificate
//! verification against the given roots only, redirects followed.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};

use super::Options;

/// Go's default User-Agent: what every one of these clients sends.
const GO_USER_AGENT: &str = "Go-http-client/1.1";

/// Harvester's two clients.
pub(super) struct Http {
    /// Its image controller's (trusts `additional-ca`).
    pub harvester: reqwest::Client,
    /// Its CDI probes' (Go's default client).
    pub cdi: reqwest::Client,
}

impl Http {
    /// Clients that resolve a Service's name through `client`
    /// ([`cluster_dns`](super::cluster_dns)).
    pub fn new(options: &Options, client: &kube::Client) -> Result<Self> {
        let extra: Vec<&str> = options.additional_ca_pem.as_deref().into_iter().collect();
        let build = |roots: &[&str]| -> Result<reqwest::Client> {
            reqwest::Client::builder()
                .tls_backend_preconfigured(crate::tls::client_config(roots, None)?)
                .user_agent(GO_USER_AGENT)
                .redirect(reqwest::redirect::Policy::limited(10))
                .connect_timeout(options.idle_timeout)
                .dns_resolver(super::cluster_dns::Resolver(client.clone()))
                .build()
                .context("build HTTP client")
        };
        let cdi_roots: &[&str] = if options.cdi_uses_additional_ca {
            &extra
        } else {
            &[]
        };
        Ok(Self {
            harvester: build(&extra)?,
            cdi: build(cdi_roots)?,
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

/// `200 OK`, as Go's `resp.Status`.
pub(super) fn status_text(status: reqwest::StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// The next piece of the body; an error if none comes within `idle` or the
/// body breaks off (e.g. shorter than its Content-Length).
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
