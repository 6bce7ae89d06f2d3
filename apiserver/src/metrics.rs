//! The apiserver's Prometheus metrics: requests by verb, resource and code,
//! their latency, how much inventory is held, how fresh each source's is and
//! when it last changed.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use vmm_api::inventory;

use crate::authz::{Attributes, attributes};
use crate::sink::SourceId;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    namespace: String,
    kind: String,
    source: String,
}

impl From<SourceId> for SourceLabels {
    fn from(source: SourceId) -> Self {
        Self {
            namespace: source.namespace,
            kind: format!("{:?}", source.kind),
            source: source.name,
        }
    }
}

pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Metrics {
    /// Creates the metrics and registers them, and the store's gauges, in
    /// `registry`.
    pub fn register(registry: &mut Registry, store: Arc<Store>) -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        };
        registry.register(
            "apiserver_requests",
            "Requests to the inventory API by verb, resource and HTTP status",
            metrics.requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request (to the first byte for watches)",
            metrics.latency.clone(),
        );
        registry.register_collector(Box::new(StoreGauges(store)));
        metrics
    }
}

/// Gauges read from the store at scrape time, so they are never stale.
#[derive(Debug)]
struct StoreGauges(Arc<Store>);

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (vms, networks) = self.0.counts();
        let mut objects = encoder.encode_descriptor(
            "inventory_objects",
            "Inventory objects held in memory, by resource",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (resource, count) in [
            (inventory::VIRTUAL_MACHINES.plural, vms),
            (inventory::NETWORKS.plural, networks),
        ] {
            let gauge = ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX));
            gauge.encode(objects.encode_family(&ResourceLabel { resource })?)?;
        }
        let mut lag = encoder.encode_descriptor(
            "inventory_sync_lag_seconds",
            "Seconds since the source last confirmed the inventory held is current: up to the \
             30 s long-poll interval while its watch is healthy, growing while it is not",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (source, age) in self.0.sync_ages() {
            ConstGauge::new(age.as_secs_f64())
                .encode(lag.encode_family(&SourceLabels::from(source))?)?;
        }
        let mut changed = encoder.encode_descriptor(
            "inventory_last_change_timestamp_seconds",
            "Unix time at which a change from the source (an object added, modified or removed) \
             last reached the inventory",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (source, at) in self.0.last_changes() {
            let unix = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            ConstGauge::new(unix.as_secs_f64())
                .encode(changed.encode_family(&SourceLabels::from(source))?)?;
        }
        Ok(())
    }
}

/// Axum middleware counting and timing every request.
pub async fn middleware(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let (verb, resource) = match attributes(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    ) {
        Attributes::Resource(r) => (r.verb, r.resource),
        Attributes::NonResource { verb, .. } => (verb, String::new()),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&LatencyLabels {
            verb: verb.clone(),
            resource: resource.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            verb,
            resource,
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn counts_requests_and_reads_the_store() {
        use vmm_api::SourceKind;
        use vmm_api::inventory::VirtualMachineSpec;
        use vmm_core::InventoryEvent;

        use crate::sink::{InventorySink, SourceId};

        let store = Arc::new(Store::default());
        let source = SourceId {
            namespace: "a".into(),
            kind: SourceKind::Vsphere,
            name: "vc".into(),
        };
        store.apply(&source, InventoryEvent::Vm(VirtualMachineSpec::default()));
        store.apply(&source, InventoryEvent::Synced);
        let mut registry = Registry::with_prefix("vmm");
        let metrics = Arc::new(Metrics::register(&mut registry, store));
        let app = Router::new()
            .route(
                "/apis/inventory.harvesterhci.io/v1/namespaces/a/virtualmachines",
                get(|| async { "[]" }),
            )
            .layer(axum::middleware::from_fn_with_state(metrics, middleware));
        for path in [
            "/apis/inventory.harvesterhci.io/v1/namespaces/a/virtualmachines",
            "/apis/inventory.harvesterhci.io/v1/namespaces/a/virtualmachines?watch=true",
            "/apis/inventory.harvesterhci.io/v1/namespaces/a/networks",
        ] {
            app.clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"vmm_apiserver_requests_total{verb="list",resource="virtualmachines",code="200"} 1"#,
            r#"vmm_apiserver_requests_total{verb="watch",resource="virtualmachines",code="200"} 1"#,
            r#"vmm_apiserver_requests_total{verb="list",resource="networks",code="404"} 1"#,
            r#"vmm_inventory_objects{resource="virtualmachines"} 1"#,
            r#"vmm_inventory_objects{resource="networks"} 0"#,
            r#"vmm_apiserver_request_duration_seconds_count{verb="list",resource="virtualmachines"} 1"#,
            r#"vmm_inventory_sync_lag_seconds{namespace="a",kind="Vsphere",source="vc"} 0."#,
            r#"vmm_inventory_last_change_timestamp_seconds{namespace="a",kind="Vsphere",source="vc"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
