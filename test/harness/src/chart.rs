//! The Helm charts (`charts/vm-migration`, `charts/vm-migration-ui`) through
//! the peers' pinned helm: lint them and render them as an install would, for
//! kubectl to apply.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::peers::{Peers, repo_root};
use crate::process::{CmdOutput, run_tied};

const HELM_TIMEOUT: Duration = Duration::from_secs(120);

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/vm-migration")
}

/// The UI extension's chart: its web server and UIPlugin.
pub fn ui_chart_dir() -> PathBuf {
    repo_root().join("charts/vm-migration-ui")
}

/// Runs helm with `args`; helm's own state goes to a scratch directory.
pub fn helm<I, S>(args: I) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let scratch = crate::process::run_dir()?;
    let env: Vec<(OsString, OsString)> = ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"]
        .into_iter()
        .map(|var| (var.into(), scratch.clone().into_os_string()))
        .collect();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    run_tied(&Peers::get()?.helm(), &args, &env, None, HELM_TIMEOUT)
}

/// `helm template` of the chart as release `release` in `namespace`, CRDs
/// included, with `--set` values.
pub fn render(release: &str, namespace: &str, set: &[&str]) -> Result<CmdOutput> {
    render_chart(&chart_dir(), release, namespace, set)
}

/// [`render`] for the chart in `chart`.
pub fn render_chart(
    chart: &Path,
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<CmdOutput> {
    let mut args: Vec<OsString> = vec![
        "template".into(),
        release.into(),
        chart.into(),
        "--namespace".into(),
        namespace.into(),
        "--include-crds".into(),
    ];
    for value in set {
        args.push("--set".into());
        args.push((*value).into());
    }
    helm(args)
}
