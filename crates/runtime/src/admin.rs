//! The admin endpoint: liveness, readiness and metrics, on a port of its own so
//! probes never depend on the product's TLS or authentication.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::Error;

/// Whether the process is ready for traffic; cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub readiness: Readiness,
    pub registry: Arc<Registry>,
}

/// `/healthz` and `/livez` answer while the process runs; `/readyz` only once the
/// binary declared itself ready; `/metrics` in the OpenMetrics text format.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn live() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Serves `router` (the [`admin_router`], with whatever a binary adds) on
/// `addr` until `shutdown` resolves.
pub async fn serve_admin(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::AdminBind { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "admin endpoint listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::AdminServe)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    use super::*;

    fn state(ready: bool) -> AdminState {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc();
        registry.register("test_events", "Events seen by the test", counter);
        let readiness = Readiness::default();
        readiness.set(ready);
        AdminState {
            readiness,
            registry: Arc::new(registry),
        }
    }

    #[tokio::test]
    async fn answers_each_path() {
        let cases = [
            ("/healthz", false, StatusCode::OK, "ok"),
            ("/livez", false, StatusCode::OK, "ok"),
            (
                "/readyz",
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready",
            ),
            ("/readyz", true, StatusCode::OK, "ok"),
            ("/metrics", false, StatusCode::OK, "test_events_total 1"),
            ("/nope", true, StatusCode::NOT_FOUND, ""),
        ];
        for (path, ready, want_status, want_body) in cases {
            let response = admin_router(state(ready))
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), want_status, "{path} ready={ready}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert!(
                body.contains(want_body),
                "{path}: {body:?} lacks {want_body:?}"
            );
        }
    }
}
