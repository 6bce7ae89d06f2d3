//! What every reconciler shares.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use vmm_api::SourceKind;
use vmm_core::Provider;

use crate::import::scratch::Scratch;
use crate::import::transfer::Exports;
use crate::metrics::Metrics;
use crate::workers::pool::TransferPool;

/// How many import jobs run at once.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_jobs: usize,
    pub max_jobs_per_source: usize,
}

/// Where Harvester's importers reach the disk endpoint.
#[derive(Clone, Debug)]
pub struct DiskUrls {
    /// Plain HTTP, e.g.
    /// `http://vm-migration-controller.harvester-system.svc:8000`.
    pub http: String,
    /// HTTPS, when it is served: given to images of Longhorn's backend,
    /// whose downloader trusts the CAs in Harvester's `additional-ca`
    /// setting (docs/install.md, "TLS on the disk endpoint").
    pub https: Option<String>,
    /// Give HTTPS to images of CDI's backend too. Harvester v1.8 hands CDI's
    /// importer no CA, so it verifies only against its image's system roots:
    /// set only for a certificate from a CA those hold.
    pub https_for_cdi: bool,
}

impl DiskUrls {
    /// Plain HTTP only.
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            http: url.into(),
            https: None,
            https_for_cdi: false,
        }
    }

    /// The base URL (no trailing slash) for an image of CDI's backend
    /// (`cdi`) or of Longhorn's.
    pub fn for_backend(&self, cdi: bool) -> &str {
        match &self.https {
            Some(https) if !cdi || self.https_for_cdi => https,
            _ => &self.http,
        }
        .trim_end_matches('/')
    }
}

/// Which provider serves a kind of source: `vmm_providers::provider` in the
/// binary, a fake source in unit tests.
pub type Providers = Arc<dyn Fn(SourceKind) -> Option<Arc<dyn Provider>> + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub providers: Providers,
    /// Publishes Events, one series per object and reason.
    pub recorder: Recorder,
    /// The exports in progress and the disk endpoint's registry.
    pub exports: Exports,
    /// Where Harvester's importers reach the disk endpoint.
    pub disk_urls: DiskUrls,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// The ClusterRole that grants reading a namespace's Secrets, named when
    /// a source's Secret may not be read.
    pub credentials_role: String,
    /// Transfer Jobs, in transfer mode `jobs`; `None`: disks are served
    /// from this process (docs/scale-out.md).
    pub transfers: Option<TransferPool>,
}

/// [`Context::credentials_role`] unless told otherwise (the chart's name for
/// a release named `vm-migration`).
pub const DEFAULT_CREDENTIALS_ROLE: &str = "vm-migration-credentials";

impl Context {
    pub fn new(
        client: Client,
        instance: Option<String>,
        disk_urls: DiskUrls,
        limits: Limits,
        scratch: Scratch,
        providers: Providers,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let exports = Exports::new(scratch);
        let metrics = Metrics::register(registry, exports.registry.clone());
        let reporter = Reporter {
            controller: "vm-migration-controller".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            providers,
            exports,
            disk_urls,
            limits,
            metrics,
            credentials_role: DEFAULT_CREDENTIALS_ROLE.to_owned(),
            transfers: None,
        }
    }

    /// Hands each disk to a transfer Job instead of serving it here.
    pub fn with_transfers(mut self, pool: TransferPool) -> Self {
        self.transfers = Some(pool);
        self
    }

    /// Names `role` as the ClusterRole to bind for reading Secrets.
    pub fn with_credentials_role(mut self, role: String) -> Self {
        self.credentials_role = role;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::DiskUrls;

    /// HTTPS goes to the backend that can verify it; CDI gets it only when
    /// told its importer can.
    #[test]
    fn each_backend_gets_the_url_it_can_verify() {
        let http = DiskUrls::http("http://ctl:8000/");
        let https = DiskUrls {
            https: Some("https://ctl:8443".into()),
            ..http.clone()
        };
        let https_for_all = DiskUrls {
            https_for_cdi: true,
            ..https.clone()
        };
        let cases = [
            (&http, false, "http://ctl:8000"),
            (&http, true, "http://ctl:8000"),
            (&https, false, "https://ctl:8443"),
            (&https, true, "http://ctl:8000"),
            (&https_for_all, false, "https://ctl:8443"),
            (&https_for_all, true, "https://ctl:8443"),
        ];
        for (urls, cdi, expected) in cases {
            assert_eq!(urls.for_backend(cdi), expected, "{urls:?} cdi={cdi}");
        }
    }
}
