//! Where the test peers (kube-apiserver, kubectl, etcd, vcsim, third-party
//! CRDs) are.
//!
//! `VMM_PEERS_DIR` names the directory when set; otherwise
//! `<repo>/hack/build-peers.sh` runs once per process (a warm run takes under a
//! second) and the last line of its stdout is the directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

use crate::process::{spawn_tied, tied_command};

/// Environment variable naming a ready peers directory (skips the build script).
pub const PEERS_DIR_ENV: &str = "VMM_PEERS_DIR";
/// The same for steve's own entry (`hack/build-peers.sh --steve`).
pub const STEVE_DIR_ENV: &str = "VMM_STEVE_DIR";
/// The same for the image backends' downloaders (`hack/build-peers.sh --downloaders`).
pub const DOWNLOADERS_DIR_ENV: &str = "VMM_DOWNLOADERS_DIR";

/// The root of the repository being tested: the workspace holding the package
/// cargo runs (`CARGO_MANIFEST_DIR` at run time), else the one this crate was
/// compiled in. Cargo reuses a shared target directory's artifacts across
/// checkouts, so the compile-time path may name another checkout.
pub fn repo_root() -> PathBuf {
    let compiled_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let root = running
        .iter()
        .flat_map(|dir| dir.ancestors())
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map_or(compiled_in, Path::to_path_buf);
    root.canonicalize().unwrap_or(root)
}

/// A binary of this workspace (`vmm-apiserver`, `vmm-controller`, `vmm-dev`)
/// from the cargo target directory the running program was built in: next to it,
/// or one level up from a test binary in `deps/`.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "{name} is not built next to {}: run `cargo build --workspace --bins` first (hack/test.sh does)",
                exe.display()
            )
        })
}

/// The built test peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    dir: PathBuf,
}

impl Peers {
    /// The peers of this process: found (or built) on first use.
    pub fn get() -> Result<&'static Peers> {
        static PEERS: OnceLock<Result<Peers, String>> = OnceLock::new();
        PEERS
            .get_or_init(|| Self::locate().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("test peers unavailable: {e}"))
    }

    /// `VMM_PEERS_DIR`, or the output of `hack/build-peers.sh`.
    pub fn locate() -> Result<Peers> {
        if let Some(dir) = std::env::var_os(PEERS_DIR_ENV).filter(|d| !d.is_empty()) {
            return Self::from_dir(PathBuf::from(dir))
                .with_context(|| format!("{PEERS_DIR_ENV} does not name a peers directory"));
        }
        Self::from_dir(run_build_script("hack/build-peers.sh", &[])?)
    }

    /// A peers directory, checked for the binaries and CRDs the harness uses.
    pub fn from_dir(dir: PathBuf) -> Result<Peers> {
        let peers = Peers { dir };
        let mut missing = Vec::new();
        for bin in [
            "kube-apiserver",
            "kubectl",
            "kubelet",
            "cni/bridge",
            "etcd",
            "vcsim",
            "helm",
        ] {
            if !peers.bin(bin).is_file() {
                missing.push(format!("bin/{bin}"));
            }
        }
        if !peers.crds_dir().is_dir() {
            missing.push("crds/".into());
        }
        if !missing.is_empty() {
            bail!("{} lacks {}", peers.dir.display(), missing.join(", "));
        }
        Ok(peers)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/bin/<name>`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    pub fn kube_apiserver(&self) -> PathBuf {
        self.bin("kube-apiserver")
    }

    pub fn kubectl(&self) -> PathBuf {
        self.bin("kubectl")
    }

    pub fn etcd(&self) -> PathBuf {
        self.bin("etcd")
    }

    pub fn vcsim(&self) -> PathBuf {
        self.bin("vcsim")
    }

    pub fn kube_controller_manager(&self) -> PathBuf {
        self.bin("kube-controller-manager")
    }

    pub fn kubelet(&self) -> PathBuf {
        self.bin("kubelet")
    }

    pub fn kube_proxy(&self) -> PathBuf {
        self.bin("kube-proxy")
    }

    pub fn kube_scheduler(&self) -> PathBuf {
        self.bin("kube-scheduler")
    }

    /// The CNI plugins real nodes use (bridge, host-local, loopback, portmap).
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.bin("cni")
    }

    pub fn helm(&self) -> PathBuf {
        self.bin("helm")
    }

    /// Third-party CRDs (KubeVirt, Harvester, NAD).
    pub fn crds_dir(&self) -> PathBuf {
        self.dir.join("crds")
    }

    /// Every `*.yaml`/`*.yml` in [`crds_dir`](Self::crds_dir), sorted.
    pub fn crd_files(&self) -> Result<Vec<PathBuf>> {
        yaml_files(&self.crds_dir())
    }
}

/// steve, Rancher's `/v1` API layer (only the UI's test world needs it):
/// `$VMM_STEVE_DIR/bin/steve`, or the entry `hack/build-peers.sh --steve` builds.
pub fn steve() -> Result<PathBuf> {
    entry_binary(&entry_dir(STEVE_DIR_ENV, "--steve")?, "steve")
}

/// A real downloader of Harvester's image backends (`cdi-importer`,
/// `backing-image-manager`): `$VMM_DOWNLOADERS_DIR/bin/<name>`, or the entry
/// `hack/build-peers.sh --downloaders` builds.
pub fn downloader(name: &str) -> Result<PathBuf> {
    // Found once per process: every download runs one of them.
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| {
            entry_dir(DOWNLOADERS_DIR_ENV, "--downloaders").map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("the downloaders are unavailable: {e}"))?;
    entry_binary(dir, name)
}

/// The peers entry `$env` names, or the one `build-peers.sh <flag>` builds
/// (or finds).
fn entry_dir(env: &str, flag: &str) -> Result<PathBuf> {
    match std::env::var_os(env).filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => run_build_script("hack/build-peers.sh", &[flag]),
    }
}

/// `bin/<name>` of the peers entry at `dir`.
fn entry_binary(dir: &Path, name: &str) -> Result<PathBuf> {
    let bin = dir.join("bin").join(name);
    if !bin.is_file() {
        bail!("{} lacks bin/{name}", dir.display());
    }
    Ok(bin)
}

/// Runs a build script of the repository (`hack/build-peers.sh`,
/// `hack/build-openstack.sh`) with `args` and returns the directory it prints
/// last on stdout.
pub(crate) fn run_build_script(script: &str, args: &[&str]) -> Result<PathBuf> {
    let path = repo_root().join(script);
    if !path.is_file() {
        bail!(
            "{} does not exist; set {PEERS_DIR_ENV} (and {STEVE_DIR_ENV}, {}) to built entries",
            path.display(),
            crate::openstack::OPENSTACK_DIR_ENV
        );
    }
    // stderr is inherited: a cold build takes many minutes and reports
    // its progress there.
    let mut command = tied_command("bash")?;
    command
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = spawn_tied(command)?
        .wait_with_output()
        .with_context(|| format!("run {script}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{script} {} exited with {} (its stderr is above); stdout:\n{}",
            args.join(" "),
            out.status,
            stdout.trim_end()
        );
    }
    Ok(PathBuf::from(last_line(&stdout).with_context(|| {
        format!("{script} printed nothing on stdout")
    })?))
}

/// The last non-empty line of a build script's stdout.
fn last_line(stdout: &str) -> Option<&str> {
    stdout.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// Our own CRDs: `<repo>/charts/vm-migration/crds`.
pub fn our_crds_dir() -> PathBuf {
    repo_root().join("charts/vm-migration/crds")
}

/// The `*.yaml`/`*.yml` files of a directory, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_root_holds_the_workspace() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("test/harness").is_dir());
    }

    #[test]
    fn from_dir_names_what_is_missing() {
        let dir = crate::process::run_dir().unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/kubectl"), "").unwrap();
        let err = Peers::from_dir(dir.clone()).unwrap_err().to_string();
        assert!(err.contains("bin/kube-apiserver"), "{err}");
        assert!(err.contains("bin/etcd"), "{err}");
        assert!(err.contains("crds/"), "{err}");
        assert!(!err.contains("bin/kubectl"), "{err}");
    }

    #[test]
    fn the_last_stdout_line_names_the_directory() {
        assert_eq!(last_line("noise\n/a/b\n\n"), Some("/a/b"));
        assert_eq!(last_line("\n  \n"), None);
    }

    #[test]
    fn our_crds_are_in_the_chart() {
        let files = yaml_files(&our_crds_dir()).unwrap();
        assert!(
            files
                .iter()
                .any(|f| f.ends_with("importjob.harvesterhci.io_importjobs.yaml"))
        );
    }
}
