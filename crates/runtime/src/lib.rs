//! What both binaries share at their edge: flags for logging and the admin
//! endpoint, the admin server (`/healthz`, `/livez`, `/readyz`, `/metrics`),
//! HTTPS serving (`tls`), shutdown on SIGTERM, and connections reset at exit
//! (`exit_reset`). Business logic never lives here.
#![forbid(unsafe_code)]

mod admin;
mod exit_reset;
mod shutdown;
mod telemetry;
pub mod tls;

pub use admin::{AdminState, Readiness, admin_router, serve_admin};
pub use exit_reset::{ResetOnExit, ResettingListener, ResettingStream};
pub use shutdown::shutdown_signal;
pub use telemetry::{LogFormat, init_tracing};

use std::net::SocketAddr;

/// Flags every binary takes, each also settable by environment.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// Address of the admin endpoint: health probes and Prometheus metrics.
    #[arg(long, env = "VMM_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "VMM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info,vmm_controller=debug`.
    #[arg(long, env = "VMM_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("logging was already initialised")]
    LoggingInitialised,
    #[error("cannot listen on the admin address {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin server failed: {0}")]
    AdminServe(#[source] std::io::Error),
}

/// A metrics registry with the `vmm_build_info` gauge every binary reports, so
/// dashboards can tell which version runs where.
pub fn metrics_registry(component: &str) -> prometheus_client::registry::Registry {
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    let mut registry = prometheus_client::registry::Registry::with_prefix("vmm");
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    info.get_or_create(&vec![
        ("component".to_owned(), component.to_owned()),
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ])
    .set(1);
    registry.register("build_info", "Component and version of this binary", info);
    registry
}
