//! An OpenStack project as the import tests use it: a project and member
//! of its own in the shared cloud, the `Openstack` source `os` for it in a
//! namespace of its own with the NADs `vlan-a` (VLAN 100) and `vlan-b` (200)
//! and Harvester's image controller stand-in, servers to import, and what
//! an export left behind.

use std::time::Duration;

use serde_json::json;

use super::{OpenStack, ProjectUser, ServerSeed};
use crate::harvester::{ImageController, Options};
use crate::import;
use crate::{ControlPlane, TestNamespace};

/// A project of its own in the shared cloud, with a source `os` for it and
/// the namespace's image controller stand-in and NADs; the controller is
/// the test's to start.
pub struct Project<'a> {
    pub os: &'static OpenStack,
    pub user: ProjectUser,
    pub ns: TestNamespace<'a>,
    pub harvester: ImageController,
}

impl Project<'_> {
    pub async fn new(prefix: &str) -> Self {
        Self::with_options(prefix, Options::default()).await
    }

    /// [`new`](Self::new) with the image controller stand-in's `options`
    /// (its namespace is set here).
    pub async fn with_options(prefix: &str, options: Options) -> Self {
        let os = OpenStack::shared().await;
        let cp = ControlPlane::shared();
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
        let harvester = import::image_controller(&ns, options);
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
            harvester,
        }
    }

    /// A running server `name` with a bootable and a data volume of 1 GiB,
    /// 4 vCPUs and 3 GiB, on `private` and `public` with
    /// [`server_macs`](Self::server_macs); its id and the volumes' ids.
    pub fn server(&self, name: &str) -> (String, Vec<String>) {
        let macs = Self::server_macs(name);
        self.shaped_server(name, 4, 3072, &[1, 1], &[&macs[0], &macs[1]])
    }

    /// A running server `name` with `vcpus` and `ram_mib`, a bootable volume
    /// and more in device order, each of its size in GiB, and a port per MAC
    /// on `private`, `public`, `private`...; its id and the volumes' ids.
    pub fn shaped_server(
        &self,
        name: &str,
        vcpus: i32,
        ram_mib: i32,
        volume_gib: &[i64],
        macs: &[&str],
    ) -> (String, Vec<String>) {
        let volumes: Vec<String> = volume_gib
            .iter()
            .enumerate()
            .map(|(i, gib)| match i {
                0 => self.volume(&format!("{name}-boot"), *gib, true),
                1 => self.volume(&format!("{name}-data"), *gib, false),
                _ => self.volume(&format!("{name}-data-{i}"), *gib, false),
            })
            .collect();
        let id = self.add_server(
            ServerSeed {
                vcpus,
                ram_mib,
                volumes: volumes.clone(),
                ..ServerSeed::new(name, &self.user.project_id)
            },
            macs,
        );
        (id, volumes)
    }

    /// The MACs of [`server`](Self::server) `name`'s two ports: one pair per
    /// name, as Harvester refuses a VM whose MAC another VM on its cluster
    /// network has, and tests of one binary import servers side by side.
    pub fn server_macs(name: &str) -> [String; 2] {
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let [_, _, high, low] = hash.to_be_bytes();
        [
            format!("fa:16:3e:0a:{high:02x}:{low:02x}"),
            format!("fa:16:3e:0b:{high:02x}:{low:02x}"),
        ]
    }

    /// A running server `name` booted from an image (a local root disk of
    /// 1 GiB) with a data volume of 1 GiB, on `private` and `public`; its id
    /// and the volume's id.
    pub fn image_backed_server(&self, name: &str) -> (String, String) {
        let volume = self.volume(&format!("{name}-data"), 1, false);
        let id = self.add_server(
            ServerSeed {
                vcpus: 4,
                ram_mib: 3072,
                image: Some("cirros-0.6.3".into()),
                root_gib: 1,
                volumes: vec![volume.clone()],
                ..ServerSeed::new(name, &self.user.project_id)
            },
            // Not `server`'s: MAC addresses are checked cluster-wide.
            &["fa:16:3e:0c:00:03", "fa:16:3e:0d:00:04"],
        );
        (id, volume)
    }

    fn volume(&self, name: &str, size_gib: i64, bootable: bool) -> String {
        self.os
            .cloud
            .add_volume(name, &self.user.project_id, size_gib, bootable)
            .unwrap()
    }

    /// `seed` with a port per MAC, on `private` (VLAN 100) and `public`
    /// (200) in turn.
    fn add_server(&self, seed: ServerSeed, macs: &[&str]) -> String {
        let cloud = &self.os.cloud;
        let project = &self.user.project_id;
        let networks = [
            cloud.add_network("private", project, Some(100)),
            cloud.add_network("public", project, Some(200)),
        ];
        let ports = macs
            .iter()
            .zip(networks.iter().cycle())
            .map(|(mac, network)| (network.clone(), (*mac).to_owned()))
            .collect();
        cloud.add_server(ServerSeed { ports, ..seed }).unwrap()
    }

    pub fn create_job(&self, job: &str, server: &str) {
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
    pub async fn leftovers(&self) -> Vec<String> {
        let token = self
            .os
            .keystone
            .authenticate(&self.user.password_auth())
            .await
            .unwrap();
        let images = self.os.glance.images(&token).await.unwrap();
        self.os
            .cloud
            .snapshot_and_volume_names(&self.user.project_id)
            .into_iter()
            .filter(|name| name.contains(" vmm-"))
            .chain(
                images
                    .into_iter()
                    // Listed for a moment while Glance removes it: gone.
                    .filter(|i| i.status != "deleted")
                    .map(|i| format!("image {:?} ({})", i.name, i.status)),
            )
            .collect()
    }

    /// Waits until the export has left nothing (it is ended right after the
    /// job ends, or after it is deleted); what is left after `timeout`.
    pub async fn wait_no_leftovers(&self, timeout: Duration) -> Result<(), Vec<String>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = self.leftovers().await;
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(left);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
