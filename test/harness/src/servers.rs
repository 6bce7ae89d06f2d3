//! Our own binaries (vmm-apiserver, vmm-controller) run against a control
//! plane: started with its kubeconfig, waited for on `/readyz`, and the
//! inventory apiserver registered with kube-apiserver's aggregator. Shared by
//! the e2e suites, `vmm-dev` and the benchmarks, so all run the same way.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::aggregation::{ApiServiceRegistration, register_apiservice, wait_apiservice_available};
use crate::control_plane::ControlPlane;
use crate::pki::CertFiles;
use crate::process::{ManagedProcess, ProcessBuilder, free_port};

/// How long a server may take to answer `/readyz`, and an APIService to
/// become Available.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One of our binaries, running.
pub struct Server {
    pub process: ManagedProcess,
    /// Its admin endpoint: `/healthz`, `/readyz`, `/metrics`.
    pub admin_port: u16,
}

impl Server {
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }
}

/// The inventory apiserver, registered as `v1.inventory.harvesterhci.io`.
pub struct InventoryApi {
    pub server: Server,
    /// Its HTTPS port (what the APIService's Service points at).
    pub port: u16,
    pub registration: ApiServiceRegistration,
}

/// Starts `program` (one of our binaries) with `kubeconfig` (the control
/// plane's admin one, or a ServiceAccount's) and an admin endpoint on a free
/// port, and waits for `/readyz`.
pub fn start_server(
    cp: &ControlPlane,
    program: &Path,
    kubeconfig: &Path,
    args: Vec<OsString>,
) -> Result<Server> {
    spawn_server(cp, program, kubeconfig, args, &[])
}

/// The apiserver's arguments to serve the API on loopback `port` with the
/// certificate `serving` (one the aggregator trusts).
pub fn serving_args(port: u16, serving: CertFiles) -> Vec<OsString> {
    vec![
        "--listen-addr".into(),
        format!("127.0.0.1:{port}").into(),
        "--tls-cert-file".into(),
        serving.cert_path.into(),
        "--tls-private-key-file".into(),
        serving.key_path.into(),
    ]
}

fn spawn_server(
    cp: &ControlPlane,
    program: &Path,
    kubeconfig: &Path,
    args: Vec<OsString>,
    env: &[(&str, &OsStr)],
) -> Result<Server> {
    let name = program
        .file_name()
        .map_or_else(|| "server".into(), |n| n.to_string_lossy().into_owned());
    if !program.is_file() {
        bail!(
            "{} not found: build it first (cargo build --bins)",
            program.display()
        );
    }
    let admin_port = free_port()?;
    let mut builder = ProcessBuilder::new(&name, program)
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .log_file(cp.dir().join(format!("{name}-{admin_port}.log")));
    for (key, value) in env {
        builder = builder.env(*key, *value);
    }
    let mut process = builder.spawn()?;
    process.wait_ready("/readyz", READY_TIMEOUT, Duration::from_millis(200), || {
        Ok(http_ok(admin_port, "/readyz"))
    })?;
    Ok(Server {
        process,
        admin_port,
    })
}

/// Starts the inventory apiserver (`program`, with `kubeconfig`) with a
/// serving certificate for its Service name and registers it, waiting until
/// the aggregator calls it Available. The group can be registered once per
/// control plane.
pub async fn start_inventory_api(
    cp: &ControlPlane,
    program: &Path,
    kubeconfig: &Path,
) -> Result<InventoryApi> {
    let port = free_port()?;
    let registration = ApiServiceRegistration::new(
        vmm_api::inventory::GROUP,
        vmm_api::inventory::VERSION,
        port,
        cp.pki().cluster_ca.cert_pem(),
    );
    let serving = cp
        .pki()
        .issue_aggregated_serving(&registration.service_name, &registration.service_namespace)?;
    let server = start_server(cp, program, kubeconfig, serving_args(port, serving))?;
    let client = cp.try_client()?;
    register_apiservice(&client, &registration).await?;
    wait_apiservice_available(&client, &registration.apiservice_name(), READY_TIMEOUT).await?;
    Ok(InventoryApi {
        server,
        port,
        registration,
    })
}

/// The controller, with its disk endpoint on a free loopback port.
pub struct ControllerServer {
    pub server: Server,
    /// The disk endpoint's URL, as given to Harvester's importer.
    pub disk_url: String,
    pub disk_port: u16,
    /// Its `TMPDIR`, the scratch directory unless `--scratch-dir` says
    /// otherwise.
    pub tmp_dir: PathBuf,
}

/// Starts the controller (`program`, with `kubeconfig`) and waits for
/// `/readyz`; `args` are passed on (e.g. `--max-jobs`).
pub fn start_controller(
    cp: &ControlPlane,
    program: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> Result<ControllerServer> {
    let options = ControllerOptions {
        args,
        ..ControllerOptions::default()
    };
    start_controller_with(cp, program, kubeconfig, &options)
}

/// How [`start_controller_with`] starts the controller.
#[derive(Debug, Default)]
pub struct ControllerOptions<'a> {
    /// The disk endpoint's port (default: a free one). A controller started
    /// again on the same port keeps the URLs Harvester was given.
    pub disk_port: Option<u16>,
    /// Passed on, e.g. `--max-jobs`.
    pub args: &'a [&'a str],
    /// Added to its environment, e.g. `VMM_CRASH_AT` or `TMPDIR`.
    pub env: &'a [(&'a str, &'a OsStr)],
}

/// Controllers of the workspace's binary to kill and start again on one
/// disk port, so that the URLs Harvester was given stay valid, as the
/// resume suites do.
pub struct RestartableController<'a> {
    cp: &'a ControlPlane,
    program: PathBuf,
    disk_port: u16,
}

impl<'a> RestartableController<'a> {
    pub fn new(cp: &'a ControlPlane) -> Result<Self> {
        Ok(Self {
            cp,
            program: crate::peers::workspace_binary("vmm-controller")?,
            disk_port: free_port()?,
        })
    }

    /// A controller, ready.
    pub fn start(&self) -> ControllerServer {
        let options = ControllerOptions {
            disk_port: Some(self.disk_port),
            ..ControllerOptions::default()
        };
        start_controller_with(self.cp, &self.program, self.cp.kubeconfig_path(), &options).unwrap()
    }
}

pub fn start_controller_with(
    cp: &ControlPlane,
    program: &Path,
    kubeconfig: &Path,
    options: &ControllerOptions<'_>,
) -> Result<ControllerServer> {
    // The VMs it creates meet Harvester's and KubeVirt's real admission.
    cp.admission()?;
    let disk_port = match options.disk_port {
        Some(port) => port,
        None => free_port()?,
    };
    let disk_url = format!("http://127.0.0.1:{disk_port}");
    let mut all: Vec<OsString> = vec![
        "--disk-listen-addr".into(),
        format!("127.0.0.1:{disk_port}").into(),
        "--disk-url".into(),
        disk_url.clone().into(),
    ];
    all.extend(options.args.iter().map(OsString::from));
    // Its scratch directory defaults to $TMPDIR, which it empties of its own
    // files at start: controllers of test binaries running side by side
    // would delete each other's converted disks in a shared /tmp.
    let own_tmp = cp.dir().join(format!("controller-tmp-{disk_port}"));
    let mut env: Vec<(&str, &OsStr)> = options.env.to_vec();
    let tmp_dir = match env.iter().find(|(name, _)| *name == "TMPDIR") {
        Some((_, dir)) => PathBuf::from(dir),
        None => {
            env.push(("TMPDIR", own_tmp.as_os_str()));
            own_tmp.clone()
        }
    };
    std::fs::create_dir_all(&tmp_dir)?;
    Ok(ControllerServer {
        server: spawn_server(cp, program, kubeconfig, all, &env)?,
        disk_url,
        disk_port,
        tmp_dir,
    })
}

/// The workspace's controller with its scratch directory `scratch` (made
/// here) on a tmpfs of `size` (e.g. `8m`), as the chart's size-limited
/// emptyDir gives it: the controller runs in a mount namespace of its own
/// (`unshare`, by a wrapper script), so the host's mounts stay as they were
/// and the mount goes with the process. What it keeps there is seen at
/// `/proc/<pid>/root<scratch>`.
pub fn start_controller_on_limited_scratch(
    cp: &ControlPlane,
    size: &str,
    scratch: &Path,
) -> Result<ControllerServer> {
    std::fs::create_dir_all(scratch)?;
    let controller = crate::peers::workspace_binary("vmm-controller")?;
    let script = cp.dir().join(format!("controller-scratch-{size}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private -- sh -c \
             'mount -t tmpfs -o size={size} vmm-scratch \"$1\" && shift && exec \"$@\"' \
             sh '{scratch}' '{controller}' --scratch-dir '{scratch}' \"$@\"\n",
            scratch = scratch.display(),
            controller = controller.display(),
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    start_controller_with(
        cp,
        &script,
        cp.kubeconfig_path(),
        &ControllerOptions::default(),
    )
}

/// `vmm-controller` (built next to the test binary) against the shared
/// control plane, with the admin kubeconfig: started once per test binary.
pub fn shared_controller() -> &'static ControllerServer {
    static SERVER: std::sync::OnceLock<ControllerServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let cp = ControlPlane::shared();
        let program =
            crate::peers::workspace_binary("vmm-controller").unwrap_or_else(|e| panic!("{e:#}"));
        start_controller(cp, &program, cp.kubeconfig_path(), &[])
            .unwrap_or_else(|e| panic!("starting vmm-controller: {e:#}"))
    })
}

/// `vmm-apiserver` (built next to the test binary) registered as
/// `v1.inventory.harvesterhci.io` with the shared control plane: started
/// once per test binary, since the group can be registered only once per
/// cluster. Its start runs on a thread and runtime of its own, so any test,
/// async or not, may call this.
pub fn shared_inventory_api() -> &'static InventoryApi {
    static SERVER: std::sync::OnceLock<InventoryApi> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let program =
            crate::peers::workspace_binary("vmm-apiserver").unwrap_or_else(|e| panic!("{e:#}"));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let cp = ControlPlane::shared();
            runtime.block_on(start_inventory_api(cp, &program, cp.kubeconfig_path()))
        })
        .join()
        .expect("starting vmm-apiserver panicked")
        .unwrap_or_else(|e| panic!("starting vmm-apiserver: {e:#}"))
    })
}

/// The body of a plain HTTP/1.0 GET that answered 200: enough for local
/// probes and metrics, no client (or TLS provider) needed.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")) {
        bail!("GET {path} on port {port}: {head}");
    }
    Ok(body.to_owned())
}

/// Whether `GET path` answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_ok()
}

/// The value of one Prometheus series, written as the server exposes it
/// (`name{label="value"}`), from its admin port's `/metrics`.
pub fn metric(admin_port: u16, series: &str) -> Result<f64> {
    let metrics = http_get(admin_port, "/metrics")?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no series {series} in:\n{metrics}"))
}
