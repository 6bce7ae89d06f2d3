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
/// SQL cache). Their CRDs are Rancher's own (`hack/build-peers.sh`).
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
status: {default: true, dynamic: false, description: "steve's SQL cache: lists paged, sorted and filtered on the server"}
"#;

/// What steve must serve before a browser opens the shell: the local cluster
/// it makes up (the shell fails without it), the `ui-performance` Setting, and
/// the schemas of our groups (the product shows only with them). steve reads
/// them some time after it listens.
pub const SERVED_BEFORE_THE_SHELL: [&str; 4] = [
    "/v1/management.cattle.io.clusters/local",
    "/v1/management.cattle.io.settings/ui-performance",
    "/v1/schemas/inventory.harvesterhci.io.virtualmachine",
    "/v1/schemas/importjob.harvesterhci.io.virtualmachine",
];

/// steve against a control plane, with its SQL cache on.
pub struct Steve {
    pub process: ManagedProcess,
    /// Its HTTPS port (self-signed certificate).
    pub port: u16,
}

impl Steve {
    /// Starts `program` with the control plane's admin kubeconfig (steve
    /// without `--webhook-auth` treats every caller as an admin; kube-apiserver
    /// still checks steve's own identity), its SQL cache, and loopback ports.
    /// Serving is checked through the UI server ([`UiServer::start`]).
    pub fn start(cp: &ControlPlane, program: &Path) -> Result<Steve> {
        let dir = run_dir()?;
        let port = free_port()?;
        let http_port = free_port()?;
        let mut process = ProcessBuilder::new("steve", program)
            .args(["--kubeconfig".as_ref(), cp.kubeconfig_path().as_os_str()])
            .args(["--https-listen-port", &port.to_string()])
            .args(["--http-listen-port", &http_port.to_string()])
            .arg("--sql-cache")
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

/// Applies [`RANCHER_OBJECTS`] (cluster-scoped).
pub fn apply_rancher_objects(cp: &ControlPlane) -> Result<()> {
    cp.kubectl_with_stdin(["apply", "-f", "-"], RANCHER_OBJECTS)
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
    /// until steve answers through it with everything the shell needs before
    /// its first page ([`SERVED_BEFORE_THE_SHELL`]).
    pub fn start(cp: &ControlPlane, dist: &Path, steve: &Steve) -> Result<UiServer> {
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
                for path in SERVED_BEFORE_THE_SHELL {
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
