//! The UI's test world (docs/decisions.md, "The UI's test world"): steve,
//! Rancher's `/v1` API layer, standalone against a control plane, and the
//! built shell served in front of it by `ui-extension/scripts/serve.mjs`,
//! which plays the part of Rancher's server. The browser suite, `hack/up.sh`
//! and the UI benchmark all run it through `vmm-dev --ui-dist`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::control_plane::ControlPlane;
use crate::process::{ManagedProcess, ProcessBuilder, StdoutMode, free_port, port_open, run_dir};
use crate::servers::http_get;

/// How long steve and the UI server may take to serve.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The Rancher objects the shell reads at start and no standalone steve has:
/// the `ui-performance` Setting (shell 3.0.8 holds every watch until it exists,
/// so without it lists never update live) and the `ui-sql-cache` Feature (with
/// it the shell pages, sorts and filters lists on the server, through steve's
/// SQL cache; the shell reads `status.lockedValue`, which Rancher always sets,
/// null when the flag is not locked). Their CRDs are Rancher's own
/// (`hack/build-peers.sh`).
pub const RANCHER_OBJECTS: &str = r#"apiVersion: management.cattle.io/v3
kind: Setting
metadata: {name: ui-performance}
value: ""
default: ""
---
apiVersion: management.cattle.io/v3
kind: Feature
metadata: {name: ui-sql-cache}
spec: {value: true}
status: {default: true, dynamic: false, lockedValue: null, description: "steve's SQL cache: lists paged, sorted and filtered on the server"}
"#;

/// What steve must serve before a browser opens the shell: the local cluster
/// it makes up (the shell fails without it) and the `ui-performance` Setting.
/// steve reads them some time after it listens.
pub const SHELL_NEEDS: [&str; 2] = [
    "/v1/management.cattle.io.clusters/local",
    "/v1/management.cattle.io.settings/ui-performance",
];

/// And for a user who may use the product: the schemas of our groups (the
/// product shows only with them).
pub const PRODUCT_NEEDS: [&str; 2] = [
    "/v1/schemas/inventory.harvesterhci.io.virtualmachine",
    "/v1/schemas/importjob.harvesterhci.io.virtualmachine",
];

/// steve against a control plane, with its SQL cache on.
pub struct Steve {
    pub process: ManagedProcess,
    /// Its HTTPS port (self-signed certificate).
    pub port: u16,
}

/// The roles of [`RESTRICTED_USER`]: what steve and the shell read to start
/// (CRDs and APIServices for the schemas, RBAC for steve's access control,
/// namespaces, Rancher's settings, features and clusters, and steve's serving
/// certificate's Secrets in kube-system), and of ours only the sources: no
/// inventory, no import jobs.
pub const RESTRICTED_ROLES: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: vmm-ui-sources-reader}
rules:
- apiGroups: [source.harvesterhci.io]
  resources: ["*"]
  verbs: [get, list, watch]
- apiGroups: [apiextensions.k8s.io, apiregistration.k8s.io]
  resources: [customresourcedefinitions, apiservices]
  verbs: [get, list, watch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings, clusterroles, clusterrolebindings]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
- apiGroups: [management.cattle.io]
  resources: [settings, features, clusters]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: vmm-ui-sources-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: vmm-ui-sources-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: sources-reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: vmm-ui-steve-certificates, namespace: kube-system}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: vmm-ui-steve-certificates, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: vmm-ui-steve-certificates}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: sources-reader}
"#;

/// The user of the restricted UI ([`Steve::start_restricted`]).
pub const RESTRICTED_USER: &str = "sources-reader";

impl Steve {
    /// Starts `program` with the control plane's admin kubeconfig (steve
    /// without `--webhook-auth` treats every caller as an admin; kube-apiserver
    /// still checks steve's own identity), its SQL cache, and loopback ports.
    /// Serving is checked through the UI server ([`UiServer::start`]).
    pub fn start(cp: &ControlPlane, program: &Path) -> Result<Steve> {
        Self::spawn(cp, program, cp.kubeconfig_path(), true)
    }

    /// steve as [`RESTRICTED_USER`], who may read sources and nothing else of
    /// ours ([`RESTRICTED_ROLES`]): steve leaves the other types out of the
    /// user's schemas and kube-apiserver's RBAC refuses them, as for a Rancher
    /// user without a role for them. No SQL cache: its informers could never
    /// list those types.
    pub fn start_restricted(cp: &ControlPlane, program: &Path) -> Result<Steve> {
        cp.kubectl_with_stdin(["apply", "-f", "-"], RESTRICTED_ROLES)
            .ok()
            .context("apply the restricted user's roles")?;
        let kubeconfig = cp.kubeconfig_for(RESTRICTED_USER, &[])?;
        Self::spawn(cp, program, &kubeconfig, false)
    }

    fn spawn(
        cp: &ControlPlane,
        program: &Path,
        kubeconfig: &Path,
        sql_cache: bool,
    ) -> Result<Steve> {
        let dir = run_dir()?;
        let port = free_port()?;
        let http_port = free_port()?;
        let mut process = ProcessBuilder::new("steve", program)
            .args(["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
            .args(["--https-listen-port", &port.to_string()])
            .args(["--http-listen-port", &http_port.to_string()])
            .args(sql_cache.then_some("--sql-cache"))
            // The SQL cache's database is written to the working directory.
            .current_dir(&dir)
            .log_file(cp.dir().join(format!("steve-{port}.log")))
            .spawn()?;
        process.wait_ready(
            "its HTTPS port",
            READY_TIMEOUT,
            Duration::from_millis(200),
            || Ok(port_open(port)),
        )?;
        Ok(Steve { process, port })
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// Creates [`RANCHER_OBJECTS`] (cluster-scoped). `create`, not `apply`: a
/// null in `apply` removes the field, and the shell needs `lockedValue: null`.
pub fn apply_rancher_objects(cp: &ControlPlane) -> Result<()> {
    cp.kubectl_with_stdin(["create", "-f", "-"], RANCHER_OBJECTS)
        .ok()
        .context("apply the Rancher Setting and Feature the shell reads")?;
    Ok(())
}

/// The built shell (`ui-extension/dist`) served by `scripts/serve.mjs`, which
/// proxies the API to steve.
pub struct UiServer {
    pub process: ManagedProcess,
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    pub port: u16,
    /// One JSON line per request proxied to steve (the UI benchmark counts them).
    pub request_log: PathBuf,
}

/// What `serve.mjs` prints once it listens.
#[derive(Deserialize)]
struct ReadyLine {
    url: String,
    port: u16,
}

impl UiServer {
    /// Serves `dist` in front of `steve` on a free loopback port, and waits
    /// until steve answers through it with `needs` (paths such as
    /// [`SHELL_NEEDS`] and [`PRODUCT_NEEDS`]).
    pub fn start(
        cp: &ControlPlane,
        dist: &Path,
        steve: &Steve,
        needs: &[&str],
    ) -> Result<UiServer> {
        let script = crate::peers::repo_root().join("ui-extension/scripts/serve.mjs");
        let dir = run_dir()?;
        let request_log = dir.join("requests.jsonl");
        let mut process = ProcessBuilder::new("ui-serve", "node")
            .arg(&script)
            .args(["--dist".as_ref(), dist.as_os_str()])
            .args(["--steve", &steve.url()])
            .args(["--log".as_ref(), request_log.as_os_str()])
            .stdout(StdoutMode::Piped)
            .log_file(cp.dir().join("ui-serve.log"))
            .spawn()?;
        let line = process.ready_line(READY_TIMEOUT)?;
        let ready: ReadyLine = serde_json::from_str(&line)
            .with_context(|| format!("parse the UI server's ready line {line:?}"))?;
        let port = ready.port;
        process.wait_ready(
            "steve through it",
            READY_TIMEOUT,
            Duration::from_millis(250),
            || {
                for path in needs {
                    http_get(port, path)?;
                }
                Ok(true)
            },
        )?;
        Ok(UiServer {
            process,
            url: ready.url,
            port,
            request_log,
        })
    }
}
