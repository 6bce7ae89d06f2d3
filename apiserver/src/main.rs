//! The aggregated API server for `inventory.harvesterhci.io`: keeps every
//! source's inventory in memory and serves it over TLS to kube-apiserver's front
//! proxy, authorizing each request; health and metrics on the admin port.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rustls::server::ResolvesServerCert;
use vmm_runtime::tls::CertFiles;
use vmm_runtime::{AdminState, CommonArgs, Readiness};

use vmm_apiserver::authn::{DEFAULT_TOKEN_CACHE_TTL, FrontProxyTrust, TokenAuthenticator};
use vmm_apiserver::authz::{Authorizer, DEFAULT_AUTHZ_CACHE_TTL};
use vmm_apiserver::certs::{CertError, Reloadable, SelfManaged};
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
    /// `<service>.<namespace>.svc`, as the APIService routes there. Read
    /// again when it changes (a renewed Secret).
    #[arg(long, env = "VMM_TLS_CERT_FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,

    /// PEM private key of the serving certificate.
    #[arg(long, env = "VMM_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,

    /// Manage the serving certificate in this Secret (`<namespace>/<name>`)
    /// instead of reading files: made when missing or near expiry, served,
    /// reloaded when the Secret changes, and published as the APIService's
    /// caBundle.
    #[arg(
        long,
        env = "VMM_SERVING_SECRET",
        conflicts_with = "tls_cert_file",
        required_unless_present = "tls_cert_file",
        requires = "service_name"
    )]
    serving_secret: Option<String>,

    /// With `--serving-secret`: the Service, in the Secret's namespace, that
    /// the APIService routes to (the certificate's names).
    #[arg(long, env = "VMM_SERVICE_NAME")]
    service_name: Option<String>,

    /// With `--serving-secret`: how long the certificates it makes are valid
    /// (each is made again once two thirds of that have passed).
    #[arg(long, env = "VMM_SERVING_CERT_LIFETIME_SECONDS", default_value_t = vmm_apiserver::certs::DEFAULT_LIFETIME.as_secs(), value_parser = clap::value_parser!(u64).range(60..))]
    serving_cert_lifetime_seconds: u64,

    /// With `--serving-secret`: the APIService whose caBundle is kept current.
    #[arg(
        long,
        env = "VMM_APISERVICE",
        default_value = "v1.inventory.harvesterhci.io"
    )]
    apiservice: String,
}

/// How often a managed certificate is checked for expiry without any change.
const CERTIFICATE_RECHECK: Duration = Duration::from_secs(3600);
/// How often certificate files given with --tls-cert-file are read again (a
/// mounted Secret changes in place when renewed).
const CERTIFICATE_FILES_RECHECK: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    vmm_runtime::init_tracing(args.common.log_format, &args.common.log)?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let certificate = serving_certificate(&args, &client).await?;
    let (front_proxy, front_proxy_watch) = FrontProxyTrust::load(client.clone(), certificate)
        .await
        .context("reading the front proxy's trust")?;
    tokio::spawn(front_proxy_watch.run());
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
        vmm_runtime::admin_router(admin),
        vmm_runtime::shutdown_signal(),
    ));
    let app = router::router(AppState {
        requestheader: front_proxy.requestheader,
        tokens: Arc::new(TokenAuthenticator::new(
            client.clone(),
            DEFAULT_TOKEN_CACHE_TTL,
        )),
        authorizer: Arc::new(Authorizer::new(client, DEFAULT_AUTHZ_CACHE_TTL)),
        store,
        metrics,
    });
    serve::serve(
        listener,
        front_proxy.tls,
        app,
        vmm_runtime::shutdown_signal(),
    )
    .await;
    sync.await?;
    admin.await??;
    Ok(())
}

/// The serving certificate: from files, or managed in a Secret (and then
/// kept current in the background).
async fn serving_certificate(
    args: &Args,
    client: &kube::Client,
) -> anyhow::Result<Arc<dyn ResolvesServerCert>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
        let files = CertFiles::load(cert, key).context("the serving certificate files")?;
        tokio::spawn(files.clone().keep_current(CERTIFICATE_FILES_RECHECK));
        return Ok(files);
    }
    let secret = args.serving_secret.as_deref().unwrap_or_default();
    let (namespace, name) = secret
        .split_once('/')
        .context("--serving-secret takes <namespace>/<name>")?;
    let service = args.service_name.as_deref().unwrap_or_default();
    let managed = SelfManaged::new(client.clone(), namespace, name, service, &args.apiservice)
        .lifetime(Duration::from_secs(args.serving_cert_lifetime_seconds));
    let material = loop {
        match managed.ensure().await {
            // Helm creates the APIService a moment after the Deployment.
            Err(error @ CertError::NotRegistered(_)) => {
                tracing::info!(%error, "waiting");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            made => {
                break made.with_context(|| {
                    format!("making or reading the serving certificate in Secret {secret}")
                })?;
            }
        }
    };
    managed
        .publish(&material.ca_pem)
        .await
        .context("setting the APIService's caBundle")?;
    let certificate = Reloadable::new(&material.cert_pem, &material.key_pem)?;
    tokio::spawn(managed.keep_current(certificate.clone(), material, CERTIFICATE_RECHECK));
    Ok(certificate)
}
