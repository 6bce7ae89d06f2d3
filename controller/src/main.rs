//! The controller: reconciles sources and import jobs. This first cut connects to
//! the cluster, waits until our CRDs are served, and reports health and metrics.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use kube::discovery::{ApiGroup, Discovery};
use vmm_runtime::{AdminState, CommonArgs, Readiness};

#[derive(Debug, Parser)]
#[command(version, about = "Reconciles VM migration sources and import jobs")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

/// The API groups whose CRDs must be installed before the controller can work.
const REQUIRED_GROUPS: [&str; 2] = [vmm_api::source::GROUP, vmm_api::importjob::GROUP];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    vmm_runtime::init_tracing(args.common.log_format, &args.common.log)?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;

    let readiness = Readiness::default();
    let admin = AdminState {
        readiness: readiness.clone(),
        registry: Arc::new(vmm_runtime::metrics_registry("controller")),
    };
    let mut admin = tokio::spawn(vmm_runtime::serve_admin(
        args.common.admin_addr,
        admin,
        vmm_runtime::shutdown_signal(),
    ));

    tokio::select! {
        () = wait_for_crds(&client) => {
            readiness.set(true);
            tracing::info!("our CRDs are served; ready");
        }
        // The admin server only ends early on SIGTERM or a bind error.
        result = &mut admin => return Ok(result??),
    }
    admin.await??;
    Ok(())
}

/// Polls discovery until every required group is served, saying what is missing.
async fn wait_for_crds(client: &Client) {
    let mut delay = Duration::from_secs(1);
    loop {
        match missing_groups(client).await {
            Ok(missing) if missing.is_empty() => return,
            Ok(missing) => tracing::warn!(
                ?missing,
                "API groups not served yet: install the CRDs from charts/vm-migration/crds"
            ),
            Err(error) => tracing::warn!(%error, "cannot read API discovery"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn missing_groups(client: &Client) -> Result<Vec<&'static str>, kube::Error> {
    let discovery = Discovery::new(client.clone())
        .filter(&REQUIRED_GROUPS)
        .run()
        .await?;
    let served: Vec<&str> = discovery.groups().map(ApiGroup::name).collect();
    Ok(REQUIRED_GROUPS
        .into_iter()
        .filter(|group| !served.contains(group))
        .collect())
}
