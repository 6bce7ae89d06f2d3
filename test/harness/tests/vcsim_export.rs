//! The vcsim peer's disk export, end to end: VMs created with real disk
//! contents through the harness API, `ExportVm` over SOAP, the lease's
//! streamOptimized downloads checked with `qemu-img`, and the lease life cycle
//! (complete, timeout, abort, injected download faults).
//!
//! Each test starts its own vcsim (about a second), so lease counts are exact.
//! Needs `qemu-img` on PATH.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::AsyncWriteExt;
use vmm_testkit::Vcsim;
use vmm_testkit::process::run_dir;
use vmm_testkit::vcsim::soap::{DeviceUrl, SoapFault, SoapSession};
use vmm_testkit::vcsim::{
    Controller, CreatedDisk, DiskSpec, ExportFault, Firmware, NetworkKind, NetworkSpec, NicModel,
    NicSpec, VmSpec, sha256_bytes, sha256_file,
};

const READY_WAIT: Duration = Duration::from_secs(120);

/// GETs `url` into `dest`; returns the byte count.
async fn download(http: &reqwest::Client, url: &str, dest: &Path) -> Result<u64> {
    let mut response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(
        response.status() == reqwest::StatusCode::OK,
        "GET {url}: {}",
        response.status()
    );
    let mut file = tokio::fs::File::create(dest).await?;
    let mut n = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("GET {url}: body"))?
    {
        file.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    file.flush().await?;
    Ok(n)
}

async fn qemu_img(args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .context("run qemu-img (is qemu-utils installed?)")?;
    if !out.status.success() {
        bail!(
            "qemu-img {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads one device URL like a migration client would and checks it is
/// a streamOptimized VMDK whose contents equal the disk's flat file.
async fn check_device_url(
    http: &reqwest::Client,
    url: &DeviceUrl,
    disk: &CreatedDisk,
    expected_sha256: &str,
    dir: &Path,
) -> Result<()> {
    ensure!(url.disk, "{url:?} is not a disk");
    ensure!(url.file_size > 0, "{url:?} has no fileSize");

    let head = http.head(&url.url).send().await?;
    ensure!(
        head.status() == reqwest::StatusCode::OK,
        "HEAD {}",
        head.status()
    );
    ensure!(
        head.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            == Some(url.file_size.to_string().as_str()),
        "HEAD Content-Length {:?} != fileSize {}",
        head.headers().get(reqwest::header::CONTENT_LENGTH),
        url.file_size
    );
    let first = http
        .get(&url.url)
        .header(reqwest::header::RANGE, "bytes=0-511")
        .send()
        .await?;
    ensure!(
        first.status() == reqwest::StatusCode::PARTIAL_CONTENT,
        "Range GET: {}",
        first.status()
    );
    let first = first.bytes().await?;
    ensure!(
        first.len() == 512 && first.starts_with(b"KDMV"),
        "not a VMDK sparse header"
    );

    let vmdk = dir.join(&url.target_id);
    let n = download(http, &url.url, &vmdk).await?;
    ensure!(
        n == url.file_size,
        "downloaded {n} bytes, fileSize {}",
        url.file_size
    );

    let info: serde_json::Value = serde_json::from_str(
        &qemu_img(&["info".as_ref(), "--output=json".as_ref(), vmdk.as_os_str()]).await?,
    )?;
    ensure!(info["format"] == "vmdk", "{info}");
    ensure!(
        info["format-specific"]["data"]["create-type"] == "streamOptimized",
        "{info}"
    );
    ensure!(info["virtual-size"] == disk.capacity_bytes, "{info}");

    let raw = vmdk.with_extension("raw");
    qemu_img(&[
        "convert".as_ref(),
        "-f".as_ref(),
        "vmdk".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        vmdk.as_os_str(),
        raw.as_os_str(),
    ])
    .await?;
    ensure!(
        sha256_file(&raw)? == expected_sha256,
        "{} converted back to raw differs from {}",
        url.url,
        disk.flat_file.display()
    );
    Ok(())
}

fn soap_fault(err: &anyhow::Error) -> &SoapFault {
    err.downcast_ref::<SoapFault>()
        .unwrap_or_else(|| panic!("expected a SOAP fault, got {err:#}"))
}

async fn status_of(http: &reqwest::Client, url: &str) -> reqwest::StatusCode {
    http.get(url).send().await.expect("GET").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_disks_are_stream_optimized_copies_of_the_flat_files() {
    let vcsim = Vcsim::start_without_vms(None).await.expect("start vcsim");
    let http = vcsim.http_client().unwrap();
    let dir = run_dir().unwrap();

    let net = vcsim
        .create_network(&NetworkSpec {
            name: "prod net".into(),
            kind: NetworkKind::Dvpg,
            datacenter: None,
            vlan_id: Some(100),
        })
        .await
        .unwrap();
    assert_eq!(net.type_, "DistributedVirtualPortgroup");

    let name = "Web 01 ünï/prod";
    let spec = VmSpec {
        folder: Some("/DC0/vm/export tests".into()),
        cpus: Some(4),
        cores_per_socket: Some(2),
        memory_mb: Some(4096),
        firmware: Some(Firmware::Efi),
        secure_boot: true,
        guest_id: Some("otherLinux64Guest".into()),
        ..VmSpec::new(name)
    }
    .powered_on(true)
    .disk(DiskSpec::generated(64, 42, 0.5))
    .disk(DiskSpec::generated(24, 7, 0.25).on(Controller::Sata))
    .nic(NicSpec::on("VM Network"))
    .nic(NicSpec::on("prod net").model(NicModel::E1000e));
    let vm = vcsim.create_vm(&spec).await.unwrap();

    assert_eq!(vm.name, name);
    assert_eq!(vm.inventory_path, "/DC0/vm/export tests/Web 01 ünï%2fprod");
    assert_eq!(vm.power_state, "poweredOn");
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(
        (
            vm.disks[0].controller.as_str(),
            vm.disks[1].controller.as_str()
        ),
        ("pvscsi", "ahci")
    );
    assert_eq!(vm.nics.len(), 2);
    assert_eq!(
        (vm.nics[1].model.as_str(), vm.nics[1].network.as_str()),
        ("e1000e", "prod net")
    );
    assert_eq!(vm.nics[1].network_moref, net.moref);

    // The flat files: full size, the requested share of data, holes elsewhere,
    // and the same bytes through the datastore endpoint.
    let mut flat_sha = Vec::new();
    for (disk, fraction) in vm.disks.iter().zip([0.5, 0.25]) {
        let meta = std::fs::metadata(&disk.flat_file).unwrap();
        assert_eq!(meta.len(), disk.capacity_bytes);
        assert_eq!(
            disk.data_bytes,
            (disk.capacity_bytes as f64 * fraction) as u64
        );
        assert!(
            meta.blocks() * 512 < disk.capacity_bytes,
            "{} is not sparse",
            disk.flat_file.display()
        );
        let sha = sha256_file(&disk.flat_file).unwrap();
        let served = http.get(&disk.flat_url).send().await.unwrap();
        assert_eq!(
            served.status(),
            reqwest::StatusCode::OK,
            "{}",
            disk.flat_url
        );
        assert_eq!(sha256_bytes(&served.bytes().await.unwrap()), sha);
        flat_sha.push(sha);
    }
    assert_ne!(flat_sha[0], flat_sha[1]);

    // What a SOAP client sees.
    let mut soap = SoapSession::login(&vcsim).await.unwrap();
    let props = soap
        .properties(
            "VirtualMachine",
            &vm.moref,
            &[
                "name",
                "config.hardware.numCPU",
                "config.hardware.numCoresPerSocket",
                "config.hardware.memoryMB",
                "config.firmware",
                "config.bootOptions.efiSecureBootEnabled",
            ],
        )
        .await
        .unwrap();
    let prop = |path: &str| {
        props
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, v)| v.text().to_string())
            .unwrap_or_else(|| panic!("no {path} in {props:?}"))
    };
    assert_eq!(prop("name"), name);
    assert_eq!(prop("config.hardware.numCPU"), "4");
    assert_eq!(prop("config.hardware.numCoresPerSocket"), "2");
    assert_eq!(prop("config.hardware.memoryMB"), "4096");
    assert_eq!(prop("config.firmware"), "efi");
    assert_eq!(prop("config.bootOptions.efiSecureBootEnabled"), "true");

    soap.power_off(&vm.moref).await.unwrap();
    let lease = soap.export_vm(&vm.moref).await.unwrap();
    assert_eq!(soap.wait_lease(&lease, READY_WAIT).await.unwrap(), "ready");
    let info = soap
        .lease_info(&lease)
        .await
        .unwrap()
        .expect("a ready lease has info");
    assert_eq!(info.entity, vm.moref);
    assert_eq!(info.total_disk_capacity_kb, (64 + 24) * 1024);
    assert_eq!(info.lease_timeout_seconds, 300);
    assert_eq!(info.device_urls.len(), 2);
    assert_ne!(info.device_urls[0].key, info.device_urls[1].key);
    for url in &info.device_urls {
        assert!(url.key.starts_with(&format!("/{}/", vm.moref)), "{url:?}");
        assert!(url.url.starts_with(&vcsim.base_url()), "{url:?}");
        assert_eq!(
            Some(url.ssl_thumbprint.as_str()),
            vcsim.info().thumbprint.as_deref()
        );
    }
    let report = vcsim.lease_report().await.unwrap();
    assert_eq!(report.open, 1);
    assert_eq!(
        (
            report.leases[0].id.as_str(),
            report.leases[0].state.as_str()
        ),
        (lease.as_str(), "ready")
    );

    for (i, ((url, disk), sha)) in info
        .device_urls
        .iter()
        .zip(&vm.disks)
        .zip(&flat_sha)
        .enumerate()
    {
        check_device_url(&http, url, disk, sha, &dir)
            .await
            .unwrap_or_else(|e| panic!("disk {i}: {e:#}"));
        soap.lease_progress(&lease, (50 * (i + 1)) as u8)
            .await
            .unwrap();
    }
    let manifest = soap.lease_manifest(&lease).await.unwrap();
    assert_eq!(
        manifest
            .iter()
            .map(|(key, _, size)| (key.clone(), *size))
            .collect::<Vec<_>>(),
        info.device_urls
            .iter()
            .map(|u| (u.key.clone(), u.file_size))
            .collect::<Vec<_>>()
    );

    soap.lease_complete(&lease).await.unwrap();
    assert_eq!(soap.lease_state(&lease).await.unwrap(), "done");
    for url in &info.device_urls {
        assert_eq!(
            status_of(&http, &url.url).await,
            reqwest::StatusCode::NOT_FOUND
        );
    }
    let err = soap.lease_complete(&lease).await.unwrap_err();
    assert_eq!(soap_fault(&err).fault_type, "InvalidState");

    let report = vcsim.lease_report().await.unwrap();
    assert_eq!(report.open, 0);
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 0);
    let done = &report.leases[0];
    assert_eq!(
        (done.state.as_str(), done.end_reason.as_deref()),
        ("done", Some("complete"))
    );
    assert_eq!(done.progress_percent, 100);
    let served: u64 = info.device_urls.iter().map(|u| u.file_size).sum();
    assert!(
        done.bytes_served >= served,
        "{} < {served}",
        done.bytes_served
    );
    soap.logout().await.unwrap();
}

/// vcsim alone gives a NIC one of 4,096 MACs per slot, so 200 VMs would share
/// one with a chance of about 99 %; the controller refuses a MAC in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nics_get_distinct_macs_unless_one_is_given() {
    let vcsim = Vcsim::start_without_vms(None).await.expect("start vcsim");
    let mut macs = std::collections::HashSet::new();
    for i in 0..200 {
        let vm = vcsim
            .create_vm(&VmSpec::new(format!("mac {i}")).nic(NicSpec::default()))
            .await
            .unwrap();
        let mac = &vm.nics[0].mac;
        assert!(mac.starts_with("00:50:56:"), "{mac}");
        assert!(macs.insert(mac.clone()), "{mac} given twice");
    }
    let given = "00:50:56:3F:00:0A";
    let vm = vcsim
        .create_vm(&VmSpec::new("given mac").nic(NicSpec::default().mac(given)))
        .await
        .unwrap();
    assert_eq!(vm.nics[0].mac.to_ascii_uppercase(), given);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_a_powered_on_vm_fails_with_invalid_power_state() {
    let vcsim = Vcsim::start_without_vms(None).await.expect("start vcsim");
    let vm = vcsim
        .create_vm(
            &VmSpec::new("running vm")
                .powered_on(true)
                .disk(DiskSpec::zeros(8)),
        )
        .await
        .unwrap();
    let mut soap = SoapSession::login(&vcsim).await.unwrap();
    let err = soap.export_vm(&vm.moref).await.unwrap_err();
    let fault = soap_fault(&err);
    assert_eq!(fault.fault_type, "InvalidPowerState", "{fault}");
    let existing = fault
        .detail
        .as_ref()
        .and_then(|d| d.find("existingState"))
        .map(|e| e.text().to_string());
    assert_eq!(existing.as_deref(), Some("poweredOn"));
    assert!(vcsim.leases().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_without_progress_times_out_and_stops_serving() {
    let vcsim = Vcsim::start_without_vms(Some(Duration::from_secs(2)))
        .await
        .expect("start vcsim");
    assert_eq!(vcsim.info().lease_timeout_seconds, Some(2.0));
    let http = vcsim.http_client().unwrap();
    let vm = vcsim
        .create_vm(&VmSpec::new("idle export").disk(DiskSpec::generated(8, 1, 1.0)))
        .await
        .unwrap();
    assert_eq!(vm.power_state, "poweredOff");

    let mut soap = SoapSession::login(&vcsim).await.unwrap();
    let lease = soap.export_vm(&vm.moref).await.unwrap();
    assert_eq!(soap.wait_lease(&lease, READY_WAIT).await.unwrap(), "ready");
    let info = soap.lease_info(&lease).await.unwrap().unwrap();
    assert_eq!(info.lease_timeout_seconds, 2);
    let url = info.device_urls[0].url.clone();
    assert_eq!(status_of(&http, &url).await, reqwest::StatusCode::OK);
    soap.lease_progress(&lease, 10).await.unwrap();

    // No more progress: the lease expires.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while soap.lease_state(&lease).await.unwrap() == "ready" {
        assert!(
            std::time::Instant::now() < deadline,
            "lease never timed out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(soap.lease_state(&lease).await.unwrap(), "error");
    let (fault_type, message) = soap
        .lease_error(&lease)
        .await
        .unwrap()
        .expect("lease error");
    assert_eq!(fault_type, "Timedout", "{message}");
    assert_eq!(status_of(&http, &url).await, reqwest::StatusCode::NOT_FOUND);
    let err = soap.lease_progress(&lease, 20).await.unwrap_err();
    assert_eq!(soap_fault(&err).fault_type, "InvalidState");

    let report = vcsim.lease_report().await.unwrap();
    assert_eq!(report.open, 0);
    assert_eq!(report.leases[0].end_reason.as_deref(), Some("timeout"));
    assert_eq!(report.leases[0].progress_percent, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_injected_faults_raw_file_disks_and_the_conversion_cache() {
    let vcsim = Vcsim::start_without_vms(None).await.expect("start vcsim");
    let http = vcsim.http_client().unwrap();
    let dir = run_dir().unwrap();

    // A raw image of our own as the second disk: 8 MiB, a pattern and a hole.
    let raw: PathBuf = dir.join("image.raw");
    {
        let mut bytes: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        bytes.resize(8 << 20, 0);
        std::fs::write(&raw, &bytes).unwrap();
    }
    let raw_sha = sha256_file(&raw).unwrap();
    let vm = vcsim
        .create_vm(
            &VmSpec::new("abort me")
                .disk(DiskSpec::generated(16, 3, 0.5).on(Controller::LsiLogic))
                .disk(DiskSpec::raw_file(&raw).on(Controller::Ide)),
        )
        .await
        .unwrap();
    assert_eq!(vm.disks[1].capacity_bytes, 8 << 20);
    assert_eq!(vm.disks[1].raw_file.as_deref(), Some(raw.as_path()));
    assert_eq!(sha256_file(&vm.disks[1].flat_file).unwrap(), raw_sha);
    let flat_sha: Vec<String> = vm
        .disks
        .iter()
        .map(|d| sha256_file(&d.flat_file).unwrap())
        .collect();

    let mut soap = SoapSession::login(&vcsim).await.unwrap();
    let lease = soap.export_vm(&vm.moref).await.unwrap();
    assert_eq!(soap.wait_lease(&lease, READY_WAIT).await.unwrap(), "ready");
    let info = soap.lease_info(&lease).await.unwrap().unwrap();
    let url = &info.device_urls[0];

    // A connection dropped mid-body, then an HTTP error, then a clean download.
    vcsim
        .inject_export_fault(&ExportFault::drop_after(1000))
        .await
        .unwrap();
    let err = download(&http, &url.url, &dir.join("cut.vmdk"))
        .await
        .expect_err("the transfer should be cut");
    assert!(
        std::fs::metadata(dir.join("cut.vmdk")).unwrap().len() < url.file_size,
        "{err:#}"
    );
    vcsim
        .inject_export_fault(&ExportFault::status(503))
        .await
        .unwrap();
    assert_eq!(
        status_of(&http, &url.url).await,
        reqwest::StatusCode::SERVICE_UNAVAILABLE
    );
    for (i, (url, disk)) in info.device_urls.iter().zip(&vm.disks).enumerate() {
        check_device_url(&http, url, disk, &flat_sha[i], &dir)
            .await
            .unwrap_or_else(|e| panic!("disk {i}: {e:#}"));
    }

    soap.lease_abort(&lease).await.unwrap();
    assert_eq!(soap.lease_state(&lease).await.unwrap(), "error");
    let (fault_type, _) = soap.lease_error(&lease).await.unwrap().unwrap();
    assert_eq!(fault_type, "RequestCanceled");
    assert_eq!(
        status_of(&http, &url.url).await,
        reqwest::StatusCode::NOT_FOUND
    );
    let report = vcsim.lease_report().await.unwrap();
    assert_eq!(report.open, 0);
    assert_eq!(report.leases[0].end_reason.as_deref(), Some("abort"));
    assert_eq!((report.cache.entries, report.cache.in_use), (2, 0));

    // A second export of the unchanged disks reuses the conversions.
    let again = soap.export_vm(&vm.moref).await.unwrap();
    assert_ne!(again, lease);
    assert_eq!(soap.wait_lease(&again, READY_WAIT).await.unwrap(), "ready");
    let report = vcsim.lease_report().await.unwrap();
    assert_eq!(
        (report.open, report.cache.entries, report.cache.in_use),
        (1, 2, 2)
    );
    let info2 = soap.lease_info(&again).await.unwrap().unwrap();
    assert_ne!(
        info2.device_urls[0].url, url.url,
        "each lease has its own URLs"
    );
    assert_eq!(info2.device_urls[0].file_size, url.file_size);
    soap.lease_complete(&again).await.unwrap();
    assert_eq!(vcsim.open_lease_count().await.unwrap(), 0);
}
