//! `scale-out-bench`: one wave of import jobs on real nodes (the chart
//! installed as users install it), with disks served from the controller's
//! pod (`transfers.mode=inProcess`) against transfer Jobs on one node and on
//! two (docs/scale-out.md). For each layout, from creating the jobs to every
//! job `Succeeded`:
//!
//! - the wall time, and its ratio to the in-process layout of the same run;
//! - the CPU the controller and the workers used (from `/proc`: the nodes'
//!   containers are this machine's processes), per GiB of disk;
//! - each transfer's start overhead: its Job created → its pod Ready, seen
//!   by a watch;
//! - the nodes the workers ran on.
//!
//! The nodes share this machine's cores, so two nodes cannot move bytes
//! faster here than one: the figures are placement and overhead, from which
//! docs/scale-out.md argues throughput. Not a test: no thresholds.
//!
//! Usage: `bench/scale-out.sh [--vms 2] [--disks-per-vm 2] [--size-mib 512]`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use vmm_bench::report::{ratio, secs, size};
use vmm_testkit::nodes::NodeCluster;
use vmm_testkit::procfs::cpu_time;
use vmm_testkit::release::{self, NAMESPACE};
use vmm_testkit::vcsim::DiskSpec;
use vmm_testkit::{Inventory, TestNamespace, import};

#[derive(Parser)]
#[command(name = "scale-out-bench")]
struct Args {
    /// VMs in the wave.
    #[arg(long, default_value_t = 2)]
    vms: usize,
    /// Disks per VM.
    #[arg(long, default_value_t = 2)]
    disks_per_vm: usize,
    /// Capacity of each (dense) disk, in MiB.
    #[arg(long, default_value_t = 512)]
    size_mib: u64,
}

/// Where disks are served from, on how many nodes.
struct Layout {
    name: &'static str,
    nodes: usize,
    jobs: bool,
}

const LAYOUTS: [Layout; 3] = [
    Layout {
        name: "in-process, 2 nodes",
        nodes: 2,
        jobs: false,
    },
    Layout {
        name: "jobs, 1 node",
        nodes: 1,
        jobs: true,
    },
    Layout {
        name: "jobs, 2 nodes",
        nodes: 2,
        jobs: true,
    },
];

/// What one layout measured.
struct Measured {
    wall: Duration,
    controller_cpu: Duration,
    workers_cpu: Duration,
    /// Job created → pod Ready, per transfer.
    starts: Vec<Duration>,
    nodes: BTreeSet<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let total = args.vms as u64 * args.disks_per_vm as u64 * (args.size_mib << 20);
    let mut results = Vec::new();
    for layout in &LAYOUTS {
        eprintln!("scale-out-bench: {} ...", layout.name);
        results.push(measure(&args, layout).with_context(|| layout.name)?);
    }
    println!(
        "\n{} VMs x {} dense disks of {} ({} in all), every transfer allowed at once:",
        args.vms,
        args.disks_per_vm,
        size(args.size_mib << 20),
        size(total)
    );
    println!(
        "{:<22} {:>8} {:>9} {:>15} {:>15} {:>13} {:>6}",
        "layout", "wall", "vs first", "controller CPU", "workers CPU", "start (median)", "nodes"
    );
    let gib = total as f64 / f64::from(1 << 30);
    for (layout, m) in LAYOUTS.iter().zip(&results) {
        let start = median(&m.starts).map_or_else(|| "-".into(), secs);
        println!(
            "{:<22} {:>8} {:>8.2}x {:>9} ({:.1}/GiB) {:>7} ({:.1}/GiB) {:>13} {:>6}",
            layout.name,
            secs(m.wall),
            ratio(m.wall, results[0].wall),
            secs(m.controller_cpu),
            m.controller_cpu.as_secs_f64() / gib,
            secs(m.workers_cpu),
            m.workers_cpu.as_secs_f64() / gib,
            start,
            m.nodes.len()
        );
    }
    Ok(())
}

fn measure(args: &Args, layout: &Layout) -> Result<Measured> {
    let cluster = NodeCluster::start(layout.nodes)?;
    let cp = cluster.control_plane();
    let sources = TestNamespace::new(cp, "bench")?;
    let transfers = args.vms * args.disks_per_vm;
    let mut values = vec![
        "controller.replicas=1".to_string(),
        "apiserver.replicas=1".into(),
    ];
    if layout.jobs {
        values.extend([
            "controller.transfers.mode=jobs".into(),
            format!("controller.transfers.max={transfers}"),
            format!("controller.transfers.maxPerHost={transfers}"),
        ]);
    }
    values.push(format!("controller.maxJobs={}", args.vms));
    values.push(format!("controller.maxJobsPerSource={}", args.vms));
    release::install(&cluster, &sources, &values)?;
    let vcsim = release::vcenter(&sources, Inventory::with_vms(0))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let _in_runtime = runtime.enter();
    let _harvester = release::harvester(&sources, None)?;
    let mut names = Vec::new();
    for vm in 0..args.vms {
        let name = format!("vm-{vm}");
        let disks = (0..args.disks_per_vm)
            .map(|d| DiskSpec::generated(args.size_mib, (vm * 10 + d) as u64, 1.0))
            .collect();
        runtime.block_on(import::source_vm(&vcsim, &name, disks))?;
        names.push(name);
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    runtime.spawn(watch(cp.client(), seen.clone()));
    let cpu = CpuSampler::start();
    let started = Instant::now();
    for name in &names {
        import::create_job(cp, &sources, name, name, json!({}))?;
    }
    for name in &names {
        let done = import::wait_finished(&sources, name, Duration::from_secs(1800))?;
        anyhow::ensure!(
            done["status"]["phase"] == "Succeeded",
            "{name}: {}",
            done["status"]
        );
    }
    let wall = started.elapsed();
    let (controller_cpu, workers_cpu) = cpu.stop();
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("watch panicked"))?;
    let starts = seen
        .ready
        .iter()
        .filter_map(|(job, ready)| Some(ready.duration_since(*seen.created.get(job)?)))
        .collect();
    Ok(Measured {
        wall,
        controller_cpu,
        workers_cpu,
        starts,
        nodes: seen.nodes.clone(),
    })
}

fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

/// When each transfer Job was first seen and its pod first Ready, and the
/// nodes its pods ran on.
#[derive(Default)]
struct Seen {
    created: BTreeMap<String, Instant>,
    ready: BTreeMap<String, Instant>,
    nodes: BTreeSet<String>,
}

async fn watch(client: kube::Client, seen: Arc<Mutex<Seen>>) {
    let selector = "app.kubernetes.io/component=transfer";
    let mut jobs = watcher(
        Api::<Job>::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default().labels(selector),
    )
    .boxed();
    let mut pods = watcher(
        Api::<Pod>::namespaced(client, NAMESPACE),
        watcher::Config::default().labels(selector),
    )
    .boxed();
    // Patterns inside the branches: a branch whose pattern fails is off for
    // that turn, and with both off the select would end.
    loop {
        tokio::select! {
            Some(event) = jobs.next() => {
                if let Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) = event
                    && let Ok(mut seen) = seen.lock()
                {
                    seen.created.entry(job.name_any()).or_insert_with(Instant::now);
                }
            }
            Some(event) = pods.next() => {
                let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
                    continue;
                };
                let job = pod.labels().get("job-name").cloned().unwrap_or_default();
                let ready = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if let Ok(mut seen) = seen.lock() {
                    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                        seen.nodes.insert(node);
                    }
                    if ready {
                        seen.ready.entry(job).or_insert_with(Instant::now);
                    }
                }
            }
            else => return,
        }
    }
}

/// The CPU time of the controller's and the workers' processes, sampled
/// from `/proc` until stopped (a worker's last sample is taken just before
/// its Job is removed, within the sampling interval).
struct CpuSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, Duration)>,
}

impl CpuSampler {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last: BTreeMap<u32, (bool, Duration)> = BTreeMap::new();
            let mut first: BTreeMap<u32, Duration> = BTreeMap::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                for (pid, worker) in ours() {
                    if let Ok(cpu) = cpu_time(pid) {
                        first.entry(pid).or_insert(cpu);
                        last.insert(pid, (worker, cpu));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut totals = (Duration::ZERO, Duration::ZERO);
            for (pid, (worker, cpu)) in last {
                // The controller ran before the wave: only what it used since.
                let used = if worker {
                    cpu
                } else {
                    cpu.saturating_sub(first[&pid])
                };
                if worker {
                    totals.1 += used;
                } else {
                    totals.0 += used;
                }
            }
            totals
        });
        Self { stop, thread }
    }

    fn stop(self) -> (Duration, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Our controller's and workers' processes: `(pid, is a worker)`.
fn ours() -> Vec<(u32, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let binary = words.first()?;
            if !binary.ends_with(b"/vmm-controller") {
                return None;
            }
            let worker = words.get(1) == Some(&&b"transfer"[..]);
            let controller = words.iter().any(|w| w.starts_with(b"--disk-url="));
            (worker || controller).then_some((pid, worker))
        })
        .collect()
}
