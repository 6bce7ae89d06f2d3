//! An OpenStack import end to end: the controller binary against the real
//! Keystone and Glance and the project's stand-in for Nova, Cinder and
//! Neutron (whose uploads write real bytes into Glance), the stand-in for
//! Harvester's image controller downloading every disk, and the real
//! KubeVirt CRD. Each image must hash like its volume; the VM must have the
//! flavor's shape and the ports' MACs; no temporary snapshot, volume or image
//! may be left at the cloud, also when the job is deleted half-way.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmm_testkit::harvester::{ImageController, Options, SHA256_ANNOTATION};
use vmm_testkit::import;
use vmm_testkit::openstack::{OpenStack, ProjectUser, ServerSeed};
use vmm_testkit::servers::shared_controller;
use vmm_testkit::{ControlPlane, TestNamespace};

const WAIT: Duration = Duration::from_secs(300);

/// A project of its own in the shared cloud, with a source `os` for it and
/// the namespace's image controller stand-in and NADs.
struct Project<'a> {
    os: &'static OpenStack,
    user: ProjectUser,
    ns: TestNamespace<'a>,
    _harvester: ImageController,
}

impl Project<'_> {
    async fn new(prefix: &str) -> Self {
        let os = OpenStack::shared().await;
        let cp = ControlPlane::shared();
        shared_controller();
        let ns = TestNamespace::new(cp, prefix).unwrap();
        let user = os
            .keystone
            .create_project_user(
                "Default",
                &format!("{}-p", ns.name()),
                &format!("{}-u", ns.name()),
                "member",
            )
            .await
            .unwrap();
        let harvester = ImageController::start(
            cp.client(),
            Options {
                namespace: Some(ns.name().to_owned()),
                retry_delay: Duration::from_secs(1),
                ..Options::default()
            },
        )
        .unwrap();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "os"},
            "stringData": {"username": user.user, "password": user.password}});
        let source = json!({"apiVersion": "source.harvesterhci.io/v1", "kind": "Openstack",
            "metadata": {"name": "os"},
            "spec": {"endpoint": os.keystone.url(), "credentials": {"name": "os"},
                     "project": user.project, "pollIntervalSeconds": 2}});
        for object in [
            secret,
            source,
            import::nad(ns.name(), "vlan-a", 100),
            import::nad(ns.name(), "vlan-b", 200),
        ] {
            cp.apply_yaml(ns.name(), &object.to_string())
                .expect_success();
        }
        Self {
            os,
            user,
            ns,
            _harvester: harvester,
        }
    }

    /// A running server `name` with a bootable and a data volume of 1 GiB,
    /// on `private` and `public`; its id and the volumes' ids.
    fn server(&self, name: &str) -> (String, Vec<String>) {
        let cloud = &self.os.cloud;
        let project = &self.user.project_id;
        let private = cloud.add_network("private", project, Some(100));
        let public = cloud.add_network("public", project, Some(200));
        let volumes = vec![
            cloud
                .add_volume(&format!("{name}-boot"), project, 1, true)
                .unwrap(),
            cloud
                .add_volume(&format!("{name}-data"), project, 1, false)
                .unwrap(),
        ];
        let id = cloud
            .add_server(ServerSeed {
                vcpus: 4,
                ram_mib: 3072,
                volumes: volumes.clone(),
                ports: vec![
                    (private, "fa:16:3e:0a:00:01".into()),
                    (public, "fa:16:3e:0b:00:02".into()),
                ],
                ..ServerSeed::new(name, project)
            })
            .unwrap();
        (id, volumes)
    }

    fn create_job(&self, job: &str, server: &str) {
        let job = json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": job},
            "spec": {
                "sourceCluster": {"kind": "Openstack", "name": "os"},
                "vmName": server,
                "mapping": [
                    {"sourceNetwork": "private", "destinationNetwork": "vlan-a"},
                    {"sourceNetwork": "public", "destinationNetwork": "vlan-b"},
                ],
                "gracefulShutdownTimeoutSeconds": 60,
            },
        });
        ControlPlane::shared()
            .apply_yaml(self.ns.name(), &job.to_string())
            .expect_success();
    }

    /// What the export left at the cloud: temporary snapshots and volumes
    /// (named `vmm-…`) and the project's images in Glance.
    async fn leftovers(&self) -> Vec<String> {
        let token = self
            .os
            .keystone
            .authenticate(&self.user.password_auth())
            .await
            .unwrap();
        let images = self.os.glance.images(&token).await.unwrap();
        self.os
            .cloud
            .snapshot_and_volume_names()
            .into_iter()
            .filter(|name| name.contains(" vmm-"))
            .chain(
                images
                    .into_iter()
                    .map(|i| format!("image {:?} ({})", i.name, i.status)),
            )
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_volume_two_port_server_imports_intact_and_leaves_nothing_behind() {
    let project = Project::new("os-import").await;
    let (server, volumes) = project.server("web");
    project.create_job("web", "web");
    let ns = &project.ns;
    let done = tokio::task::block_in_place(|| import::finished(ns, "web", WAIT));
    assert_eq!(
        done["status"]["phase"],
        "Succeeded",
        "{}\n{}",
        done["status"],
        shared_controller().server.process.log_tail(60)
    );

    // Each image holds exactly its volume's bytes, the boot volume first.
    for (index, volume) in volumes.iter().enumerate() {
        let image = ns.kubectl([
            "get",
            "virtualmachineimages.harvesterhci.io",
            &format!("web-disk-{index}"),
            "-o",
            "json",
        ]);
        let image: Value = serde_json::from_str(image.expect_success()).unwrap();
        assert_eq!(
            image["metadata"]["annotations"][SHA256_ANNOTATION],
            project.os.cloud.volume_sha256(volume).unwrap().as_str(),
            "disk {index}"
        );
        assert_eq!(done["status"]["disks"][index]["sourceKey"], volume.as_str());
    }

    // The VM: the flavor's CPUs and memory, the ports' MACs, mapped networks.
    let target = done["status"]["targetName"].as_str().unwrap().to_owned();
    let vm = ns.kubectl(["get", "virtualmachines.kubevirt.io", &target, "-o", "json"]);
    let vm: Value = serde_json::from_str(vm.expect_success()).unwrap();
    let domain = &vm["spec"]["template"]["spec"]["domain"];
    let cpu = &domain["cpu"];
    assert_eq!(
        cpu["sockets"].as_i64().unwrap()
            * cpu["cores"].as_i64().unwrap()
            * cpu["threads"].as_i64().unwrap(),
        4,
        "{domain}"
    );
    assert_eq!(domain["memory"]["guest"], "3072Mi");
    let macs: Vec<_> = domain["devices"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["macAddress"].clone())
        .collect();
    assert_eq!(
        macs,
        [json!("fa:16:3e:0a:00:01"), json!("fa:16:3e:0b:00:02")]
    );
    let networks = &vm["spec"]["template"]["spec"]["networks"];
    assert_eq!(
        networks[0]["multus"]["networkName"],
        format!("{}/vlan-a", ns.name())
    );
    assert_eq!(
        networks[1]["multus"]["networkName"],
        format!("{}/vlan-b", ns.name())
    );

    // The server was stopped for it; the cloud holds nothing of the export.
    assert_eq!(project.os.cloud.server_status(&server), Some("SHUTOFF"));
    assert_eq!(project.leftovers().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_during_the_upload_leaves_nothing_behind() {
    let project = Project::new("os-delete").await;
    let (_, _) = project.server("db");
    // Slow uploads to Glance, so the deletion lands while one runs.
    project.os.cloud.set_upload_rate(Some(32 << 20));
    project.create_job("db", "db");
    let ns = &project.ns;
    let deadline = Instant::now() + WAIT;
    tokio::task::block_in_place(|| {
        loop {
            let names = project.os.cloud.snapshot_and_volume_names();
            if names.iter().any(|n| n.starts_with("volume vmm-")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no temporary volume appeared: {names:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    ns.kubectl(["delete", "importjob", "db", "--wait=true", "--timeout=240s"])
        .expect_success();
    project.os.cloud.set_upload_rate(None);
    // An upload still running when the job went finishes in Glance first:
    // what it made is removed all the same.
    let deadline = Instant::now() + WAIT;
    loop {
        let left = project.leftovers().await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left at the cloud after the job was deleted: {left:?}\n{}",
            shared_controller().server.process.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
