//! The aggregated API server for `inventory.harvesterhci.io`: keeps every
//! source's inventory in memory and serves it over TLS to kube-apiserver's front
//! proxy, authorizing each request; health and metrics on the admin port.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use vmm_runtime::{AdminState, CommonArgs, Readiness};

use vmm_apiserver::authn::{DEFAULT_TOKEN_CACHE_TTL, RequestHeaderConfig, TokenAuthenticator};
use vmm_apiserver::authz::{Authorizer, DEFAULT_AUTHZ_CACHE_TTL};
use vmm_apiserver::metrics::Metrics;
use vmm_apiserver::router::AppState;
use vmm_apiserver::sources::SourceSync;
use vmm_apiserver::store::Store;
use vmm_apiserver::{router, serve};

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
    let requestheader = Arc::new(RequestHeaderConfig::load(client.clone()).await?);
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let tls = serve::tls_config(
        &read(&args.tls_cert_file)?,
        &read(&args.tls_private_key_file)?,
        requestheader.client_ca_pem.as_bytes(),
    )
    .context("building the TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "inventory API listening");

    let store = Arc::new(Store::default());
    let sync = SourceSync::new(client.clone(), store.clone());
    let readiness = Readiness::default();
    // Ready once every source has been read in full (or failed once).
    let mut synced = sync.ready();
    let ready = readiness.clone();
    tokio::spawn(async move {
        if synced.wait_for(|done| *done).await.is_ok() {
            ready.set(true);
            tracing::info!("every source synced once; ready");
        }
    });
    let sync = tokio::spawn(sync.run(vmm_runtime::shutdown_signal()));
    tokio::spawn(vmm_apiserver::cluster::watch(client.clone(), store.clone()));

    let mut registry = vmm_runtime::metrics_registry("apiserver");
    let metrics = Arc::new(Metrics::register(&mut registry, store.clone()));
    let admin = AdminState {
        readiness,
        registry: Arc::new(registry),
    };
    let admin = tokio::spawn(vmm_runtime::serve_admin(
        args.common.admin_addr,
        admin,
        vmm_runtime::shutdown_signal(),
    ));
    let app = router::router(AppState {
        requestheader,
        tokens: Arc::new(TokenAuthenticator::new(
            client.clone(),
            DEFAULT_TOKEN_CACHE_TTL,
        )),
        authorizer: Arc::new(Authorizer::new(client, DEFAULT_AUTHZ_CACHE_TTL)),
        store,
        metrics,
    });
    serve::serve(listener, tls, app, vmm_runtime::shutdown_signal()).await;
    sync.await?;
    admin.await??;
    Ok(())
}
