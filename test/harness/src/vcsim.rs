//! govmomi's vCenter simulator, through our harness `test/peers/vcsim`.
//!
//! The peer prints one JSON line on stdout when it is ready and exits when its
//! stdin reaches EOF or on SIGTERM. The harness keeps the stdin pipe open for the
//! life of [`Vcsim`]; the process is also tied to the test binary by the parent
//! death signal like every other peer.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use vmm_api::SourceKind;
use vmm_core::Credentials;
use vmm_vsphere::VsphereClient;

use crate::peers::Peers;
use crate::process::{ManagedProcess, ProcessBuilder, StdoutMode, run_dir};

/// How long vcsim may take to print its ready line, plus [`READY_PER_VM`]
/// for each VM it creates.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Creating VMs dominates a big inventory's start (10,000 take minutes on 2
/// busy cores).
pub const READY_PER_VM: Duration = Duration::from_millis(60);

/// The inventory vcsim creates (govmomi's vcsim flags, same meanings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// `-dc`: datacenters.
    pub datacenters: u32,
    /// `-cluster`: clusters per datacenter.
    pub clusters: u32,
    /// `-host`: hosts per cluster.
    pub hosts_per_cluster: u32,
    /// `-standalone-host`: standalone hosts per datacenter.
    pub standalone_hosts: u32,
    /// `-vm`: VMs per resource pool.
    pub vms_per_pool: u32,
    /// `-pg`: distributed port groups per datacenter.
    pub portgroups: u32,
    /// `-folder`: datacenters placed within a folder.
    pub folders: u32,
    /// `-ds`: local datastores (at least 1).
    pub datastores: u32,
    /// `-pool`: child resource pools per cluster.
    pub pools: u32,
    pub username: String,
    pub password: String,
    /// More flags, passed as they are.
    pub extra_args: Vec<String>,
}

impl Default for Inventory {
    /// One datacenter, one cluster with one host, no standalone host, two VMs,
    /// one port group, one datastore.
    fn default() -> Self {
        Self {
            datacenters: 1,
            clusters: 1,
            hosts_per_cluster: 1,
            standalone_hosts: 0,
            vms_per_pool: 2,
            portgroups: 1,
            folders: 0,
            datastores: 1,
            pools: 0,
            username: "vmm-e2e".into(),
            password: "vmm-e2e-secret".into(),
            extra_args: Vec::new(),
        }
    }
}

impl Inventory {
    /// Exactly `n` VMs (one cluster, one host, no standalone host).
    pub fn with_vms(n: u32) -> Self {
        Self {
            vms_per_pool: n,
            ..Self::default()
        }
    }

    /// The command-line flags.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-listen".to_string(),
            "127.0.0.1:0".to_string(),
            "-username".to_string(),
            self.username.clone(),
            "-password".to_string(),
            self.password.clone(),
        ];
        for (flag, value) in [
            ("-dc", self.datacenters),
            ("-cluster", self.clusters),
            ("-host", self.hosts_per_cluster),
            ("-standalone-host", self.standalone_hosts),
            ("-vm", self.vms_per_pool),
            ("-pg", self.portgroups),
            ("-folder", self.folders),
            ("-ds", self.datastores),
            ("-pool", self.pools),
        ] {
            args.push(flag.to_string());
            args.push(value.to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// The ready line vcsim prints (field names are the peer's contract).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VcsimInfo {
    /// `https://127.0.0.1:<port>/sdk`.
    pub url: String,
    pub username: String,
    pub password: String,
    /// The serving certificate (PEM file).
    pub cert_file: PathBuf,
    /// The CA that signed it (PEM file), when the peer uses a two-level chain.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SHA-1 fingerprint, `AA:BB:…`, as vSphere shows it.
    #[serde(default)]
    pub thumbprint: Option<String>,
    #[serde(default)]
    pub thumbprint_sha256: Option<String>,
    /// Name of the first datacenter, e.g. `DC0`.
    pub datacenter: String,
    /// Its inventory path, e.g. `/DC0`.
    #[serde(default)]
    pub datacenter_path: Option<String>,
    /// Name of the first datastore, e.g. `LocalDS_0`.
    pub datastore: String,
    /// Local directory backing that datastore.
    pub datastore_dir: PathBuf,
    /// Number of VMs.
    #[serde(default)]
    pub vms: Option<u32>,
    /// Inventory paths of all VMs, sorted.
    #[serde(default)]
    pub vm_paths: Vec<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// `https://127.0.0.1:<port>/harness/`: the peer's control API.
    #[serde(default)]
    pub harness_url: Option<String>,
    /// `-lease-timeout` in seconds.
    #[serde(default)]
    pub lease_timeout_seconds: Option<f64>,
    /// Extensions the peer has, e.g. `exportVm`, `harnessVms`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Fields this version of the harness does not know.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A running vcsim.
#[derive(Debug)]
pub struct Vcsim {
    process: ManagedProcess,
    info: VcsimInfo,
    ca_pem: String,
    /// CAs of certificates served since (`rotate_certificate`), which the
    /// harness's own clients trust too.
    rotated_cas: std::sync::Mutex<Vec<String>>,
    cert_pem: String,
    dir: PathBuf,
}

/// vSphere credentials as a Source's Secret gives them (the only way to make
/// them: their secret type has no public constructor).
pub fn credentials(username: &str, password: &str) -> Credentials {
    let data = [("username", username), ("password", password)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
        .collect();
    Credentials::from_secret(SourceKind::Vsphere, "test", &data)
        .expect("a username and a password are vSphere credentials")
}

impl Vcsim {
    /// A vcsim with the default inventory, shared by the tests of this binary
    /// (started on first use). Tests that change the inventory should start
    /// their own.
    #[track_caller]
    pub fn shared() -> &'static Vcsim {
        static SHARED: OnceLock<Result<Vcsim, String>> = OnceLock::new();
        match SHARED.get_or_init(|| {
            Vcsim::start(Inventory::default())
                .map_err(|e| format!("the shared vcsim did not start: {e:#}"))
        }) {
            Ok(vcsim) => vcsim,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts vcsim and waits for its ready line (blocking).
    pub fn start(inventory: Inventory) -> Result<Vcsim> {
        let peers = Peers::get()?;
        let dir = run_dir()?;
        let log = dir.join("vcsim.log");
        // vcsim keeps its datastores and certificates in temp dirs that it
        // removes only on a clean exit; a peer killed with the test binary
        // cannot, so keep them in the run dir, which the next run removes.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut process = ProcessBuilder::new("vcsim", peers.vcsim())
            .args(inventory.args())
            .env("TMPDIR", &tmp)
            .stdin_piped()
            .stdout(StdoutMode::Piped)
            .log_file(&log)
            .current_dir(&dir)
            .spawn()?;
        let vms = inventory.vms_per_pool
            * inventory.datacenters
            * (inventory.clusters + inventory.standalone_hosts).max(1);
        let line = process.ready_line(READY_TIMEOUT + READY_PER_VM * vms)?;
        let info: VcsimInfo = serde_json::from_str(line.trim())
            .with_context(|| format!("parse vcsim ready line {line:?}"))?;
        let cert_pem = std::fs::read_to_string(&info.cert_file)
            .with_context(|| format!("read {}", info.cert_file.display()))?;
        let ca_pem = match &info.ca_file {
            Some(path) if !path.as_os_str().is_empty() => {
                std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
            }
            _ => cert_pem.clone(),
        };
        Ok(Vcsim {
            process,
            info,
            ca_pem,
            rotated_cas: Default::default(),
            cert_pem,
            dir,
        })
    }

    /// A vcsim of the caller's own with no VMs (the test creates its own, so
    /// the peer's lease and cache counts are the test's alone), with
    /// `-lease-timeout` when given. [`start`](Self::start) blocks, so it runs
    /// off the async runtime.
    pub async fn start_without_vms(lease_timeout: Option<Duration>) -> Result<Vcsim> {
        let mut inventory = Inventory::with_vms(0);
        if let Some(timeout) = lease_timeout {
            inventory = inventory.with_lease_timeout(timeout);
        }
        tokio::task::spawn_blocking(move || Vcsim::start(inventory)).await?
    }

    /// Everything the ready line said.
    pub fn info(&self) -> &VcsimInfo {
        &self.info
    }

    /// The SDK URL, `https://127.0.0.1:<port>/sdk`.
    pub fn url(&self) -> &str {
        &self.info.url
    }

    /// `https://127.0.0.1:<port>` (no path).
    pub fn base_url(&self) -> String {
        let url = self.info.url.as_str();
        match url.find("://").map(|i| i + 3) {
            Some(start) => match url[start..].find('/') {
                Some(end) => url[..start + end].to_string(),
                None => url.to_string(),
            },
            None => url.to_string(),
        }
    }

    pub fn username(&self) -> &str {
        &self.info.username
    }

    pub fn password(&self) -> &str {
        &self.info.password
    }

    /// PEM a client should trust: the CA when the peer reports one, else the
    /// serving certificate itself. The CA it started with, whatever
    /// `rotate_certificate` did since.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A session of the product's vSphere client as this simulator's user,
    /// trusting its CA: what a second client (or the controller) opens.
    pub async fn connect(&self) -> Result<VsphereClient> {
        let credentials = credentials(self.username(), self.password());
        VsphereClient::connect(self.url(), &credentials, Some(self.ca_pem()), false)
            .await
            .context("connect to vcsim")
    }

    /// The serving certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A `v1/List` with a credentials Secret and a `Vsphere` source named `name`
    /// pointing at this simulator (trusting its CA), for `kubectl apply -n`.
    pub fn source_manifest(&self, name: &str) -> String {
        self.source_manifest_at(name, self.url())
    }

    /// [`source_manifest`](Self::source_manifest) with another SDK URL
    /// (e.g. a [`FaultyLink`](crate::link::FaultyLink) in front of vcsim).
    pub fn source_manifest_at(&self, name: &str, endpoint: &str) -> String {
        let secret = format!("{name}-credentials");
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret},
                    "type": "Opaque",
                    "stringData": {"username": self.username(), "password": self.password()},
                },
                {
                    "apiVersion": "source.harvesterhci.io/v1",
                    "kind": "Vsphere",
                    "metadata": {"name": name},
                    "spec": {
                        "endpoint": endpoint,
                        "credentials": {"name": secret},
                        "datacenter": self.datacenter(),
                        "caBundle": self.ca_pem(),
                    },
                },
            ],
        })
        .to_string()
    }

    pub fn datacenter(&self) -> &str {
        &self.info.datacenter
    }

    pub fn datastore(&self) -> &str {
        &self.info.datastore
    }

    /// The local directory backing [`datastore`](Self::datastore).
    pub fn datastore_dir(&self) -> &Path {
        &self.info.datastore_dir
    }

    /// `https://…/folder/<path>?dcPath=<dc>&dsName=<ds>` for a file on the
    /// first datastore (`path` is percent-encoded here).
    pub fn folder_url(&self, path: &str) -> String {
        format!(
            "{}/folder/{}?dcPath={}&dsName={}",
            self.base_url(),
            percent_encode_path(path.trim_start_matches('/')),
            percent_encode_path(&self.info.datacenter),
            percent_encode_path(&self.info.datastore),
        )
    }

    /// A reqwest client (rustls, ring) that trusts [`ca_pem`](Self::ca_pem).
    /// Make one per Tokio runtime.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        let rotated = self.rotated_cas.lock().unwrap().clone();
        let roots: Vec<&str> = std::iter::once(self.ca_pem.as_str())
            .chain(rotated.iter().map(String::as_str))
            .collect();
        crate::tls::reqwest_client(&roots, None)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The run directory (log file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Stops vcsim (EOF on stdin, then SIGTERM/SIGKILL) and waits for it.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.process.stop()
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent_encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

mod control;
pub mod soap;

pub use control::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_flags() {
        let args = Inventory::with_vms(7).args();
        let joined = args.join(" ");
        assert!(joined.contains("-vm 7"), "{joined}");
        assert!(joined.contains("-standalone-host 0"), "{joined}");
        assert!(joined.contains("-listen 127.0.0.1:0"), "{joined}");
    }

    #[test]
    fn ready_line_parses_with_unknown_fields() {
        let info: VcsimInfo = serde_json::from_str(
            r#"{"url":"https://127.0.0.1:1234/sdk","username":"u","password":"p","certFile":"/c.pem",
                "datacenter":"DC0","datastore":"LocalDS_0","datastoreDir":"/tmp/x","newField":1}"#,
        )
        .unwrap();
        assert_eq!(info.ca_file, None);
        assert_eq!(info.other.get("newField"), Some(&serde_json::json!(1)));
    }

    #[test]
    fn xml_reader_reads_soap_faults_and_values() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>a &lt;b&gt; &#233;&#x21;</faultstring>
<detail><InvalidPowerStateFault xmlns="urn:vim25" xsi:type="InvalidPowerState"><existingState>poweredOn</existingState>
<empty/></InvalidPowerStateFault></detail></soapenv:Fault>
<!-- comment --><val _XMLSchema-instance:type='HttpNfcLeaseState'>ready</val></soapenv:Body></soapenv:Envelope>"#;
        let root = soap::XmlElement::parse(doc).unwrap();
        assert_eq!(root.name, "Envelope");
        let fault = root.find("Fault").unwrap();
        assert_eq!(fault.find("faultstring").unwrap().text(), "a <b> é!");
        let detail = fault.find("detail").unwrap().children.first().unwrap();
        assert_eq!(detail.attr("type"), Some("InvalidPowerState"));
        assert_eq!(detail.find("existingState").unwrap().text(), "poweredOn");
        let val = root.find("val").unwrap();
        assert_eq!(
            (val.attr("type"), val.text()),
            (Some("HttpNfcLeaseState"), "ready")
        );
        assert!(soap::XmlElement::parse("<a><b></a>").is_err());
        assert_eq!(soap::esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }

    #[test]
    fn sha256_of_bytes() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn vm_spec_serializes_to_the_peer_contract() {
        let spec = VmSpec {
            memory_mb: Some(4096),
            firmware: Some(Firmware::Efi),
            ..VmSpec::new("Web 01")
        }
        .powered_on(true)
        .disk(DiskSpec::generated(64, 42, 0.5).on(Controller::Sata))
        .disk(DiskSpec::raw_file("/x.raw"))
        .nic(NicSpec::on("DC0_DVPG0").model(NicModel::E1000e));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "Web 01", "memoryMB": 4096, "firmware": "efi", "powerOn": true,
                "disks": [
                    {"capacityMiB": 64, "controller": "sata", "content": {"seed": 42, "dataFraction": 0.5}},
                    {"capacityMiB": 0, "content": {"seed": 0, "dataFraction": 0.0, "rawFile": "/x.raw"}},
                ],
                "nics": [{"network": "DC0_DVPG0", "model": "e1000e"}],
            })
        );
        let args = Inventory::default()
            .with_lease_timeout(Duration::from_secs(2))
            .args()
            .join(" ");
        assert!(args.contains("-lease-timeout 2000ms"), "{args}");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode_path("a b/c%d.vmdk"), "a%20b/c%25d.vmdk");
    }
}
