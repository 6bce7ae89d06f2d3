//! `import-openstack-bench`: an OpenStack volume import by our controller,
//! measured against today's importer's method and against a plain download
//! of the same bytes, in one run (`docs/benchmarks.md`). For a dense and a
//! half-zero volume in the project's stand-in for Nova and Cinder, whose
//! uploads write the volume into the real Glance:
//!
//! - **ours**: the release `vmm-controller`, from creating the import job to
//!   the image's `Imported=True` at the stand-in for Harvester's image
//!   controller (Longhorn's real downloader stores it; not hashed): the export (snapshot,
//!   volume from it, upload to a raw Glance image), then the Glance download
//!   streamed through the disk endpoint;
//! - **reproduced**: vm-import-controller's method: the same export (the same
//!   Cinder and Glance calls, made by `vmm-openstack`), `curl` of the Glance
//!   image to a scratch file, `qemu-img convert -f raw -O raw`, the raw file
//!   served by a plain static file server, an image pointing at it,
//!   downloaded the same way;
//! - **curl**: `curl -o /dev/null` of that Glance image (the transfer's
//!   floor);
//! - the local scratch each method needs at its peak, and the controller's
//!   peak RSS.
//!
//! Usage: `cargo run --release -p vmm-bench --bin import-openstack-bench -- [--size-gib 4] [--rounds 3]`
//! (needs the release vmm-controller next to it; `bench/import-openstack.sh`
//! builds both).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::json;
use vmm_api::source::OpenstackSettings;
use vmm_bench::args::ImportArgs;
use vmm_bench::files::{FileServer, ScratchSampler};
use vmm_bench::jobs::{Namespace, WAIT};
use vmm_bench::report::{Footprint, median_by, print_cpu, print_footprints, ratio, secs, size};
use vmm_bench::tools::{curl, qemu_img_to_raw, sync};
use vmm_core::credentials::Credentials;
use vmm_openstack::OpenstackClient;
use vmm_testkit::ControlPlane;
use vmm_testkit::harvester::{Hashing, Options};
use vmm_testkit::openstack::ServerSeed;
use vmm_testkit::openstack::project::Project;
use vmm_testkit::procfs::{
    cpu_time, cpu_time_with_reaped_children, memory_field, reset_peak_rss, storage_writes,
};
use vmm_testkit::servers::{ControllerServer, start_controller};

/// Bytes per chunk of a volume: each is random data or a hole.
const CHUNK: usize = 1 << 20;

/// A source volume: its 1 MiB chunks hold random (incompressible) data with
/// this probability, the rest are holes.
struct Volume {
    name: &'static str,
    seed: u64,
    data_fraction: f64,
}

const VOLUMES: [Volume; 2] = [
    Volume {
        name: "dense",
        seed: 1,
        data_fraction: 1.0,
    },
    Volume {
        name: "half-zero",
        seed: 2,
        data_fraction: 0.5,
    },
];

/// Imports OpenStack volumes through the controller against today's
/// method and curl.
#[derive(Parser)]
#[command(name = "import-openstack-bench")]
struct Args {
    /// Size of each volume, in GiB (Cinder's unit).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i64).range(1..))]
    size_gib: i64,
    #[command(flatten)]
    common: ImportArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = args.common.scratch_dir()?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&args, &scratch));
    std::fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))?;
    result
}

/// What one round measured for one volume.
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
    /// Job created → image created: stop check, preflight and the export.
    export: Duration,
    /// Image created → `Imported=True`: the Glance download through the
    /// disk endpoint into the importer.
    transfer: Duration,
    /// Bytes the controller wrote to local storage (its log included).
    written: u64,
    /// The controller's VmHWM over the import, KiB.
    peak_rss_kib: u64,
    /// CPU used by the controller and by this process with the downloaders
    /// it ran (the stand-ins for Nova, Cinder and Harvester's image
    /// controller, and Longhorn's data source), job created → imported.
    cpu: (Duration, Duration),
}

struct Reproduced {
    /// Export started → image `Imported=True`.
    total: Duration,
    /// Snapshot, volume, upload to Glance.
    export: Duration,
    /// curl of the Glance image to a file.
    download: Duration,
    /// `qemu-img convert`.
    convert: Duration,
    /// Image created → `Imported=True`.
    import: Duration,
    /// Peak bytes allocated in the scratch directory.
    scratch: u64,
}

struct Measured {
    volume: &'static Volume,
    rounds: Vec<Round>,
}

/// Everything a measurement needs.
struct Bench<'a> {
    args: &'a Args,
    namespace: Namespace,
    project: Project<'a>,
    controller: ControllerServer,
    files: FileServer,
    scratch: &'a Path,
}

async fn run(args: &Args, scratch: &Path) -> Result<()> {
    let controller = args.common.controller()?;
    eprintln!("starting etcd, kube-apiserver, Keystone, Glance and the stand-ins …");
    let cp = ControlPlane::try_shared()?;
    let project = Project::with_options(
        "bench",
        Options {
            hashing: Hashing::Off,
            ..Options::default()
        },
    )
    .await;
    let bench = Bench {
        args,
        namespace: Namespace::new(cp.try_client()?, project.ns.name()),
        controller: start_controller(cp, &controller, cp.kubeconfig_path(), &[])?,
        files: FileServer::start(scratch)?,
        project,
        scratch,
    };
    let mut results = Vec::new();
    for volume in &VOLUMES {
        results.push(bench.measure(volume).await?);
    }
    report(args, &results);
    Ok(())
}

impl Bench<'_> {
    /// Creates the volume and a stopped server booting from it, then
    /// measures the three methods `rounds` times, in turn.
    async fn measure(&self, volume: &'static Volume) -> Result<Measured> {
        let cloud = &self.project.os.cloud;
        let project_id = &self.project.user.project_id;
        let name = format!("bench-{}", volume.name);
        let started = Instant::now();
        let volume_id = cloud.add_volume_filled(
            &name,
            project_id,
            self.args.size_gib,
            true,
            |path, size| fill(path, size, volume),
        )?;
        let server_id = cloud.add_server(ServerSeed {
            volumes: vec![volume_id.clone()],
            running: false,
            ..ServerSeed::new(&name, project_id)
        })?;
        eprintln!(
            "{}: volume written in {:.1?}",
            volume.name,
            started.elapsed()
        );
        let capacity = u64::try_from(self.args.size_gib)? << 30;
        let mut rounds = Vec::new();
        for round in 1..=self.args.common.rounds {
            let id = format!("{}-{round}", volume.name);
            sync().await?;
            let (reproduced, curl) = self.reproduced(&server_id, &id, capacity).await?;
            self.no_leftovers().await?;
            sync().await?;
            let ours = self.ours(&name, &id, capacity).await?;
            self.no_leftovers().await?;
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
        cloud.delete_server(&server_id);
        cloud.remove_volume(&volume_id)?;
        Ok(Measured { volume, rounds })
    }

    /// vm-import-controller's method: the export, the Glance image to a
    /// file, converted to a raw file, which a static file server serves to
    /// the image importer. Also times `curl` of the image (the floor).
    async fn reproduced(
        &self,
        server_id: &str,
        id: &str,
        capacity: u64,
    ) -> Result<(Reproduced, Duration)> {
        let user = &self.project.user;
        let os = self.project.os;
        let client = OpenstackClient::connect(
            &os.keystone.url(),
            &Credentials::UsernamePassword {
                username: user.user.clone(),
                password: user.password.clone().into(),
                user_domain: None,
            },
            &OpenstackSettings {
                project: Some(user.project.clone()),
                ..OpenstackSettings::default()
            },
            None,
            false,
        )
        .await?;
        let server = client.server(server_id).await?;
        let export_id = format!("vmm-bench-{id}");
        let started = Instant::now();
        let exported = client.export_images(&server, &export_id).await?;
        let export = started.elapsed();
        let image_id = &exported
            .first()
            .context("the export made no image")?
            .image_id;
        let token = os.keystone.authenticate(&user.password_auth()).await?;
        let url = format!("{}/v2/images/{image_id}/file", os.glance.url());
        let headers = [format!("X-Auth-Token: {}", token.id)];

        sync().await?;
        let floor = Instant::now();
        curl(&url, Path::new("/dev/null"), None, &headers).await?;
        let curl_floor = floor.elapsed();
        sync().await?;

        let image = format!("repro-{id}");
        let download = self.scratch.join(format!("{image}.download"));
        let raw_name = format!("{image}.img");
        let raw = self.scratch.join(&raw_name);
        let sampler = ScratchSampler::start(self.scratch);
        let resumed = Instant::now();
        curl(&url, &download, None, &headers).await?;
        let downloaded = resumed.elapsed();
        qemu_img_to_raw("raw", &download, &raw).await?;
        sampler.sample();
        tokio::fs::remove_file(&download).await?;
        let converted = resumed.elapsed();
        let manifest = json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "VirtualMachineImage",
            "metadata": {"name": image},
            "spec": {"displayName": image, "sourceType": "download", "url": self.files.url(&raw_name)}});
        self.namespace
            .create("harvesterhci.io/v1beta1", "virtualmachineimages", &manifest)
            .await?;
        let record = self
            .project
            .harvester
            .wait_imported(self.namespace.name(), &image, WAIT)
            .await?;
        let imported = resumed.elapsed();
        let scratch = sampler.stop();
        tokio::fs::remove_file(&raw).await?;
        let left = client.release(&export_id).await;
        ensure!(left == 0, "{left} temporaries of {export_id} were left");
        ensure!(
            record.bytes == capacity,
            "{image}: {} bytes imported, {capacity} expected",
            record.bytes
        );
        let reproduced = Reproduced {
            total: export + imported,
            export,
            download: downloaded,
            convert: converted - downloaded,
            import: imported - converted,
            scratch,
        };
        Ok((reproduced, curl_floor))
    }

    /// Our controller: an import job for the server, timed until its image
    /// is imported; then waited for until it succeeded (export released,
    /// VM made).
    async fn ours(&self, server: &str, job: &str, capacity: u64) -> Result<Ours> {
        let pid = self.controller.server.process.pid();
        reset_peak_rss(pid)?;
        let written = storage_writes(pid)?;
        let cpu = self.cpu()?;
        let image = format!("{job}-disk-0");
        let manifest = json!({
            "apiVersion": "importjob.harvesterhci.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": job},
            "spec": {"sourceCluster": {"kind": "Openstack", "name": "os"}, "vmName": server,
                     "targetName": job}});
        let started = Instant::now();
        self.namespace.create_job(&manifest).await?;
        let harvester = &self.project.harvester;
        self.namespace.wait_image(harvester, job, &image).await?;
        let export = started.elapsed();
        let record = harvester
            .wait_imported(self.namespace.name(), &image, WAIT)
            .await?;
        let total = started.elapsed();
        ensure!(
            record.bytes == capacity,
            "{image}: {} bytes imported, {capacity} expected",
            record.bytes
        );
        self.namespace.wait_succeeded(job).await?;
        // Read at `Succeeded`, when the downloader has been reaped.
        let (controller, this) = self.cpu()?;
        Ok(Ours {
            total,
            export,
            transfer: total - export,
            written: storage_writes(pid)? - written,
            peak_rss_kib: memory_field(pid, "VmHWM:")?,
            cpu: (controller - cpu.0, this - cpu.1),
        })
    }

    /// CPU time of the controller and of this process.
    fn cpu(&self) -> Result<(Duration, Duration)> {
        Ok((
            cpu_time(self.controller.server.process.pid())?,
            cpu_time_with_reaped_children(std::process::id())?,
        ))
    }

    /// Waits until Cinder and Glance hold nothing of an export, so that
    /// each measurement starts from the same cloud.
    async fn no_leftovers(&self) -> Result<()> {
        self.project
            .wait_no_leftovers(WAIT)
            .await
            .map_err(|left| anyhow::anyhow!("left at the cloud: {left:?}"))
    }
}

/// Writes `volume`'s content, `size` bytes, at `path`: each 1 MiB chunk
/// random data or a hole, decided by the volume's seed.
fn fill(path: &Path, size: u64, volume: &Volume) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(size)?;
    let mut random = SplitMix(volume.seed);
    let mut chunk = vec![0u8; CHUNK];
    for index in 0..size / CHUNK as u64 {
        let draw = random.next() as f64 / u64::MAX as f64;
        if draw >= volume.data_fraction {
            continue;
        }
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&random.next().to_le_bytes());
        }
        file.seek(SeekFrom::Start(index * CHUNK as u64))?;
        file.write_all(&chunk)?;
    }
    Ok(())
}

/// SplitMix64: fast, seeded pseudo-random words (incompressible enough for
/// a disk; not for anything secret).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn report(args: &Args, results: &[Measured]) {
    println!(
        "\nOpenStack import benchmark: {} GiB volumes, uploaded to the real Glance by the stand-in for Cinder, median of {} rounds\n",
        args.size_gib, args.common.rounds
    );
    println!(
        "{:<10} {:>24}  {:>40}  {:>8}  {:>10}  {:>14}  {:>13}",
        "volume",
        "ours (export + transfer)",
        "reproduced (export + down + conv + import)",
        "curl",
        "ours/repro",
        "transfer/curl",
        "xfer/static"
    );
    let mut cpu_lines = Vec::new();
    for m in results {
        let ours = &median_by(&m.rounds, |r| r.ours.total).ours;
        let repro = &median_by(&m.rounds, |r| r.reproduced.total).reproduced;
        let curl = median_by(&m.rounds, |r| r.curl).curl;
        println!(
            "{:<10} {:>24}  {:>40}  {:>8}  {:>9.2}×  {:>13.2}×  {:>12.2}×",
            m.volume.name,
            format!(
                "{} ({} + {})",
                secs(ours.total),
                secs(ours.export),
                secs(ours.transfer)
            ),
            format!(
                "{} ({} + {} + {} + {})",
                secs(repro.total),
                secs(repro.export),
                secs(repro.download),
                secs(repro.convert),
                secs(repro.import)
            ),
            secs(curl),
            ratio(ours.total, repro.total),
            ratio(ours.transfer, curl),
            // The same downloader fetching the same raw bytes from a
            // static file server: the receiving side's own floor.
            ratio(ours.transfer, repro.import),
        );
        cpu_lines.push(format!(
            "  {}: controller {}, this process (stand-ins for Cinder and Harvester, Longhorn's downloader) {} (wall {})",
            m.volume.name,
            secs(ours.cpu.0),
            secs(ours.cpu.1),
            secs(ours.total)
        ));
    }
    print_cpu(&cpu_lines);
    let (_, worst_rss) = print_footprints(
        results.iter().map(|m| {
            (
                m.volume.name,
                m.rounds.iter().map(Round::footprint).collect(),
            )
        }),
        "download + raw file",
    );
    println!("\ntarget: controller RSS ≤ 128 MiB: {}", size(worst_rss));
}
