//! `inventory-bench`: the inventory API under a large vCenter, measured against
//! what kube-apiserver does with the same data as custom resources, in one run
//! (`docs/benchmarks.md`):
//!
//! - a full list and a first page through kube-apiserver, inventory vs a CRD
//!   whose objects are copies of the inventory's (same names, specs, status);
//! - the delay from a power change made in vcsim to the watch event a client of
//!   kube-apiserver receives, split at the moment the change reached the
//!   apiserver's store (its `vmm_inventory_last_change_timestamp_seconds`);
//!   then again with vcsim's upstream `WaitForUpdatesEx`, which our peer patches
//!   (docs/peers.md);
//! - the apiserver's resident memory with the whole inventory held.
//!
//! Usage: `cargo run --release -p vmm-bench --bin inventory-bench -- [--vms 10000] [--rounds 5]`
//! (needs `cargo build --release --bins` first for vmm-apiserver; `bench/inventory.sh` does both).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use vmm_testkit::procfs::memory_field;
use vmm_testkit::servers::{InventoryApi, start_inventory_api};
use vmm_testkit::{ControlPlane, Inventory, Vcsim, workspace_binary};
use vmm_vsphere::VsphereClient;

const NAMESPACE: &str = "bench";
const SOURCE: &str = "vc";
const INVENTORY: &str = "/apis/inventory.harvesterhci.io/v1";
const CR_GROUP: &str = "bench.vmm.harvesterhci.io";
const CREATE_CONCURRENCY: usize = 16;
const WAIT: Duration = Duration::from_secs(1800);

/// Measures the inventory API against the same objects served as custom resources.
#[derive(Parser)]
#[command(name = "inventory-bench")]
struct Args {
    /// VMs in the simulated vCenter.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    vms: u32,
    /// Measurements of each kind; medians are printed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Power changes watched with vcsim's upstream WaitForUpdatesEx (0 skips).
    #[arg(long, default_value_t = 3)]
    upstream_rounds: u16,
    /// Size of the first page.
    #[arg(long, default_value_t = 500)]
    page: u32,
    /// The vmm-apiserver binary (default: next to this program).
    #[arg(long)]
    apiserver: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let apiserver = match &args.apiserver {
        Some(path) => path.clone(),
        None => workspace_binary("vmm-apiserver")?,
    };
    let started = Instant::now();
    eprintln!("starting etcd and kube-apiserver …");
    let cp = ControlPlane::start()?;
    eprintln!("starting vcsim with {} VMs …", args.vms);
    let vcsim = Vcsim::start(Inventory::with_vms(args.vms))?;
    eprintln!("vcsim ready after {:.0?}", started.elapsed());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&args, &apiserver, &cp, &vcsim))
}

async fn run(args: &Args, apiserver: &Path, cp: &ControlPlane, vcsim: &Vcsim) -> Result<()> {
    let inventory = start_inventory_api(cp, apiserver, cp.kubeconfig_path()).await?;
    let client = cp.try_client()?;
    cp.kubectl(["create", "namespace", NAMESPACE]).ok()?;
    let synced = Instant::now();
    cp.apply_yaml(NAMESPACE, &vcsim.source_manifest(SOURCE))
        .ok()?;
    let vms_path = format!("{INVENTORY}/namespaces/{NAMESPACE}/virtualmachines");
    wait_for_count(&client, &vms_path, args.vms as usize).await?;
    let sync_time = synced.elapsed();
    eprintln!("inventory synced: {} VMs in {sync_time:.1?}", args.vms);

    let list: Value = serde_json::from_str(&get(&client, &vms_path).await?)?;
    let items = list["items"].as_array().context("a list has items")?;
    let crs_path = create_copies(cp, &client, items).await?;

    let page = format!("?limit={}", args.page);
    let cases = [
        ("full list", vms_path.clone(), crs_path.clone()),
        (
            "first page",
            format!("{vms_path}{page}"),
            format!("{crs_path}{page}"),
        ),
    ];
    let mut rows = Vec::new();
    for (what, ours, theirs) in &cases {
        let mut ours_times = Vec::new();
        let mut theirs_times = Vec::new();
        let (mut ours_bytes, mut theirs_bytes) = (0, 0);
        for _ in 0..args.rounds {
            let (t, n) = timed_get(&client, ours).await?;
            ours_times.push(t);
            ours_bytes = n;
            let (t, n) = timed_get(&client, theirs).await?;
            theirs_times.push(t);
            theirs_bytes = n;
        }
        rows.push((
            *what,
            median(&mut ours_times),
            ours_bytes,
            median(&mut theirs_times),
            theirs_bytes,
        ));
    }

    let mut watcher = Watcher::start(&client, vcsim, &inventory, &vms_path, &items[0]).await?;
    let mut patched = watcher.delays(args.rounds.into()).await?;
    set_full_recollect(vcsim, true).await?;
    let upstream = watcher.delays(args.upstream_rounds.into()).await;
    set_full_recollect(vcsim, false).await?;
    let mut upstream = upstream?;
    watcher.actor.logout().await?;
    let memory = Memory::of(inventory.server.process.pid())?;

    println!(
        "\ninventory benchmark: {} VMs in vcsim, through kube-apiserver, median of {} rounds\n",
        args.vms, args.rounds
    );
    println!(
        "{:<28} {:>12} {:>10}   {:>12} {:>10}   {:>9}",
        "", "inventory", "bytes", "CRs (etcd)", "bytes", "CR / ours"
    );
    for (what, ours, ours_bytes, theirs, theirs_bytes) in &rows {
        let label = if *what == "first page" {
            format!("{what} (limit={})", args.page)
        } else {
            (*what).to_owned()
        };
        println!(
            "{label:<28} {:>12} {:>10}   {:>12} {:>10}   {:>8.1}×",
            format_duration(*ours),
            mib(*ours_bytes),
            format_duration(*theirs),
            mib(*theirs_bytes),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
    println!("\nwatch delay, vcsim power change → event at a kube-apiserver watch client:");
    patched.print("vcsim as built (patches/0001)");
    if !upstream.total.is_empty() {
        upstream.print("vcsim's upstream WaitForUpdatesEx");
    }
    println!(
        "vmm-apiserver memory with {} VMs held: RSS {} MiB, peak {} MiB; of the RSS {} MiB heap (RssAnon), {} MiB pages of files (RssFile: the binary)",
        args.vms,
        memory.rss / 1024,
        memory.peak / 1024,
        memory.anon / 1024,
        memory.file / 1024,
    );
    println!("initial sync of {} VMs: {sync_time:.1?}", args.vms);
    let full = &rows[0];
    println!(
        "\ntargets: full list ≥ 5× faster than the CR list: {:.1}×; watch delay ≤ 1 s: {} (worst); RSS ≤ 100 MiB: {} MiB (peak)",
        full.3.as_secs_f64() / full.1.as_secs_f64(),
        format_duration(patched.total.iter().max().copied().unwrap_or_default()),
        memory.peak / 1024
    );
    Ok(())
}

async fn get(client: &kube::Client, path: &str) -> Result<String> {
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("GET {path}"))
}

/// Time to the last byte of a GET, and its size.
async fn timed_get(client: &kube::Client, path: &str) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let body = get(client, path).await?;
    Ok((started.elapsed(), body.len()))
}

/// Waits until `path` lists `count` objects (one-item pages: cheap to poll).
async fn wait_for_count(client: &kube::Client, path: &str, count: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let page: Value = serde_json::from_str(&get(client, &format!("{path}?limit=1")).await?)?;
        let listed = page["items"].as_array().map_or(0, Vec::len)
            + page["metadata"]["remainingItemCount"].as_u64().unwrap_or(0) as usize;
        if listed >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{path} lists {listed} of {count} objects after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A CRD with the inventory's names, and a copy of every inventory VM in it
/// (same name, labels, spec and status): the reference kube-apiserver serves
/// from its watch cache and etcd. Returns the copies' list path.
async fn create_copies(
    cp: &ControlPlane,
    client: &kube::Client,
    items: &[Value],
) -> Result<String> {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("virtualmachines.{CR_GROUP}")},
        "spec": {"group": CR_GROUP, "scope": "Namespaced",
            "names": {"plural": "virtualmachines", "singular": "virtualmachine", "kind": "VirtualMachine"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}});
    cp.kubectl_with_stdin(["apply", "-f", "-"], &crd.to_string())
        .ok()?;
    cp.kubectl([
        "wait",
        "--for=condition=Established",
        &format!("crd/virtualmachines.{CR_GROUP}"),
        "--timeout=60s",
    ])
    .ok()?;
    let path = format!("/apis/{CR_GROUP}/v1/namespaces/{NAMESPACE}/virtualmachines");
    let started = Instant::now();
    futures::stream::iter(items)
        .map(|item| {
            let body = json!({
                "apiVersion": format!("{CR_GROUP}/v1"), "kind": "VirtualMachine",
                "metadata": {"name": item["metadata"]["name"], "labels": item["metadata"]["labels"]},
                "spec": item["spec"], "status": item["status"]});
            let path = path.clone();
            async move {
                let request = http::Request::post(&path)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&body)?)?;
                client.request_text(request).await.context("creating a copy")
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    eprintln!(
        "{} custom resources created in {:.1?}",
        items.len(),
        started.elapsed()
    );
    Ok(path)
}

/// A watch through kube-apiserver on one VM, and a vSphere session of its own
/// that powers the VM off and on.
struct Watcher<'a> {
    vcsim: &'a Vcsim,
    actor: VsphereClient,
    id: String,
    on: bool,
    lines: futures::io::Lines<Box<dyn futures::AsyncBufRead + Send + Unpin>>,
    metrics: String,
}

/// The delays of a series of power changes.
#[derive(Default)]
struct Delays {
    /// From the start of the vSphere call to the watch event (an upper bound:
    /// the change happens inside the call).
    total: Vec<Duration>,
    /// The call itself: vim_rs returns once the task completed.
    call: Vec<Duration>,
    /// From the start of the call until the change reached the apiserver's
    /// store: vcsim's WaitForUpdatesEx answer and the provider.
    to_store: Vec<Duration>,
    /// From the store to the watch client: the apiserver's watch and
    /// kube-apiserver's proxy.
    from_store: Vec<Duration>,
}

impl Delays {
    fn print(&mut self, label: &str) {
        let worst = self.total.iter().max().copied().unwrap_or_default();
        println!(
            "  {label}: median {}, worst {} ({} changes)",
            format_duration(median(&mut self.total)),
            format_duration(worst),
            self.total.len()
        );
        println!(
            "    the power call itself (vSphere task to completion, as vim_rs waits for it): median {}",
            format_duration(median(&mut self.call))
        );
        println!(
            "    call start → change in vmm-apiserver's store (vcsim, the provider): median {}",
            format_duration(median(&mut self.to_store))
        );
        println!(
            "    store → watch client (vmm-apiserver's watch, kube-apiserver's proxy): median {}",
            format_duration(median(&mut self.from_store))
        );
    }
}

impl<'a> Watcher<'a> {
    async fn start(
        client: &kube::Client,
        vcsim: &'a Vcsim,
        inventory: &InventoryApi,
        vms_path: &str,
        vm: &Value,
    ) -> Result<Self> {
        let name = vm["metadata"]["name"].as_str().context("a VM has a name")?;
        let id = vm["spec"]["id"].as_str().context("a VM has an id")?;
        let actor = vcsim.connect().await?;
        let request = http::Request::get(format!(
            "{vms_path}?watch=1&fieldSelector=metadata.name%3D{name}&allowWatchBookmarks=false"
        ))
        .body(Vec::new())?;
        let stream: Box<dyn futures::AsyncBufRead + Send + Unpin> =
            Box::new(client.request_stream(request).await?);
        let mut lines = stream.lines();
        // The watch starts with the current state.
        lines.next().await.context("the watch ended")??;
        Ok(Self {
            vcsim,
            actor,
            id: id.to_owned(),
            on: vm["spec"]["powerState"] == "On",
            lines,
            metrics: inventory.server.admin_url("/metrics"),
        })
    }

    /// Powers the VM off or on `rounds` times, one change at a time.
    async fn delays(&mut self, rounds: usize) -> Result<Delays> {
        let mut delays = Delays::default();
        for _ in 0..rounds {
            self.on = !self.on;
            let want = if self.on { "On" } else { "Off" };
            let (actor, id, on, lines) = (&self.actor, &self.id, self.on, &mut self.lines);
            let started_at = SystemTime::now();
            let started = Instant::now();
            let change = async {
                let result = actor.set_power(id, on).await;
                (result, started.elapsed())
            };
            let event = async {
                while let Some(line) = lines.next().await {
                    let event: Value = serde_json::from_str(&line?)?;
                    if event["object"]["spec"]["powerState"] == want {
                        return Ok(started.elapsed());
                    }
                }
                bail!("the watch ended")
            };
            let ((changed, call), seen) = tokio::join!(change, tokio::time::timeout(WAIT, event));
            changed?;
            let seen = seen.context("no watch event")??;
            let to_store = self.last_change().await?.duration_since(started_at)?;
            delays.total.push(seen);
            delays.call.push(call);
            delays.to_store.push(to_store);
            delays.from_store.push(seen.saturating_sub(to_store));
        }
        Ok(delays)
    }

    /// When a change from the source last reached the apiserver's store.
    async fn last_change(&self) -> Result<SystemTime> {
        let http = self.vcsim.http_client()?;
        let text = http.get(&self.metrics).send().await?.text().await?;
        let labels = format!(r#"namespace="{NAMESPACE}",kind="Vsphere",source="{SOURCE}""#);
        let seconds: f64 = text
            .lines()
            .find_map(|line| {
                line.strip_prefix("vmm_inventory_last_change_timestamp_seconds{")?
                    .strip_prefix(labels.as_str())?
                    .strip_prefix("} ")
            })
            .context("no vmm_inventory_last_change_timestamp_seconds for the source")?
            .parse()?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
    }
}

/// Switches vcsim between its upstream WaitForUpdatesEx (`true`: every filter
/// collected again per update) and the patched one (docs/peers.md).
async fn set_full_recollect(vcsim: &Vcsim, full: bool) -> Result<()> {
    vcsim
        .http_client()?
        .put(vcsim.harness_url("property-collector"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(json!({ "fullRecollect": full }).to_string())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// A process's resident memory, KiB: all of it, its peak, and the two
/// parts that tell a larger heap from a larger binary.
struct Memory {
    rss: u64,
    peak: u64,
    anon: u64,
    file: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        Ok(Self {
            rss: memory_field(pid, "VmRSS:")?,
            peak: memory_field(pid, "VmHWM:")?,
            anon: memory_field(pid, "RssAnon:")?,
            file: memory_field(pid, "RssFile:")?,
        })
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn format_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
