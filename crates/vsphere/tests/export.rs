//! The vSphere operations of an import against our vcsim peer: finding a VM,
//! guest shutdown, `ExportVm` and its lease life cycle, disk downloads
//! (checked with `qemu-img` against the disks' flat files) and the datastore
//! fallback. Each test starts its own vcsim (about a second), so lease
//! counts are exact.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use vmm_api::inventory::PowerState;
use vmm_testkit::Vcsim;
use vmm_testkit::vcsim::{Controller, CreatedVm, DiskSpec, NicSpec, VmSpec, sha256_file};
use vmm_vsphere::{Attached, DiskBacking, ExportLease, LeaseState, VsphereClient, VsphereError};

const READY: Duration = Duration::from_secs(120);

/// A vcsim of the test's own with the one VM `spec` describes, and a session.
async fn vcsim_with_vm(
    spec: &VmSpec,
    lease_timeout: Option<Duration>,
) -> (Vcsim, CreatedVm, VsphereClient) {
    let vcsim = Vcsim::start_without_vms(lease_timeout)
        .await
        .expect("start vcsim");
    let vm = vcsim.create_vm(spec).await.unwrap();
    let client = vcsim.connect().await.unwrap();
    (vcsim, vm, client)
}

fn scratch() -> PathBuf {
    vmm_testkit::process::run_dir().unwrap()
}

/// Downloads `url` through the provider into `dest`; returns the byte count.
async fn download(client: &VsphereClient, url: &str, dest: &Path) -> u64 {
    let mut download = client.open_disk(url, 0).await.expect("open disk");
    assert_eq!(download.start(), 0);
    let mut file = tokio::fs::File::create(dest).await.unwrap();
    let mut n = 0u64;
    while let Some(chunk) = download.chunk().await.expect("read disk") {
        file.write_all(&chunk).await.unwrap();
        n += chunk.len() as u64;
    }
    file.flush().await.unwrap();
    n
}

/// `qemu-img convert -f vmdk -O raw`, then SHA-256 of the raw image.
async fn raw_sha256_of_vmdk(vmdk: &Path) -> String {
    let raw = vmdk.with_extension("raw");
    let out = tokio::process::Command::new("/usr/bin/qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(vmdk)
        .arg(&raw)
        .output()
        .await
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = sha256_file(&raw).unwrap();
    let _ = std::fs::remove_file(&raw);
    hash
}

async fn wait_open_leases(vcsim: &Vcsim, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = vcsim.open_lease_count().await.unwrap();
        if open == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} open leases, want {want}: {:?}",
            vcsim.leases().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_no_password(vcsim: &Vcsim, err: &VsphereError) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(vcsim.password()), "{text}");
}

/// Opens `url`, which must answer 404; returns the error.
async fn open_disk_not_found(client: &VsphereClient, url: &str) -> VsphereError {
    let err = client.open_disk(url, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            VsphereError::Download {
                status: Some(404),
                ..
            }
        ),
        "{err:?}"
    );
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn finds_vms_by_name_and_path() {
    let vcsim = Vcsim::start_without_vms(None).await.expect("start vcsim");
    let prod = vcsim
        .create_vm(
            &VmSpec {
                folder: Some("/DC0/vm/prod".into()),
                cpus: Some(2),
                memory_mb: Some(256),
                ..VmSpec::new("Web 01")
            }
            .disk(DiskSpec::zeros(16))
            .disk(DiskSpec::zeros(8).on(Controller::Ide))
            .nic(NicSpec::on("VM Network"))
            .powered_on(true),
        )
        .await
        .unwrap();
    let test = vcsim
        .create_vm(
            &VmSpec {
                folder: Some("/DC0/vm/test".into()),
                ..VmSpec::new("Web 01")
            }
            .disk(DiskSpec::zeros(8)),
        )
        .await
        .unwrap();
    let unicode_name = "Dätenbank ☃ 数据库 (prod)";
    let unicode = vcsim
        .create_vm(&VmSpec::new(unicode_name).disk(DiskSpec::zeros(8)))
        .await
        .unwrap();
    let client = vcsim.connect().await.unwrap();

    let both = client.find_vms("Web 01", None).await.unwrap();
    let ids: Vec<&str> = both.iter().map(|v| v.spec.id.as_str()).collect();
    assert_eq!(
        ids,
        [prod.moref.as_str(), test.moref.as_str()],
        "sorted by path"
    );

    for within in [
        "/DC0/vm/prod",
        "/DC0/vm/prod/",
        "/DC0/vm/prod/Web 01",
        "/DC0",
    ] {
        let found = client.find_vms("Web 01", Some(within)).await.unwrap();
        let want = if within == "/DC0" { 2 } else { 1 };
        assert_eq!(found.len(), want, "within {within}: {found:?}");
        assert_eq!(found[0].spec.id, prod.moref);
    }
    assert!(
        client
            .find_vms("Web 01", Some("/DC0/vm/pro"))
            .await
            .unwrap()
            .is_empty(),
        "a path prefix is not a folder"
    );
    assert!(client.find_vms("Web", None).await.unwrap().is_empty());
    assert!(client.find_vms("web 01", None).await.unwrap().is_empty());

    let found = client.find_vms(unicode_name, None).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].spec.id, unicode.moref);
    assert_eq!(found[0].spec.display_name, unicode_name);

    // The match carries the inventory spec and the disk facts.
    let vm = &both[0];
    assert_eq!(vm.spec.path.as_deref(), Some(prod.inventory_path.as_str()));
    assert_eq!(vm.spec.power_state, PowerState::On);
    assert_eq!((vm.spec.cpus, vm.spec.memory_mib), (2, 256));
    assert_eq!(vm.spec.nics.len(), 1);
    assert_eq!(vm.spec.nics[0].network.as_deref(), Some("VM Network"));
    assert_eq!(vm.datacenter_path.as_deref(), Some("/DC0"));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.spec.disks.len(), 2);
    for (details, created) in vm.disks.iter().zip(&prod.disks) {
        assert_eq!(details.key, created.key, "{details:?}");
        assert_eq!(details.controller_key, Some(created.controller_key));
        assert_eq!(details.bus_number, Some(created.bus_number));
        assert_eq!(details.unit_number, Some(created.unit_number));
        assert_eq!(details.capacity_bytes as u64, created.capacity_bytes);
        assert_eq!(
            details.file.as_deref(),
            Some(created.datastore_path.as_str())
        );
        assert_eq!(
            details.flat_file.as_deref(),
            Some(created.flat_datastore_path.as_str())
        );
        assert_eq!(details.datastore.as_deref(), Some(vcsim.datastore()));
        assert_eq!(details.datacenter_path.as_deref(), Some("/DC0"));
        assert_eq!(details.backing, DiskBacking::Flat);
        assert!(!details.delta && !details.independent);
    }
    assert_eq!(vm.disks[0].controller.as_deref(), Some("pvscsi"));
    assert_eq!(
        vm.disks[0].controller_type.as_deref(),
        Some("ParaVirtualSCSIController")
    );
    assert_eq!(vm.disks[1].controller.as_deref(), Some("ide"));

    // One VM by id.
    let spec = client.vm(&prod.moref).await.unwrap();
    assert_eq!(spec, vm.spec);
    client.set_power(&prod.moref, false).await.unwrap();
    assert_eq!(
        client.vm(&prod.moref).await.unwrap().power_state,
        PowerState::Off
    );
    let err = client.vm("vm-999999").await.unwrap_err();
    assert!(matches!(err, VsphereError::VmNotFound { .. }), "{err:?}");
    eprintln!("{err}");
    client.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shuts_the_guest_down_and_waits_for_power_off() {
    let (vcsim, vm, client) = vcsim_with_vm(&VmSpec::new("Guest 1").powered_on(true), None).await;
    let slow = vcsim
        .create_vm(&VmSpec::new("Guest 2").powered_on(true))
        .await
        .unwrap();
    assert_eq!(client.power_state(&vm.moref).await.unwrap(), PowerState::On);

    // vcsim runs ShutdownGuest as a task that powers the VM off; it does not
    // model VMware Tools, so ToolsUnavailable cannot be provoked here.
    client.shutdown_guest(&vm.moref).await.unwrap();
    client
        .wait_powered_off(&vm.moref, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        client.power_state(&vm.moref).await.unwrap(),
        PowerState::Off
    );
    // Again, on a VM that is off: nothing to do.
    client.shutdown_guest(&vm.moref).await.unwrap();

    let started = Instant::now();
    let err = client
        .wait_powered_off(&slow.moref, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VsphereError::PowerOffTimeout { state, .. } if state == "poweredOn"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    eprintln!("{err}");

    let err = client.shutdown_guest("vm-999999").await.unwrap_err();
    assert!(matches!(err, VsphereError::VmNotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_two_disks_after_shutdown_and_completes() {
    let spec = VmSpec::new("Export Me 01")
        .disk(DiskSpec::generated(48, 1, 0.5))
        .disk(DiskSpec::generated(24, 2, 0.25).on(Controller::Sata))
        .nic(NicSpec::on("VM Network"))
        .powered_on(true);
    let (vcsim, vm, client) = vcsim_with_vm(&spec, None).await;
    client.shutdown_guest(&vm.moref).await.unwrap();
    client
        .wait_powered_off(&vm.moref, Duration::from_secs(30))
        .await
        .unwrap();

    let mut lease = client.export(&vm.moref).await.expect("export");
    assert_eq!(lease.vm_id(), vm.moref);
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 1);
    assert_eq!(lease.state().await.unwrap(), LeaseState::Ready);
    assert_eq!(lease.lease_timeout(), Duration::from_secs(300));
    assert_eq!(
        lease.total_capacity_bytes(),
        vm.disks.iter().map(|d| d.capacity_bytes).sum::<u64>()
    );
    let percent = Arc::new(AtomicU8::new(0));
    lease.keep_alive(percent.clone());

    assert_eq!(lease.disks().len(), 2, "{:?}", lease.disks());
    let dir = scratch();
    let mut done = 0u8;
    for created in &vm.disks {
        let disk = lease
            .disks()
            .iter()
            .find(|d| d.device_key == Some(created.key))
            .unwrap_or_else(|| panic!("no URL for disk {}: {:?}", created.key, lease.disks()));
        assert!(disk.key.starts_with(&format!("/{}/", vm.moref)), "{disk:?}");
        assert!(!format!("{disk:?}").contains(&disk.url), "Debug redacts");
        let dest = dir.join(format!("disk-{}.vmdk", created.key));
        let n = download(&client, &disk.url, &dest).await;
        assert_eq!(Some(n), disk.file_size, "{disk:?}");
        assert_eq!(client.content_length(&disk.url).await.unwrap(), n);

        // A resumed read from an offset sees the same bytes.
        let whole = std::fs::read(&dest).unwrap();
        let offset = (n / 3) as usize;
        let resumed = client.open_disk(&disk.url, offset as u64).await.unwrap();
        assert_eq!(resumed.start(), offset as u64);
        assert_eq!(resumed.total_size(), Some(n));
        let mut tail = Vec::new();
        let mut stream = Box::pin(resumed.into_stream());
        while let Some(chunk) = stream.next().await {
            tail.extend_from_slice(&chunk.unwrap());
        }
        assert!(tail == whole[offset..], "resumed bytes differ");

        assert_eq!(
            raw_sha256_of_vmdk(&dest).await,
            sha256_file(&created.flat_file).unwrap(),
            "disk {} round-trips through the export",
            created.key
        );
        done += 50;
        percent.store(done, std::sync::atomic::Ordering::Relaxed);
        lease.progress(done).await.unwrap();
    }
    assert!(lease.keep_alive_failure().is_none());
    lease.complete().await.expect("complete");
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 0);
    let leases = vcsim.leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].end_reason.as_deref(), Some("complete"));
    assert_eq!(leases[0].progress_percent, 100);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn exporting_a_powered_on_vm_fails_clearly_without_a_lease() {
    let spec = VmSpec::new("Running")
        .disk(DiskSpec::zeros(8))
        .powered_on(true);
    let (vcsim, vm, client) = vcsim_with_vm(&spec, None).await;
    let err = client.export(&vm.moref).await.unwrap_err();
    match &err {
        VsphereError::InvalidPowerState {
            call,
            actual,
            required,
            ..
        } => {
            assert_eq!(
                (*call, actual.as_str(), *required),
                ("ExportVm", "poweredOn", "powered off")
            );
        }
        other => panic!("{other:?}"),
    }
    eprintln!("{err}");
    assert!(err.to_string().contains("shut the guest down"), "{err}");
    assert!(!err.is_transient());
    assert_no_password(&vcsim, &err);
    assert!(vcsim.leases().await.unwrap().is_empty());

    let err = client.export("vm-999999").await.unwrap_err();
    assert!(matches!(err, VsphereError::VmNotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_lease_is_aborted() {
    let spec = VmSpec::new("Dropped").disk(DiskSpec::generated(8, 3, 0.5));
    let (vcsim, vm, client) = vcsim_with_vm(&spec, None).await;
    let mut lease = client.export(&vm.moref).await.unwrap();
    lease.keep_alive(Arc::new(AtomicU8::new(10)));
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 1);
    drop(lease);
    wait_open_leases(&vcsim, 0).await;
    let leases = vcsim.leases().await.unwrap();
    assert_eq!(leases[0].end_reason.as_deref(), Some("abort"));

    // An explicit abort, and the VM is free for another export.
    let lease = client.export(&vm.moref).await.unwrap();
    let id = lease.id().to_owned();
    lease.abort("test: changed my mind").await.unwrap();
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 0);
    let report = vcsim.leases().await.unwrap();
    let aborted = report.iter().find(|l| l.id == id).unwrap();
    assert_eq!(aborted.end_reason.as_deref(), Some("abort"));
}

#[tokio::test(flavor = "multi_thread")]
async fn attaches_to_an_existing_lease() {
    let spec = VmSpec::new("Attach Me")
        .disk(DiskSpec::generated(8, 4, 0.5))
        .disk(DiskSpec::zeros(4));
    let (vcsim, vm, client) = vcsim_with_vm(&spec, None).await;
    let lease = client.export(&vm.moref).await.unwrap();
    let first: Vec<_> = lease.disks().to_vec();
    let id = lease.detach();
    // Detached: still open (a restarted controller would attach).
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 1);

    // A new session, as after a restart.
    let other = vcsim.connect().await.unwrap();
    let Attached::Ready(lease) = ExportLease::attach(&other, &id, READY).await.unwrap() else {
        panic!("the lease should be ready");
    };
    assert_eq!(lease.id(), id);
    assert_eq!(lease.vm_id(), vm.moref);
    assert_eq!(lease.disks(), first.as_slice());
    let dir = scratch();
    let disk = &lease.disks()[0];
    let dest = dir.join("attached.vmdk");
    download(&other, &disk.url, &dest).await;
    let created = vm
        .disks
        .iter()
        .find(|d| Some(d.key) == disk.device_key)
        .unwrap();
    assert_eq!(
        raw_sha256_of_vmdk(&dest).await,
        sha256_file(&created.flat_file).unwrap()
    );
    lease.abort("stale").await.unwrap();
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 0);

    match ExportLease::attach(&other, &id, READY).await.unwrap() {
        Attached::Ended(LeaseState::Error { fault, .. }) => assert_eq!(fault, "RequestCanceled"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ExportLease::attach(&other, "vmm-lease-424242", READY)
            .await
            .unwrap(),
        Attached::Gone
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_without_progress_times_out_and_keep_alive_prevents_it() {
    let spec = VmSpec::new("Slow Reader").disk(DiskSpec::generated(8, 5, 0.5));
    let (vcsim, vm, client) = vcsim_with_vm(&spec, Some(Duration::from_secs(2))).await;

    // Kept alive for three lease timeouts: still ready.
    let mut kept = client.export(&vm.moref).await.unwrap();
    assert_eq!(kept.lease_timeout(), Duration::from_secs(2));
    kept.keep_alive(Arc::new(AtomicU8::new(5)));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(kept.state().await.unwrap(), LeaseState::Ready);
    assert!(kept.keep_alive_failure().is_none());
    kept.complete().await.unwrap();

    // Left alone: it times out.
    let lease = client.export(&vm.moref).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state = lease.state().await.unwrap();
        if !state.is_open() || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    match &state {
        LeaseState::Error { fault, message } => {
            assert_eq!(fault, "Timedout");
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let err = lease.progress(50).await.unwrap_err();
    assert!(matches!(err, VsphereError::LeaseFailed { .. }), "{err:?}");
    eprintln!("{err}");
    assert_no_password(&vcsim, &err);
    let url = lease.disks()[0].url.clone();
    let err = lease.complete().await.unwrap_err();
    assert!(matches!(err, VsphereError::LeaseFailed { .. }), "{err:?}");
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 0);

    // Its URL is dead; the error names neither ticket nor password.
    let err = open_disk_not_found(&client, &url).await;
    let ticket = url.rsplit('/').nth(1).unwrap();
    assert!(!err.to_string().contains(ticket), "{err}");
    eprintln!("{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn datastore_fallback_reads_the_flat_file_with_range() {
    let spec = VmSpec::new("Fällback 01 ☃").disk(DiskSpec::generated(16, 6, 0.5));
    let (vcsim, vm, client) = vcsim_with_vm(&spec, None).await;
    let details = client.vm_details(&vm.moref).await.unwrap();
    let disk = &details.disks[0];
    let url = client
        .flat_file_url(disk)
        .expect("a flat disk has a data file");
    assert!(
        url.contains("/folder/") && url.contains("dsName=LocalDS_0"),
        "{url}"
    );
    let created = &vm.disks[0];
    assert_eq!(
        client.content_length(&url).await.unwrap(),
        created.capacity_bytes
    );

    let expected = std::fs::read(&created.flat_file).unwrap();
    let offset = 5 * 1024 * 1024 + 17;
    let mut partial = client.open_disk(&url, offset).await.unwrap();
    assert_eq!(partial.total_size(), Some(created.capacity_bytes));
    let mut got = Vec::new();
    while let Some(chunk) = partial.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == expected[offset as usize..],
        "bytes from the offset differ"
    );

    let dir = scratch();
    let dest = dir.join("flat.raw");
    let n = download(&client, &url, &dest).await;
    assert_eq!(n, created.capacity_bytes);
    assert_eq!(
        sha256_file(&dest).unwrap(),
        sha256_file(&created.flat_file).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);

    let missing = client.datastore_file_url("/DC0", vcsim.datastore(), "nope/nope-flat.vmdk");
    open_disk_not_found(&client, &missing).await;
}

/// ESXi's NFC URLs point at the host, not at vCenter, so the cookie jar
/// would not send the session there: the provider adds it itself.
#[tokio::test(flavor = "multi_thread")]
async fn disk_downloads_carry_the_session_cookie_to_other_hosts() {
    use std::io::{Read, Write};
    let vcsim = Vcsim::start_without_vms(None).await.expect("start vcsim");
    let client = vcsim.connect().await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    // `localhost`, not vcsim's `127.0.0.1`: another host as far as cookies go.
    let url = format!("http://localhost:{port}/nfc/ticket/disk-0.vmdk");
    let mut download = client.open_disk(&url, 0).await.unwrap();
    assert_eq!(download.total_size(), Some(5));
    assert_eq!(&download.chunk().await.unwrap().unwrap()[..], b"hello");
    let request = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    let cookie = request
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("cookie:"))
        .unwrap_or_else(|| panic!("no Cookie header in {request}"));
    assert!(cookie.contains("vmware_soap_session="), "{cookie}");
}
