//! The controller: reconciles sources and import jobs. It waits until our CRDs
//! are served, then runs the reconcilers; health and metrics on the admin port.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::future::BoxFuture;
use kube::Client;
use kube::discovery::{ApiGroup, Discovery};
use vmm_controller::context::{Context, DiskUrls, Limits};
use vmm_controller::import::scratch::Scratch;
use vmm_controller::leader::{self, Elector};
use vmm_controller::workers::TransferSpec;
use vmm_controller::workers::manifests::WorkerTemplate;
use vmm_controller::workers::pool::{TransferLimits, TransferPool};
use vmm_controller::workers::worker::Worker;
use vmm_controller::{check, disks, import, sources};
use vmm_runtime::tls::{self, CertFiles};
use vmm_runtime::{AdminState, CommonArgs, Readiness, ResetOnExit};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconciles VM migration sources and import jobs",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    common: CommonArgs,

    /// Address of the disk endpoint Harvester's image importer downloads from.
    #[arg(long, env = "VMM_DISK_LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    disk_listen_addr: SocketAddr,

    /// The disk endpoint's URL as Harvester reaches it (the controller
    /// Service's cluster DNS name), e.g.
    /// `http://vm-migration-controller.harvester-system.svc:8000`.
    #[arg(long, env = "VMM_DISK_URL", required = true)]
    disk_url: Option<String>,

    /// PEM certificate (chain) of the disk endpoint's HTTPS listener, e.g.
    /// a mounted `kubernetes.io/tls` Secret; read again when it changes.
    #[arg(
        long,
        env = "VMM_DISK_TLS_CERT_FILE",
        requires_all = ["disk_tls_key_file", "disk_tls_url"]
    )]
    disk_tls_cert_file: Option<PathBuf>,

    /// PEM private key of `--disk-tls-cert-file`.
    #[arg(long, env = "VMM_DISK_TLS_KEY_FILE", requires = "disk_tls_cert_file")]
    disk_tls_key_file: Option<PathBuf>,

    /// Address of the disk endpoint's HTTPS listener.
    #[arg(long, env = "VMM_DISK_TLS_LISTEN_ADDR", default_value = "0.0.0.0:8443")]
    disk_tls_listen_addr: SocketAddr,

    /// The HTTPS listener's URL as Harvester reaches it, given to images of
    /// Longhorn's backend (its downloader trusts Harvester's `additional-ca`).
    #[arg(long, env = "VMM_DISK_TLS_URL", requires = "disk_tls_cert_file")]
    disk_tls_url: Option<String>,

    /// Give images of CDI's backend the HTTPS URL too, and serve no plain
    /// HTTP: only for a certificate from a CA that CDI's importer image
    /// trusts (Harvester v1.8 hands CDI no CA of its own).
    #[arg(long, env = "VMM_DISK_TLS_FOR_CDI", requires = "disk_tls_cert_file")]
    disk_tls_for_cdi: bool,

    /// Where disks in formats that cannot be streamed (sparse VMDK, qcow2,
    /// VHDX) are converted with qemu-img; files left by an earlier run are
    /// removed at start, so it must be this process's alone (the chart gives
    /// each pod an emptyDir). Default: the temporary directory.
    #[arg(long, env = "VMM_SCRATCH_DIR")]
    scratch_dir: Option<PathBuf>,

    /// Namespace of the Lease replicas elect a leader with (in a pod: its
    /// own, from `POD_NAMESPACE`). Unset: no election, for one replica.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// How long a leader that stops renewing keeps the lease.
    #[arg(long, env = "VMM_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Import jobs running at once, in all.
    #[arg(long, env = "VMM_MAX_JOBS", default_value_t = 4)]
    max_jobs: usize,

    /// Import jobs running at once from one source.
    #[arg(long, env = "VMM_MAX_JOBS_PER_SOURCE", default_value_t = 2)]
    max_jobs_per_source: usize,

    /// The soonest a source that is not Ready is checked again; a change to
    /// its Secret has it checked at once whatever this says.
    #[arg(long, env = "VMM_SOURCE_RETRY_SECONDS", default_value_t = vmm_controller::sources::RETRY_MIN.as_secs())]
    source_retry_seconds: u64,

    /// Where disks are served from: `in-process` (this pod, the default) or
    /// `jobs` (one transfer Job per disk, spread over nodes; docs/scale-out.md).
    #[arg(long, env = "VMM_TRANSFER_MODE", value_enum, default_value_t = TransferMode::InProcess)]
    transfer_mode: TransferMode,

    /// The image of transfer Jobs' pods: this controller's own.
    #[arg(
        long,
        env = "VMM_TRANSFER_IMAGE",
        required_if_eq("transfer_mode", "jobs")
    )]
    transfer_image: Option<String>,

    /// Their pull policy.
    #[arg(
        long,
        env = "VMM_TRANSFER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    transfer_image_pull_policy: String,

    /// A label every transfer object gets, `key=value` (repeatable): the
    /// chart gives its own, so its NetworkPolicy selects the workers.
    #[arg(long = "transfer-label", value_parser = parse_label)]
    transfer_labels: Vec<(String, String)>,

    /// The size limit of each worker's scratch emptyDir.
    #[arg(long, env = "VMM_TRANSFER_SCRATCH_SIZE", default_value = "100Gi")]
    transfer_scratch_size: String,

    /// Transfers running at once, in all (transfer mode `jobs`).
    #[arg(long, env = "VMM_MAX_TRANSFERS", default_value_t = 8)]
    max_transfers: usize,

    /// Transfers running at once from one source host (transfer mode `jobs`).
    #[arg(long, env = "VMM_MAX_TRANSFERS_PER_HOST", default_value_t = 2)]
    max_transfers_per_host: usize,

    /// The ClusterRole that grants reading Secrets in a namespace (the
    /// chart's `<fullname>-credentials`): named in the condition of a source
    /// whose Secret the controller may not read.
    #[arg(long, env = "VMM_CREDENTIALS_CLUSTER_ROLE", default_value = vmm_controller::context::DEFAULT_CREDENTIALS_ROLE)]
    credentials_cluster_role: String,
}

/// How long a stopped worker waits for its downloaders to read what it sent
/// (within Kubernetes' default 30 s grace period).
const TRANSFER_SETTLE: Duration = Duration::from_secs(10);

/// How long reconciles in flight may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The API groups whose CRDs must be installed before the controller can work.
const REQUIRED_GROUPS: [&str; 2] = [vmm_api::source::GROUP, vmm_api::importjob::GROUP];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TransferMode {
    InProcess,
    Jobs,
}

fn parse_label(label: &str) -> Result<(String, String), String> {
    label
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{label:?} is not key=value"))
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check a running release as a user depends on it (the chart's `helm
    /// test` runs this in a pod); exits non-zero when a check fails.
    Check(CheckArgs),
    /// Serve one disk of an export to Harvester's importer until stopped: a
    /// transfer Job's pod (transfer mode `jobs`, docs/scale-out.md).
    Transfer(TransferArgs),
}

#[derive(Debug, clap::Args)]
struct TransferArgs {
    #[command(flatten)]
    common: CommonArgs,

    /// The transfer's spec (JSON), from its Secret.
    #[arg(long)]
    spec_file: PathBuf,

    /// Address of the disk endpoint.
    #[arg(long, default_value = "0.0.0.0:8000")]
    disk_listen_addr: SocketAddr,

    /// Where formats that cannot be streamed are converted with qemu-img.
    #[arg(long)]
    scratch_dir: Option<PathBuf>,

    /// Where a worker that gives up says why, for the controller to read
    /// from its pod's status (Kubernetes' termination message).
    #[arg(long, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The release's namespace (in a pod: its own).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,

    /// The Service Harvester downloads disks through.
    #[arg(long)]
    disk_service: String,

    /// The Lease the controller replicas elect a leader with.
    #[arg(long, default_value = leader::LEASE_NAME)]
    lease: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Check(check)) => return check_release(check).await,
        Some(Command::Transfer(transfer)) => return serve_transfer(transfer).await,
        None => {}
    }
    vmm_runtime::init_tracing(args.common.log_format, &args.common.log)?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;

    let disk_endpoint = DiskEndpoint::from(&args);
    let limits = Limits {
        max_jobs: args.max_jobs.max(1),
        max_jobs_per_source: args.max_jobs_per_source.max(1),
    };
    let scratch_dir = args.scratch_dir.unwrap_or_else(std::env::temp_dir);
    let source_retry = Duration::from_secs(args.source_retry_seconds);
    let scratch = Scratch::new(scratch_dir.clone())
        .with_context(|| format!("cannot use {} as scratch directory", scratch_dir.display()))?;
    let mut registry = vmm_runtime::metrics_registry("controller");
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            std::env::var("POD_NAME").ok(),
            DiskUrls {
                http: args.disk_url.context("--disk-url is required")?,
                https: args.disk_tls_url.clone(),
                https_for_cdi: args.disk_tls_for_cdi,
            },
            limits,
            scratch,
            Arc::new(vmm_providers::provider),
            &mut registry,
        )
        .with_credentials_role(args.credentials_cluster_role),
    );
    let ctx = match args.transfer_mode {
        TransferMode::InProcess => ctx,
        TransferMode::Jobs => {
            let namespace = args
                .leader_election_namespace
                .clone()
                .context("transfer mode jobs needs the release's namespace (POD_NAMESPACE)")?;
            let template = WorkerTemplate {
                namespace,
                image: args
                    .transfer_image
                    .context("--transfer-image is required")?,
                pull_policy: args.transfer_image_pull_policy,
                labels: args.transfer_labels.into_iter().collect(),
                scratch_size: args.transfer_scratch_size,
            };
            let limits = TransferLimits {
                max: args.max_transfers.max(1),
                max_per_host: args.max_transfers_per_host.max(1),
            };
            Arc::into_inner(ctx)
                .expect("the context is not shared yet")
                .with_transfers(TransferPool::new(client.clone(), template, limits))
                .into()
        }
    };
    let readiness = Readiness::default();
    let admin = AdminState {
        readiness: readiness.clone(),
        registry: Arc::new(registry),
    };
    let mut admin = tokio::spawn(vmm_runtime::serve_admin(
        args.common.admin_addr,
        vmm_runtime::admin_router(admin),
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
    let elector = args.leader_election_namespace.as_deref().map(|namespace| {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        Elector::new(
            client.clone(),
            namespace,
            leader::LEASE_NAME,
            identity,
            Duration::from_secs(args.lease_duration_seconds.max(3)),
        )
    });
    // In a pod, the disk Service selects the leader's pod by a label: a
    // replica starts as standby (a restarted leader too) and serves once it leads.
    let pod = std::env::var("POD_NAME")
        .ok()
        .zip(args.leader_election_namespace.clone());
    if let Some(elector) = &elector {
        label_own_pod(&client, pod.as_ref(), false).await;
        tokio::select! {
            () = elector.acquire() => {}
            () = vmm_runtime::shutdown_signal() => return Ok(admin.await??),
        }
        label_own_pod(&client, pod.as_ref(), true).await;
    }
    let reset = ResetOnExit::default();
    let serve_disks = serve_disks(
        &disk_endpoint,
        &reset,
        disks::router(ctx.exports.registry.clone()),
    )
    .await?;
    let work = async {
        tokio::join!(
            serve_disks,
            sources::run_all(ctx.clone(), source_retry),
            logged("import jobs", import::run(ctx)),
        )
        .0
    };
    // Every step is resumable: a reconcile cut short at shutdown is redone by
    // the next process, so waiting long for one is not worth a slow rollout.
    let grace = async {
        vmm_runtime::shutdown_signal().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        served = work => served,
        () = grace => {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "reconcilers still busy after the shutdown grace period; exiting"
            );
            Ok(())
        }
        // Another replica leads now: stop at once, as a follower would start.
        () = lost => Err(anyhow::anyhow!("lost the leader lease; exiting so the new leader works alone")),
    };
    // Downloads still running are cut: reset them, so Harvester retries
    // against the next leader at once rather than after its idle timeout.
    reset.exiting();
    ended?;
    if let Some(elector) = &elector {
        label_own_pod(&client, pod.as_ref(), false).await;
        elector.release().await;
    }
    admin.await??;
    Ok(())
}

/// A transfer Job's pod: serves its disk until stopped. It never ends on its
/// own, so any end is an error: the Job replaces the pod, unless the
/// controller deleted the Job because the disk is imported.
async fn serve_transfer(args: TransferArgs) -> anyhow::Result<()> {
    vmm_runtime::init_tracing(args.common.log_format, &args.common.log)?;
    let failed = |why: String| {
        // Read by the controller from the pod's status (best effort).
        let _ = std::fs::write(&args.termination_log, &why);
        anyhow::anyhow!(why)
    };
    let spec: TransferSpec = std::fs::read(&args.spec_file)
        .map_err(anyhow::Error::from)
        .and_then(|body| Ok(serde_json::from_slice(&body)?))
        .map_err(|e| {
            failed(format!(
                "cannot read the transfer's spec {}: {e}",
                args.spec_file.display()
            ))
        })?;
    let provider = vmm_providers::provider(spec.kind).ok_or_else(|| {
        failed(format!(
            "this version cannot connect to {} sources",
            spec.kind.as_str()
        ))
    })?;
    let scratch_dir = args.scratch_dir.unwrap_or_else(std::env::temp_dir);
    let scratch = Scratch::new(scratch_dir.clone())
        .with_context(|| format!("cannot use {} as scratch directory", scratch_dir.display()))?;
    let worker = Arc::new(Worker::new(spec, scratch));
    let readiness = Readiness::default();
    let admin = AdminState {
        readiness: readiness.clone(),
        registry: Arc::new(vmm_runtime::metrics_registry("transfer")),
    };
    let admin = tokio::spawn(vmm_runtime::serve_admin(
        args.common.admin_addr,
        vmm_runtime::admin_router(admin).merge(worker.progress_router()),
        vmm_runtime::shutdown_signal(),
    ));
    tokio::select! {
        opened = worker.open(provider.as_ref()) => opened.map_err(|refused| failed(format!("{}: {}", refused.reason, refused.message)))?,
        () = vmm_runtime::shutdown_signal() => return Err(failed("stopped before its disk was served".into())),
    }
    let reset = ResetOnExit::default();
    let endpoint = DiskEndpoint {
        http: Some(args.disk_listen_addr),
        https: None,
    };
    let serving = serve_disks(&endpoint, &reset, disks::router(worker.registry())).await?;
    readiness.set(true);
    tracing::info!("serving the disk");
    let broken = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Some(why) = worker.broken().await {
                return why;
            }
        }
    };
    // Stopped (an eviction, a drain, the Job deleted): downloads in flight
    // finish within the pod's grace period, and their last bytes reach the
    // downloader before the pod's network goes.
    let ended = tokio::select! {
        served = serving => match served {
            Ok(()) => {
                tracing::info!("stopped: the downloads in flight are sent");
                reset.settled(TRANSFER_SETTLE).await;
                tracing::info!("stopped: the downloaders read everything sent");
                "stopped".to_owned()
            }
            Err(error) => format!("{error:#}"),
        },
        why = broken => format!("the source ended the export: {why}"),
    };
    reset.exiting();
    worker.detach().await;
    drop(admin);
    Err(failed(format!(
        "the transfer ended before its Job was removed ({ended})"
    )))
}

/// Prints each check's finding; an error when one failed.
async fn check_release(args: CheckArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let release = check::Release {
        namespace: args.namespace,
        lease: args.lease,
        disk_service: args.disk_service,
    };
    let findings = check::run(&client, &release).await;
    let mut failed = 0;
    for finding in &findings {
        match &finding.result {
            Ok(found) => println!("ok    {}: {found}", finding.check),
            Err(wrong) => {
                failed += 1;
                println!("FAIL  {}: {wrong}", finding.check);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", findings.len());
    }
    Ok(())
}

/// The disk endpoint's listeners: plain HTTP unless HTTPS serves both
/// backends, and HTTPS when given a certificate.
struct DiskEndpoint {
    http: Option<SocketAddr>,
    https: Option<(SocketAddr, PathBuf, PathBuf)>,
}

impl From<&Args> for DiskEndpoint {
    fn from(args: &Args) -> Self {
        Self {
            http: (!args.disk_tls_for_cdi).then_some(args.disk_listen_addr),
            https: args
                .disk_tls_cert_file
                .clone()
                .zip(args.disk_tls_key_file.clone())
                .map(|(cert, key)| (args.disk_tls_listen_addr, cert, key)),
        }
    }
}

/// How often the disk endpoint's certificate files are read again.
const DISK_CERTIFICATE_RECHECK: Duration = Duration::from_secs(30);

/// Binds the disk endpoint's listeners; the future that serves `router` on
/// them until shutdown.
async fn serve_disks(
    endpoint: &DiskEndpoint,
    reset: &ResetOnExit,
    router: axum::Router,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    let mut servers: Vec<BoxFuture<'static, anyhow::Result<()>>> = Vec::new();
    if let Some(addr) = endpoint.http {
        let listener = bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "disk endpoint listening (HTTP)");
        let served = axum::serve(reset.listener(listener), router.clone())
            .with_graceful_shutdown(vmm_runtime::shutdown_signal());
        servers.push(Box::pin(async move {
            served.await.context("disk endpoint (HTTP)")
        }));
    }
    if let Some((addr, cert, key)) = &endpoint.https {
        let files = CertFiles::load(cert, key).context("the disk endpoint's certificate")?;
        tokio::spawn(files.clone().keep_current(DISK_CERTIFICATE_RECHECK));
        // The configuration never changes: the certificate inside it does.
        let (_, config) = tokio::sync::watch::channel(tls::server_config(files)?);
        let listener = bind(*addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "disk endpoint listening (HTTPS)");
        let listener = reset.listener(listener);
        servers.push(Box::pin(async move {
            tls::serve_tls(
                listener,
                config,
                router,
                vmm_runtime::shutdown_signal(),
                |_| (),
            )
            .await;
            Ok(())
        }));
    }
    Ok(async move { futures::future::try_join_all(servers).await.map(drop) })
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Sets our pod's disk endpoint label (`(name, namespace)`, when in a pod).
async fn label_own_pod(client: &Client, pod: Option<&(String, String)>, serving: bool) {
    if let Some((name, namespace)) = pod
        && let Err(error) = leader::label_pod(client, namespace, name, serving).await
    {
        tracing::warn!(%error, "cannot label our pod for the disk Service");
    }
}

/// The host's name, for a leader identity outside a pod.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "controller".to_owned())
}

/// Runs a reconciler, saying when it stopped.
async fn logged(what: &'static str, reconciler: impl Future<Output = ()>) {
    reconciler.await;
    tracing::info!("{what}: reconciler stopped");
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
