//! The chart installed for real on a [`NodeCluster`]: release `vmm` in
//! namespace `vm-migration` (Pod Security `restricted` enforced), with the
//! test build's own images and `--set` values; and the waits and reads the
//! tests of an installed release share.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::chart::{chart_dir, helm};
use crate::harvester::{ImageController, Options};
use crate::nodes::image::{OciImage, workspace_image};
use crate::nodes::{NODE_IP, NodeCluster};
use crate::process::{CmdOutput, run_dir};
use crate::{ControlPlane, Inventory, TestNamespace, Vcsim};

pub const RELEASE: &str = "vmm";
pub const NAMESPACE: &str = "vm-migration";

/// Loads both binaries' images into every node, makes the release's
/// namespace and `helm install --wait`s the chart with `values`; the
/// sources in `sources` may be read.
pub fn install(
    cluster: &NodeCluster,
    sources: &TestNamespace<'_>,
    values: &[String],
) -> Result<()> {
    let cp = cluster.control_plane();
    let dir = run_dir()?;
    for binary in ["vmm-apiserver", "vmm-controller"] {
        cluster.load_image(&OciImage::of_workspace_binary(&dir, binary)?)?;
    }
    cp.apply_yaml(
        "default",
        &format!(
            r#"{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "{NAMESPACE}",
                "labels": {{"pod-security.kubernetes.io/enforce": "restricted",
                            "pod-security.kubernetes.io/enforce-version": "latest"}}}}}}"#
        ),
    )
    .ok()?;
    let image = |component: &str| {
        let name = workspace_image(&format!("vmm-{component}"));
        let (repository, tag) = name.rsplit_once(':').unwrap_or((&name, "latest"));
        [
            format!("{component}.image.repository={repository}"),
            format!("{component}.image.tag={tag}"),
        ]
    };
    let mut all = vec![
        "imagePullPolicy=Never".to_string(),
        format!("rbac.credentials.namespaces={{{}}}", sources.name()),
    ];
    all.extend(image("apiserver"));
    all.extend(image("controller"));
    all.extend(values.iter().cloned());
    let installed = helm_chart(cp, "install", &all)?;
    if !installed.success() {
        bail!(
            "{installed}\n{}",
            cp.kubectl(["describe", "pods,replicasets", "-n", NAMESPACE])
        );
    }
    Ok(())
}

/// `helm <verb>` (install, upgrade) of the chart as the release, waiting,
/// with `--set` values (an upgrade keeps the others).
pub fn helm_chart(cp: &ControlPlane, verb: &str, values: &[String]) -> Result<CmdOutput> {
    let mut args = vec![
        verb.to_string(),
        RELEASE.into(),
        chart_dir().display().to_string(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--kubeconfig".into(),
        cp.kubeconfig_path().display().to_string(),
        "--wait".into(),
        "--timeout=240s".into(),
    ];
    if verb == "upgrade" {
        args.push("--reuse-values".into());
    }
    for value in values {
        args.extend(["--set".to_string(), value.clone()]);
    }
    helm(&args)
}

/// What `probe` returns, once it returns something; panics after two
/// minutes, showing the release's pods.
pub fn wait_for<T>(cp: &ControlPlane, what: &str, probe: impl Fn(&ControlPlane) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = probe(cp) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}:\n{}",
            cp.kubectl([
                "get",
                "pods,jobs,leases,endpointslices",
                "-n",
                NAMESPACE,
                "-o",
                "wide"
            ])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The controller pods' last log lines, for failure messages.
pub fn controller_logs(cp: &ControlPlane) -> String {
    cp.kubectl([
        "logs",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/component=controller",
        "--prefix",
        "--tail=30",
    ])
    .to_string()
}

/// The words kubectl prints for `args`; none when it fails.
pub fn words(cp: &ControlPlane, args: &[&str]) -> Vec<String> {
    cp.kubectl(args)
        .ok()
        .map(|out| out.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The stand-in for Harvester's image controller on `sources`, with
/// Harvester's own retry delay (10 s: a download cut by a pod's end is
/// retried once another pod serves) and downloads slowed to `rate` bytes/s,
/// if given. Needs a Tokio runtime entered.
pub fn harvester(sources: &TestNamespace<'_>, rate: Option<u64>) -> Result<ImageController> {
    ImageController::start(
        sources.control_plane().client(),
        Options {
            namespace: Some(sources.name().to_owned()),
            download_rate: rate,
            ..Options::default()
        },
    )
}

/// vcsim with `inventory`, listening on the nodes' bridge, as pods reach a
/// vCenter, and the source `vc` of it in `sources`.
pub fn vcenter(sources: &TestNamespace<'_>, inventory: Inventory) -> Result<Vcsim> {
    let vcsim = Vcsim::start(Inventory {
        extra_args: vec!["-listen".into(), format!("{NODE_IP}:0")],
        ..inventory
    })?;
    crate::import::network_and_source(sources.control_plane(), &vcsim, sources)?;
    Ok(vcsim)
}

/// The names of the release namespace's pods with labels `selector` (empty:
/// all), only those Running if `running`.
pub fn pods(cp: &ControlPlane, selector: &str, running: bool) -> Vec<String> {
    let mut args = vec!["get", "pods", "-n", NAMESPACE];
    if !selector.is_empty() {
        args.extend(["-l", selector]);
    }
    if running {
        args.push("--field-selector=status.phase=Running");
    }
    args.extend(["-o", "jsonpath={.items[*].metadata.name}"]);
    words(cp, &args)
}
