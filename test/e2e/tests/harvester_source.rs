//! Harvester sources against a second kube-apiserver + etcd playing the
//! remote cluster, with KubeVirt's own CRDs (VirtualMachine,
//! VirtualMachineInstance, VirtualMachineExport) and the NAD CRD: each way
//! a source can be unusable is its own `Ready=False` reason naming the fix;
//! a usable one is browsed with kubectl, and changes at the remote cluster
//! (a stop, a CPU change, a label, a deletion) reach `kubectl get ivm -w`
//! through its watches, also across a restart of the remote API server.

use std::time::Duration;

use serde_json::{Value, json};
use vmm_testkit::import;
use vmm_testkit::remote::{REMOTE_NS, RemoteCluster};
use vmm_testkit::servers::{shared_controller, shared_inventory_api};
use vmm_testkit::sources::{KubectlWatch, pluck, ready_condition, secret, source};
use vmm_testkit::{ControlPlane, ControlPlaneOptions, TestNamespace};

const WAIT: Duration = Duration::from_secs(120);
const GIB: u64 = 1 << 30;

fn harvester(name: &str, endpoint: &str, secret: &str, ca: Option<&str>) -> Value {
    source(
        "Harvester",
        name,
        endpoint,
        secret,
        ca.map_or(json!({}), |ca| json!({"caBundle": ca})),
    )
}

/// The source's `Ready` condition once its reason is `reason`.
fn wait_for_reason(ns: &TestNamespace, name: &str, reason: &str) -> Value {
    let resource = format!("harvesters.source.harvesterhci.io/{name}");
    ready_condition(&ns.wait_for_ready_reason(&resource, reason, WAIT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvester_sources_say_whether_they_can_be_used_and_what_to_fix() {
    let cp = ControlPlane::shared();
    shared_controller();
    let remote = RemoteCluster::start(ControlPlaneOptions::default());
    // A cluster without KubeVirt, which gets KubeVirt's VirtualMachine CRD
    // (and no export API) half-way.
    let bare = RemoteCluster::start(ControlPlaneOptions {
        install_crds: false,
        ..ControlPlaneOptions::default()
    });
    let ns = TestNamespace::new(cp, "hv-ready").unwrap();
    let url = remote.cp.server_url().to_owned();
    let reader = remote.token("reader");
    let exec_kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: {url}}}}}]\n\
         users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch /tmp/pwned']}}}}}}]\n\
         contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
    );
    ns.apply_all(&[
        secret("reader", json!({"token": reader})),
        secret("bad-token", json!({"token": "not-a-token"})),
        secret("nobody", json!({"token": remote.token("nobody")})),
        secret("exec", json!({"kubeconfig": exec_kubeconfig})),
        secret("bare", json!({"token": bare.token("reader")})),
        harvester("good", &url, "reader", Some(&remote.ca)),
        harvester("bad-token", &url, "bad-token", Some(&remote.ca)),
        harvester("untrusted", &url, "reader", None),
        harvester("forbidden", &url, "nobody", Some(&remote.ca)),
        harvester("exec", &url, "exec", Some(&remote.ca)),
        harvester(
            "unreachable",
            "https://127.0.0.1:9",
            "reader",
            Some(&remote.ca),
        ),
        harvester("no-kubevirt", bare.cp.server_url(), "bare", Some(&bare.ca)),
    ]);
    let cases = [
        ("good", "Connected", "True", ""),
        ("bad-token", "AuthenticationFailed", "False", "token"),
        ("untrusted", "CertificateUntrusted", "False", "CA bundle"),
        ("forbidden", "PermissionDenied", "False", "list"),
        ("exec", "SecretInvalid", "False", "exec credential plugin"),
        ("unreachable", "EndpointUnreachable", "False", "unreachable"),
        (
            "no-kubevirt",
            "KubeVirtNotServed",
            "False",
            "kubevirt.io/v1",
        ),
    ];
    tokio::task::block_in_place(|| {
        for (name, reason, status, says) in cases {
            let ready = wait_for_reason(&ns, name, reason);
            assert_eq!(ready["status"], status, "{name}: {ready}");
            let message = ready["message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{name}: {message}");
            assert!(!message.contains(&reader), "{name}: the token leaked");
        }
        assert!(
            !std::path::Path::new("/tmp/pwned").exists(),
            "the kubeconfig's command ran"
        );
        let vm_crd = bare
            .cp
            .peers()
            .crds_dir()
            .join("kubevirt-virtualmachines.yaml");
        bare.cp.install_crds(&[vm_crd], WAIT).unwrap();
        ns.apply_all(&[harvester(
            "no-export",
            bare.cp.server_url(),
            "bare",
            Some(&bare.ca),
        )]);
        let ready = wait_for_reason(&ns, "no-export", "ExportApiNotServed");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("export.kubevirt.io"),
            "{ready}"
        );
    });
}

/// A VM as Harvester makes one: EFI, 2 sockets × 2 cores, 4 GiB, a boot
/// disk and a data disk on claims, one NIC on a VLAN NAD, one on the pod
/// network.
fn remote_vm(name: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": REMOTE_NS},
        "spec": {"runStrategy": "RerunOnFailure", "template": {"spec": {
            "domain": {
                "cpu": {"sockets": 2, "cores": 2, "threads": 1},
                "memory": {"guest": "4Gi"},
                "firmware": {"bootloader": {"efi": {"secureBoot": false}}},
                "devices": {
                    "disks": [
                        {"name": "data", "disk": {"bus": "scsi"}},
                        {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
                        {"name": "cloudinit", "disk": {"bus": "virtio"}}],
                    "interfaces": [
                        {"name": "lan", "bridge": {}, "model": "e1000", "macAddress": "52:54:00:aa:bb:01"},
                        {"name": "default", "masquerade": {}, "macAddress": "52:54:00:aa:bb:02"}]}},
            "networks": [
                {"name": "lan", "multus": {"networkName": "vlan-a"}},
                {"name": "default", "pod": {}}],
            "volumes": [
                {"name": "root", "persistentVolumeClaim": {"claimName": format!("{name}-root")}},
                {"name": "data", "persistentVolumeClaim": {"claimName": format!("{name}-data")}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]}}}})
}

/// A VM with what an import cannot carry over as it is: a GPU, a
/// container disk, a hot-plugged volume (and, in its status, a snapshot
/// being taken).
fn troubled_vm(name: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": REMOTE_NS},
        "spec": {"runStrategy": "Always", "template": {"spec": {
            "domain": {
                "devices": {
                    "gpus": [{"name": "gpu1", "deviceName": "nvidia.com/GA102GL_A10"}],
                    "disks": [
                        {"name": "os", "disk": {"bus": "virtio"}},
                        {"name": "scratch", "disk": {"bus": "scsi"}}]},
                "resources": {"requests": {"memory": "2Gi"}}},
            "volumes": [
                {"name": "os", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}},
                {"name": "scratch", "persistentVolumeClaim": {"claimName": format!("{name}-scratch"), "hotpluggable": true}}]}}}})
}

/// The reasons of a VM's concerns, in order.
fn concern_reasons(vm: &Value) -> Vec<String> {
    vm["status"]["concerns"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn claim(name: &str, gib: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": REMOTE_NS},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
                 "storageClassName": "longhorn-image-x", "resources": {"requests": {"storage": format!("{gib}Gi")}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_browses_a_remote_harvester_and_sees_its_changes() {
    let cp = ControlPlane::shared();
    shared_inventory_api();
    let remote = RemoteCluster::start(ControlPlaneOptions::default());
    remote.apply(&json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "vlan-a", "namespace": REMOTE_NS},
        "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"name\":\"vlan-a\",\"type\":\"bridge\",\"bridge\":\"mgmt-br\",\"vlan\":100}"}}));
    for object in [
        claim("web-root", 10),
        claim("web-data", 20),
        remote_vm("web"),
        claim("gpu-scratch", 5),
        troubled_vm("gpu"),
    ] {
        remote.apply(&object);
    }
    remote.set_printable_status("web", "Running");
    remote
        .kubectl([
            "patch",
            "virtualmachines.kubevirt.io/gpu",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"printableStatus":"Running","snapshotInProgress":"nightly"}}"#,
        ])
        .expect_success();
    let ns = TestNamespace::new(cp, "hv-browse").unwrap();
    ns.apply_all(&[
        secret("reader", json!({"token": remote.token("reader")})),
        harvester("remote", remote.cp.server_url(), "reader", Some(&remote.ca)),
        // A Harvester network for the remote VLAN: no NoNetworkToMapTo.
        import::nad(ns.name(), "vlan-100", 100),
    ]);

    let vms = tokio::task::block_in_place(|| ns.wait_for_list("ivm", 2, WAIT));
    let by_id = |id: &str| {
        vms.iter()
            .find(|vm| vm["spec"]["id"] == id)
            .unwrap_or_else(|| panic!("no VM {id} in {vms:?}"))
            .clone()
    };
    let web = by_id("vms/web");
    let spec = &web["spec"];
    assert_eq!(
        concern_reasons(&web),
        ["PodNetwork"],
        "the NIC on the pod network, nothing else"
    );
    let gpu = by_id("vms/gpu");
    assert_eq!(
        concern_reasons(&gpu),
        [
            "SnapshotInProgress",
            "HostDevices",
            "ContainerDisk",
            "HotpluggedVolume"
        ],
        "{}",
        gpu["status"]
    );
    assert_eq!(
        (
            &spec["powerState"],
            &spec["cpus"],
            &spec["coresPerSocket"],
            &spec["memoryMib"],
            &spec["firmware"],
            &spec["secureBoot"]
        ),
        (
            &json!("On"),
            &json!(4),
            &json!(2),
            &json!(4096),
            &json!("EFI"),
            &json!(false)
        ),
        "{spec}"
    );
    assert_eq!(
        pluck(
            &spec["disks"],
            &["name", "capacityBytes", "controller", "datastore"]
        ),
        [
            json!(["root", 10 * GIB, "virtio", "longhorn-image-x"]),
            json!(["data", 20 * GIB, "scsi", "longhorn-image-x"]),
        ],
        "the boot disk first, the cloud-init disk left out"
    );
    assert_eq!(
        pluck(&spec["nics"], &["network", "macAddress", "model"]),
        [
            json!(["vms/vlan-a", "52:54:00:aa:bb:01", "e1000"]),
            json!([null, "52:54:00:aa:bb:02", "virtio"]),
        ]
    );
    let networks = tokio::task::block_in_place(|| ns.wait_for_list("inet", 1, WAIT));
    assert_eq!(
        (
            &networks[0]["spec"]["displayName"],
            &networks[0]["spec"]["vlan"]
        ),
        (&json!("vms/vlan-a"), &json!(100))
    );

    // Changes at the remote cluster, seen through `kubectl get ivm -w`.
    let watch = KubectlWatch::start(&ns, "ivm");
    tokio::task::block_in_place(|| {
        let web = |e: &Value| e["object"]["spec"]["id"] == "vms/web";
        watch.wait("the initial list", WAIT, |e| e["type"] == "ADDED" && web(e));
        // A restarted remote API server ends every watch: they list again
        // by themselves, and the change made meanwhile still arrives.
        remote.cp.restart_apiserver().unwrap();
        remote.set_printable_status("web", "Stopped");
        watch.wait("the stop, across a remote API server restart", WAIT, |e| {
            e["type"] == "MODIFIED" && web(e) && e["object"]["spec"]["powerState"] == "Off"
        });
        remote
            .kubectl([
                "patch",
                "virtualmachines.kubevirt.io/web",
                "--type=merge",
                "-p",
                r#"{"spec":{"template":{"spec":{"domain":{"cpu":{"sockets":4}}}}}}"#,
            ])
            .expect_success();
        watch.wait("the CPU change", WAIT, |e| {
            web(e) && e["object"]["spec"]["cpus"] == 8
        });
        remote
            .kubectl(["label", "virtualmachines.kubevirt.io/web", "tier=gold"])
            .expect_success();
        watch.wait("the new label", WAIT, |e| {
            web(e) && e["object"]["spec"]["labels"]["tier"] == "gold"
        });
        remote
            .kubectl(["delete", "virtualmachines.kubevirt.io/web"])
            .expect_success();
        watch.wait("the deletion", WAIT, |e| e["type"] == "DELETED" && web(e));
    });
}
