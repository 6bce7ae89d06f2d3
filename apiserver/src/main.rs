//! The aggregated API server for `inventory.harvesterhci.io`. This first cut runs
//! the admin endpoint (health, readiness, metrics) and stops cleanly on SIGTERM;
//! the inventory API itself follows (issue: aggregated inventory API server).
#![forbid(unsafe_code)]

use std::sync::Arc;

use clap::Parser;
use vmm_runtime::{AdminState, CommonArgs, Readiness};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Serves the live VM inventory of every source as a Kubernetes API"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    vmm_runtime::init_tracing(args.common.log_format, &args.common.log)?;
    let readiness = Readiness::default();
    readiness.set(true);
    let admin = AdminState {
        readiness,
        registry: Arc::new(vmm_runtime::metrics_registry("apiserver")),
    };
    vmm_runtime::serve_admin(
        args.common.admin_addr,
        admin,
        vmm_runtime::shutdown_signal(),
    )
    .await?;
    Ok(())
}
