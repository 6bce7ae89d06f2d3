//! The controller's Prometheus metrics: import jobs by phase and failed jobs
//! by reason (read from the job cache at scrape time), disk bytes served to
//! Harvester's importer, and how long finished jobs took.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vmm_api::importjob::{ImportJob, ImportPhase};

use crate::conditions::READY;
use crate::disks::{self, Preparation};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    /// Seconds from a job's creation to its end, by outcome.
    pub durations: Family<OutcomeLabel, Histogram>,
    /// The job cache, once the import reconciler runs.
    pub jobs: OnceLock<Store<ImportJob>>,
}

impl Metrics {
    /// Creates the metrics and registers them, with gauges read from the
    /// disk registry and the job cache at scrape time.
    pub fn register(registry: &mut Registry, disks: Arc<disks::Registry>) -> Arc<Self> {
        let metrics = Arc::new(Self {
            // 10 s to about 2 days.
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(10.0, 2.0, 15))
            }),
            jobs: OnceLock::new(),
        });
        registry.register(
            "import_job_duration_seconds",
            "Time from an import job's creation to its end, by outcome",
            metrics.durations.clone(),
        );
        registry.register_collector(Box::new(Scraped {
            metrics: metrics.clone(),
            disks,
        }));
        metrics
    }

    /// Records how long `job` took, from its creation to now.
    pub fn observe_duration(&self, job: &ImportJob, outcome: &'static str) {
        if let Some(created) = &job.metadata.creation_timestamp {
            let seconds = k8s_openapi::jiff::Timestamp::now()
                .duration_since(created.0)
                .as_secs_f64();
            self.durations
                .get_or_create(&OutcomeLabel { outcome })
                .observe(seconds.max(0.0));
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

struct Scraped {
    metrics: Arc<Metrics>,
    disks: Arc<disks::Registry>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraped").finish_non_exhaustive()
    }
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let served = ConstCounter::new(self.disks.served_total.load(Ordering::Relaxed));
        served.encode(encoder.encode_descriptor(
            "import_disk_bytes_served",
            "Raw disk bytes sent to Harvester's image importer",
            None,
            MetricType::Counter,
        )?)?;
        let mut family = encoder.encode_descriptor(
            "import_disks_prepared",
            "Disks served to Harvester's importer, by how their raw bytes are made (streamed from the export, or converted with qemu-img first)",
            None,
            MetricType::Counter,
        )?;
        for preparation in Preparation::ALL {
            let count = self.disks.prepared_total[preparation as usize].load(Ordering::Relaxed);
            let label = PathLabel {
                path: preparation.as_str(),
            };
            ConstCounter::new(count).encode(family.encode_family(&label)?)?;
        }
        let Some(store) = self.metrics.jobs.get() else {
            return Ok(());
        };
        let jobs = store.state();
        let mut family = encoder.encode_descriptor(
            "import_jobs",
            "Import jobs by phase",
            None,
            MetricType::Gauge,
        )?;
        for phase in ImportPhase::ALL {
            let count = jobs
                .iter()
                .filter(|job| {
                    job.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .unwrap_or_default()
                        == phase
                })
                .count();
            let label = PhaseLabel {
                phase: phase.as_str(),
            };
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(family.encode_family(&label)?)?;
        }
        // Why jobs fail: the reasons are a fixed set (preflight's and the
        // pipeline's), so the label stays small.
        let mut failed = BTreeMap::<&str, i64>::new();
        for status in jobs.iter().filter_map(|job| job.status.as_ref()) {
            if status.phase == Some(ImportPhase::Failed)
                && let Some(ready) = crate::conditions::find(&status.conditions, READY)
            {
                *failed.entry(ready.reason.as_str()).or_default() += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "import_jobs_failed",
            "Failed import jobs by the reason of their Ready condition",
            None,
            MetricType::Gauge,
        )?;
        for (reason, count) in failed {
            let label = ReasonLabel {
                reason: reason.to_owned(),
            };
            ConstGauge::new(count).encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}
