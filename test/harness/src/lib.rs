//! `vmm-testkit`: the end-to-end harness of the VM migration project.
//!
//! It runs the real peers on loopback (docs/architecture.md, docs/peers.md): etcd and
//! kube-apiserver 1.36 with RBAC and the aggregation layer, the peers' kubectl,
//! govmomi's vcsim, and OpenStack's Keystone and Glance. Every process it starts
//! dies with the test binary.
//!
//! | module | what |
//! |---|---|
//! | [`peers`] | where the built peers are (`VMM_PEERS_DIR` or `hack/build-peers.sh`) |
//! | [`pki`] | CAs and certificates (rcgen, ring) as PEM files |
//! | [`process`] | child processes tied to the test binary, logs, run dirs, ports |
//! | [`procfs`] | a process's memory, CPU time and storage writes from `/proc` |
//! | [`control_plane`] | etcd + kube-apiserver + CRDs, kubeconfigs, clients, kubectl |
//! | [`namespace`] | one namespace per test |
//! | [`nodes`] | real nodes (kubelet, containerd, CNI) beside a control plane of their own |
//! | [`aggregation`] | APIService → ExternalName Service → a local port |
//! | [`vcsim`] | the vCenter simulator |
//! | [`openstack`] | Keystone and Glance from PyPI (an OpenStack source's world) |
//! | [`chart`] | the Helm chart through the pinned helm |
//! | [`import`] | import jobs as a user drives them (networks, waiting for the end) |
//! | [`link`] | a TCP relay in front of a peer that refuses, hangs or passes on command |
//! | [`harvester`] | stand-in for Harvester's image controller (downloads for real) and VM PVCs |
//! | [`kubevirt`] | stand-in for KubeVirt's VM stop and VM export (controller and HTTPS server) |
//! | [`remote`] | a remote Harvester cluster (a second control plane, KubeVirt stand-in) to browse and import from |
//! | [`servers`] | our binaries against a control plane; the inventory API registered |
//! | [`tls`] | rustls (ring) and reqwest clients trusting given roots |
//! | [`ui`] | steve and the built shell behind `ui-extension/scripts/serve.mjs` |
//!
//! ```no_run
//! use vmm_testkit::{ControlPlane, TestNamespace};
//! # async fn example() -> anyhow::Result<()> {
//! let cp = ControlPlane::shared(); // one per test binary, started on first use
//! let ns = TestNamespace::new(cp, "my-test")?;
//! cp.kubectl(["get", "importjobs", "-n", ns.name()]).expect_success();
//! let client = cp.client(); // a new client for this test's runtime
//! # Ok(()) }
//! ```

pub mod admission;
pub mod aggregation;
pub mod chart;
pub mod control_plane;
pub mod downloaders;
pub mod harvester;
pub mod import;
pub mod kubevirt;
pub mod link;
pub mod namespace;
pub mod nodes;
pub mod openstack;
pub mod peers;
pub mod pki;
pub mod process;
pub mod procfs;
pub mod release;
pub mod remote;
pub mod servers;
pub mod sources;
pub mod tls;
pub mod ui;
pub mod vcsim;

pub use aggregation::{ApiServiceRegistration, register_apiservice, wait_apiservice_available};
pub use control_plane::{ControlPlane, ControlPlaneOptions};
pub use namespace::TestNamespace;
pub use peers::{Peers, repo_root, workspace_binary};
pub use process::{CmdOutput, ManagedProcess, ProcessBuilder};
pub use vcsim::{Inventory, Vcsim};
