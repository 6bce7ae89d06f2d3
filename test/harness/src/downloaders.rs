//! The real downloaders of Harvester's two image backends, run the way their
//! pods run them but as host processes (`hack/build-peers.sh --downloaders`,
//! docs/peers.md):
//!
//! - [`LonghornDownload`]: Longhorn's `backing-image-manager data-source`,
//!   what longhorn-manager starts for a `download` backing image (Harvester's
//!   default backend). It downloads by itself once started; its HTTP API
//!   (`GET /v1/file`) reports progress, and a `transfer` action ends it.
//! - [`CdiRun`]: CDI's `cdi-importer` for an `http` source (any other
//!   storage class), run to its end; CDI's controller runs it once without
//!   scratch space, and again with it when the first run asks.
//!
//! Both hard-code their paths (`/data`; CDI also `/scratch`,
//! `/dev/termination-log`, and nbdkit's socket in `/tmp`). Each run gets a
//! mount namespace of its own in which directories of the run are
//! bind-mounted over those paths, so runs in parallel never share a file; the
//! host keeps only the empty mount points ([`mount_points`]). They share the
//! host's network, as the URL they fetch is on loopback: CDI's metrics port
//! (8443) is then taken by whichever importer runs first, and the others run
//! without it (CDI ignores the failed listen).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::peers::downloader;
use crate::process::{ManagedProcess, ProcessBuilder, free_port, port_open};

/// The paths the programs write to, as their containers have them.
const DATA: &str = "/data";
const SCRATCH: &str = "/scratch";
const TERMINATION_LOG: &str = "/dev/termination-log";
const TMP: &str = "/tmp";
const HOSTS: &str = "/etc/hosts";

/// Where a run downloads from, and what its pod would have to reach it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub url: &'a str,
    /// PEM certificates it trusts for HTTPS instead of the host's.
    pub ca_file: Option<&'a Path>,
    /// An `/etc/hosts` for the run: the names its pod would resolve through
    /// cluster DNS (a Service's), which the test world does not run.
    pub hosts_file: Option<&'a Path>,
}

impl<'a> Source<'a> {
    /// `url`, with the host's certificates and resolver.
    pub fn url(url: &'a str) -> Self {
        Self {
            url,
            ca_file: None,
            hosts_file: None,
        }
    }

    /// The mounts that give the run this source's hosts file, if any.
    fn mounts(&self) -> impl Iterator<Item = Mount<'a>> {
        self.hosts_file
            .map(|file| Mount::Bind(file, HOSTS))
            .into_iter()
    }

    /// The environment that makes a Go program trust `ca_file` instead of
    /// the host's certificates (crypto/x509 reads `SSL_CERT_FILE` on Linux).
    fn env(&self) -> Vec<(&'static str, OsString)> {
        self.ca_file
            .map(|file| ("SSL_CERT_FILE", file.as_os_str().to_owned()))
            .into_iter()
            .collect()
    }
}

/// Creates the empty mount points the runs' directories are bind-mounted
/// over (a bind mount needs its target to exist). Idempotent.
pub fn mount_points() -> Result<()> {
    for dir in [DATA, SCRATCH] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {dir}"))?;
    }
    if !Path::new(TERMINATION_LOG).exists() {
        std::fs::write(TERMINATION_LOG, b"")
            .with_context(|| format!("create {TERMINATION_LOG}"))?;
    }
    Ok(())
}

/// What a run's mount namespace has over a path the program hard-codes.
enum Mount<'a> {
    /// A directory (or file) of the run, bind-mounted.
    Bind(&'a Path, &'a str),
    /// A one-page tmpfs, filled: a directory with no space left, which
    /// CDI's importer takes for no scratch space at all (as a pod without
    /// the volume, where the path does not exist).
    Full(&'static str),
}

/// The arguments of `unshare` that run `program args` in a new mount
/// namespace where `mounts` are made first (a shell mounts, then execs the
/// program in its place). The shell opens the program before it mounts and
/// execs it through that descriptor, so a program under a path a mount
/// covers (a peers cache under `/tmp`) still runs. The run also gets a PID
/// namespace of its own, so that stopping it stops what it started (CDI's
/// nbdkit) with it.
fn in_mount_namespace(program: &Path, args: &[OsString], mounts: &[Mount<'_>]) -> Vec<OsString> {
    // $1 is the program, the mounts' sources follow.
    let mut script = String::from("exec 9<\"$1\" && ");
    let mut sources: Vec<OsString> = Vec::new();
    for mount in mounts {
        match mount {
            Mount::Bind(source, target) => {
                sources.push(source.as_os_str().to_owned());
                script.push_str(&format!(
                    "mount --bind \"${{{}}}\" {target} && ",
                    sources.len() + 1
                ));
            }
            Mount::Full(target) => script.push_str(&format!(
                "mount -t tmpfs -o size=4k none {target} && \
                 {{ head -c 4096 /dev/zero > {target}/full 2>/dev/null; true; }} && "
            )),
        }
    }
    script.push_str(&format!(
        "shift {}; exec /proc/self/fd/9 \"$@\"",
        sources.len() + 1
    ));
    let mut full: Vec<OsString> = [
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    full.push(script.into());
    full.push("sh".into());
    full.push(program.as_os_str().to_owned());
    full.extend(sources);
    full.extend(args.iter().cloned());
    full
}

/// What Longhorn's data source reports at `GET /v1/file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LonghornFile {
    /// `starting`, `in-progress`, `ready-for-transfer`, `ready`, `failed`.
    pub state: String,
    #[serde(default)]
    pub progress: i64,
    #[serde(default)]
    pub processed_size: i64,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub virtual_size: i64,
    #[serde(default)]
    pub real_size: i64,
    /// SHA-512 of the stored bytes.
    #[serde(default)]
    pub current_checksum: String,
    #[serde(default)]
    pub message: String,
}

/// One run of `backing-image-manager data-source --source-type download`.
pub struct LonghornDownload {
    process: ManagedProcess,
    api: String,
    disk: PathBuf,
    file_name: String,
    http: reqwest::Client,
}

impl LonghornDownload {
    /// Starts downloading `source` into a Longhorn disk at `dir` (created)
    /// as backing image `name`; `checksum` is the SHA-512 it must have, if
    /// any.
    pub fn start(
        source: Source<'_>,
        dir: &Path,
        name: &str,
        checksum: Option<&str>,
    ) -> Result<Self> {
        let disk = dir.join("disk");
        // The data source refuses a disk without its config, and writes
        // under tmp/ (which it cannot create when not root).
        std::fs::create_dir_all(disk.join("tmp"))?;
        std::fs::write(
            disk.join("longhorn-disk.cfg"),
            format!(r#"{{"diskUUID":"{}"}}"#, uuid_like(name, "disk")),
        )?;
        mount_points()?;
        let uuid = uuid_like(name, "image");
        let (port, sync_port) = (free_port()?, free_port()?);
        let mut args: Vec<OsString> = [
            "--debug",
            "data-source",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--sync-listen",
            &format!("127.0.0.1:{sync_port}"),
            "--name",
            name,
            "--uuid",
            &uuid,
            "--source-type",
            "download",
            "--parameters",
            &format!("url={}", source.url),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        if let Some(checksum) = checksum {
            args.extend(["--checksum".into(), checksum.into()]);
        }
        let program = downloader("backing-image-manager")?;
        let mounts: Vec<Mount<'_>> = std::iter::once(Mount::Bind(&disk, DATA))
            .chain(source.mounts())
            .collect();
        let mut process = ProcessBuilder::new("backing-image-manager", "unshare")
            .own_process_group()
            .args(in_mount_namespace(&program, &args, &mounts))
            .envs(source.env())
            .log_file(dir.join("backing-image-manager.log"))
            .spawn()?;
        process.wait_ready(
            "listening",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || Ok(port_open(port)),
        )?;
        Ok(Self {
            process,
            api: format!("http://127.0.0.1:{port}/v1/file"),
            disk,
            file_name: format!("{name}-{uuid}"),
            http: crate::tls::reqwest_client(&[], None)?,
        })
    }

    /// The data source's report.
    pub async fn file(&self) -> Result<LonghornFile> {
        let response = self.http.get(&self.api).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }

    /// Ok while the program runs; else its exit and the log's tail.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Polls the report every `interval` (longhorn-manager: about 3 s) until
    /// the download has ended: `ready-for-transfer` or `failed`.
    pub async fn wait_downloaded(
        &mut self,
        interval: Duration,
        timeout: Duration,
    ) -> Result<LonghornFile> {
        let deadline = Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            let file = self.file().await?;
            if file.state == "ready-for-transfer" || file.state == "failed" {
                return Ok(file);
            }
            if Instant::now() > deadline {
                bail!("Longhorn's download still {file:?} after {timeout:?}");
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// The `transfer` action longhorn-manager ends a download with; the
    /// stored file (sparse; a qcow2 source stays qcow2).
    pub async fn transfer(&self) -> Result<PathBuf> {
        self.http
            .post(format!("{}?action=transfer", self.api))
            .send()
            .await?
            .error_for_status()
            .context("the transfer action")?;
        Ok(self.disk.join("tmp").join(&self.file_name))
    }

    /// The program's log, for messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(40)
    }

    /// Stops the data source, as longhorn-manager deletes its pod (also
    /// done when dropped); how it ended.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.process.stop()
    }
}

/// How a run of CDI's importer ended: its exit and the result it wrote to
/// its termination log.
#[derive(Debug, Clone)]
pub struct CdiResult {
    pub success: bool,
    /// The termination log's JSON (e.g. `scratchSpaceRequired`, `message`).
    pub termination: serde_json::Value,
    pub log: String,
}

impl CdiResult {
    pub fn scratch_space_required(&self) -> bool {
        self.termination["scratchSpaceRequired"] == true
    }

    /// Why it failed, in its own words: the termination message, else the
    /// log's last lines.
    pub fn message(&self) -> String {
        match self.termination["message"].as_str() {
            Some(message) if !message.is_empty() => message.to_owned(),
            _ => self.log.clone(),
        }
    }
}

/// One run of CDI's importer on an `http` source, as its pod: into
/// `dir/data/disk.img`, with `dir/scratch` as scratch space or none.
pub struct CdiRun {
    process: ManagedProcess,
    dir: PathBuf,
}

impl CdiRun {
    /// Starts the importer on `source`.
    pub fn start(source: Source<'_>, dir: &Path, scratch: bool) -> Result<Self> {
        let (data, scratch_dir, tmp, termination) = (
            dir.join("data"),
            dir.join("scratch"),
            dir.join("tmp"),
            dir.join("termination-log"),
        );
        for made in [&data, &scratch_dir, &tmp] {
            std::fs::create_dir_all(made)?;
        }
        std::fs::write(&termination, b"")?;
        mount_points()?;
        let mut mounts = vec![
            Mount::Bind(&data, DATA),
            Mount::Bind(&termination, TERMINATION_LOG),
            if scratch {
                Mount::Bind(&scratch_dir, SCRATCH)
            } else {
                Mount::Full(SCRATCH)
            },
        ];
        mounts.extend(source.mounts());
        // nbdkit's socket and pid file are fixed paths in /tmp. Last: the
        // other sources are in the run directory, under /tmp too.
        mounts.push(Mount::Bind(&tmp, TMP));
        let program = downloader("cdi-importer")?;
        // The environment CDI's controller gives the importer pod.
        let process = ProcessBuilder::new("cdi-importer", "unshare")
            .own_process_group()
            .args(in_mount_namespace(&program, &[], &mounts))
            .envs([
                ("IMPORTER_SOURCE", "http"),
                ("IMPORTER_ENDPOINT", source.url),
                ("IMPORTER_CONTENTTYPE", "kubevirt"),
                ("IMPORTER_IMAGE_SIZE", ""),
                ("OWNER_UID", "vmm-testkit"),
                ("FILESYSTEM_OVERHEAD", "0"),
                ("PREALLOCATION", "false"),
            ])
            .envs(source.env())
            .log_file(dir.join(if scratch {
                "cdi-importer-scratch.log"
            } else {
                "cdi-importer.log"
            }))
            .spawn()?;
        Ok(Self {
            process,
            dir: dir.to_owned(),
        })
    }

    /// The result once the run has ended, `None` while it runs.
    pub fn try_result(&mut self) -> Result<Option<CdiResult>> {
        let Some(status) = self.process.try_status()? else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(self.dir.join("termination-log")).unwrap_or_default();
        Ok(Some(CdiResult {
            success: status.success(),
            termination: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            log: self.process.log_tail(40),
        }))
    }

    /// Waits for the run to end, polling every `interval`; at `timeout` it is
    /// stopped and that is an error.
    pub async fn wait(&mut self, interval: Duration, timeout: Duration) -> Result<CdiResult> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(result) = self.try_result()? {
                return Ok(result);
            }
            if Instant::now() > deadline {
                self.process.stop()?;
                bail!(
                    "CDI's importer still ran after {timeout:?}: {}",
                    self.process.log_tail(20)
                );
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Bytes fetched so far, as far as the files show it: what the scratch
    /// space holds (the whole source is downloaded there first), else what
    /// the disk has allocated (qemu-img writes it straight from nbdkit).
    pub fn fetched_bytes(&self) -> u64 {
        let scratch = std::fs::read_dir(self.dir.join("scratch"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
        let disk = std::fs::metadata(self.disk())
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        scratch.max(disk)
    }

    /// Where the imported disk is (raw).
    pub fn disk(&self) -> PathBuf {
        self.dir.join("data").join("disk.img")
    }
}

/// Runs CDI's importer on `url` once, to its end (see [`CdiRun`]).
pub async fn cdi_import(
    url: &str,
    dir: &Path,
    scratch: bool,
    timeout: Duration,
) -> Result<CdiResult> {
    CdiRun::start(Source::url(url), dir, scratch)?
        .wait(Duration::from_millis(100), timeout)
        .await
}

/// A stable UUID-shaped name for `name` and `what` (Longhorn only checks
/// that one is given).
fn uuid_like(name: &str, what: &str) -> String {
    let hash = format!("{name}/{what}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let hex = format!("{hash:016x}{:016x}", hash.rotate_left(17));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program under a directory that one of the run's mounts covers
    /// still runs (as the downloaders do from a peers cache under `/tmp`).
    #[test]
    fn a_program_under_a_covered_path_still_runs() {
        let dir = crate::process::run_dir().unwrap();
        let (covered, empty) = (dir.join("covered"), dir.join("empty"));
        for made in [&covered, &empty] {
            std::fs::create_dir_all(made).unwrap();
        }
        let program = covered.join("echo");
        std::fs::copy("/bin/echo", &program).unwrap();
        let target = covered.to_str().unwrap();
        let out = std::process::Command::new("unshare")
            .args(in_mount_namespace(
                &program,
                &["ran".into()],
                &[Mount::Bind(&empty, target)],
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
