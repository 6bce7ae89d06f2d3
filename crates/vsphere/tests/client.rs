//! The vSphere provider against govmomi's vcsim (through vmm-testkit). This is
//! the test binary of the vSphere provider: keep vSphere-only tests here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vmm_api::inventory::{NetworkKind, PowerState};
use vmm_core::InventoryEvent;
use vmm_testkit::vcsim::credentials;
use vmm_testkit::{Inventory, Vcsim};
use vmm_vsphere::{VsphereClient, VsphereError};

/// Generous: vcsim on a loaded 2-core machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

async fn shared_vcsim() -> &'static Vcsim {
    tokio::task::spawn_blocking(Vcsim::shared).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_and_reads_about() {
    let vcsim = shared_vcsim().await;
    let client = vcsim.connect().await.unwrap();
    let about = client.about();
    assert!(
        !about.name.is_empty() && !about.version.is_empty(),
        "{about:?}"
    );
    assert_eq!(about.api_type, "VirtualCenter");
    let version = client.about().endpoint_version();
    assert!(version.contains(&about.version), "{version}");
    client.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_an_authentication_error() {
    let vcsim = shared_vcsim().await;
    let password = "not-the-password-4711";
    let err = VsphereClient::connect(
        vcsim.url(),
        &credentials(vcsim.username(), password),
        Some(vcsim.ca_pem()),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, VsphereError::AuthenticationFailed { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    eprintln!("{message}");
    assert!(!message.contains(password), "{message}");
    assert!(message.contains("password"), "names the fix: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_ca_is_a_certificate_error() {
    let vcsim = shared_vcsim().await;
    let dir = std::env::temp_dir().join(format!("vmm-providers-other-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let other = vmm_testkit::pki::Ca::new(&dir, "other-ca", "some other CA").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = VsphereClient::connect(
        vcsim.url(),
        &credentials(vcsim.username(), vcsim.password()),
        Some(other.cert_pem()),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, VsphereError::CertificateUntrusted { .. }),
        "{err:?}"
    );
    eprintln!("{err}");
    assert!(!err.to_string().contains(vcsim.password()));
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_is_reported_as_such() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = VsphereClient::connect(
        &format!("https://127.0.0.1:{port}/sdk"),
        &credentials("someone", "some-password"),
        None,
        true,
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, VsphereError::Unreachable { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_inventory_matches_vcsim() {
    let vcsim = shared_vcsim().await;
    let client = vcsim.connect().await.unwrap();
    let inventory = client.inventory().await.expect("inventory");

    let paths: BTreeSet<String> = inventory
        .vms
        .iter()
        .map(|vm| vm.path.clone().expect("every VM has a path"))
        .collect();
    let expected: BTreeSet<String> = vcsim.info().vm_paths.iter().cloned().collect();
    assert!(!expected.is_empty());
    assert_eq!(paths, expected);
    assert_eq!(inventory.vms.len(), expected.len());

    let network_names: BTreeSet<&str> = inventory
        .networks
        .iter()
        .map(|n| n.display_name.as_str())
        .collect();
    for vm in &inventory.vms {
        assert!(vm.id.starts_with("vm-"), "{vm:?}");
        assert!(vm.cpus > 0 && vm.memory_mib > 0, "{vm:?}");
        assert_ne!(vm.power_state, PowerState::Unknown, "{vm:?}");
        assert!(vm.uuid.is_some() && vm.host.is_some(), "{vm:?}");
        assert!(!vm.disks.is_empty(), "{vm:?}");
        for disk in &vm.disks {
            assert!(disk.capacity_bytes > 0, "{disk:?}");
            assert!(disk.controller.is_some() && disk.file.is_some(), "{disk:?}");
            assert!(disk.datastore.is_some(), "{disk:?}");
        }
        assert!(!vm.nics.is_empty(), "{vm:?}");
        for nic in &vm.nics {
            let network = nic.network.as_deref().expect("NIC network resolved");
            assert!(
                network_names.contains(network),
                "{network} not in {network_names:?}"
            );
            assert!(nic.mac_address.is_some() && nic.model.is_some(), "{nic:?}");
        }
    }
    let dvpgs: Vec<_> = inventory
        .networks
        .iter()
        .filter(|n| n.kind == NetworkKind::DistributedPortgroup)
        .collect();
    assert!(!dvpgs.is_empty(), "{:?}", inventory.networks);
    assert!(dvpgs.iter().all(|n| n.switch.is_some()), "{dvpgs:?}");
    assert!(
        dvpgs.iter().all(|n| !n.display_name.contains("DVUplinks")),
        "uplink port groups are not networks: {dvpgs:?}"
    );
    client.logout().await.unwrap();
}

async fn next_event(rx: &mut mpsc::Receiver<InventoryEvent>) -> InventoryEvent {
    tokio::time::timeout(EVENT_TIMEOUT, rx.recv())
        .await
        .expect("an event within the timeout")
        .expect("the watch is running")
}

/// Events until `pred` matches one; returns it and the ones before it.
async fn wait_for(
    rx: &mut mpsc::Receiver<InventoryEvent>,
    pred: impl Fn(&InventoryEvent) -> bool,
) -> (InventoryEvent, Vec<InventoryEvent>) {
    let mut before = Vec::new();
    loop {
        let event = next_event(rx).await;
        if pred(&event) {
            return (event, before);
        }
        before.push(event);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reports_initial_set_then_power_off_and_destroy() {
    let vcsim = tokio::task::spawn_blocking(|| Vcsim::start(Inventory::with_vms(2)))
        .await
        .unwrap()
        .expect("start vcsim");
    let watcher = vcsim.connect().await.unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let watch = tokio::spawn({
        let watcher = watcher.clone();
        async move { watcher.watch(tx).await }
    });

    // The initial set, then Synced.
    let (_, initial) = wait_for(&mut rx, |e| *e == InventoryEvent::Synced).await;
    assert!(
        initial
            .iter()
            .all(|e| matches!(e, InventoryEvent::Vm(_) | InventoryEvent::Network(_))),
        "{initial:?}"
    );
    let vms: Vec<_> = initial
        .iter()
        .filter_map(|e| match e {
            InventoryEvent::Vm(vm) => Some(vm.clone()),
            _ => None,
        })
        .collect();
    let paths: BTreeSet<_> = vms.iter().filter_map(|vm| vm.path.clone()).collect();
    let expected: BTreeSet<_> = vcsim.info().vm_paths.iter().cloned().collect();
    assert_eq!(paths, expected);
    assert!(initial.iter().any(|e| matches!(e,
        InventoryEvent::Network(n) if n.kind == NetworkKind::DistributedPortgroup)));
    let target = vms
        .iter()
        .find(|vm| vm.power_state == PowerState::On)
        .expect("a powered-on VM")
        .clone();

    // Power it off from a second session.
    let actor = vcsim.connect().await.unwrap();
    actor.set_power(&target.id, false).await.expect("power off");

    let (event, before) = wait_for(
        &mut rx,
        |e| matches!(e, InventoryEvent::Vm(vm) if vm.id == target.id),
    )
    .await;
    assert!(
        before.iter().all(|e| *e == InventoryEvent::Current),
        "only the powered-off VM changes: {before:?}"
    );
    let InventoryEvent::Vm(off) = event else {
        unreachable!()
    };
    assert_eq!(off.power_state, PowerState::Off);
    assert_eq!(off.path, target.path);

    // Destroy it (not something the provider does: the harness's own SOAP).
    let mut soap = vcsim.soap_session().await.expect("SOAP login");
    soap.destroy(&target.id).await.expect("Destroy_Task");
    soap.logout().await.expect("SOAP logout");
    let (event, _) = wait_for(&mut rx, |e| matches!(e, InventoryEvent::VmRemoved { .. })).await;
    assert_eq!(
        event,
        InventoryEvent::VmRemoved {
            id: target.id.clone()
        }
    );

    actor.logout().await.unwrap();

    // Dropping the receiver ends the watch cleanly.
    drop(rx);
    let result = tokio::time::timeout(EVENT_TIMEOUT, watch)
        .await
        .expect("watch ends");
    result.unwrap().expect("watch ended without error");
    watcher.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_ends_with_an_error_when_vcsim_goes_away() {
    let vcsim = tokio::task::spawn_blocking(|| Vcsim::start(Inventory::with_vms(1)))
        .await
        .unwrap()
        .expect("start vcsim");
    let watcher = Arc::new(vcsim.connect().await.unwrap());
    let (tx, mut rx) = mpsc::channel(64);
    let watch = tokio::spawn({
        let watcher = watcher.clone();
        async move { watcher.watch(tx).await }
    });
    wait_for(&mut rx, |e| *e == InventoryEvent::Synced).await;
    tokio::task::spawn_blocking(move || drop(vcsim))
        .await
        .unwrap();
    let result = tokio::time::timeout(EVENT_TIMEOUT, watch)
        .await
        .expect("the watch ends instead of hanging")
        .expect("no panic");
    let err = result.expect_err("the watch fails");
    eprintln!("{err}");
    assert!(matches!(err, VsphereError::Unreachable { .. }), "{err:?}");
}

/// More objects than one RetrievePropertiesEx page (100) and than one
/// WaitForUpdatesEx batch (vcsim: 100), so both paging paths run.
#[tokio::test(flavor = "multi_thread")]
async fn large_inventories_are_paged() {
    let vcsim = tokio::task::spawn_blocking(|| Vcsim::start(Inventory::with_vms(150)))
        .await
        .unwrap()
        .expect("start vcsim");
    let expected: BTreeSet<String> = vcsim.info().vm_paths.iter().cloned().collect();
    assert_eq!(expected.len(), 150);
    let client = vcsim.connect().await.unwrap();

    let inventory = client.inventory().await.expect("inventory");
    let paths: BTreeSet<String> = inventory
        .vms
        .iter()
        .filter_map(|vm| vm.path.clone())
        .collect();
    assert_eq!(paths, expected);

    let (tx, mut rx) = mpsc::channel(512);
    let watch = tokio::spawn({
        let client = client.clone();
        async move { client.watch(tx).await }
    });
    let (_, initial) = wait_for(&mut rx, |e| *e == InventoryEvent::Synced).await;
    let watched: BTreeSet<String> = initial
        .iter()
        .filter_map(|e| match e {
            InventoryEvent::Vm(vm) => vm.path.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(watched, expected);
    drop(rx);
    tokio::time::timeout(EVENT_TIMEOUT, watch)
        .await
        .expect("watch ends")
        .unwrap()
        .expect("no error");
    client.logout().await.unwrap();
}
