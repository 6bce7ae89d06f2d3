//! The apiserver's Prometheus metrics: requests by verb, resource and code,
//! their latency, and how much inventory is held.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::authz::{Attributes, attributes};

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
    resource: String,
}

pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    objects: Family<ResourceLabel, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            objects: Family::default(),
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
        registry.register(
            "inventory_objects",
            "Inventory objects held in memory, by resource",
            metrics.objects.clone(),
        );
        metrics
    }

    /// Records how many objects of `resource` the store holds.
    pub fn set_objects(&self, resource: &str, count: usize) {
        self.objects
            .get_or_create(&ResourceLabel {
                resource: resource.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
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
    async fn counts_requests_by_verb_resource_and_code() {
        let mut registry = Registry::with_prefix("vmm");
        let metrics = Arc::new(Metrics::register(&mut registry));
        metrics.set_objects("virtualmachines", 3);
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
            r#"vmm_inventory_objects{resource="virtualmachines"} 3"#,
            r#"vmm_apiserver_request_duration_seconds_count{verb="list",resource="virtualmachines"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
