//! The aggregated API server for `inventory.harvesterhci.io`: serves discovery
//! over TLS to kube-apiserver's front proxy, refuses writes, and reports health
//! and metrics on its admin port. Listing the inventory comes next.
#![forbid(unsafe_code)]

mod authn;
mod discovery;
mod router;
// Nothing calls the selectors yet: the list handlers of the inventory API will.
#[cfg_attr(not(test), allow(dead_code, unused_imports))]
mod selector;
mod serve;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use vmm_runtime::{AdminState, CommonArgs, Readiness};

use crate::authn::RequestHeaderConfig;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Serves the live VM inventory of every source as a Kubernetes API"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the HTTPS API that kube-apiserver proxies to.
    #[arg(long, env = "VMM_LISTEN_ADDR", default_value = "0.0.0.0:8443")]
    listen_addr: SocketAddr,

    /// PEM certificate (chain) to serve; its names must include
    /// `<service>.<namespace>.svc`, as the APIService routes there.
    #[arg(long, env = "VMM_TLS_CERT_FILE")]
    tls_cert_file: PathBuf,

    /// PEM private key of the serving certificate.
    #[arg(long, env = "VMM_TLS_PRIVATE_KEY_FILE")]
    tls_private_key_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    vmm_runtime::init_tracing(args.common.log_format, &args.common.log)?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let authn = Arc::new(RequestHeaderConfig::load(client).await?);
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let tls = serve::tls_config(
        &read(&args.tls_cert_file)?,
        &read(&args.tls_private_key_file)?,
        authn.client_ca_pem.as_bytes(),
    )
    .context("building the TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "inventory API listening");

    let readiness = Readiness::default();
    readiness.set(true);
    let admin = AdminState {
        readiness,
        registry: Arc::new(vmm_runtime::metrics_registry("apiserver")),
    };
    let admin = tokio::spawn(vmm_runtime::serve_admin(
        args.common.admin_addr,
        admin,
        vmm_runtime::shutdown_signal(),
    ));
    serve::serve(
        listener,
        tls,
        router::router(authn),
        vmm_runtime::shutdown_signal(),
    )
    .await;
    admin.await??;
    Ok(())
}
