//! Inventory load (issue 16, suite 4): many clients of kube-apiserver list the
//! inventory whole and by pages, and watch it, while vCenter powers its VMs
//! off and on. Every request must succeed, every list must hold every VM,
//! and once the changes stop every watcher's view must match vCenter's (no
//! event lost). It prints list latency p50/p99, the watch delay (a power
//! change started → the event at a watch client) p50/p99 and the inventory
//! apiserver's memory, for docs/reliability.md. No timing is asserted.
//!
//! In CI: `VMM_LOAD_CLIENTS=40`, `VMM_LOAD_SECONDS=15`, `VMM_LOAD_VMS=500`
//! (the defaults); the long form is `VMM_LOAD_CLIENTS=200 VMM_LOAD_SECONDS=60`.
//! Every client loop stops by itself at the deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use serde_json::Value;
use vmm_testkit::procfs::memory_field;
use vmm_testkit::servers::shared_inventory_api;
use vmm_testkit::{ControlPlane, Inventory, TestNamespace, Vcsim};

const PAGE: usize = 50;
/// How long watchers get, after the last change, to catch up with vCenter.
const SETTLE: Duration = Duration::from_secs(60);
const SYNC: Duration = Duration::from_secs(300);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The power state vCenter was last told to take, per VM name, with when
/// that change started and a sequence number, so each watcher counts each
/// change once.
#[derive(Default)]
struct Changes {
    latest: HashMap<String, (u64, &'static str, Instant)>,
    made: u64,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    full_lists: Vec<Duration>,
    pages: Vec<Duration>,
    watch_delays: Vec<Duration>,
    watch_restarts: usize,
    errors: Vec<String>,
    /// A watcher's view at the end: VM name → power state.
    view: HashMap<String, String>,
}

#[derive(Clone, Copy)]
enum Role {
    FullList,
    PagedList,
    Watch,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_list_and_watch_while_vcenter_changes() {
    let clients: usize = env_or("VMM_LOAD_CLIENTS", 40);
    let seconds: u64 = env_or("VMM_LOAD_SECONDS", 15);
    let vms: usize = env_or("VMM_LOAD_VMS", 500);

    let cp = ControlPlane::shared();
    let api = shared_inventory_api();
    let ns = TestNamespace::new(cp, "load").unwrap();
    let vcsim = Vcsim::start(Inventory::with_vms(vms as u32)).unwrap();
    cp.apply_yaml(ns.name(), &vcsim.source_manifest("vc"))
        .expect_success();
    let path = format!(
        "/apis/inventory.harvesterhci.io/v1/namespaces/{}/virtualmachines",
        ns.name()
    );
    let client = cp.client();
    let listed = wait_for_all(&client, &path, vms).await;

    let changes = Arc::new(Mutex::new(Changes::default()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let roles = [Role::Watch, Role::FullList, Role::PagedList];
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let role = roles[i % roles.len()];
            let client = cp.client();
            let (path, changes) = (path.clone(), changes.clone());
            tokio::spawn(async move {
                let mut seen = Seen::default();
                match role {
                    Role::FullList => full_lists(&client, &path, vms, deadline, &mut seen).await,
                    Role::PagedList => paged_lists(&client, &path, vms, deadline, &mut seen).await,
                    Role::Watch => watch(&client, &path, &changes, deadline, &mut seen).await,
                }
                seen
            })
        })
        .collect();
    let changer = change_power(&vcsim, &listed, &changes, deadline);
    let (changer, seen) = tokio::join!(changer, futures::future::join_all(tasks));
    changer.unwrap();
    let seen: Vec<Seen> = seen.into_iter().map(Result::unwrap).collect();

    let pid = api.server.process.pid();
    let rss = memory_field(pid, "VmRSS:").unwrap();
    let peak = memory_field(pid, "VmHWM:").unwrap();
    let changes = changes.lock().unwrap();
    let truth: HashMap<&str, &str> = changes
        .latest
        .iter()
        .map(|(name, (_, state, _))| (name.as_str(), *state))
        .collect();
    let watchers: Vec<&Seen> = seen.iter().filter(|s| !s.view.is_empty()).collect();
    let lost: usize = watchers
        .iter()
        .map(|w| {
            truth
                .iter()
                .filter(|(name, state)| w.view.get(**name).map(String::as_str) != Some(**state))
                .count()
        })
        .sum();
    let errors: Vec<&String> = seen.iter().flat_map(|s| &s.errors).collect();
    let all = |f: fn(&Seen) -> &Vec<Duration>| {
        let mut v: Vec<Duration> = seen.iter().flat_map(|s| f(s).iter().copied()).collect();
        v.sort();
        v
    };
    let (full, pages, delays) = (
        all(|s| &s.full_lists),
        all(|s| &s.pages),
        all(|s| &s.watch_delays),
    );
    let requests = full.len() + pages.len();
    println!(
        "\ninventory load: {clients} clients ({} watching) for {seconds} s through kube-apiserver, {vms} VMs, {} power changes in vcsim meanwhile",
        watchers.len(),
        changes.made
    );
    println!(
        "errors: {} of {requests} list requests and {} watches",
        errors.len(),
        watchers.len()
    );
    println!(
        "full list: {} requests, p50 {}, p99 {}",
        full.len(),
        ms(percentile(&full, 50)),
        ms(percentile(&full, 99))
    );
    println!(
        "page (limit={PAGE}): {} requests, p50 {}, p99 {}",
        pages.len(),
        ms(percentile(&pages, 50)),
        ms(percentile(&pages, 99))
    );
    println!(
        "watch delay (change started → event): {} events, p50 {}, p99 {}; watches restarted: {}",
        delays.len(),
        ms(percentile(&delays, 50)),
        ms(percentile(&delays, 99)),
        seen.iter().map(|s| s.watch_restarts).sum::<usize>()
    );
    println!(
        "events lost (a watcher's final view differs from vCenter): {lost} of {}",
        truth.len() * watchers.len()
    );
    println!(
        "vmm-apiserver memory: RSS {} MiB, peak {} MiB",
        rss / 1024,
        peak / 1024
    );

    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(lost, 0, "watchers missed changes");
    assert!(
        changes.made > 0 && !delays.is_empty(),
        "nothing changed or nothing was seen"
    );
    assert!(!full.is_empty() && !pages.is_empty(), "no list ran");
}

/// Waits until `path` lists `count` VMs; returns them.
async fn wait_for_all(client: &kube::Client, path: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + SYNC;
    loop {
        let items = match get(client, path).await {
            Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if items.len() >= count {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "{path} lists {} of {count} VMs",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn get(client: &kube::Client, path: &str) -> Result<Value, String> {
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}"))
}

async fn full_lists(
    client: &kube::Client,
    path: &str,
    vms: usize,
    deadline: Instant,
    seen: &mut Seen,
) {
    while Instant::now() < deadline {
        let started = Instant::now();
        match get(client, path).await {
            Ok(list) => {
                seen.full_lists.push(started.elapsed());
                let got = list["items"].as_array().map_or(0, Vec::len);
                if got != vms {
                    seen.errors
                        .push(format!("a full list held {got} of {vms} VMs"));
                }
            }
            Err(e) => seen.errors.push(e),
        }
    }
}

/// Walks every page, then starts again; each page is one latency sample,
/// and each walk must hold every VM once.
async fn paged_lists(
    client: &kube::Client,
    path: &str,
    vms: usize,
    deadline: Instant,
    seen: &mut Seen,
) {
    'walks: while Instant::now() < deadline {
        let mut names = std::collections::HashSet::new();
        let mut token = String::new();
        loop {
            let page = format!("{path}?limit={PAGE}&continue={token}");
            let started = Instant::now();
            let list = match get(client, &page).await {
                Ok(list) => list,
                Err(e) => {
                    seen.errors.push(e);
                    continue 'walks;
                }
            };
            seen.pages.push(started.elapsed());
            for item in list["items"].as_array().into_iter().flatten() {
                names.insert(item["metadata"]["name"].as_str().unwrap_or("").to_owned());
            }
            match list["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_owned(),
                _ => break,
            }
        }
        if names.len() != vms {
            seen.errors
                .push(format!("a paged walk held {} of {vms} VMs", names.len()));
        }
    }
}

/// Watches every VM (the first events are the current state), measuring
/// the delay of each change `changes` recorded; after the deadline it
/// keeps watching until its view matches the last changes, or [`SETTLE`].
/// A watch that ends is resumed from its last resourceVersion.
async fn watch(
    client: &kube::Client,
    path: &str,
    changes: &Mutex<Changes>,
    deadline: Instant,
    seen: &mut Seen,
) {
    let mut counted: HashMap<String, u64> = HashMap::new();
    let mut version = String::new();
    let settle_by = deadline + SETTLE;
    loop {
        let url = format!("{path}?watch=1&allowWatchBookmarks=true&resourceVersion={version}");
        let request = http::Request::get(url).body(Vec::new()).unwrap();
        let stream = match client.request_stream(request).await {
            Ok(stream) => stream,
            Err(e) => {
                seen.errors.push(format!("starting a watch: {e}"));
                return;
            }
        };
        let mut lines = stream.lines();
        loop {
            // Under the lock the changer records under, so no change can
            // start after this watcher has judged itself caught up.
            let done = {
                let changes = changes.lock().unwrap();
                let now = Instant::now();
                now > settle_by
                    || (now > deadline
                        && changes.latest.iter().all(|(name, (_, state, _))| {
                            seen.view.get(name).map(String::as_str) == Some(*state)
                        }))
            };
            if done {
                return;
            }
            let line = match tokio::time::timeout(Duration::from_secs(1), lines.next()).await {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    seen.errors.push(format!("reading a watch: {e}"));
                    return;
                }
                Ok(Some(Ok(line))) => line,
            };
            let event: Value = match serde_json::from_str(&line) {
                Ok(event) => event,
                Err(e) => {
                    seen.errors
                        .push(format!("a watch event is not JSON ({e}): {line}"));
                    return;
                }
            };
            let object = &event["object"];
            if let Some(v) = object["metadata"]["resourceVersion"].as_str() {
                version = v.to_owned();
            }
            match event["type"].as_str() {
                Some("ADDED" | "MODIFIED") => {}
                Some("BOOKMARK") => continue,
                _ => {
                    seen.errors.push(format!("watch event: {line}"));
                    return;
                }
            }
            let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let state = object["spec"]["powerState"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if let Some((seq, want, started)) = changes.lock().unwrap().latest.get(&name)
                && *want == state
                && counted.get(&name) != Some(seq)
            {
                seen.watch_delays.push(started.elapsed());
                counted.insert(name.clone(), *seq);
            }
            seen.view.insert(name, state);
        }
        seen.watch_restarts += 1;
    }
}

/// Powers the listed VMs off and on in turn, one change at a time, until
/// the deadline, recording each change before it is made.
async fn change_power(
    vcsim: &Vcsim,
    vms: &[Value],
    changes: &Mutex<Changes>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let session = vcsim.connect().await?;
    for vm in vms.iter().cycle() {
        let name = vm["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let id = vm["spec"]["id"].as_str().unwrap_or_default();
        let on = {
            let mut changes = changes.lock().unwrap();
            if Instant::now() > deadline {
                break;
            }
            let now_on = match changes.latest.get(&name) {
                Some((_, state, _)) => *state == "On",
                None => vm["spec"]["powerState"] == "On",
            };
            changes.made += 1;
            let seq = changes.made;
            let want = if now_on { "Off" } else { "On" };
            changes.latest.insert(name, (seq, want, Instant::now()));
            !now_on
        };
        session.set_power(id, on).await?;
    }
    session.logout().await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
