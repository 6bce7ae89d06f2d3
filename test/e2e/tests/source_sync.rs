//! The apiserver's per-source sync (`vmm_apiserver::sources::SourceSync`)
//! against a real kube-apiserver and vcsim: sources and Secrets are created
//! with kubectl, and a recording sink sees what the sync delivers.
//!
//! Each test runs its own sync (which watches every namespace) and looks only
//! at its own namespaces. Waits are generous; nothing asserts on timing.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::oneshot;
use vmm_api::SourceKind;
use vmm_api::inventory::PowerState;
use vmm_apiserver::sink::{InventorySink, SourceId};
use vmm_apiserver::sources::SourceSync;

use vmm_core::InventoryEvent;
use vmm_testkit::{ControlPlane, Inventory, TestNamespace, Vcsim};

mod common;
use common::power_off;

/// Generous limit for anything that waits on a peer (never a pass/fail timing).
const WAIT: Duration = Duration::from_secs(180);

// A test recorder: a few hundred entries at most, boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
enum Recorded {
    Resync,
    Event(InventoryEvent),
    Forget,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(SourceId, Recorded)>>);

impl InventorySink for Recorder {
    fn resync(&self, source: &SourceId) {
        self.0
            .lock()
            .unwrap()
            .push((source.clone(), Recorded::Resync));
    }

    fn apply(&self, source: &SourceId, event: InventoryEvent) {
        self.0
            .lock()
            .unwrap()
            .push((source.clone(), Recorded::Event(event)));
    }

    fn forget(&self, source: &SourceId) {
        self.0
            .lock()
            .unwrap()
            .push((source.clone(), Recorded::Forget));
    }
}

impl Recorder {
    /// What was recorded for `id`.
    fn of(&self, id: &SourceId) -> Vec<Recorded> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == id)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Waits until what was recorded for `id` after the first `from` entries
    /// satisfies `done`; returns those entries.
    async fn wait(
        &self,
        id: &SourceId,
        from: usize,
        what: &str,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let start = Instant::now();
        loop {
            let all = self.of(id);
            let tail = all.get(from..).unwrap_or_default();
            if done(tail) {
                return tail.to_vec();
            }
            assert!(
                start.elapsed() < WAIT,
                "waited for {what}; recorded for {id:?} after {from}: {tail:#?}\nlogs:\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn synced(tail: &[Recorded]) -> bool {
    tail.contains(&Recorded::Event(InventoryEvent::Synced))
}

/// The VMs sent before the first `Synced` of `tail`.
fn initial_vms(tail: &[Recorded]) -> Vec<vmm_api::inventory::VirtualMachineSpec> {
    tail.iter()
        .take_while(|r| **r != Recorded::Event(InventoryEvent::Synced))
        .filter_map(|r| match r {
            Recorded::Event(InventoryEvent::Vm(vm)) => Some(vm.clone()),
            _ => None,
        })
        .collect()
}

// --- logs: one subscriber per test binary, writing into memory -------------

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("vmm_apiserver=debug,vmm_providers=debug,vmm_vsphere=debug")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        Mutex::default()
    })
}

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

/// Waits for a log line (after byte `from`) containing every one of `parts`.
async fn wait_log(from: usize, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let text = logs();
        if let Some(line) = text
            .get(from..)
            .unwrap_or_default()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return line.to_owned();
        }
        assert!(
            start.elapsed() < WAIT,
            "no log line with {parts:?}; logs:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// --- objects ----------------------------------------------------------------

fn secret(name: &str, username: &str, password: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"username": username, "password": password},
    })
    .to_string()
}

fn vsphere(name: &str, secret: &str, vcsim: &Vcsim) -> String {
    json!({
        "apiVersion": "source.harvesterhci.io/v1", "kind": "Vsphere",
        "metadata": {"name": name},
        "spec": {
            "endpoint": vcsim.url(),
            "credentials": {"name": secret},
            "caBundle": vcsim.ca_pem(),
        },
    })
    .to_string()
}

fn id(ns: &TestNamespace, name: &str) -> SourceId {
    SourceId {
        namespace: ns.name().to_owned(),
        kind: SourceKind::Vsphere,
        name: name.to_owned(),
    }
}

/// A running sync, stopped (and awaited) by `stop`.
struct Running {
    recorder: Arc<Recorder>,
    ready: tokio::sync::watch::Receiver<bool>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_sync(cp: &ControlPlane) -> Running {
    log_buffer();
    let recorder = Arc::new(Recorder::default());
    let sync = SourceSync::new(cp.client(), recorder.clone());
    let ready = sync.ready();
    let (shutdown, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(sync.run(async move {
        let _ = rx.await;
    }));
    Running {
        recorder,
        ready,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the sync stops")
            .expect("the sync did not panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsphere_source_syncs_follows_changes_and_credentials_and_is_forgotten() {
    let vcsim = tokio::task::spawn_blocking(|| Vcsim::start(Inventory::with_vms(3)))
        .await
        .unwrap()
        .expect("start vcsim");
    let vm_count = vcsim.info().vm_paths.len();
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new(cp, "sync").expect("namespace");
    ns.apply(&secret("vc-creds", vcsim.username(), vcsim.password()))
        .unwrap();
    ns.apply(&vsphere("vc", "vc-creds", &vcsim)).unwrap();
    let source = id(&ns, "vc");
    let label = format!("Vsphere {}/vc", ns.name());

    let mut sync = start_sync(cp);
    let rec = sync.recorder.clone();

    // The full set, then Synced; readiness follows.
    let tail = rec.wait(&source, 0, "the first Synced", synced).await;
    let vms = initial_vms(&tail);
    assert_eq!(vms.len(), vm_count, "{tail:#?}");
    tokio::time::timeout(WAIT, sync.ready.wait_for(|r| *r))
        .await
        .expect("ready after the first sync")
        .unwrap();

    // A change in vcsim arrives as an update of that VM.
    let target = vms
        .iter()
        .find(|vm| vm.power_state == PowerState::On)
        .expect("a powered-on VM")
        .clone();
    let mark = rec.of(&source).len();
    power_off(&vcsim, &target.id).await;
    rec.wait(&source, mark, "the powered-off VM", |tail| {
        tail.iter().any(|r| {
            matches!(r, Recorded::Event(InventoryEvent::Vm(vm))
            if vm.id == target.id && vm.power_state == PowerState::Off)
        })
    })
    .await;

    // A wrong password: the task reconnects, fails, and says what to fix.
    let wrong = "wrong-password-4711-e2e";
    let log_mark = logs().len();
    let mark = rec.of(&source).len();
    ns.apply(&secret("vc-creds", vcsim.username(), wrong))
        .unwrap();
    wait_log(log_mark, &[&label, "reconnecting"]).await;
    wait_log(log_mark, &[&label, "rejected the login"]).await;
    let after = rec.of(&source);
    assert!(
        after[mark..].is_empty(),
        "nothing is delivered with a wrong password: {:#?}",
        &after[mark..]
    );

    // Fixed: the full set again, then Synced.
    let mark = rec.of(&source).len();
    ns.apply(&secret("vc-creds", vcsim.username(), vcsim.password()))
        .unwrap();
    let tail = rec
        .wait(&source, mark, "Synced after the fix", synced)
        .await;
    assert_eq!(initial_vms(&tail).len(), vm_count, "{tail:#?}");

    // Deleted: forgotten.
    let mark = rec.of(&source).len();
    ns.kubectl(["delete", "vsphere", "vc", "--wait=true"])
        .expect_success();
    rec.wait(&source, mark, "forget", |tail| {
        tail.contains(&Recorded::Forget)
    })
    .await;

    let text = logs();
    assert!(!text.contains(wrong), "a password reached the logs");
    assert!(
        !text.contains(vcsim.password()) || vcsim.password().len() < 6,
        "a password reached the logs"
    );
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_never_reads_a_secret_of_another_namespace() {
    let vcsim = tokio::task::spawn_blocking(Vcsim::shared).await.unwrap();
    let cp = ControlPlane::shared();
    let team_a = TestNamespace::new(cp, "tenant-a").expect("namespace");
    let team_b = TestNamespace::new(cp, "tenant-b").expect("namespace");
    team_a
        .apply(&secret("a-only", vcsim.username(), vcsim.password()))
        .unwrap();
    // B names A's Secret: there is no such Secret in B.
    team_b.apply(&vsphere("borrower", "a-only", vcsim)).unwrap();
    // A's own source, as the control: same Secret name, same endpoint.
    team_a.apply(&vsphere("owner", "a-only", vcsim)).unwrap();
    let log_mark = logs().len();

    let sync = start_sync(cp);
    let rec = sync.recorder.clone();
    let owner = id(&team_a, "owner");
    let borrower = id(&team_b, "borrower");
    rec.wait(&owner, 0, "the owner's Synced", synced).await;
    wait_log(
        log_mark,
        &[
            &format!("Vsphere {}/borrower", team_b.name()),
            "does not exist in its namespace",
        ],
    )
    .await;
    assert!(
        rec.of(&borrower).is_empty(),
        "the borrower got inventory: {:#?}",
        rec.of(&borrower)
    );
    sync.stop().await;
}
