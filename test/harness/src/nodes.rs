//! Real Kubernetes nodes beside a control plane of their own: per node a
//! containerd and a kubelet 1.36, all nodes' pods on one CNI bridge, one
//! kube-proxy (the nodes share this machine's network namespace), the
//! scheduler and kube-controller-manager. Images come from this machine's
//! files ([`image`]), never a registry. Dropping the cluster stops it and
//! puts the host back as it was ([`host`]); `docs/peers.md` says what runs
//! and why.
//!
//! The nodes share one kernel and node IP: placement across them is real,
//! traffic between hosts is not. Needs root with `NET_ADMIN` and `SYS_ADMIN`,
//! iptables and writable cgroups.

pub mod host;
pub mod image;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::control_plane::{ControlPlane, ControlPlaneOptions};
use crate::process::{ManagedProcess, ProcessBuilder, free_port, run_dir};
use host::{HostLock, HostState};
use image::{BUSYBOX_IMAGE, OciImage, PAUSE_IMAGE};

/// The bridge's address: the nodes' IP, kube-apiserver's listen address and
/// the pods' gateway.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const POD_SUBNET: &str = "10.244.0.0/24";
/// Pods of one node get 100 addresses of the shared subnet.
const PODS_PER_NODE: usize = 100;
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One node: its containerd and kubelet.
struct Node {
    name: String,
    kubelet: ManagedProcess,
    containerd: ManagedProcess,
    socket: PathBuf,
}

/// A control plane with `n` Ready nodes. Stopped when dropped, leaving the
/// host as it was.
pub struct NodeCluster {
    // Field order is drop order after `Drop::drop` ran.
    nodes: Vec<Node>,
    kube_proxy: Option<ManagedProcess>,
    scheduler: Option<ManagedProcess>,
    controller_manager: Option<ManagedProcess>,
    control_plane: Option<ControlPlane>,
    baseline: HostState,
    dir: PathBuf,
    _lock: HostLock,
}

impl NodeCluster {
    /// Starts a control plane listening on the bridge and `nodes` nodes, and
    /// waits until every node is Ready (blocking). Waits for another node
    /// cluster of this machine to stop first.
    pub fn start(nodes: usize) -> Result<NodeCluster> {
        check_prerequisites()?;
        let t0 = Instant::now();
        let lock = HostLock::acquire()?;
        let leftovers = host::remove_leftovers()?;
        if !leftovers.is_empty() {
            eprintln!(
                "vmm-testkit: removed what a killed node cluster left: {}",
                leftovers.join("; ")
            );
        }
        let baseline = HostState::capture()?;
        let dir = run_dir()?;
        let mut cluster = NodeCluster {
            nodes: Vec::new(),
            kube_proxy: None,
            scheduler: None,
            controller_manager: None,
            control_plane: None,
            baseline,
            dir,
            _lock: lock,
        };
        // From here on a failure drops the cluster, which restores the host.
        host::create_bridge(&format!("{NODE_IP}/24"))?;
        let cp = ControlPlane::start_with(ControlPlaneOptions {
            listen_ip: Some(NODE_IP),
            ..ControlPlaneOptions::default()
        })?;
        let images = [
            OciImage::busybox(&cluster.dir, PAUSE_IMAGE, &["/bin/sleep", "2147483647"])?,
            OciImage::busybox(&cluster.dir, BUSYBOX_IMAGE, &["/bin/sh"])?,
        ];
        for n in 0..nodes {
            let node = NodeLaunch {
                cp: &cp,
                dir: &cluster.dir.join(format!("node-{n}")),
                n,
            }
            .start(&images)?;
            cluster.nodes.push(node);
        }
        cluster.kube_proxy = Some(start_kube_proxy(&cp, &cluster.dir)?);
        cluster.scheduler = Some(start_scheduler(&cp, &cluster.dir)?);
        cluster.controller_manager = Some(cp.start_controller_manager(&["*"])?);
        cluster.control_plane = Some(cp);
        cluster.wait_ready(nodes)?;
        eprintln!(
            "vmm-testkit: {nodes} nodes Ready in {:.1}s; files in {}",
            t0.elapsed().as_secs_f64(),
            cluster.dir.display()
        );
        Ok(cluster)
    }

    pub fn control_plane(&self) -> &ControlPlane {
        self.control_plane
            .as_ref()
            .expect("a started cluster has a control plane")
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Imports `image` into every node's containerd.
    pub fn load_image(&self, image: &OciImage) -> Result<()> {
        for node in &self.nodes {
            image
                .import(&node.socket)
                .with_context(|| format!("load {} on {}", image.name, node.name))?;
        }
        Ok(())
    }

    /// Kills container `id` (a pod's `containerID` without its
    /// `containerd://`) on node `node` with SIGKILL, as a crash or the OOM
    /// killer would: no grace, no cleanup in the process.
    pub fn kill_container(&self, node: &str, id: &str) -> Result<()> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == node)
            .with_context(|| format!("no node {node}"))?;
        let out = image::ctr(&node.socket)
            .args(["tasks", "kill", "--signal", "SIGKILL", id])
            .output()
            .context("run ctr")?;
        if !out.status.success() {
            anyhow::bail!(
                "ctr tasks kill {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The host as it was before the cluster started, to compare with after.
    pub fn host_before(&self) -> &HostState {
        &self.baseline
    }

    fn wait_ready(&self, count: usize) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.control_plane().kubectl(["get", "nodes", "-o", "json"]);
            let ready = out
                .ok()
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
                .map_or(0, |list| count_ready(&list));
            if ready == count {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("{}:\n{}", n.name, n.kubelet.log_tail(30)))
                    .collect();
                bail!(
                    "{ready} of {count} nodes Ready after {READY_TIMEOUT:?}; kubelet logs:\n{}",
                    logs.join("\n")
                );
            }
            if let Some(node) = self
                .nodes
                .iter()
                .find(|n| !crate::process::pid_alive(n.kubelet.pid()))
            {
                bail!(
                    "{}'s kubelet exited:\n{}",
                    node.name,
                    node.kubelet.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops every pod first, so the kubelets tear down their sandboxes
    /// (network, mounts, cgroups) while they still run.
    fn drain(&mut self) {
        self.controller_manager = None;
        self.scheduler = None;
        let Some(cp) = &self.control_plane else {
            return;
        };
        let _ = cp.kubectl([
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && self.nodes.iter().any(|n| running_tasks(&n.socket) > 0) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        self.drain();
        for node in &mut self.nodes {
            let _ = node.kubelet.stop();
            let _ = node.containerd.stop();
        }
        self.nodes.clear();
        self.kube_proxy = None;
        if let Some(cp) = &self.control_plane {
            // kube-proxy's own rules out, as its documentation says to.
            let _ = std::process::Command::new(cp.peers().kube_proxy())
                .arg("--cleanup")
                .output();
        }
        self.control_plane = None;
        match self.baseline.restore() {
            Ok(done) if done.is_empty() => {}
            Ok(done) => eprintln!(
                "vmm-testkit: node teardown then had {} things to undo: {}",
                done.len(),
                summary(&done)
            ),
            Err(e) => eprintln!("vmm-testkit: restoring the host after nodes failed: {e:#}"),
        }
    }
}

/// "unmounted 2, removed cgroup 78, …": what `HostState::restore` did, by kind.
fn summary(done: &[String]) -> String {
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for line in done {
        let kind = line
            .rsplit_once(' ')
            .map_or(line.as_str(), |(kind, _)| kind);
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("{kind} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_ready(list: &serde_json::Value) -> usize {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|node| {
            node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count()
}

fn running_tasks(socket: &Path) -> usize {
    image::ctr(socket)
        .args(["tasks", "list", "--quiet"])
        .output()
        .map_or(0, |out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
}

fn check_prerequisites() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("real nodes need root (kubelet, containerd, iptables, cgroups)");
    }
    for command in ["containerd", "ctr", "runc", "iptables", "ip", "tar"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|p| p.join(command).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("{command} is missing: run hack/install-deps.sh");
        }
    }
    Ok(())
}

/// What one node is started with.
struct NodeLaunch<'a> {
    cp: &'a ControlPlane,
    dir: &'a Path,
    n: usize,
}

impl NodeLaunch<'_> {
    fn start(&self, images: &[OciImage]) -> Result<Node> {
        let name = format!("node-{}", self.n);
        fs::create_dir_all(self.dir)?;
        let socket = self.dir.join("containerd.sock");
        let containerd = self.start_containerd(&socket)?;
        for image in images {
            image
                .import(&socket)
                .with_context(|| format!("load {} on {name}", image.name))?;
        }
        host::create_cgroup_root(self.n)?;
        let kubelet = self.start_kubelet(&name, &socket)?;
        Ok(Node {
            name,
            kubelet,
            containerd,
            socket,
        })
    }

    fn start_containerd(&self, socket: &Path) -> Result<ManagedProcess> {
        let peers = self.cp.peers();
        let cni_conf = self.dir.join("cni");
        fs::create_dir_all(&cni_conf)?;
        let first = 10 + self.n * PODS_PER_NODE;
        let cni = json!({
            "cniVersion": "1.0.0",
            "name": "vmm-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": host::BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.dir.join("ipam"),
                        "ranges": [[{
                            "subnet": POD_SUBNET,
                            "rangeStart": format!("10.244.0.{first}"),
                            "rangeEnd": format!("10.244.0.{}", first + PODS_PER_NODE - 1),
                            "gateway": NODE_IP.to_string(),
                        }]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        fs::write(
            cni_conf.join("10-vmm-e2e.conflist"),
            serde_json::to_vec_pretty(&cni)?,
        )?;
        let p = |path: &Path| path.display().to_string();
        // restrict_oom_score_adj: without CAP_SYS_RESOURCE (this VM) runc cannot
        // lower oom_score_adj and every sandbox failed to start.
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
            root = p(&self.dir.join("containerd/root")),
            state = p(&self.dir.join("containerd/state")),
            socket = p(socket),
            opt = p(&self.dir.join("containerd/opt")),
            cni_bin = p(&peers.cni_bin_dir()),
            cni_conf = p(&cni_conf),
        );
        let config_path = self.dir.join("containerd.toml");
        fs::write(&config_path, config)?;
        let mut containerd = ProcessBuilder::new(format!("containerd-{}", self.n), "containerd")
            .arg("--config")
            .arg(&config_path)
            .log_file(self.dir.join("containerd.log"))
            .grace(Duration::from_secs(10))
            .spawn()?;
        containerd.wait_ready(
            "its socket",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || Ok(image::ctr(socket).arg("version").output()?.status.success()),
        )?;
        Ok(containerd)
    }

    fn start_kubelet(&self, name: &str, socket: &Path) -> Result<ManagedProcess> {
        let cp = self.cp;
        let pki = cp.pki();
        let serving = pki.cluster_ca.issue_server(
            &format!("kubelet-{}", self.n),
            name,
            &[&NODE_IP.to_string(), name],
        )?;
        let kubeconfig = cp.kubeconfig_for(&format!("system:node:{name}"), &["system:nodes"])?;
        let port = free_port()?;
        let healthz = free_port()?;
        let config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP.to_string(),
            "port": port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true},
                "x509": {"clientCAFile": pki.client_ca.cert_path()},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": serving.cert_path,
            "tlsPrivateKeyFile": serving.key_path,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{}{}", host::CGROUP_PREFIX, self.n),
            // This machine has cgroup v1 hierarchies.
            "failCgroupV1": false,
            "failSwapOn": false,
            "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
            "podLogsDir": self.dir.join("pod-logs"),
            "resolvConf": "",
            "makeIPTablesUtilChains": false,
            // Never garbage-collect the images we load (there is no registry to pull from).
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            // The disk of a build machine is often fuller than the default 10 %.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "enforceNodeAllocatable": [],
            "serializeImagePulls": false,
        });
        let config_path = self.dir.join("kubelet.yaml");
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let p = |path: &Path| path.display().to_string();
        ProcessBuilder::new(format!("kubelet-{}", self.n), cp.peers().kubelet())
            .args([
                format!("--config={}", p(&config_path)),
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--root-dir={}", p(&self.dir.join("kubelet"))),
                format!("--hostname-override={name}"),
                format!("--node-ip={NODE_IP}"),
            ])
            .log_file(self.dir.join("kubelet.log"))
            .grace(Duration::from_secs(10))
            .spawn()
    }
}

fn start_kube_proxy(cp: &ControlPlane, dir: &Path) -> Result<ManagedProcess> {
    let config = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": cp.kubeconfig_path()},
        "hostnameOverride": "node-0",
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "nodePortAddresses": [format!("{NODE_IP}/32")],
        // Without br_netfilter, a reply between two pods on the bridge would
        // skip conntrack: masquerading every Service connection routes it back.
        "iptables": {"localhostNodePorts": false, "masqueradeAll": true},
        "conntrack": {"maxPerCore": 0},
        "metricsBindAddress": format!("127.0.0.1:{}", free_port()?),
        "healthzBindAddress": format!("127.0.0.1:{}", free_port()?),
    });
    let path = dir.join("kube-proxy.yaml");
    fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    ProcessBuilder::new("kube-proxy", cp.peers().kube_proxy())
        .arg(format!("--config={}", path.display()))
        .log_file(dir.join("kube-proxy.log"))
        .spawn()
}

fn start_scheduler(cp: &ControlPlane, dir: &Path) -> Result<ManagedProcess> {
    ProcessBuilder::new("kube-scheduler", cp.peers().kube_scheduler())
        .args([
            format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
        ])
        .log_file(dir.join("kube-scheduler.log"))
        .spawn()
}
