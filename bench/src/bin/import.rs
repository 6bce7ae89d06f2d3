//! `import-bench`: a vSphere disk import by our controller, measured against
//! today's importer's method and against a plain download, in one run
//! (`docs/benchmarks.md`). For a dense and a half-zero disk that vcsim serves
//! as a streamOptimized VMDK through an export lease:
//!
//! - **ours**: the release `vmm-controller`, from creating the import job to
//!   the image's `Imported=True` at the stand-in for Harvester's image
//!   controller (Longhorn's real downloader stores it; not hashed);
//! - **reproduced**: vm-import-controller's method with the same tools:
//!   ExportVm, `curl` of the VMDK to a scratch file, `qemu-img convert -f vmdk
//!   -O raw`, the raw file served by a plain static file server, an image
//!   pointing at it, stored by the same downloader;
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::json;
use vmm_bench::args::ImportArgs;
use vmm_bench::files::{FileServer, ScratchSampler};
use vmm_bench::jobs::{Namespace, WAIT};
use vmm_bench::report::{Footprint, median_by, print_cpu, print_footprints, ratio, secs, size};
use vmm_bench::tools::{curl, qemu_img_to_raw, sync};
use vmm_testkit::harvester::{Hashing, ImageController, Options};
use vmm_testkit::procfs::{
    cpu_time, cpu_time_with_reaped_children, memory_field, reset_peak_rss, storage_writes,
};
use vmm_testkit::servers::{ControllerServer, start_controller};
use vmm_testkit::vcsim::soap::SoapSession;
use vmm_testkit::vcsim::{DiskSpec, VmSpec};
use vmm_testkit::{ControlPlane, Inventory, Vcsim};

const NAMESPACE: &str = "bench";
const SOURCE: &str = "vc";

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
    #[command(flatten)]
    common: ImportArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = args.common.scratch_dir()?;
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

impl Round {
    fn footprint(&self) -> Footprint {
        Footprint {
            ours_written: self.ours.written,
            reproduced_scratch: self.reproduced.scratch,
            ours_peak_rss: self.ours.peak_rss_kib * 1024,
        }
    }
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
    /// CPU used from job creation to `Succeeded` (read then, when the
    /// downloader has been reaped).
    cpu: Cpu,
}

/// CPU time (user + system) used by the controller, vcsim, and this process
/// with the downloaders it ran (Harvester's stand-in and Longhorn's data
/// source, counted once reaped at the end of each download).
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
    namespace: Namespace,
    vcsim: &'a Vcsim,
    ca_file: PathBuf,
    controller: ControllerServer,
    images: ImageController,
    files: FileServer,
    scratch: &'a Path,
}

async fn run(args: &Args, cp: &ControlPlane, vcsim: &Vcsim, scratch: &Path) -> Result<()> {
    let controller = args.common.controller()?;
    let client = cp.try_client()?;
    cp.kubectl(["create", "namespace", NAMESPACE]).ok()?;
    cp.apply_yaml(NAMESPACE, &vcsim.source_manifest(SOURCE))
        .ok()?;
    let bench = Bench {
        args,
        namespace: Namespace::new(client.clone(), NAMESPACE),
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
        for round in 1..=self.args.common.rounds {
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
        curl(&lease.url, Path::new("/dev/null"), Some(&self.ca_file), &[]).await?;
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
        curl(&lease.url, &vmdk, Some(&self.ca_file), &[]).await?;
        soap.lease_complete(&lease.id).await?;
        let downloaded = started.elapsed();
        qemu_img_to_raw("vmdk", &vmdk, &raw).await?;
        sampler.sample();
        tokio::fs::remove_file(&vmdk).await?;
        let converted = started.elapsed();
        let manifest = json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
            "metadata": {"name": image},
            "spec": {"displayName": image, "sourceType": "download", "url": self.files.url(&raw_name)}});
        self.namespace
            .create("harvesterhci.io/v1beta1", "virtualmachineimages", &manifest)
            .await?;
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
        self.namespace.create_job(&manifest).await?;
        self.namespace.wait_image(&self.images, job, &image).await?;
        let image_created = started.elapsed();
        let record = self.images.wait_imported(NAMESPACE, &image, WAIT).await?;
        let total = started.elapsed();
        ensure!(
            record.bytes == capacity,
            "{image}: {} bytes imported, {capacity} expected",
            record.bytes
        );
        self.namespace.wait_succeeded(job).await?;
        let cpu = self.cpu()?.since(cpu);
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
            stand_in: cpu_time_with_reaped_children(std::process::id())?,
        })
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

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            controller: self.controller - before.controller,
            vcsim: self.vcsim - before.vcsim,
            stand_in: self.stand_in - before.stand_in,
        }
    }
}

fn report(args: &Args, results: &[Measured]) {
    println!(
        "\nimport benchmark: {} MiB disks served by vcsim as streamOptimized VMDK, median of {} rounds\n",
        args.size_mib, args.common.rounds
    );
    println!(
        "{:<10} {:>9}  {:>18}  {:>34}  {:>8}  {:>10}  {:>9}  {:>13}",
        "disk",
        "VMDK",
        "ours (transfer)",
        "reproduced (down + conv + import)",
        "curl",
        "ours/repro",
        "ours/curl",
        "xfer/static"
    );
    let (mut worst_repro, mut worst_curl, mut worst_static) = (0f64, 0f64, 0f64);
    let mut cpu_lines = Vec::new();
    for m in results {
        let ours = &median_by(&m.rounds, |r| r.ours.total).ours;
        let repro = &median_by(&m.rounds, |r| r.reproduced.total).reproduced;
        let curl = median_by(&m.rounds, |r| r.curl).curl;
        let (to_repro, to_curl) = (ratio(ours.total, repro.total), ratio(ours.total, curl));
        // The same downloader fetching the same raw bytes from a static
        // file server: the receiving side's own floor.
        let to_static = ratio(ours.transfer, repro.import);
        worst_repro = worst_repro.max(to_repro);
        worst_curl = worst_curl.max(to_curl);
        worst_static = worst_static.max(to_static);
        println!(
            "{:<10} {:>9}  {:>18}  {:>34}  {:>8}  {:>9.2}×  {:>8.2}×  {:>12.2}×",
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
            to_static,
        );
        cpu_lines.push(format!(
            "  {}: controller {}, vcsim {}, stand-in + Longhorn {} (wall {})",
            m.disk.name,
            secs(ours.cpu.controller),
            secs(ours.cpu.vcsim),
            secs(ours.cpu.stand_in),
            secs(ours.total)
        ));
    }
    print_cpu(&cpu_lines);
    let (worst_scratch, worst_rss) = print_footprints(
        results
            .iter()
            .map(|m| (m.disk.name, m.rounds.iter().map(Round::footprint).collect())),
        "VMDK + raw file",
    );
    println!(
        "\ntargets (worst disk): ours ≤ 0.5× reproduced: {worst_repro:.2}×; ≤ 2× curl: {worst_curl:.2}×; scratch ≤ 64 MiB: {}; RSS ≤ 128 MiB: {}\n\
         our transfer / the same downloader from a static file server (worst disk): {worst_static:.2}×",
        size(worst_scratch),
        size(worst_rss)
    );
}
