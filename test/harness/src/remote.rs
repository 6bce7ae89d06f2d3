//! A remote Harvester cluster as the Harvester-source suites use it: a
//! second kube-apiserver + etcd with KubeVirt's CRDs, a namespace of VMs
//! ([`REMOTE_NS`]) and ServiceAccounts whose tokens the sources use:
//!
//! - `reader` may get, list and watch VMs, claims and NADs everywhere
//!   (browsing);
//! - `migrator` may also do what an import does: patch VMs, delete their
//!   instances, and make and delete VirtualMachineExports and their token
//!   Secrets (the role docs/harvester-source.md gives);
//! - `nobody` may do nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harvester::{ImageController, Options};
use crate::kubevirt::{self, KubeVirt};
use crate::process::CmdOutput;
use crate::sources::{secret, source};
use crate::vcsim::sha256_bytes;
use crate::{ControlPlane, ControlPlaneOptions, TestNamespace, import};

/// The remote cluster's namespace where the VMs live.
pub const REMOTE_NS: &str = "vms";

/// A remote cluster and its CA (for a source's `caBundle`).
pub struct RemoteCluster {
    pub cp: ControlPlane,
    pub ca: String,
}

impl RemoteCluster {
    pub fn start(options: ControlPlaneOptions) -> RemoteCluster {
        let cp = ControlPlane::start_with(options).unwrap();
        let ca = std::fs::read_to_string(cp.pki().cluster_ca.cert_path()).unwrap();
        let read = |group: &str, resource: &str| json!({"apiGroups": [group], "resources": [resource], "verbs": ["get", "list", "watch"]});
        let reading = vec![
            read("kubevirt.io", "virtualmachines"),
            read("", "persistentvolumeclaims"),
            read("k8s.cni.cncf.io", "network-attachment-definitions"),
        ];
        let mut migrating = reading.clone();
        migrating.extend([
            json!({"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"], "verbs": ["patch"]}),
            json!({"apiGroups": ["kubevirt.io"], "resources": ["virtualmachineinstances"],
                   "verbs": ["get", "list", "watch", "delete"]}),
            json!({"apiGroups": ["export.kubevirt.io"], "resources": ["virtualmachineexports"],
                   "verbs": ["get", "list", "watch", "create", "delete"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "delete"]}),
        ]);
        let mut items =
            vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": REMOTE_NS}})];
        for account in ["reader", "migrator", "nobody"] {
            items.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": REMOTE_NS}}));
        }
        for (role, rules, account) in [
            ("vm-reader", reading, "reader"),
            ("vm-migrator", migrating, "migrator"),
        ] {
            items.push(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": role}, "rules": rules}),
            );
            items.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": REMOTE_NS}]}));
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        cp.apply_yaml(REMOTE_NS, &list.to_string()).expect_success();
        RemoteCluster { cp, ca }
    }

    /// A token of the ServiceAccount `name` in [`REMOTE_NS`].
    pub fn token(&self, name: &str) -> String {
        self.cp
            .kubectl(["create", "token", name, "-n", REMOTE_NS, "--duration=2h"])
            .expect_success()
            .trim()
            .to_owned()
    }

    pub fn apply(&self, object: &Value) {
        self.cp
            .apply_yaml(REMOTE_NS, &object.to_string())
            .expect_success();
    }

    /// Sets the VM's `status.printableStatus`, as KubeVirt's controller
    /// does when it starts or stops.
    pub fn set_printable_status(&self, vm: &str, status: &str) {
        let patch = json!({"status": {"printableStatus": status}}).to_string();
        self.kubectl([
            "patch",
            &format!("virtualmachines.kubevirt.io/{vm}"),
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .expect_success();
    }

    /// kubectl in [`REMOTE_NS`].
    pub fn kubectl<const N: usize>(&self, args: [&str; N]) -> CmdOutput {
        let mut all = vec!["-n", REMOTE_NS];
        all.extend(args);
        self.cp.kubectl(all)
    }

    /// `resource/name` in [`REMOTE_NS`] as JSON, `None` when it does not
    /// exist.
    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(["get", resource, name, "-o", "json", "--ignore-not-found"]);
        let text = out.expect_success();
        (!text.trim().is_empty()).then(|| serde_json::from_str(text).unwrap())
    }

    /// The names of `resource` in [`REMOTE_NS`].
    pub fn names(&self, resource: &str) -> Vec<String> {
        let out = self.kubectl(["get", resource, "-o", "name"]);
        out.expect_success()
            .lines()
            .map(|line| line.rsplit('/').next().unwrap_or(line).to_owned())
            .collect()
    }

    /// Waits until `resource` in [`REMOTE_NS`] has no object whose name
    /// `counts`; the names still there after `timeout`.
    pub fn wait_none(
        &self,
        resource: &str,
        timeout: Duration,
        counts: impl Fn(&str) -> bool,
    ) -> Result<(), Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left: Vec<String> = self
                .names(resource)
                .into_iter()
                .filter(|n| counts(n))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(left);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A world to import from a remote cluster: the cluster with the stand-in
/// for KubeVirt's stop and export ([`KubeVirt`]), and a local namespace with
/// the stand-in for Harvester's image controller, the NADs `vlan-a` (VLAN
/// 100) and `vlan-b` (200), and the `Harvester` source `remote` with the
/// `migrator` token. The controller is the test's to start.
pub struct ImportWorld<'a> {
    pub remote: RemoteCluster,
    pub kubevirt: KubeVirt,
    pub ns: TestNamespace<'a>,
    pub harvester: ImageController,
}

/// A volume of a remote VM: its claim and the SHA-256 of its bytes.
pub struct RemoteVolume {
    pub claim: String,
    pub sha256: String,
}

impl ImportWorld<'_> {
    /// The world, with the image controller stand-in's `options` and the
    /// KubeVirt stand-in's `stand_in` (their namespaces are set here).
    pub async fn new(prefix: &str, options: Options, stand_in: kubevirt::Options) -> Self {
        let cp = ControlPlane::shared();
        let remote = RemoteCluster::start(ControlPlaneOptions::default());
        let kubevirt = KubeVirt::start(
            remote.cp.client(),
            &remote.cp.dir().join("kubevirt-volumes"),
            kubevirt::Options {
                namespace: Some(REMOTE_NS.to_owned()),
                ..stand_in
            },
        )
        .unwrap();
        let ns = TestNamespace::new(cp, prefix).unwrap();
        let harvester = import::image_controller(&ns, options);
        for vlan in [("vlan-a", 100), ("vlan-b", 200)] {
            remote.apply(
                &json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": vlan.0, "namespace": REMOTE_NS},
                "spec": {"config": json!({"cniVersion": "0.3.1", "name": vlan.0, "type": "bridge",
                                          "bridge": "mgmt-br", "vlan": vlan.1}).to_string()}}),
            );
        }
        ns.apply_all(&[
            secret("migrator", json!({"token": remote.token("migrator")})),
            source(
                "Harvester",
                "remote",
                remote.cp.server_url(),
                "migrator",
                json!({"caBundle": remote.ca}),
            ),
            import::nad(ns.name(), "vlan-a", 100),
            import::nad(ns.name(), "vlan-b", 200),
        ]);
        Self {
            remote,
            kubevirt,
            ns,
            harvester,
        }
    }

    /// A running VM `name` as Harvester makes one: EFI without Secure Boot
    /// and a firmware UUID, 1 socket × 2 cores × 2 threads, 1 GiB; a boot
    /// volume (virtio, `mib` MiB, served raw and gzip) and a data volume
    /// (SCSI, half the size, served gzip only), plus a cloud-init disk; NICs
    /// on `vlan-a` (e1000) and `vlan-b` (virtio) with fixed MACs. Its
    /// volumes, the boot volume first.
    pub async fn running_vm(&self, name: &str, mib: usize) -> Vec<RemoteVolume> {
        let mut volumes = Vec::new();
        for (suffix, size, formats) in [("root", mib, None), ("data", mib / 2, Some("gzip"))] {
            let claim = format!("{name}-{suffix}");
            let bytes = volume_bytes(&claim, size << 20);
            self.kubevirt
                .write_volume(REMOTE_NS, &claim, &bytes)
                .unwrap();
            let mut object = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": REMOTE_NS},
                "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
                         "storageClassName": "longhorn-image-x",
                         "resources": {"requests": {"storage": format!("{size}Mi")}}}});
            if let Some(formats) = formats {
                object["metadata"]["annotations"] = json!({kubevirt::FORMATS_ANNOTATION: formats});
            }
            self.remote.apply(&object);
            volumes.push(RemoteVolume {
                sha256: sha256_bytes(&bytes),
                claim,
            });
        }
        self.remote.apply(&remote_vm(name));
        self.kubevirt.run_vm(REMOTE_NS, name).await.unwrap();
        volumes
    }

    /// The import job `name` for the remote VM `vm` of the source
    /// `source`, each remote VLAN mapped to the local one of the same name.
    pub fn create_job(&self, name: &str, vm: &str, source: &str) {
        self.ns.apply_all(&[json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {
                "sourceCluster": {"kind": "Harvester", "name": source},
                "vmName": vm,
                "path": REMOTE_NS,
                "mapping": [
                    {"sourceNetwork": format!("{REMOTE_NS}/vlan-a"), "destinationNetwork": "vlan-a"},
                    {"sourceNetwork": format!("{REMOTE_NS}/vlan-b"), "destinationNetwork": "vlan-b"}],
            },
        })]);
    }

    /// Waits until the remote namespace holds no VirtualMachineExport and no
    /// export token Secret; what is left after `timeout`.
    pub fn wait_no_exports(&self, timeout: Duration) -> Result<(), Vec<String>> {
        self.remote
            .wait_none("virtualmachineexports.export.kubevirt.io", timeout, |_| {
                true
            })?;
        self.remote
            .wait_none("secrets", timeout, |name| name.ends_with("-token"))
    }
}

/// Bytes that differ per claim and per block (a disk of one repeated block
/// would hide misplaced blocks).
fn volume_bytes(claim: &str, len: usize) -> Vec<u8> {
    let seed = claim
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    (0..len)
        .map(|i| {
            let block = u32::try_from(i / 4096).unwrap_or(u32::MAX);
            (seed ^ block.wrapping_mul(2_654_435_761) ^ u32::try_from(i % 251).unwrap_or(0)) as u8
        })
        .collect()
}

/// The remote VM [`ImportWorld::running_vm`] describes; its MACs differ
/// per name (an import refuses a MAC already in use).
fn remote_vm(name: &str) -> Value {
    let tag = name
        .bytes()
        .fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
    let mac = |nic: u8| format!("52:54:00:ab:{tag:02x}:{nic:02x}");
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": REMOTE_NS, "labels": {"app": name}},
        "spec": {"runStrategy": "RerunOnFailure", "template": {"spec": {
            "domain": {
                "cpu": {"sockets": 1, "cores": 2, "threads": 2},
                "memory": {"guest": "1Gi"},
                "firmware": {"uuid": "6a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                             "bootloader": {"efi": {"secureBoot": false}}},
                "devices": {
                    "disks": [
                        {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
                        {"name": "data", "disk": {"bus": "scsi"}},
                        {"name": "cloudinit", "disk": {"bus": "virtio"}}],
                    "interfaces": [
                        {"name": "lan", "bridge": {}, "model": "e1000", "macAddress": mac(1)},
                        {"name": "dmz", "bridge": {}, "model": "virtio", "macAddress": mac(2)}]}},
            "networks": [
                {"name": "lan", "multus": {"networkName": "vlan-a"}},
                {"name": "dmz", "multus": {"networkName": "vlan-b"}}],
            "volumes": [
                {"name": "root", "persistentVolumeClaim": {"claimName": format!("{name}-root")}},
                {"name": "data", "persistentVolumeClaim": {"claimName": format!("{name}-data")}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]}}}})
}
