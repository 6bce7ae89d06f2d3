//! Container images without a registry: files of this machine laid out as an
//! OCI image (one uncompressed layer), imported into each node's containerd.
//! Pods use them with `imagePullPolicy: Never`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::vcsim::sha256_file;

/// What containerd runs as each pod's sandbox: busybox sleeping.
pub const PAUSE_IMAGE: &str = "vmm.invalid/pause:1";
/// A shell and the usual tools (Debian's static busybox).
pub const BUSYBOX_IMAGE: &str = "vmm.invalid/busybox:1";
const BUSYBOX: &str = "/bin/busybox";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An image as an OCI layout tarball, ready for `ctr images import`.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// Full reference, e.g. `vmm.invalid/busybox:1`.
    pub name: String,
    pub tarball: PathBuf,
}

/// What goes into an image.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Host file → absolute path in the image.
    pub files: Vec<(PathBuf, String)>,
    /// Path in the image → what the symlink points to.
    pub symlinks: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    /// `uid:gid` the image runs as; empty: root.
    pub user: String,
}

impl OciImage {
    /// Lays `spec` out under `dir` and packs it.
    pub fn build(dir: &Path, name: &str, spec: &ImageSpec) -> Result<OciImage> {
        let stem: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let work = dir.join(format!("image-{stem}"));
        let rootfs = work.join("rootfs");
        let layout = work.join("layout");
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&rootfs)?;
        fs::create_dir_all(&blobs)?;
        for (source, target) in &spec.files {
            let target = rootfs.join(target.trim_start_matches('/'));
            fs::create_dir_all(target.parent().context("a file at /")?)?;
            fs::copy(source, &target)
                .with_context(|| format!("copy {} into the image", source.display()))?;
        }
        for (link, points_to) in &spec.symlinks {
            let link = rootfs.join(link.trim_start_matches('/'));
            fs::create_dir_all(link.parent().context("a link at /")?)?;
            std::os::unix::fs::symlink(points_to, &link)?;
        }
        fs::create_dir_all(rootfs.join("tmp"))?;

        let layer = work.join("layer.tar");
        tar(&rootfs, &layer)?;
        let layer_digest = sha256_file(&layer)?;
        let layer_size = fs::metadata(&layer)?.len();
        fs::rename(&layer, blobs.join(&layer_digest))?;

        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": spec.entrypoint,
                "Env": ["PATH=/bin:/usr/local/bin"],
                "User": spec.user,
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        });
        let (config_digest, config_size) = write_blob(&blobs, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer_size,
            }],
        });
        let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest)?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"),
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name},
            }],
        });
        fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let tarball = work.join("image.tar");
        tar(&layout, &tarball)?;
        Ok(OciImage {
            name: name.to_string(),
            tarball,
        })
    }

    /// Debian's static busybox with `/bin/sh`, `sleep`, `cat`, `nc` and
    /// friends; `entrypoint` as given.
    pub fn busybox(dir: &Path, name: &str, entrypoint: &[&str]) -> Result<OciImage> {
        if !Path::new(BUSYBOX).is_file() {
            bail!("{BUSYBOX} is missing: run hack/install-deps.sh (Debian's busybox-static)");
        }
        let applets = [
            "sh", "sleep", "cat", "echo", "ls", "wget", "hostname", "env", "wc", "head", "nc",
            "true",
        ];
        let spec = ImageSpec {
            files: vec![(PathBuf::from(BUSYBOX), BUSYBOX.to_string())],
            symlinks: applets
                .iter()
                .map(|applet| (format!("/bin/{applet}"), "busybox".to_string()))
                .collect(),
            entrypoint: entrypoint.iter().map(|e| e.to_string()).collect(),
            user: String::new(),
        };
        Self::build(dir, name, &spec)
    }

    /// One of this workspace's binaries as the test build made it (no second,
    /// release build: `hack/build-images.sh` is the release path), laid out
    /// as the release image is (`/usr/local/bin/<binary>`, the CA bundle, user
    /// 65532), plus the shared libraries it links (glibc's), as
    /// `vmm.invalid/<binary>:test`.
    pub fn of_workspace_binary(dir: &Path, binary: &str) -> Result<OciImage> {
        let path = crate::peers::workspace_binary(binary)?;
        let target = format!("/usr/local/bin/{binary}");
        let mut files = vec![
            (path.clone(), target.clone()),
            (PathBuf::from(CA_BUNDLE), CA_BUNDLE.to_string()),
        ];
        files.extend(shared_libraries(&path)?.into_iter().map(|lib| {
            let inside = lib.display().to_string();
            (lib, inside)
        }));
        let spec = ImageSpec {
            files,
            symlinks: Vec::new(),
            entrypoint: vec![target],
            user: "65532:65532".into(),
        };
        Self::build(dir, &workspace_image(binary), &spec)
    }

    /// Imports into the containerd listening on `socket` (namespace `k8s.io`,
    /// where the kubelet looks).
    pub fn import(&self, socket: &Path) -> Result<()> {
        let out = ctr(socket)
            .args(["images", "import"])
            .arg(&self.tarball)
            .output()
            .context("run ctr (Debian's containerd package)")?;
        if !out.status.success() {
            bail!(
                "ctr images import {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// `ctr` against the containerd listening on `socket`, in its namespace `k8s.io`
/// (where the kubelet looks).
pub fn ctr(socket: &Path) -> Command {
    let mut command = Command::new("ctr");
    command
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io"]);
    command
}

/// The name [`OciImage::of_workspace_binary`] gives `binary`'s image.
pub fn workspace_image(binary: &str) -> String {
    format!("vmm.invalid/{binary}:test")
}

/// What the dynamic loader would load for `binary`, the loader included (from `ldd`).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`;
    // the vDSO has no file.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = line.split("=> ").nth(1).unwrap_or(line.trim());
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn write_blob(blobs: &Path, value: &serde_json::Value) -> Result<(String, usize)> {
    let bytes = serde_json::to_vec(value)?;
    let digest = crate::vcsim::sha256_bytes(&bytes);
    fs::write(blobs.join(&digest), &bytes)?;
    Ok((digest, bytes.len()))
}

/// A tar of `dir`'s contents, owned by root.
fn tar(dir: &Path, out: &Path) -> Result<()> {
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .context("run tar")?;
    if !status.success() {
        bail!("tar of {} failed: {status}", dir.display());
    }
    Ok(())
}
