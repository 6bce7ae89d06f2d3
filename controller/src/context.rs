//! What every reconciler shares.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use vmm_api::SourceKind;
use vmm_core::Provider;

use crate::import::scratch::Scratch;
use crate::import::transfer::Exports;
use crate::metrics::Metrics;

/// How many import jobs run at once.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_jobs: usize,
    pub max_jobs_per_source: usize,
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
    /// The disk endpoint's base URL as Harvester's importer reaches it, e.g.
    /// `http://vm-migration-controller.harvester-system.svc:8000`.
    pub disk_url: String,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// The ClusterRole that grants reading a namespace's Secrets, named when
    /// a source's Secret may not be read.
    pub credentials_role: String,
}

/// [`Context::credentials_role`] unless told otherwise (the chart's name for
/// a release named `vm-migration`).
pub const DEFAULT_CREDENTIALS_ROLE: &str = "vm-migration-credentials";

impl Context {
    pub fn new(
        client: Client,
        instance: Option<String>,
        disk_url: String,
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
            disk_url,
            limits,
            metrics,
            credentials_role: DEFAULT_CREDENTIALS_ROLE.to_owned(),
        }
    }

    /// Names `role` as the ClusterRole to bind for reading Secrets.
    pub fn with_credentials_role(mut self, role: String) -> Self {
        self.credentials_role = role;
        self
    }
}
