//! The real downloaders of Harvester's image backends run here as their pods
//! run them (`vmm_testkit::downloaders`): each stores a half-zero raw disk
//! and a qcow2 one from an HTTP server SHA-256 identical to what its backend
//! keeps (Longhorn: the bytes as served, sparse, qcow2 left qcow2; CDI: raw,
//! after the first run without scratch space has asked for it, having read a
//! few ranges through nbdkit as in its image). The server is busybox's
//! `httpd`, which answers HEAD, whole GETs and ranges, and logs each
//! response's status; the import suites serve them from the controller.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vmm_testkit::downloaders::{LonghornDownload, Source, cdi_import};
use vmm_testkit::process::{ManagedProcess, ProcessBuilder, free_port, port_open, run_dir};
use vmm_testkit::vcsim::sha256_file;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(120);

/// A directory served over HTTP on loopback.
struct Served {
    server: ManagedProcess,
    url: String,
}

impl Served {
    /// How many responses were partial (206) so far.
    fn partial_responses(&self) -> usize {
        std::fs::read_to_string(self.server.log_path())
            .unwrap_or_default()
            .matches("response:206")
            .count()
    }
}

fn serve(dir: &Path) -> Served {
    let port = free_port().unwrap();
    let mut server = ProcessBuilder::new("httpd", "busybox")
        .args(["httpd", "-f", "-vv", "-p"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-h")
        .arg(dir)
        .log_file(dir.join("httpd.log"))
        .spawn()
        .unwrap();
    server
        .wait_ready("listening", WAIT, Duration::from_millis(50), || {
            Ok(port_open(port))
        })
        .unwrap();
    Served {
        server,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A 32 MiB raw disk, random in its first and last MiB and zero between,
/// and the same disk as qcow2 (`qemu-img convert`).
fn disks(dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    let mut file = std::fs::File::create(&raw).unwrap();
    let noise: Vec<u8> = (0..MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    file.write_all(&noise).unwrap();
    file.write_all(&vec![0; 30 * MIB]).unwrap();
    file.write_all(&noise).unwrap();
    let qcow2 = dir.join("disk.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(status.success());
    (raw, qcow2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longhorn_stores_each_disk_as_served_and_sparse() {
    let dir = run_dir().unwrap();
    let (raw, qcow2) = disks(&dir);
    let served = serve(&dir);
    for (source, name) in [(&raw, "raw"), (&qcow2, "qcow2")] {
        let file = source.file_name().unwrap().to_str().unwrap();
        let mut download = LonghornDownload::start(
            Source::url(&format!("{}/{file}", served.url)),
            &dir.join(format!("longhorn-{name}")),
            &format!("vmi-{name}"),
            None,
        )
        .unwrap();
        let report = download
            .wait_downloaded(Duration::from_millis(200), WAIT)
            .await
            .unwrap();
        assert_eq!(
            report.state,
            "ready-for-transfer",
            "{report:?}\n{}",
            download.log_tail()
        );
        let size = std::fs::metadata(source).unwrap().len();
        assert_eq!(report.size, i64::try_from(size).unwrap(), "{report:?}");
        let stored = download.transfer().await.unwrap();
        assert_eq!(
            sha256_file(&stored).unwrap(),
            sha256_file(source).unwrap(),
            "{name}: Longhorn keeps the bytes as served"
        );
        if name == "raw" {
            // Zero blocks are seeked over: 2 MiB of data in 32 MiB.
            let allocated = std::fs::metadata(&stored).unwrap().blocks() * 512;
            assert!(allocated < 8 * MIB as u64, "{allocated} bytes allocated");
        }
        // SIGTERM reaches the program through unshare (which ignores it),
        // so it ends there and is reaped, rather than by SIGKILL after the
        // grace period: no wait, and its CPU time is counted (bench/).
        let status = download.stop().unwrap();
        let kill = rustix::process::Signal::KILL.as_raw();
        assert_ne!(status.signal(), Some(kill), "{name}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_asks_for_scratch_then_stores_raw() {
    let dir = run_dir().unwrap();
    let (raw, qcow2) = disks(&dir);
    let served = serve(&dir);
    let want = sha256_file(&raw).unwrap();
    for source in [&raw, &qcow2] {
        let file = source.file_name().unwrap().to_str().unwrap();
        let url = format!("{}/{file}", served.url);
        let run = dir.join(format!("cdi-{file}"));
        let ranges_before = served.partial_responses();
        let first = cdi_import(&url, &run, false, WAIT).await.unwrap();
        assert!(first.success, "{file}: {first:?}");
        assert!(first.scratch_space_required(), "{file}: {first:?}");
        // Its validation before asking for scratch reads ranges (nbdkit's
        // curl plugin under qemu-img info).
        assert!(
            served.partial_responses() > ranges_before,
            "{file}: no ranged read in the first run: {first:?}"
        );
        let second = cdi_import(&url, &run, true, WAIT).await.unwrap();
        assert!(second.success, "{file}: {second:?}");
        assert_eq!(
            sha256_file(&run.join("data/disk.img")).unwrap(),
            want,
            "{file}: CDI stores the raw disk"
        );
    }
}
