//! A real control plane on loopback: etcd and kube-apiserver 1.36 with RBAC,
//! client-certificate authentication and the aggregation (front-proxy) layer,
//! plus our CRDs and the third-party ones (KubeVirt, Harvester, NAD).
//!
//! [`ControlPlane::shared`] starts one per test binary on first use; tests share
//! it and isolate themselves with their own namespaces
//! ([`TestNamespace`](crate::namespace::TestNamespace)).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::admission::Admission;
use crate::peers::{Peers, our_crds_dir};
use crate::pki::{CertFiles, ClusterPki, FRONT_PROXY_CLIENT_CN};
use crate::process::{
    CmdOutput, ManagedProcess, ProcessBuilder, address_open, free_port, log_says_address_in_use,
    port_open, run_dir, run_tied,
};

/// How long kubectl may run before the harness kills it.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(300);

/// Attempts with fresh ports when a peer finds its port taken.
const PORT_ATTEMPTS: usize = 3;

/// Options for [`ControlPlane::start_with`].
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Install `charts/vm-migration/crds/*.yaml` and the peers' `crds/*.yaml`.
    pub install_crds: bool,
    /// Extra kube-apiserver flags (appended; a later flag wins).
    pub extra_apiserver_args: Vec<String>,
    /// Limit for etcd, for kube-apiserver `/readyz`, and for each CRD batch.
    pub ready_timeout: Duration,
    /// Serve on this address instead of 127.0.0.1, for pods to reach (the
    /// bridge of [`NodeCluster`](crate::nodes::NodeCluster)), with what real
    /// nodes need: the Node authorizer and NodeRestriction, service-account
    /// token admission and the `kubernetes` Service's endpoints.
    pub listen_ip: Option<Ipv4Addr>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            install_crds: true,
            extra_apiserver_args: Vec::new(),
            ready_timeout: Duration::from_secs(180),
            listen_ip: None,
        }
    }
}

/// How long each part of the start took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartupTimings {
    pub pki: Duration,
    pub etcd: Duration,
    pub apiserver: Duration,
    pub crds: Duration,
    pub total: Duration,
}

/// Certificate and kubeconfig of one user identity (see
/// [`ControlPlane::kubectl_as`] and [`ControlPlane::client_as`]).
struct IdentityFiles {
    cert: CertFiles,
    kubeconfig: PathBuf,
}

/// etcd + kube-apiserver, stopped when dropped (apiserver first).
pub struct ControlPlane {
    // Field order is drop order: the webhooks stop first, the apiserver before etcd.
    admission: OnceLock<Result<Admission, String>>,
    apiserver: Mutex<ManagedProcess>,
    etcd: Mutex<ManagedProcess>,
    peers: &'static Peers,
    dir: PathBuf,
    pki: ClusterPki,
    server_url: String,
    etcd_url: String,
    kubeconfig: PathBuf,
    kubectl_cache: PathBuf,
    identities: Mutex<HashMap<String, IdentityFiles>>,
    timings: StartupTimings,
    options: ControlPlaneOptions,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("etcd_url", &self.etcd_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// The control plane of this test binary, started (blocking) on first use.
    /// Every later call returns the same one; if the start failed, every call
    /// panics with the same error.
    #[track_caller]
    pub fn shared() -> &'static ControlPlane {
        match Self::try_shared() {
            Ok(cp) => cp,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// [`shared`](Self::shared) without the panic.
    pub fn try_shared() -> Result<&'static ControlPlane> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Self::start().map_err(|e| format!("the shared control plane did not start: {e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// A new control plane with default options (blocking).
    pub fn start() -> Result<ControlPlane> {
        Self::start_with(ControlPlaneOptions::default())
    }

    /// A new control plane (blocking). Its files are in a fresh
    /// [`run_dir`](crate::process::run_dir).
    pub fn start_with(options: ControlPlaneOptions) -> Result<ControlPlane> {
        let t0 = Instant::now();
        let mut timings = StartupTimings::default();
        let peers = Peers::get()?;
        let dir = run_dir()?;
        let listen_ip = options.listen_ip.map(|ip| ip.to_string());
        let pki = ClusterPki::generate(&dir.join("pki"), listen_ip.as_slice())?;
        timings.pki = t0.elapsed();

        let t = Instant::now();
        let (etcd, etcd_url) = start_etcd(peers, &dir, options.ready_timeout)?;
        timings.etcd = t.elapsed();

        let kubectl_cache = dir.join("kubectl-cache");
        let kubeconfig = dir.join("admin.kubeconfig");
        let t = Instant::now();
        let (apiserver, server_url) = ApiserverLaunch {
            peers,
            dir: &dir,
            pki: &pki,
            etcd_url: &etcd_url,
            kubeconfig: &kubeconfig,
            kubectl_cache: &kubectl_cache,
            options: &options,
        }
        .start()?;
        timings.apiserver = t.elapsed();
        let install_crds = options.install_crds;

        let cp = ControlPlane {
            admission: OnceLock::new(),
            apiserver: Mutex::new(apiserver),
            etcd: Mutex::new(etcd),
            peers,
            dir,
            pki,
            server_url,
            etcd_url,
            kubeconfig,
            kubectl_cache,
            identities: Mutex::new(HashMap::new()),
            timings,
            options,
        };

        let t = Instant::now();
        if install_crds {
            let mut files = crate::peers::yaml_files(&our_crds_dir())?;
            files.extend(peers.crd_files()?);
            cp.install_crds(&files, cp.options.ready_timeout)?;
        }
        let mut cp = cp;
        cp.timings.crds = t.elapsed();
        cp.timings.total = t0.elapsed();
        let t = cp.timings;
        eprintln!(
            "vmm-testkit: control plane {} ready in {:.1}s (pki {:.1}s, etcd {:.1}s, kube-apiserver {:.1}s, CRDs {:.1}s); files in {}",
            cp.server_url,
            t.total.as_secs_f64(),
            t.pki.as_secs_f64(),
            t.etcd.as_secs_f64(),
            t.apiserver.as_secs_f64(),
            t.crds.as_secs_f64(),
            cp.dir.display()
        );
        Ok(cp)
    }

    /// Stops kube-apiserver and starts it again on the same port, as an
    /// upgrade or a crash and restart would (etcd keeps the data; clients
    /// see their connections and watches end). Blocking.
    pub fn restart_apiserver(&self) -> Result<()> {
        let port = self.server_port()?;
        let mut apiserver = self.apiserver.lock().unwrap();
        apiserver.stop()?;
        let launch = ApiserverLaunch {
            peers: self.peers,
            dir: &self.dir,
            pki: &self.pki,
            etcd_url: &self.etcd_url,
            kubeconfig: &self.kubeconfig,
            kubectl_cache: &self.kubectl_cache,
            options: &self.options,
        };
        *apiserver = launch.spawn(port)?;
        Ok(())
    }

    /// `https://127.0.0.1:<port>` (or the [`ControlPlaneOptions::listen_ip`]).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// kube-apiserver's port.
    pub fn server_port(&self) -> Result<u16> {
        self.server_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in {}", self.server_url))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The admin (system:masters) kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The run directory: certificates, logs, etcd data, kubeconfigs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// KubeVirt's and Harvester's VM admission on this control plane,
    /// started on first use ([`crate::admission`]).
    pub fn admission(&self) -> Result<&Admission> {
        self.admission
            .get_or_init(|| Admission::start(self).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("VM admission did not start: {e}"))
    }

    pub fn pki(&self) -> &ClusterPki {
        &self.pki
    }

    pub fn peers(&self) -> &'static Peers {
        self.peers
    }

    pub fn timings(&self) -> StartupTimings {
        self.timings
    }

    pub fn apiserver_log_path(&self) -> PathBuf {
        self.apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log_path()
            .to_path_buf()
    }

    /// Last lines of kube-apiserver's log, for failure messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        self.apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log_tail(lines)
    }

    /// Ok while both processes run; else the exit and the log's tail.
    pub fn check_running(&self) -> Result<()> {
        self.etcd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_running()?;
        self.apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_running()
    }

    /// A new admin client. Call it inside a Tokio runtime, once per runtime:
    /// each `#[tokio::test]` has its own runtime, and a connection pool must not
    /// outlive the runtime it was made in.
    #[track_caller]
    pub fn client(&self) -> kube::Client {
        match self.try_client() {
            Ok(client) => client,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// [`client`](Self::client) without the panic.
    pub fn try_client(&self) -> Result<kube::Client> {
        self.client_with_cert(&self.pki.admin)
    }

    /// A new client authenticated as `user` in `groups` (at most two groups)
    /// by a client certificate. Same runtime rule as [`client`](Self::client).
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        let cert = self.with_identity(user, groups, |id| id.cert.clone())?;
        self.client_with_cert(&cert)
    }

    fn client_with_cert(&self, cert: &CertFiles) -> Result<kube::Client> {
        let mut config = kube::Config::new(self.server_url.parse().context("server url")?);
        config.root_cert = Some(vec![self.pki.cluster_ca.cert_der().to_vec()]);
        config.auth_info.client_certificate = Some(cert.cert_path.to_string_lossy().into_owned());
        config.auth_info.client_key = Some(cert.key_path.to_string_lossy().into_owned());
        kube::Client::try_from(config).context("build kube client")
    }

    /// A kubeconfig file for `user` in `groups` (client certificate signed by
    /// the cluster's client CA), created on first use.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        self.with_identity(user, groups, |id| id.kubeconfig.clone())
    }

    fn with_identity<T>(
        &self,
        user: &str,
        groups: &[&str],
        f: impl FnOnce(&IdentityFiles) -> T,
    ) -> Result<T> {
        let key = format!("{user}\n{}", groups.join("\n"));
        let mut identities = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = identities.get(&key) {
            return Ok(f(id));
        }
        let cert = self.pki.issue_user(user, groups)?;
        let kubeconfig = cert.cert_path.with_extension("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.server_url,
            self.pki.cluster_ca.cert_path(),
            &cert,
        )?;
        let id = IdentityFiles { cert, kubeconfig };
        let out = f(&id);
        identities.insert(key, id);
        Ok(out)
    }

    /// A kubeconfig with a token kube-apiserver issued for a ServiceAccount
    /// (valid for two hours): a process using it has exactly the RBAC of
    /// that ServiceAccount, as in a pod.
    pub fn kubeconfig_for_service_account(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self
            .kubectl(["create", "token", name, "-n", namespace, "--duration=2h"])
            .ok()
            .with_context(|| format!("token for {namespace}/{name}"))?
            .trim()
            .to_owned();
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        write_kubeconfig_for(
            &path,
            &self.server_url,
            self.pki.cluster_ca.cert_path(),
            serde_json::json!({ "token": token }),
        )?;
        Ok(path)
    }

    /// Starts kube-controller-manager with only `controllers` (e.g.
    /// `clusterrole-aggregation`), as admin, serving nothing. Stops on drop.
    pub fn start_controller_manager(&self, controllers: &[&str]) -> Result<ManagedProcess> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        ProcessBuilder::new(
            "kube-controller-manager",
            self.peers.kube_controller_manager(),
        )
        .args([
            kubeconfig.as_str(),
            &format!("--controllers={}", controllers.join(",")),
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            // What pods trust kube-apiserver with (the kube-root-ca.crt ConfigMaps).
            &format!(
                "--root-ca-file={}",
                self.pki.cluster_ca.cert_path().display()
            ),
        ])
        .log_file(self.dir.join("kube-controller-manager.log"))
        .spawn()
    }

    /// Runs the peers' kubectl as admin. Panics only when kubectl cannot be
    /// run at all; a failing command is reported in the output.
    #[track_caller]
    pub fn kubectl<I, S>(&self, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.run_kubectl(&self.kubeconfig, args, None)
    }

    /// [`kubectl`](Self::kubectl) with `stdin` fed to it (e.g. `apply -f -`).
    #[track_caller]
    pub fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.run_kubectl(&self.kubeconfig, args, Some(stdin))
    }

    /// Runs kubectl as `user` in `groups` (at most two), authenticated by a
    /// client certificate for that identity.
    #[track_caller]
    pub fn kubectl_as<I, S>(&self, user: &str, groups: &[&str], args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let kubeconfig = match self.kubeconfig_for(user, groups) {
            Ok(k) => k,
            Err(e) => panic!("kubeconfig for {user}: {e:#}"),
        };
        self.run_kubectl(&kubeconfig, args, None)
    }

    /// `kubectl apply -n <namespace> -f -` of a YAML text, as admin.
    #[track_caller]
    pub fn apply_yaml(&self, namespace: &str, yaml: &str) -> CmdOutput {
        self.kubectl_with_stdin(["apply", "-n", namespace, "-f", "-"], yaml)
    }

    #[track_caller]
    fn run_kubectl<I, S>(&self, kubeconfig: &Path, args: I, stdin: Option<&str>) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        match kubectl_raw(
            &self.peers.kubectl(),
            kubeconfig,
            &self.kubectl_cache,
            &args,
            stdin,
        ) {
            Ok(out) => out,
            Err(e) => panic!("cannot run kubectl {args:?}: {e:#}"),
        }
    }

    /// Applies CRD files (server-side: some third-party CRDs are too large for
    /// the last-applied annotation) and waits until each is `Established`.
    pub fn install_crds(&self, files: &[PathBuf], timeout: Duration) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let mut apply: Vec<OsString> = vec![
            "apply".into(),
            "--server-side".into(),
            "--force-conflicts".into(),
        ];
        let mut wait: Vec<OsString> = vec![
            "wait".into(),
            "--for=condition=Established".into(),
            format!("--timeout={}s", timeout.as_secs().max(1)).into(),
        ];
        for file in files {
            apply.extend(["-f".into(), file.into()]);
            wait.extend(["-f".into(), file.into()]);
        }
        let kubectl = |args: &[OsString]| {
            kubectl_raw(
                &self.peers.kubectl(),
                &self.kubeconfig,
                &self.kubectl_cache,
                args,
                None,
            )
        };
        kubectl(&apply)?.ok().context("install CRDs")?;
        // kubectl wait gives up at once on an object whose status has no
        // conditions yet instead of waiting ("accessor error: <nil>"), which a
        // CRD read the instant after its creation can be: wait again then.
        let deadline = Instant::now() + timeout;
        loop {
            let out = kubectl(&wait)?;
            if out.success() {
                return Ok(());
            }
            if !out.stderr.contains(".status.conditions accessor error")
                || Instant::now() > deadline
            {
                out.ok().context("wait for the CRDs to be Established")?;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs kubectl with a kubeconfig and a private discovery cache.
fn kubectl_raw(
    kubectl: &Path,
    kubeconfig: &Path,
    cache_dir: &Path,
    args: &[OsString],
    stdin: Option<&str>,
) -> Result<CmdOutput> {
    let mut full: Vec<OsString> = vec![
        format!("--kubeconfig={}", kubeconfig.display()).into(),
        format!("--cache-dir={}", cache_dir.display()).into(),
    ];
    full.extend(args.iter().cloned());
    // No colours or pagers; a stable, wide terminal for column output.
    let env: Vec<(OsString, OsString)> = vec![
        ("NO_COLOR".into(), "1".into()),
        ("KUBECTL_INTERACTIVE_DELETE".into(), "false".into()),
    ];
    run_tied(
        kubectl,
        &full,
        &env,
        stdin.map(str::as_bytes),
        KUBECTL_TIMEOUT,
    )
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, cert: &CertFiles) -> Result<()> {
    write_kubeconfig_for(
        path,
        server,
        ca,
        serde_json::json!({
            "client-certificate": cert.cert_path,
            "client-key": cert.key_path,
        }),
    )
}

fn write_kubeconfig_for(
    path: &Path,
    server: &str,
    ca: &Path,
    user: serde_json::Value,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vmm-e2e", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "vmm-e2e", "context": {"cluster": "vmm-e2e", "user": "user"}}],
        "current-context": "vmm-e2e",
    });
    fs::write(path, serde_yaml::to_string(&config)?)
        .with_context(|| format!("write {}", path.display()))
}

fn start_etcd(peers: &Peers, dir: &Path, timeout: Duration) -> Result<(ManagedProcess, String)> {
    let log = dir.join("etcd.log");
    let mut last_error = None;
    for attempt in 0..PORT_ATTEMPTS {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data_dir = dir.join(format!("etcd-data-{attempt}"));
        let mut etcd = ProcessBuilder::new("etcd", peers.etcd())
            .env("TMPDIR", tmp_dir(dir)?)
            .args([
                "--name=e2e".to_string(),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--unsafe-no-fsync".to_string(),
                "--log-level=warn".to_string(),
            ])
            .log_file(&log)
            .spawn()?;
        let ready = etcd.wait_ready("/health", timeout, Duration::from_millis(50), || {
            etcd_healthy(client_port)
        });
        match ready {
            Ok(()) => return Ok((etcd, client_url)),
            Err(e) if log_says_address_in_use(&log) => {
                drop(etcd);
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow!("etcd did not start")))
}

/// `<run dir>/tmp`, the peers' TMPDIR: whatever they leave behind when killed
/// goes away with the run dir.
fn tmp_dir(dir: &Path) -> Result<PathBuf> {
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

/// GET /health over plain HTTP/1.0 (no client needed).
fn etcd_healthy(port: u16) -> Result<bool> {
    if !port_open(port) {
        return Ok(false);
    }
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if response.contains("\"health\":\"true\"") {
        Ok(true)
    } else {
        bail!(
            "etcd /health: {}",
            response.lines().last().unwrap_or_default()
        )
    }
}

/// What a kube-apiserver of a control plane is started with.
struct ApiserverLaunch<'a> {
    peers: &'a Peers,
    dir: &'a Path,
    pki: &'a ClusterPki,
    etcd_url: &'a str,
    kubeconfig: &'a Path,
    kubectl_cache: &'a Path,
    options: &'a ControlPlaneOptions,
}

impl ApiserverLaunch<'_> {
    /// Starts kube-apiserver on a free port (another when that one is
    /// taken meanwhile), with the admin kubeconfig pointing at it.
    fn start(&self) -> Result<(ManagedProcess, String)> {
        let log = self.dir.join("kube-apiserver.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let server_url = format!("https://{}:{port}", self.host());
            write_kubeconfig(
                self.kubeconfig,
                &server_url,
                self.pki.cluster_ca.cert_path(),
                &self.pki.admin,
            )?;
            match self.spawn(port) {
                Ok(apiserver) => return Ok((apiserver, server_url)),
                Err(e) if log_says_address_in_use(&log) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("kube-apiserver did not start")))
    }

    fn host(&self) -> Ipv4Addr {
        self.options.listen_ip.unwrap_or(Ipv4Addr::LOCALHOST)
    }

    /// Starts kube-apiserver on `port` and waits until it is ready.
    fn spawn(&self, port: u16) -> Result<ManagedProcess> {
        let Self {
            peers,
            dir,
            pki,
            etcd_url,
            kubeconfig,
            kubectl_cache,
            options,
        } = *self;
        let log = dir.join("kube-apiserver.log");
        let host = self.host();
        let server_url = format!("https://{host}:{port}");
        let p = |path: &Path| path.display().to_string();
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={host}"),
            format!("--secure-port={port}"),
            format!("--advertise-address={host}"),
            format!("--cert-dir={}", p(&dir.join("apiserver-certs"))),
            format!("--tls-cert-file={}", p(&pki.apiserver_serving.cert_path)),
            format!(
                "--tls-private-key-file={}",
                p(&pki.apiserver_serving.key_path)
            ),
            format!("--client-ca-file={}", p(pki.client_ca.cert_path())),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            format!("--service-account-issuer={server_url}"),
            format!(
                "--service-account-key-file={}",
                p(&pki.service_account.public_key_path)
            ),
            format!(
                "--service-account-signing-key-file={}",
                p(&pki.service_account.private_key_path)
            ),
            format!(
                "--requestheader-client-ca-file={}",
                p(pki.front_proxy_ca.cert_path())
            ),
            format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT_CN}"),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!(
                "--proxy-client-cert-file={}",
                p(&pki.front_proxy_client.cert_path)
            ),
            format!(
                "--proxy-client-key-file={}",
                p(&pki.front_proxy_client.key_path)
            ),
            "--profiling=false".into(),
        ];
        if options.listen_ip.is_some() {
            args.extend([
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                // For `kubectl logs` and `exec` through the kubelets.
                format!("--kubelet-client-certificate={}", p(&pki.admin.cert_path)),
                format!("--kubelet-client-key={}", p(&pki.admin.key_path)),
                // Node names resolve nowhere; every node has the bridge address.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]);
        } else {
            args.extend([
                "--authorization-mode=RBAC".into(),
                // No pods run: no tokens to mount.
                "--disable-admission-plugins=ServiceAccount".into(),
                // The endpoint reconciler would publish 127.0.0.1 for Service
                // default/kubernetes, which Endpoints validation rejects as loopback
                // (an error logged every few seconds); nothing here needs it.
                "--endpoint-reconciler-type=none".into(),
            ]);
        }
        args.extend(options.extra_apiserver_args.iter().cloned());
        let mut apiserver = ProcessBuilder::new("kube-apiserver", peers.kube_apiserver())
            .args(args)
            .env("TMPDIR", tmp_dir(dir)?)
            .log_file(&log)
            .grace(Duration::from_secs(10))
            .spawn()?;
        let kubectl = peers.kubectl();
        let ready = apiserver.wait_ready(
            "/readyz",
            options.ready_timeout,
            Duration::from_millis(250),
            || {
                if !address_open((host, port).into()) {
                    return Ok(false);
                }
                let out = kubectl_raw(
                    &kubectl,
                    kubeconfig,
                    kubectl_cache,
                    &["get".into(), "--raw=/readyz".into()],
                    None,
                )?;
                if out.success() {
                    Ok(true)
                } else {
                    bail!("{}", out.stderr.trim())
                }
            },
        );
        ready.map(|()| apiserver)
    }
}
