//! The admission a VirtualMachine meets on a default Harvester: KubeVirt's
//! `virt-api` (its VM mutating and validating webhooks, the real binary) and
//! Harvester's VM webhook (its own mutator and validator packages behind a
//! small server, `test/peers/admission/harvester`), both built from the pinned
//! modules by `hack/build-peers.sh` and registered with the configurations
//! their operators write, `failurePolicy: Fail` included (docs/peers.md).
//!
//! [`ControlPlane::admission`] starts them once per control plane, with what
//! a default Harvester install has: every KubeVirt CRD, the CRDs Harvester's
//! webhook informs on, the KubeVirt CR with Harvester's chart values, and
//! Harvester's default Settings. Until then a control plane admits VMs by
//! their CRD schema alone.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;
use crate::peers::yaml_files;
use crate::process::{CmdOutput, ManagedProcess, ProcessBuilder, free_port, port_open, run_tied};

/// Where virt-api looks for its KubeVirt CR: the namespace of its service
/// account, or `kubevirt` outside a pod (client-go's `util.GetNamespace`).
const VIRT_API_NAMESPACE: &str = "kubevirt";
/// Where Harvester installs KubeVirt and looks for the KubeVirt CR.
const HARVESTER_NAMESPACE: &str = "harvester-system";
/// How long a webhook server may take to listen, and its configuration to
/// reach kube-apiserver.
const READY: Duration = Duration::from_secs(60);

/// The two webhook servers of one control plane.
pub struct Admission {
    virt_api: Mutex<ManagedProcess>,
    harvester: Mutex<ManagedProcess>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").finish_non_exhaustive()
    }
}

impl Admission {
    /// Installs what both need, starts them and registers their webhooks;
    /// returns once a VM both must refuse is refused by each.
    pub(crate) fn start(cp: &ControlPlane) -> Result<Admission> {
        let started = Instant::now();
        let peers = cp.peers();
        let dir = peers.dir().join("admission");
        cp.install_crds(&yaml_files(&dir.join("crds"))?, READY)
            .context("admission CRDs")?;
        install_defaults(cp, &dir.join("harvester-defaults.yaml"))?;

        let serving =
            cp.pki()
                .cluster_ca
                .issue_server("admission", "admission webhooks", &["127.0.0.1"])?;
        let ca = cp.pki().cluster_ca.cert_path();
        let kubeconfig = cp.kubeconfig_path();

        let port = free_port()?;
        let virt_api = ProcessBuilder::new("virt-api", peers.bin("virt-api"))
            .args(["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
            .args(["--listen", "127.0.0.1", "--port", &port.to_string()])
            .args(["--tls-cert-file".as_ref(), serving.cert_path.as_os_str()])
            .args(["--tls-key-file".as_ref(), serving.key_path.as_os_str()])
            // virt-api needs a client certificate for virt-handler, which no
            // VM admission calls: the serving pair stands in.
            .args([
                "--handler-cert-file".as_ref(),
                serving.cert_path.as_os_str(),
            ])
            .args(["--handler-key-file".as_ref(), serving.key_path.as_os_str()])
            // Its temporary certificate directory, which a killed virt-api
            // leaves behind, stays with the control plane, not in /tmp.
            .env("TMPDIR", cp.dir())
            .log_file(cp.dir().join("virt-api.log"))
            .spawn()?;
        let virt_api = listening(virt_api, port)?;
        let url = format!("https://127.0.0.1:{port}");
        register(
            cp,
            &peers.bin("kubevirt-gen"),
            &["webhooks".as_ref(), url.as_ref(), ca.as_os_str()],
        )
        .context("register virt-api's webhooks")?;

        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let harvester = ProcessBuilder::new("harvester-webhook", peers.bin("harvester-webhook"))
            .arg("serve")
            .args(["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
            .args(["--listen", &listen])
            .args(["--tls-cert-file".as_ref(), serving.cert_path.as_os_str()])
            .args([
                "--tls-private-key-file".as_ref(),
                serving.key_path.as_os_str(),
            ])
            .log_file(cp.dir().join("harvester-webhook.log"))
            .spawn()?;
        let harvester = listening(harvester, port)?;
        let url = format!("https://{listen}");
        register(
            cp,
            &peers.bin("harvester-webhook"),
            &[
                "webhooks".as_ref(),
                "--url".as_ref(),
                url.as_ref(),
                "--ca-file".as_ref(),
                ca.as_os_str(),
            ],
        )
        .context("register Harvester's webhooks")?;

        let admission = Admission {
            virt_api: Mutex::new(virt_api),
            harvester: Mutex::new(harvester),
        };
        admission.wait_in_path(cp)?;
        eprintln!(
            "vmm-testkit: virt-api and Harvester's VM webhook admit VMs ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
        Ok(admission)
    }

    /// Until kube-apiserver calls both: a VM with two disks of one name is
    /// refused by KubeVirt's validator, one with two sockets by the pair
    /// (Harvester's mutator caps sockets, KubeVirt refuses more).
    fn wait_in_path(&self, cp: &ControlPlane) -> Result<()> {
        let deadline = Instant::now() + READY;
        let cases = [
            (probe_vm(1, true), "must not have the same Name"),
            (
                probe_vm(2, false),
                "greater than the maximum sockets allowed",
            ),
        ];
        for (vm, refusal) in &cases {
            self.dry_run_until(cp, vm, deadline, |out| {
                if out.stderr.contains(refusal) {
                    Ok(true)
                } else if Instant::now() > deadline {
                    bail!(
                        "admission not in the path after {READY:?}: a VM to be refused with {refusal:?} got {:?}",
                        out.stderr
                    )
                } else {
                    Ok(false)
                }
            })?;
        }
        Ok(())
    }

    /// Creates `vm` with a server-side dry run until `done` says so (or
    /// fails), while both servers run.
    fn dry_run_until(
        &self,
        cp: &ControlPlane,
        vm: &Value,
        deadline: Instant,
        done: impl Fn(&CmdOutput) -> Result<bool>,
    ) -> Result<()> {
        let manifest = vm.to_string();
        loop {
            self.check_running()?;
            let out = cp.kubectl_with_stdin(["create", "--dry-run=server", "-f", "-"], &manifest);
            if done(&out)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("admission's answer did not change in time: {}", out.stderr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Applies a NetworkAttachmentDefinition and returns once Harvester's
    /// mutator, which looks a VM's networks up in its informer's cache, has
    /// learnt of it (a VM naming it a moment earlier is refused as "not found").
    pub fn add_network(&self, cp: &ControlPlane, nad: &Value) -> Result<()> {
        cp.kubectl_with_stdin(["apply", "-f", "-"], &nad.to_string())
            .ok()
            .context("apply the NetworkAttachmentDefinition")?;
        let network = format!(
            "{}/{}",
            nad["metadata"]["namespace"].as_str().unwrap_or("default"),
            nad["metadata"]["name"].as_str().unwrap_or_default()
        );
        let mut vm = probe_vm(1, false);
        let spec = &mut vm["spec"]["template"]["spec"];
        spec["domain"]["devices"]["interfaces"] = json!([{"name": "nic", "bridge": {}}]);
        spec["networks"] = json!([{"name": "nic", "multus": {"networkName": network}}]);
        self.dry_run_until(cp, &vm, Instant::now() + READY, |out| {
            if out.success() {
                Ok(true)
            } else if out.stderr.contains("not found") {
                Ok(false)
            } else {
                bail!("a VM on {network} is not admitted: {}", out.stderr)
            }
        })
    }

    /// Ok while both servers run; else the exit and the log's tail.
    pub fn check_running(&self) -> Result<()> {
        for server in [&self.virt_api, &self.harvester] {
            server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check_running()?;
        }
        Ok(())
    }
}

/// Applies the webhook configurations `program args` prints.
fn register(cp: &ControlPlane, program: &Path, args: &[&OsStr]) -> Result<()> {
    let args: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
    let generated = run_tied(program, &args, &[], None, Duration::from_secs(30))?;
    cp.kubectl_with_stdin(["apply", "-f", "-"], generated.ok()?)
        .ok()?;
    Ok(())
}

/// Waits until `server` accepts connections on `port`.
fn listening(mut server: ManagedProcess, port: u16) -> Result<ManagedProcess> {
    server.wait_ready("listening", READY, Duration::from_millis(50), || {
        Ok(port_open(port))
    })?;
    Ok(server)
}

/// Namespaces, the KubeVirt CR (in Harvester's namespace and in virt-api's,
/// both `Deployed`: KubeVirt reads its configuration only from a deployed
/// CR) and Harvester's Settings, from the peers' file.
fn install_defaults(cp: &ControlPlane, defaults: &Path) -> Result<()> {
    for namespace in [VIRT_API_NAMESPACE, HARVESTER_NAMESPACE] {
        cp.kubectl_with_stdin(
            ["apply", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                .to_string(),
        )
        .ok()?;
    }
    let text = std::fs::read_to_string(defaults)
        .with_context(|| format!("read {}", defaults.display()))?;
    cp.kubectl_with_stdin(["apply", "-f", "-"], &text)
        .ok()
        .context("Harvester's default objects")?;
    let kubevirt = cp
        .kubectl([
            "get",
            "kubevirt",
            "kubevirt",
            "-n",
            HARVESTER_NAMESPACE,
            "-o",
            "json",
        ])
        .ok()
        .context("the KubeVirt CR")?
        .to_owned();
    let mut kubevirt: Value = serde_json::from_str(&kubevirt)?;
    kubevirt["metadata"] = json!({"name": "kubevirt", "namespace": VIRT_API_NAMESPACE});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &kubevirt.to_string())
        .ok()
        .context("the KubeVirt CR for virt-api")?;
    for namespace in [VIRT_API_NAMESPACE, HARVESTER_NAMESPACE] {
        cp.kubectl([
            "patch",
            "kubevirt",
            "kubevirt",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Deployed"}}"#,
        ])
        .ok()
        .context("the KubeVirt CR's phase")?;
    }
    Ok(())
}

/// A VM in `default` that admission must refuse: `sockets` sockets, and
/// with `same_disk_names` two disks named alike.
fn probe_vm(sockets: u32, same_disk_names: bool) -> Value {
    let second = if same_disk_names { "disk" } else { "disk-1" };
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "admission-probe", "namespace": "default"},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {
                "domain": {
                    "cpu": {"sockets": sockets, "cores": 1, "threads": 1},
                    "memory": {"guest": "1Gi"},
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "devices": {"disks": [
                        {"name": "disk", "disk": {"bus": "virtio"}},
                        {"name": second, "disk": {"bus": "virtio"}}
                    ]}
                },
                "volumes": [
                    {"name": "disk", "containerDisk": {"image": "probe"}},
                    {"name": second, "containerDisk": {"image": "probe"}}
                ]
            }}
        }
    })
}
