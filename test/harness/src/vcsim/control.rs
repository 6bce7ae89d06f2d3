//! The peer's extensions (docs/peers.md): the `/harness/` control API that
//! creates VMs with real disk contents and networks, reports export leases
//! and injects export faults, plus hashing helpers for disk contents.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Inventory, Vcsim, soap};

impl Inventory {
    /// `-lease-timeout`: an export `HttpNfcLease` turns to `error` when no
    /// `HttpNfcLeaseProgress` arrives for this long (the peer's default is
    /// 300 s, like vCenter).
    pub fn with_lease_timeout(mut self, timeout: Duration) -> Self {
        self.extra_args.push("-lease-timeout".into());
        self.extra_args
            .push(format!("{}ms", timeout.as_millis().max(1)));
        self
    }
}

impl Vcsim {
    /// `https://127.0.0.1:<port>/harness/<path>`.
    pub fn harness_url(&self, path: &str) -> String {
        format!(
            "{}/harness/{}",
            self.base_url(),
            path.trim_start_matches('/')
        )
    }

    /// Creates a VM whose disks have real contents (`POST /harness/vms`).
    /// A NIC without a MAC gets [`unique_mac`].
    pub async fn create_vm(&self, spec: &VmSpec) -> Result<CreatedVm> {
        let mut spec = spec.clone();
        for nic in spec.nics.iter_mut().filter(|nic| nic.mac.is_none()) {
            nic.mac = Some(unique_mac());
        }
        self.harness_request(reqwest::Method::POST, "vms", Some(&spec))
            .await
            .with_context(|| format!("create VM {:?}", spec.name))
    }

    /// Adds a port group (`POST /harness/networks`) that NICs can then use.
    pub async fn create_network(&self, spec: &NetworkSpec) -> Result<CreatedNetwork> {
        self.harness_request(reqwest::Method::POST, "networks", Some(spec))
            .await
            .with_context(|| format!("create network {:?}", spec.name))
    }

    /// Every export lease the peer handed out, oldest first, with the open
    /// count and the conversion cache (`GET /harness/leases`).
    pub async fn lease_report(&self) -> Result<LeaseReport> {
        self.harness_request::<(), _>(reqwest::Method::GET, "leases", None)
            .await
            .context("list export leases")
    }

    /// Every export lease the peer handed out, oldest first.
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        Ok(self.lease_report().await?.leases)
    }

    /// The export leases of the VM `moref`, oldest first.
    pub async fn leases_of(&self, moref: &str) -> Result<Vec<LeaseInfo>> {
        let mut leases = self.leases().await?;
        leases.retain(|lease| lease.vm == moref);
        Ok(leases)
    }

    /// A VM's `runtime.powerState` (`poweredOn`, `poweredOff`, `suspended`).
    pub async fn power_state(&self, moref: &str) -> Result<String> {
        let mut soap = soap::SoapSession::login(self).await?;
        let power = soap
            .property("VirtualMachine", moref, "runtime.powerState")
            .await?
            .with_context(|| format!("VM {moref} has no power state"))?
            .text()
            .to_owned();
        soap.logout().await?;
        Ok(power)
    }

    /// How many leases are `initializing` or `ready`.
    pub async fn open_lease_count(&self) -> Result<usize> {
        Ok(self.lease_report().await?.open)
    }

    /// Queues a fault for the next export download(s) (`POST /harness/faults`).
    pub async fn inject_export_fault(&self, fault: &ExportFault) -> Result<()> {
        self.harness_request::<_, serde_json::Value>(reqwest::Method::POST, "faults", Some(fault))
            .await
            .context("inject export fault")?;
        Ok(())
    }

    /// Drops pending export faults (`DELETE /harness/faults`).
    pub async fn clear_export_faults(&self) -> Result<()> {
        self.harness_request::<(), serde_json::Value>(reqwest::Method::DELETE, "faults", None)
            .await
            .context("clear export faults")?;
        Ok(())
    }

    /// Serves a new certificate from now on (`POST /harness/certificate`):
    /// a renewal by the same CA, or one from a new CA, whose PEM is returned
    /// (and trusted by this harness's clients from now on).
    pub async fn rotate_certificate(&self, new_ca: bool) -> Result<String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Rotated {
            ca_pem: String,
        }
        let rotated: Rotated = self
            .harness_request(
                reqwest::Method::POST,
                "certificate",
                Some(&serde_json::json!({ "newCA": new_ca })),
            )
            .await
            .context("rotate vcsim's certificate")?;
        self.rotated_cas
            .lock()
            .unwrap()
            .push(rotated.ca_pem.clone());
        Ok(rotated.ca_pem)
    }

    /// Ends every session but the one asking (`TerminateSession`), as
    /// vCenter does to idle sessions or an administrator may: clients
    /// holding one get `NotAuthenticated` on their next call. How many ended.
    pub async fn expire_sessions(&self) -> Result<usize> {
        let mut soap = self.soap_session().await?;
        let ended = soap.terminate_other_sessions().await?;
        soap.logout().await?;
        Ok(ended)
    }

    /// A logged-in SOAP session (see [`soap::SoapSession`]).
    pub async fn soap_session(&self) -> Result<soap::SoapSession> {
        soap::SoapSession::login(self).await
    }

    async fn harness_request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let url = self.harness_url(path);
        let mut request = self.http_client()?.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {url}: read body"))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or(text);
            bail!("{method} {url}: {status}: {message}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: parse {text:?}"))
    }
}

/// A VM for [`Vcsim::create_vm`]. Unset fields take vcsim's defaults (1 CPU,
/// 32 MB, bios, `otherGuest`, first datacenter's VM folder, first cluster's
/// pool, first datastore).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmSpec {
    /// The VM's `name`, stored as given (spaces, unicode, `/`, `%` all work).
    pub name: String,
    /// Store the name escaped the way vCenter's API reports names (`%` →
    /// `%25`, `/` → `%2f`, `\` → `%5c`) instead of as given.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub vcenter_escaping: bool,
    /// Inventory path of the VM folder, e.g. `/DC0/vm/prod`; missing folders
    /// are created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Inventory path of a resource pool, e.g. `/DC0/host/DC0_C0/Resources`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<String>,
    /// Datastore name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores_per_socket: Option<u32>,
    #[serde(rename = "memoryMB", skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// Requires [`Firmware::Efi`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secure_boot: bool,
    /// e.g. `otherLinux64Guest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// Power the VM on after its disks are written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub power_on: bool,
    /// The VMDK subformat ExportVm serves the disks in (qemu-img's name):
    /// default `streamOptimized`, as vCenter; `monolithicSparse` is one an
    /// importer cannot stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_subformat: Option<String>,
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
}

impl VmSpec {
    /// A powered-off VM without disks or NICs.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn disk(mut self, disk: DiskSpec) -> Self {
        self.disks.push(disk);
        self
    }

    pub fn nic(mut self, nic: NicSpec) -> Self {
        self.nics.push(nic);
        self
    }

    pub fn powered_on(mut self, on: bool) -> Self {
        self.power_on = on;
        self
    }
}

/// Firmware of a [`VmSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Efi,
}

/// A disk of a [`VmSpec`].
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskSpec {
    /// Capacity; with [`DiskContent::raw_file`], 0 means the file's size.
    #[serde(rename = "capacityMiB")]
    pub capacity_mib: u64,
    /// Default [`Controller::Scsi`] (paravirtual).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<Controller>,
    /// `None`: all zeros (one sparse hole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<DiskContent>,
}

impl DiskSpec {
    /// A disk of zeros.
    pub fn zeros(capacity_mib: u64) -> Self {
        Self {
            capacity_mib,
            ..Self::default()
        }
    }

    /// A disk where `data_fraction` of the 1 MiB chunks hold pseudo-random
    /// data derived from `seed`; the other chunks are holes.
    pub fn generated(capacity_mib: u64, seed: u64, data_fraction: f64) -> Self {
        Self {
            capacity_mib,
            controller: None,
            content: Some(DiskContent {
                seed,
                data_fraction,
                raw_file: None,
            }),
        }
    }

    /// A disk whose flat file is a symlink to an existing raw image (size a
    /// multiple of 1 KiB; never modified). For large benchmark disks.
    pub fn raw_file(path: impl Into<PathBuf>) -> Self {
        Self {
            capacity_mib: 0,
            controller: None,
            content: Some(DiskContent {
                raw_file: Some(path.into()),
                ..DiskContent::default()
            }),
        }
    }

    pub fn on(mut self, controller: Controller) -> Self {
        self.controller = Some(controller);
        self
    }
}

/// What a [`DiskSpec`]'s flat file holds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskContent {
    pub seed: u64,
    /// 0..=1.
    pub data_fraction: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_file: Option<PathBuf>,
}

/// Disk controller kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Controller {
    /// Paravirtual SCSI.
    #[serde(rename = "scsi")]
    Scsi,
    #[serde(rename = "lsilogic")]
    LsiLogic,
    #[serde(rename = "lsilogic-sas")]
    LsiLogicSas,
    #[serde(rename = "buslogic")]
    BusLogic,
    #[serde(rename = "sata")]
    Sata,
    #[serde(rename = "nvme")]
    Nvme,
    #[serde(rename = "ide")]
    Ide,
}

/// The next MAC of VMware's manually assigned range (00:50:56:00:00:00 to
/// 00:50:56:3f:ff:ff), unique within the process. vcsim would derive one from
/// three characters of the VM's UUID and the NIC's unit (its `00:0c:29` range
/// holds 4,096 per slot), so two test VMs shared a MAC about once in a hundred
/// imports and the controller's preflight rightly refused the second. They
/// come from the range's upper half, away from the MACs tests write by hand.
pub fn unique_mac() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = 0x20_0000 + NEXT.fetch_add(1, Ordering::Relaxed) % 0x20_0000;
    format!(
        "00:50:56:{:02x}:{:02x}:{:02x}",
        n >> 16,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// A NIC of a [`VmSpec`].
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NicSpec {
    /// `VM Network` (default), a DVPG such as `DC0_DVPG0`, or a network made
    /// with [`Vcsim::create_network`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Default [`NicModel::Vmxnet3`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<NicModel>,
    /// Default: [`unique_mac`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl NicSpec {
    pub fn on(network: impl Into<String>) -> Self {
        Self {
            network: Some(network.into()),
            ..Self::default()
        }
    }

    pub fn model(mut self, model: NicModel) -> Self {
        self.model = Some(model);
        self
    }

    pub fn mac(mut self, mac: impl Into<String>) -> Self {
        self.mac = Some(mac.into());
        self
    }
}

/// NIC models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    Vmxnet3,
    Vmxnet2,
    E1000,
    E1000e,
    Pcnet32,
}

/// What [`Vcsim::create_vm`] made.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreatedVm {
    /// Managed object id (type `VirtualMachine`), e.g. `vm-57`.
    pub moref: String,
    pub name: String,
    /// e.g. `/DC0/vm/prod/Web 01`; a `/` inside a name appears as `%2f`.
    pub inventory_path: String,
    pub instance_uuid: String,
    /// BIOS UUID.
    pub uuid: String,
    /// `[LocalDS_0] <dir>/<dir>.vmx`.
    pub vm_path_name: String,
    pub datacenter: String,
    pub datastore: String,
    /// Local directory of the VM's files.
    pub directory: PathBuf,
    /// `poweredOn` or `poweredOff`.
    pub power_state: String,
    pub disks: Vec<CreatedDisk>,
    pub nics: Vec<CreatedNic>,
}

/// A disk of a [`CreatedVm`], in [`VmSpec::disks`] order.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreatedDisk {
    /// Device key.
    pub key: i32,
    pub label: String,
    /// vcsim's controller type name: `pvscsi`, `lsilogic`, `ahci`, `ide`, …
    pub controller: String,
    pub controller_key: i32,
    pub bus_number: i32,
    pub unit_number: i32,
    pub capacity_bytes: u64,
    /// Descriptor, `[LocalDS_0] <dir>/<file>.vmdk`.
    pub datastore_path: String,
    /// `[LocalDS_0] <dir>/<file>-flat.vmdk`.
    pub flat_datastore_path: String,
    pub descriptor_file: PathBuf,
    /// The raw disk bytes (a symlink for [`DiskSpec::raw_file`]).
    pub flat_file: PathBuf,
    /// The flat file through the datastore HTTP endpoint (`/folder/…`).
    pub flat_url: String,
    /// Bytes of generated data (the rest are holes).
    pub data_bytes: u64,
    #[serde(default)]
    pub raw_file: Option<PathBuf>,
}

/// A NIC of a [`CreatedVm`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreatedNic {
    pub key: i32,
    pub label: String,
    pub model: String,
    pub network: String,
    /// e.g. `network-6` or `dvportgroup-12`.
    pub network_moref: String,
    pub mac: String,
}

/// A port group for [`Vcsim::create_network`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    pub name: String,
    pub kind: NetworkKind,
    /// Datacenter name; default the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
}

/// Kinds of [`NetworkSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// A port group on the datacenter's distributed switch (`DVS0`).
    Dvpg,
    /// A host port group on `vSwitch0` (a `Network` object).
    Standard,
}

/// What [`Vcsim::create_network`] made.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreatedNetwork {
    pub name: String,
    pub kind: NetworkKind,
    /// e.g. `dvportgroup-32`.
    pub moref: String,
    /// `DistributedVirtualPortgroup` or `Network`.
    #[serde(rename = "type")]
    pub type_: String,
}

/// `GET /harness/leases`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseReport {
    /// Leases `initializing` or `ready`.
    pub open: usize,
    pub leases: Vec<LeaseInfo>,
    pub cache: ExportCache,
}

/// One export lease as the peer tracks it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    /// Managed object id (type `HttpNfcLease`).
    pub id: String,
    /// The exported VM's managed object id.
    pub vm: String,
    pub vm_name: String,
    /// `initializing`, `ready`, `done` or `error`.
    pub state: String,
    /// RFC 3339 times.
    pub created: String,
    #[serde(default)]
    pub ready: Option<String>,
    #[serde(default)]
    pub last_progress: Option<String>,
    pub progress_percent: i32,
    #[serde(default)]
    pub ended: Option<String>,
    /// `complete`, `abort`, `timeout` or `error`.
    #[serde(default)]
    pub end_reason: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    pub timeout_seconds: f64,
    pub urls: Vec<String>,
    /// HTTP requests that reached a live URL of this lease.
    pub requests: u64,
    pub bytes_served: u64,
}

impl LeaseInfo {
    /// `initializing` or `ready`.
    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "initializing" | "ready")
    }
}

/// The peer's cache of streamOptimized conversions.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportCache {
    /// Converted VMDKs on disk.
    pub entries: usize,
    /// Of which used by open leases.
    pub in_use: usize,
    pub bytes: u64,
}

/// A fault for the next export download(s), see [`Vcsim::inject_export_fault`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportFault {
    /// Send this many body bytes, then drop the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_after_bytes: Option<u64>,
    /// Answer with this status (4xx/5xx) instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How many downloads (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl ExportFault {
    pub fn drop_after(bytes: u64) -> Self {
        Self {
            fail_after_bytes: Some(bytes),
            status: None,
            times: None,
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            fail_after_bytes: None,
            status: Some(status),
            times: None,
        }
    }
}

/// SHA-256 (lower-case hex) of a file, e.g. a disk's flat file.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hash = sha256_provider().start();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(hash.finish().as_ref()))
}

/// SHA-256 of `qemu-img convert -f vmdk -O raw` of a VMDK (its descriptor):
/// what the reference converter makes of a source disk.
pub fn qemu_img_raw_sha256(descriptor: &Path) -> Result<String> {
    let raw = qemu_img_raw(descriptor)?;
    let sum = sha256_file(&raw);
    std::fs::remove_file(&raw)?;
    sum
}

/// `qemu-img convert -f vmdk -O raw` of the disk into a new file of the run
/// directory, which the caller removes.
pub fn qemu_img_raw(descriptor: &Path) -> Result<PathBuf> {
    let out = crate::process::run_dir()?.join(format!(
        "qemu-img-{}.raw",
        crate::namespace::random_suffix()
    ));
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(descriptor)
        .arg(&out)
        .status()
        .context("run qemu-img (Debian package qemu-utils)")?;
    if !status.success() {
        bail!("qemu-img convert {} failed: {status}", descriptor.display());
    }
    Ok(out)
}

/// SHA-256 (lower-case hex) of bytes.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex(sha256_provider().hash(data).as_ref())
}

/// ring's SHA-256, reached through rustls so the harness needs no extra crate.
fn sha256_provider() -> &'static dyn rustls::crypto::hash::Hash {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
