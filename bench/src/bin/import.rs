//! `import-bench`: a vSphere disk import by our controller, measured against
//! today's importer's method and against a plain download, in one run
//! (`docs/benchmarks.md`). For a dense and a half-zero disk that vcsim serves
//! as a streamOptimized VMDK through an export lease:
//!
//! - **ours**: the release `vmm-controller`, from creating the import job to
//!   the image's `Imported=True` at the stand-in for Harvester's image
//!   controller (which downloads it, not hashing);
//! - **reproduced**: vm-import-controller's method with the same tools:
//!   ExportVm, `curl` of the VMDK to a scratch file, `qemu-img convert -f vmdk
//!   -O raw`, the raw file served by a plain static file server, an image
//!   pointing at it, downloaded by the same stand-in;
//! - **curl**: `curl -o /dev/null` of the lease URL (the floor);
//! - the local scratch each method needs at its peak, and the controller's
//!   peak RSS.
//!
//! vcsim converts a disk to streamOptimized on its first export and caches the
//! result; each disk is exported once before any measurement, so all three
//! methods read the same cached VMDK.
//!
//! Usage: `cargo run --release -p vmm-bench --bin import-bench -- [--size-mib 4096] [--rounds 3]`
//! (needs the release vmm-controller next to it; `bench/import.sh` builds both).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::{Value, json};
use vmm_testkit::harvester::{Hashing, ImageController, Options};
use vmm_testkit::process::run_dir;
use vmm_testkit::servers::{ControllerServer, start_controller};
use vmm_testkit::vcsim::soap::SoapSession;
use vmm_testkit::vcsim::{DiskSpec, VmSpec};
use vmm_testkit::{ControlPlane, Inventory, Vcsim, workspace_binary};

const NAMESPACE: &str = "bench";
const SOURCE: &str = "vc";
const JOBS: &str = "/apis/importjob.harvesterhci.io/v1/namespaces/bench/importjobs";
const IMAGES: &str = "/apis/harvesterhci.io/v1beta1/namespaces/bench/virtualmachineimages";
const WAIT: Duration = Duration::from_secs(1800);
const POLL: Duration = Duration::from_millis(20);
const MIB: f64 = 1024.0 * 1024.0;

/// A source disk: its 1 MiB chunks hold random (incompressible) data with
/// this probability, the rest are holes.
struct Disk {
    name: &'static str,
    seed: u64,
    data_fraction: f64,
}

const DISKS: [Disk; 2] = [
    Disk {
        name: "dense",
        seed: 1,
        data_fraction: 1.0,
    },
    Disk {
        name: "half-zero",
        seed: 2,
        data_fraction: 0.5,
    },
];

/// Imports disks through the controller against today's method and curl.
#[derive(Parser)]
#[command(name = "import-bench")]
struct Args {
    /// Capacity of each disk, in MiB.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    size_mib: u64,
    /// Measurements of each method per disk; medians are printed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// The vmm-controller binary (default: next to this program).
    #[arg(long)]
    controller: Option<PathBuf>,
    /// Where the reproduced method keeps its files (default: a fresh directory
    /// under $TMPDIR/vmm-e2e, removed at the end).
    #[arg(long)]
    scratch: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = match &args.scratch {
        Some(dir) => dir.join(format!("import-bench-{}", std::process::id())),
        None => run_dir()?.join("scratch"),
    };
    std::fs::create_dir_all(&scratch)?;
    eprintln!("starting etcd, kube-apiserver and vcsim …");
    let cp = ControlPlane::start()?;
    let vcsim = Vcsim::start(Inventory::default())?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&args, &cp, &vcsim, &scratch));
    // The datastore (the disks) and vcsim's export cache: gigabytes.
    let datastores = vcsim.dir().join("tmp");
    vcsim.stop()?;
    for dir in [&datastores, &scratch] {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    result
}

/// What one round measured for one disk.
struct Round {
    ours: Ours,
    reproduced: Reproduced,
    curl: Duration,
}

struct Ours {
    /// Job created → image `Imported=True`.
    total: Duration,
    /// Image created → `Imported=True`: the disk's transfer.
    transfer: Duration,
    /// Bytes the controller wrote to local storage (its log included).
    written: u64,
    /// The controller's VmHWM over the import, KiB.
    peak_rss_kib: u64,
    /// CPU used from job creation to `Imported=True`.
    cpu: Cpu,
}

/// CPU time (user + system) used by the controller, vcsim, and this process
/// (the stand-in for Harvester's importer, mostly).
#[derive(Clone, Copy)]
struct Cpu {
    controller: Duration,
    vcsim: Duration,
    stand_in: Duration,
}

struct Reproduced {
    /// ExportVm → image `Imported=True`.
    total: Duration,
    /// ExportVm, curl to a file, lease complete.
    download: Duration,
    /// `qemu-img convert`.
    convert: Duration,
    /// Image created → `Imported=True`.
    import: Duration,
    /// Peak bytes allocated in the scratch directory.
    scratch: u64,
}

/// One disk's results.
struct Measured {
    disk: &'static Disk,
    vmdk_bytes: u64,
    rounds: Vec<Round>,
}

/// Everything a measurement needs.
struct Bench<'a> {
    args: &'a Args,
    client: kube::Client,
    vcsim: &'a Vcsim,
    ca_file: PathBuf,
    controller: ControllerServer,
    images: ImageController,
    files: FileServer,
    scratch: &'a Path,
}

async fn run(args: &Args, cp: &ControlPlane, vcsim: &Vcsim, scratch: &Path) -> Result<()> {
    let controller = match &args.controller {
        Some(path) => path.clone(),
        None => workspace_binary("vmm-controller")?,
    };
    let client = cp.try_client()?;
    cp.kubectl(["create", "namespace", NAMESPACE]).ok()?;
    cp.apply_yaml(NAMESPACE, &vcsim.source_manifest(SOURCE))
        .ok()?;
    let bench = Bench {
        args,
        client: client.clone(),
        vcsim,
        ca_file: ca_file(vcsim),
        controller: start_controller(cp, &controller, cp.kubeconfig_path(), &[])?,
        images: ImageController::start(
            client,
            Options {
                namespace: Some(NAMESPACE.to_owned()),
                hashing: Hashing::Off,
                ..Options::default()
            },
        )?,
        files: FileServer::start(scratch)?,
        scratch,
    };
    let mut results = Vec::new();
    for disk in &DISKS {
        results.push(bench.measure(disk).await?);
    }
    let open = vcsim.open_lease_count().await?;
    ensure!(open == 0, "{open} export leases were left open");
    report(args, &results);
    Ok(())
}

impl Bench<'_> {
    /// Creates the disk's VM, has vcsim convert it once, then measures the
    /// three methods `rounds` times, in turn.
    async fn measure(&self, disk: &'static Disk) -> Result<Measured> {
        let started = Instant::now();
        let name = format!("bench-{}", disk.name);
        let spec = VmSpec::new(&name).disk(DiskSpec::generated(
            self.args.size_mib,
            disk.seed,
            disk.data_fraction,
        ));
        let vm = self.vcsim.create_vm(&spec).await?;
        eprintln!("{}: VM created in {:.1?}", disk.name, started.elapsed());
        let started = Instant::now();
        let vmdk_bytes = self.warm(&vm.moref).await?;
        eprintln!(
            "{}: vcsim's first export (qemu-img to a {} streamOptimized VMDK, cached, not measured) took {:.1?}",
            disk.name,
            size(vmdk_bytes),
            started.elapsed()
        );
        let capacity = self.args.size_mib << 20;
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            let id = format!("{}-{round}", disk.name);
            sync().await?;
            let curl = self.curl_floor(&vm.moref).await?;
            sync().await?;
            let reproduced = self.reproduced(&vm.moref, &id, capacity).await?;
            sync().await?;
            let ours = self.ours(&name, &id, capacity).await?;
            eprintln!(
                "{id}: ours {:.1?}, reproduced {:.1?}, curl {:.1?}",
                ours.total, reproduced.total, curl
            );
            rounds.push(Round {
                ours,
                reproduced,
                curl,
            });
        }
        Ok(Measured {
            disk,
            vmdk_bytes,
            rounds,
        })
    }

    /// Exports the VM once and ends the lease: vcsim keeps the conversion.
    async fn warm(&self, vm: &str) -> Result<u64> {
        let mut soap = self.vcsim.soap_session().await?;
        let lease = Lease::open(&mut soap, vm).await?;
        soap.lease_abort(&lease.id).await?;
        soap.logout().await?;
        Ok(lease.vmdk_bytes)
    }

    /// `curl -o /dev/null` of the lease URL.
    async fn curl_floor(&self, vm: &str) -> Result<Duration> {
        let mut soap = self.vcsim.soap_session().await?;
        let lease = Lease::open(&mut soap, vm).await?;
        let started = Instant::now();
        curl(&self.ca_file, &lease.url, Path::new("/dev/null")).await?;
        let took = started.elapsed();
        soap.lease_complete(&lease.id).await?;
        soap.logout().await?;
        Ok(took)
    }

    /// vm-import-controller's method: the VMDK to a file, converted to a raw
    /// file, which a static file server serves to the image importer.
    async fn reproduced(&self, vm: &str, id: &str, capacity: u64) -> Result<Reproduced> {
        let image = format!("repro-{id}");
        let vmdk = self.scratch.join(format!("{image}.vmdk"));
        let raw_name = format!("{image}.img");
        let raw = self.scratch.join(&raw_name);
        let mut soap = self.vcsim.soap_session().await?;
        let sampler = ScratchSampler::start(self.scratch);
        let started = Instant::now();
        let lease = Lease::open(&mut soap, vm).await?;
        curl(&self.ca_file, &lease.url, &vmdk).await?;
        soap.lease_complete(&lease.id).await?;
        let downloaded = started.elapsed();
        run_tool(
            tokio::process::Command::new("qemu-img")
                .args(["convert", "-f", "vmdk", "-O", "raw"])
                .arg(&vmdk)
                .arg(&raw),
        )
        .await?;
        sampler.sample();
        tokio::fs::remove_file(&vmdk).await?;
        let converted = started.elapsed();
        let manifest = json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
            "metadata": {"name": image},
            "spec": {"displayName": image, "sourceType": "download", "url": self.files.url(&raw_name)}});
        post(&self.client, IMAGES, &manifest).await?;
        let record = self.images.wait_imported(NAMESPACE, &image, WAIT).await?;
        let total = started.elapsed();
        let scratch = sampler.stop();
        tokio::fs::remove_file(&raw).await?;
        soap.logout().await?;
        ensure!(
            record.bytes == capacity,
            "{image}: {} bytes imported, {capacity} expected",
            record.bytes
        );
        Ok(Reproduced {
            total,
            download: downloaded,
            convert: converted - downloaded,
            import: total - converted,
            scratch,
        })
    }

    /// Our controller: an import job for the VM, timed until its image is
    /// imported; then waited for until it succeeded (lease completed, VM made).
    async fn ours(&self, vm_name: &str, job: &str, capacity: u64) -> Result<Ours> {
        let pid = self.controller.server.process.pid();
        reset_peak_rss(pid)?;
        let written = storage_writes(pid)?;
        let cpu = self.cpu()?;
        let image = format!("{job}-disk-0");
        let manifest = json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": job},
            "spec": {"sourceCluster": {"kind": "Vsphere", "name": SOURCE}, "vmName": vm_name,
                     "targetName": job}});
        let started = Instant::now();
        post(&self.client, JOBS, &manifest).await?;
        self.wait_image(job, &image).await?;
        let image_created = started.elapsed();
        let record = self.images.wait_imported(NAMESPACE, &image, WAIT).await?;
        let total = started.elapsed();
        let cpu = self.cpu()?.since(cpu);
        ensure!(
            record.bytes == capacity,
            "{image}: {} bytes imported, {capacity} expected",
            record.bytes
        );
        self.wait_succeeded(job).await?;
        Ok(Ours {
            total,
            transfer: total - image_created,
            written: storage_writes(pid)? - written,
            peak_rss_kib: memory_field(pid, "VmHWM:")?,
            cpu,
        })
    }

    fn cpu(&self) -> Result<Cpu> {
        Ok(Cpu {
            controller: cpu_time(self.controller.server.process.pid())?,
            vcsim: cpu_time(self.vcsim.pid())?,
            stand_in: cpu_time(std::process::id())?,
        })
    }

    /// Waits until the stand-in sees the job's image.
    async fn wait_image(&self, job: &str, image: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.images.result(NAMESPACE, image).is_none() {
            self.job_status(job).await?;
            ensure!(Instant::now() < deadline, "no image {image} after {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn wait_succeeded(&self, job: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.job_status(job).await?["phase"] != "Succeeded" {
            ensure!(
                Instant::now() < deadline,
                "job {job} not done after {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// The job's status; an error once it failed.
    async fn job_status(&self, job: &str) -> Result<Value> {
        let request = http::Request::get(format!("{JOBS}/{job}")).body(Vec::new())?;
        let mut now: Value = serde_json::from_str(&self.client.request_text(request).await?)?;
        let status = now["status"].take();
        ensure!(status["phase"] != "Failed", "job {job} failed: {status}");
        Ok(status)
    }
}

/// A ready export lease of a one-disk VM.
struct Lease {
    id: String,
    url: String,
    vmdk_bytes: u64,
}

impl Lease {
    /// `ExportVm`, waited for until ready (vcsim converts the disk then).
    async fn open(soap: &mut SoapSession, vm: &str) -> Result<Lease> {
        let id = soap.export_vm(vm).await?;
        let state = soap.wait_lease(&id, WAIT).await?;
        ensure!(state == "ready", "export lease {id} is {state}");
        let info = soap
            .lease_info(&id)
            .await?
            .context("a ready lease has info")?;
        let disk = info
            .device_urls
            .into_iter()
            .find(|d| d.disk)
            .context("the lease has no disk")?;
        Ok(Lease {
            id,
            url: disk.url,
            vmdk_bytes: disk.file_size,
        })
    }
}

/// The file curl should trust for vcsim's HTTPS.
fn ca_file(vcsim: &Vcsim) -> PathBuf {
    let info = vcsim.info();
    info.ca_file
        .clone()
        .filter(|path| !path.as_os_str().is_empty())
        .unwrap_or_else(|| info.cert_file.clone())
}

async fn curl(ca_file: &Path, url: &str, output: &Path) -> Result<()> {
    run_tool(
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--cacert"])
            .arg(ca_file)
            .arg("--output")
            .arg(output)
            .arg(url),
    )
    .await
}

/// Flushes dirty pages (outside any timing), so one method's writes are not
/// written back during the next one's.
async fn sync() -> Result<()> {
    run_tool(&mut tokio::process::Command::new("sync")).await
}

async fn run_tool(command: &mut tokio::process::Command) -> Result<()> {
    let what = format!("{:?}", command.as_std());
    let status = command
        .status()
        .await
        .with_context(|| format!("run {what}"))?;
    ensure!(status.success(), "{what}: {status}");
    Ok(())
}

async fn post(client: &kube::Client, path: &str, body: &Value) -> Result<()> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("POST {path}"))?;
    Ok(())
}

/// A plain static file server for the scratch directory, as
/// vm-import-controller's Go `http.FileServer`: HEAD and GET of whole files
/// with their Content-Length, the body sent by `std::io::copy`, which on Linux
/// is `sendfile(2)` from the file to the socket, as Go's is. (Python's
/// `http.server` copies through 64 KiB reads and writes in the interpreter,
/// and would make the method look slower than it is.) Serves until the
/// process ends.
struct FileServer {
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> Result<FileServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let dir = dir.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    if let Err(error) = serve_file(stream, &dir) {
                        eprintln!("file server: {error:#}");
                    }
                });
            }
        });
        Ok(FileServer { port })
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

/// Answers one request on a connection, then closes it.
fn serve_file(mut stream: TcpStream, dir: &Path) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let file = path
        .strip_prefix('/')
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(|name| dir.join(name))
        .filter(|path| path.is_file());
    let Some(path) = file else {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )?;
    if method == "GET" {
        std::io::copy(&mut file, &mut stream)?;
    }
    Ok(())
}

/// Samples the bytes allocated in a directory every few milliseconds and
/// keeps the largest sum.
struct ScratchSampler {
    dir: PathBuf,
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ScratchSampler {
    fn start(dir: &Path) -> ScratchSampler {
        let (peak, done) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let thread = {
            let (dir, peak, done) = (dir.to_owned(), peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(allocated(&dir), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        ScratchSampler {
            dir: dir.to_owned(),
            peak,
            done,
            thread,
        }
    }

    /// One more sample now (at a known peak).
    fn sample(&self) {
        self.peak.fetch_max(allocated(&self.dir), Ordering::Relaxed);
    }

    fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes allocated on disk by the files of `dir` (holes not counted).
fn allocated(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.blocks() * 512)
        .sum()
}

/// Resets the process's VmHWM to its current RSS (`clear_refs`, value 5).
fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("reset the peak RSS of process {pid}"))
}

/// A `kB` field of `/proc/<pid>/status`.
fn memory_field(pid: u32, name: &str) -> Result<u64> {
    let value = proc_field(pid, "status", name)?;
    value
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{name} in /proc/{pid}/status"))
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            controller: self.controller - before.controller,
            vcsim: self.vcsim - before.vcsim,
            stand_in: self.stand_in - before.stand_in,
        }
    }
}

/// User + system CPU time of a process, all threads: fields 14 and 15 of
/// `/proc/<pid>/stat`, in USER_HZ ticks (100 per second on Linux).
fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // Fields count from the state, after the command name in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |field: usize| -> Result<u64> {
        fields
            .get(field - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {field} of {path}"))
    };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// Bytes the process caused to be written to storage (`/proc/<pid>/io`).
fn storage_writes(pid: u32) -> Result<u64> {
    proc_field(pid, "io", "write_bytes:")?
        .parse()
        .with_context(|| format!("write_bytes in /proc/{pid}/io"))
}

fn proc_field(pid: u32, file: &str, name: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("{name} missing in {path}"))
}

fn report(args: &Args, results: &[Measured]) {
    println!(
        "\nimport benchmark: {} MiB disks served by vcsim as streamOptimized VMDK, median of {} rounds\n",
        args.size_mib, args.rounds
    );
    println!(
        "{:<10} {:>9}  {:>18}  {:>34}  {:>8}  {:>10}  {:>9}",
        "disk",
        "VMDK",
        "ours (transfer)",
        "reproduced (down + conv + import)",
        "curl",
        "ours/repro",
        "ours/curl"
    );
    let (mut worst_repro, mut worst_curl) = (0f64, 0f64);
    let mut cpu_lines = Vec::new();
    for m in results {
        let ours = &median_round(&m.rounds, |r| r.ours.total).ours;
        let repro = &median_round(&m.rounds, |r| r.reproduced.total).reproduced;
        let curl = median_round(&m.rounds, |r| r.curl).curl;
        let (to_repro, to_curl) = (ratio(ours.total, repro.total), ratio(ours.total, curl));
        worst_repro = worst_repro.max(to_repro);
        worst_curl = worst_curl.max(to_curl);
        println!(
            "{:<10} {:>9}  {:>18}  {:>34}  {:>8}  {:>9.2}×  {:>8.2}×",
            m.disk.name,
            size(m.vmdk_bytes),
            format!("{} ({})", secs(ours.total), secs(ours.transfer)),
            format!(
                "{} ({} + {} + {})",
                secs(repro.total),
                secs(repro.download),
                secs(repro.convert),
                secs(repro.import)
            ),
            secs(curl),
            to_repro,
            to_curl,
        );
        cpu_lines.push(format!(
            "  {}: controller {}, vcsim {}, stand-in {} (wall {})",
            m.disk.name,
            secs(ours.cpu.controller),
            secs(ours.cpu.vcsim),
            secs(ours.cpu.stand_in),
            secs(ours.total)
        ));
    }
    println!(
        "\nCPU used by our import (its median round), on {} cores:",
        cores()
    );
    for line in cpu_lines {
        println!("{line}");
    }
    let peaks = |f: fn(&Round) -> u64| -> (String, u64) {
        let per_disk: Vec<(&str, u64)> = results
            .iter()
            .map(|m| (m.disk.name, m.rounds.iter().map(f).max().unwrap_or(0)))
            .collect();
        let shown: Vec<String> = per_disk
            .iter()
            .map(|(name, bytes)| format!("{name} {}", size(*bytes)))
            .collect();
        let worst = per_disk.iter().map(|(_, bytes)| *bytes).max().unwrap_or(0);
        (shown.join(", "), worst)
    };
    let (ours_scratch, worst_scratch) = peaks(|r| r.ours.written);
    let (repro_scratch, _) = peaks(|r| r.reproduced.scratch);
    let (rss, worst_rss) = peaks(|r| r.ours.peak_rss_kib * 1024);
    println!(
        "\npeak local scratch, ours (everything the controller wrote to local storage, its log included): {ours_scratch}"
    );
    println!("peak local scratch, reproduced (VMDK + raw file, allocated): {repro_scratch}");
    println!("controller peak RSS (VmHWM, reset before each import): {rss}");
    println!(
        "\ntargets (worst disk): ours ≤ 0.5× reproduced: {worst_repro:.2}×; ≤ 2× curl: {worst_curl:.2}×; scratch ≤ 64 MiB: {}; RSS ≤ 128 MiB: {}",
        size(worst_scratch),
        size(worst_rss)
    );
}

/// The round with the median `key` (its parts then add up to the median).
fn median_round(rounds: &[Round], key: fn(&Round) -> Duration) -> &Round {
    let mut sorted: Vec<&Round> = rounds.iter().collect();
    sorted.sort_by_key(|r| key(r));
    sorted[sorted.len() / 2]
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn size(bytes: u64) -> String {
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else if mib >= 1.0 {
        format!("{mib:.1} MiB")
    } else if bytes >= 1024 {
        format!("{:.0} KiB", mib * 1024.0)
    } else {
        format!("{bytes} B")
    }
}
