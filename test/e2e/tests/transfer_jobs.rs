//! Disk transfers as Jobs across two real nodes (issue 18, part 3;
//! docs/scale-out.md): the chart installed with `controller.transfers.mode=jobs`
//! and a per-host limit of 2; two VMs of two disks each on one ESXi host.
//! Four worker pods serve the four disks through their own Services, on both
//! nodes; a watch of the transfer Jobs never sees more than two at once for
//! that host, and sees disks wait; while the nodes are cordoned a job says
//! its transfer pods are not scheduled, and a transfer whose Secret is gone
//! is replaced; a worker stopped mid-transfer (SIGTERM)
//! finishes the download it serves, one killed (SIGKILL) is replaced and its
//! download retried; every disk ends identical to what qemu-img makes of it;
//! once the jobs end no transfer Job, pod, Secret or Service is left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use vmm_controller::workers::manifests::TransferRef;
use vmm_testkit::nodes::NodeCluster;
use vmm_testkit::peers::Peers;
use vmm_testkit::process::{ProcessBuilder, run_dir};
use vmm_testkit::release::{self, NAMESPACE, controller_logs, wait_for, words};
use vmm_testkit::vcsim::{CreatedVm, DiskSpec, qemu_img_raw_sha256};
use vmm_testkit::{Inventory, TestNamespace, import};

const TRANSFERS: &str = "app.kubernetes.io/component=transfer";
const HOST_ANNOTATION: &str = "vm-migration.harvesterhci.io/source-host";
const PER_HOST: usize = 2;
/// Harvester's downloads are slowed to this, so transfers overlap and a
/// worker can be killed mid-way (a 32 MiB disk: 16 s).
const DOWNLOAD_RATE: u64 = 2 << 20;
const WAIT: Duration = Duration::from_secs(300);

/// What the watch saw: the most transfers running at once per source host,
/// and the nodes worker pods ran on.
#[derive(Default, Debug)]
struct Seen {
    most_per_host: BTreeMap<String, usize>,
    nodes: BTreeSet<String>,
    jobs: BTreeSet<String>,
}

#[test]
fn disks_transfer_through_jobs_spread_over_nodes_within_the_per_host_limit() {
    let cluster = NodeCluster::start(2).expect("start two nodes");
    let cp = cluster.control_plane();
    let sources = TestNamespace::new(cp, "sources").unwrap();
    release::install(
        &cluster,
        &sources,
        &[
            "controller.transfers.mode=jobs".into(),
            format!("controller.transfers.maxPerHost={PER_HOST}"),
            "controller.replicas=1".into(),
            "apiserver.replicas=1".into(),
        ],
    )
    .unwrap();

    // One ESXi host: the per-host limit holds every transfer.
    let vcsim = release::vcenter(&sources, Inventory::with_vms(0)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();
    let seen = Arc::new(Mutex::new(Seen::default()));
    runtime.spawn(watch_transfers(cp.client(), seen.clone()));
    let harvester = release::harvester(&sources, Some(DOWNLOAD_RATE)).unwrap();

    // No node takes new pods at first: the first transfers cannot start.
    let nodes = cluster.node_names();
    let cordon = |verb: &str| {
        let args: Vec<&str> = std::iter::once(verb)
            .chain(nodes.iter().map(String::as_str))
            .collect();
        cp.kubectl(args).expect_success();
    };
    cordon("cordon");
    let vms: Vec<(&str, CreatedVm)> = [("web", 1), ("db", 3)]
        .into_iter()
        .map(|(name, seed)| {
            let vm_name = format!("{name}-{}", vmm_testkit::namespace::random_suffix());
            let disks = vec![
                DiskSpec::generated(32, seed, 0.5),
                DiskSpec::generated(32, seed + 1, 0.5),
            ];
            let vm = runtime
                .block_on(import::source_vm(&vcsim, &vm_name, disks))
                .unwrap();
            import::create_job(cp, &sources, name, &vm_name, json!({})).unwrap();
            (name, vm)
        })
        .collect();

    // A job says why its transfers do not start, until the nodes take pods.
    import::until(
        "a job whose transfer pods are not scheduled",
        WAIT,
        || {
            ["web", "db"].iter().any(|name| {
                let job = import::job(&sources, name);
                let ready = &job["status"]["conditions"][0];
                ready["reason"] == "TransferStarting"
                    && ready["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("is not scheduled: 0/2 nodes are available"))
            })
        },
        || controller_logs(cp),
    );
    // A transfer left half-made, without its Secret (as a leader that died
    // between making the Job and its Secret leaves it), is removed and its
    // slot goes to a whole transfer (its disk's, or a queued one's: the
    // disk gets its turn again).
    let first = words(
        cp,
        &[
            "get",
            "jobs",
            "-n",
            NAMESPACE,
            "-l",
            TRANSFERS,
            "-o",
            "jsonpath={.items[0].metadata.name} {.items[0].metadata.uid}",
        ],
    );
    let [transfer, half_made] = <[String; 2]>::try_from(first).expect("a transfer Job");
    cp.kubectl(["delete", "secret", "-n", NAMESPACE, &transfer])
        .expect_success();
    wait_for(cp, "the half-made transfer replaced by a whole one", |cp| {
        let of = |what: &str, path: &str| {
            let path = format!("jsonpath={{.items[*].{path}}}");
            words(
                cp,
                &["get", what, "-n", NAMESPACE, "-l", TRANSFERS, "-o", &path],
            )
        };
        let jobs = of("jobs", "metadata.uid");
        let secrets_of = of("secrets", "metadata.ownerReferences[*].uid");
        let whole = jobs.iter().all(|job| secrets_of.contains(job));
        (jobs.len() == PER_HOST && !jobs.contains(&half_made) && whole).then_some(())
    });
    cordon("uncordon");

    // Disks wait for a slot while two transfer.
    import::until(
        "a job whose disks wait for a transfer slot",
        WAIT,
        || {
            ["web", "db"].iter().any(|name| {
                let job = import::job(&sources, name);
                job["status"]["conditions"][0]["reason"] == "TransferQueued"
            })
        },
        || controller_logs(cp),
    );

    // A worker mid-transfer stopped as an eviction stops it (SIGTERM, a
    // grace period), then another killed outright (SIGKILL). One after the
    // other: two seen mid-way at once needs status updates that a busy
    // machine may space out past a download.
    let mid_transfer = |cp: &vmm_testkit::ControlPlane, except: Option<&str>| {
        ["web", "db"]
            .into_iter()
            .flat_map(|name| workers_mid_transfer(cp, &sources, name))
            .find(|(image, _)| Some(image.as_str()) != except)
    };
    let (drained_image, drained) =
        wait_for(cp, "a worker mid-transfer", |cp| mid_transfer(cp, None));
    // The stopped worker's log, kept past its pod's end for a failure's message.
    let drained_log = run_dir().unwrap().join("drained.log");
    let _following = ProcessBuilder::new("kubectl logs", Peers::get().unwrap().kubectl())
        .args([
            format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            "logs".into(),
            "-f".into(),
            format!("--namespace={NAMESPACE}"),
            drained.clone(),
        ])
        .log_file(drained_log.clone())
        .spawn()
        .unwrap();
    // Attempts so far: a first try refused before kube-proxy had the new
    // Service's endpoint is Harvester's retry, not the drain's.
    let attempts_before_drain = harvester
        .result(sources.name(), &drained_image)
        .map_or(0, |r| r.attempts);
    cp.kubectl(["delete", "pod", "-n", NAMESPACE, &drained, "--wait=false"])
        .expect_success();
    let (killed_image, killed) = wait_for(cp, "another worker mid-transfer", |cp| {
        mid_transfer(cp, Some(&drained_image))
    });
    let placed = cp.kubectl([
        "get",
        "pod",
        "-n",
        NAMESPACE,
        &killed,
        "-o",
        "jsonpath={.spec.nodeName} {.status.containerStatuses[0].containerID}",
    ]);
    let placed = placed.expect_success().to_owned();
    let (node, container) = placed.split_once(' ').expect("node and container");
    cluster
        .kill_container(node, container.trim_start_matches("containerd://"))
        .unwrap();

    for (name, vm) in &vms {
        let done = import::wait_finished(&sources, name, WAIT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", controller_logs(cp)));
        assert_eq!(
            done["status"]["phase"],
            "Succeeded",
            "{}\n{}",
            done["status"],
            controller_logs(cp)
        );
        for (index, disk) in vm.disks.iter().enumerate() {
            let image = format!("{name}-disk-{index}");
            let url = sources.kubectl([
                "get",
                "virtualmachineimages.harvesterhci.io",
                &image,
                "-o",
                "jsonpath={.spec.url}",
            ]);
            assert!(
                url.expect_success().starts_with("http://vmm-transfer-"),
                "{url}"
            );
            assert_eq!(
                import::image_sha256(&sources, &image),
                qemu_img_raw_sha256(&disk.descriptor_file).unwrap(),
                "{image}"
            );
        }
    }

    // The stopped worker finished the download it was serving before it
    // exited: nothing was copied twice. The killed one's download was cut
    // and tried again, from the replacement pod through the same Service
    // (neither importer resumes a download: all of it again).
    let record = |image: &str| {
        harvester
            .result(sources.name(), image)
            .unwrap_or_else(|| panic!("no record of {image}"))
    };
    let drained = record(&drained_image);
    assert_eq!(
        drained.attempts,
        attempts_before_drain,
        "{drained_image}: {drained:?}\n{}",
        std::fs::read_to_string(&drained_log).unwrap_or_default()
    );
    let killed = record(&killed_image);
    assert!(killed.attempts >= 2, "{killed_image}: {killed:?}");

    // Nothing of the transfers is left: Jobs, their pods, Secrets (the
    // tokens) and Services.
    let left = wait_for(cp, "no transfer object left", |cp| {
        let left = words(
            cp,
            &[
                "get",
                "jobs,pods,secrets,services",
                "-n",
                NAMESPACE,
                "-l",
                TRANSFERS,
                "-o",
                "name",
            ],
        );
        left.is_empty().then_some(left)
    });
    assert!(left.is_empty());

    let seen = seen.lock().unwrap();
    assert_eq!(seen.jobs.len(), 4, "one transfer Job per disk: {seen:?}");
    assert_eq!(seen.most_per_host.len(), 1, "{seen:?}");
    assert!(
        seen.most_per_host.values().all(|&most| most == PER_HOST),
        "at most {PER_HOST} at once, and that many: {seen:?}"
    );
    assert_eq!(seen.nodes.len(), 2, "workers on both nodes: {seen:?}");
}

/// The images of job `name`'s disks part-way through their transfer,
/// with the running worker pod serving each.
fn workers_mid_transfer(
    cp: &vmm_testkit::ControlPlane,
    sources: &TestNamespace<'_>,
    name: &str,
) -> Vec<(String, String)> {
    let job = import::job(sources, name);
    let uid = job["metadata"]["uid"].as_str().unwrap_or_default();
    let disks = job["status"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    disks
        .iter()
        .enumerate()
        .filter(|(_, disk)| {
            let done = disk["bytesDone"].as_i64().unwrap_or(0);
            disk["phase"] == "Transferring"
                && done > 0
                && done < disk["capacityBytes"].as_i64().unwrap_or(0)
        })
        .filter_map(|(index, _)| {
            let transfer = TransferRef::name_for(uid, index);
            let pods = release::pods(
                cp,
                &format!("vm-migration.harvesterhci.io/transfer={transfer}"),
                true,
            );
            Some((format!("{name}-disk-{index}"), pods.first()?.clone()))
        })
        .collect()
}

/// Watches transfer Jobs and their pods, recording into `seen`.
async fn watch_transfers(client: kube::Client, seen: Arc<Mutex<Seen>>) {
    let jobs = watcher(
        Api::<Job>::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default().labels(TRANSFERS),
    );
    let pods = watcher(
        Api::<Pod>::namespaced(client, NAMESPACE),
        watcher::Config::default().labels(TRANSFERS),
    );
    let mut running: BTreeMap<String, String> = BTreeMap::new();
    let mut jobs = jobs.boxed();
    let mut pods = pods.boxed();
    loop {
        tokio::select! {
            Some(Ok(event)) = jobs.next() => {
                match event {
                    watcher::Event::Apply(job) | watcher::Event::InitApply(job) => {
                        let host = job.annotations().get(HOST_ANNOTATION).cloned().unwrap_or_default();
                        if job.metadata.deletion_timestamp.is_some() {
                            running.remove(&job.name_any());
                        } else {
                            running.insert(job.name_any(), host);
                        }
                        let mut seen = seen.lock().unwrap();
                        seen.jobs.insert(job.name_any());
                    }
                    watcher::Event::Delete(job) => {
                        running.remove(&job.name_any());
                    }
                    _ => {}
                }
                let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
                for host in running.values() {
                    *per_host.entry(host).or_default() += 1;
                }
                let mut seen = seen.lock().unwrap();
                for (host, count) in per_host {
                    let most = seen.most_per_host.entry(host.to_owned()).or_default();
                    *most = (*most).max(count);
                }
            }
            Some(Ok(event)) = pods.next() => {
                if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = event
                    && let Some(node) = pod.spec.and_then(|s| s.node_name)
                {
                    seen.lock().unwrap().nodes.insert(node);
                }
            }
            else => return,
        }
    }
}
