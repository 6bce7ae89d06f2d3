//! The exports in progress: per job, the source's export (a vSphere
//! HttpNfcLease, kept alive) and its disks registered at the disk endpoint.
//! Each GET Harvester makes streams the disk from the export, converted to
//! raw on the way (`vmm-diskstream`), so nothing is copied to local disk.
//!
//! This state lives in memory; what a restarted controller needs to rebuild
//! it is in the job's status (the lease id, each disk's device key) and in
//! the images (each URL's token).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;
use vmm_diskstream::{Progress, SegmentReader, Sniffed, SourceFormat};
use vmm_providers::vsphere::{Attached, ExportLease, VsphereClient};

use crate::connect::{Refused, vsphere_refused};
use crate::disks::{DiskSource, RawStream, Registry, ServedDisk};
use crate::import::scratch::Scratch;

/// `(namespace, name)` of a job.
pub type JobKey = (String, String);

/// One job's export and what is being served of it.
pub struct Active {
    lease: Option<ExportLease>,
    /// The disks served, by their index in the job's status (after a
    /// restart only those still importing are).
    pub disks: Vec<(usize, Arc<ServedDisk>)>,
    tokens: Vec<String>,
    /// What the lease's keep-alive reports to the source.
    percent: Arc<AtomicU8>,
    /// When progress was last written to status.
    pub sampled: Instant,
}

impl Active {
    pub fn lease_id(&self) -> Option<&str> {
        self.lease.as_ref().map(ExportLease::id)
    }

    /// Tells the source how far the export is (0–100).
    pub fn report(&self, percent: u8) {
        self.percent.store(percent.min(100), Ordering::Relaxed);
    }

    /// Why the export stopped being usable, if it did.
    pub fn broken(&self) -> Option<String> {
        self.lease
            .as_ref()
            .and_then(ExportLease::keep_alive_failure)
    }
}

/// The jobs being exported, and the endpoint their disks are served from.
pub struct Exports {
    pub registry: Arc<Registry>,
    active: tokio::sync::Mutex<HashMap<JobKey, Active>>,
    /// Where disks the streamer cannot read are converted.
    scratch: Scratch,
}

/// One disk to serve: its index in the job's status, its device key at the
/// source, raw size, and token.
pub struct Wanted {
    pub index: usize,
    pub device_key: i32,
    pub capacity: u64,
    pub token: String,
}

impl Exports {
    pub fn new(scratch: Scratch) -> Self {
        Self {
            registry: Arc::default(),
            active: tokio::sync::Mutex::default(),
            scratch,
        }
    }

    /// Runs `f` on the job's active export, if it has one.
    pub async fn with<T>(&self, job: &JobKey, f: impl FnOnce(&mut Active) -> T) -> Option<T> {
        self.active.lock().await.get_mut(job).map(f)
    }

    pub async fn is_active(&self, job: &JobKey) -> bool {
        self.active.lock().await.contains_key(job)
    }

    /// Exports `vm_id` (or re-opens the lease `lease_id` a previous run left
    /// ready) and serves `wanted` disks from it.
    pub async fn start(
        &self,
        job: JobKey,
        client: &VsphereClient,
        vm_id: &str,
        lease_id: Option<&str>,
        wanted: &[Wanted],
    ) -> Result<String, Refused> {
        // A reconcile that read the job before this process's own status
        // writes landed asks again for the export this process serves: it is
        // the one wanted (re-attaching would end it as "replaced").
        let serving = self
            .active
            .lock()
            .await
            .get(&job)
            .and_then(Active::lease_id)
            .map(str::to_owned);
        if let Some(serving) = serving
            && lease_id.is_none_or(|id| id == serving)
        {
            return Ok(serving);
        }
        let mut lease = open_lease(client, vm_id, lease_id).await?;
        let percent = Arc::new(AtomicU8::new(0));
        lease.keep_alive(percent.clone());
        let mut disks = Vec::new();
        for want in wanted {
            let exported = lease
                .disks()
                .iter()
                .find(|d| d.device_key == Some(want.device_key))
                .ok_or_else(|| {
                    Refused::new(
                        "ExportIncomplete",
                        format!(
                            "the source's export has no file for disk device {}: the VM's disks changed since preflight; delete and recreate the job",
                            want.device_key
                        ),
                    )
                })?;
            let source = self
                .disk_source(client, &exported.url, want.capacity)
                .await?;
            let disk = ServedDisk::new(want.capacity, source);
            self.registry.register(&want.token, disk.clone());
            disks.push((want.index, disk));
        }
        let id = lease.id().to_owned();
        let active = Active {
            lease: Some(lease),
            disks,
            tokens: wanted.iter().map(|w| w.token.clone()).collect(),
            percent,
            sampled: Instant::now(),
        };
        let replaced = self.active.lock().await.insert(job, active);
        if let Some(mut replaced) = replaced {
            // Tokens served again now belong to the new export.
            for token in replaced
                .tokens
                .iter()
                .filter(|t| !wanted.iter().any(|w| &w.token == *t))
            {
                self.registry.unregister(token);
            }
            match replaced.lease.take() {
                // The same lease, attached twice: ending one ends both.
                Some(lease) if lease.id() == id => {
                    lease.detach();
                }
                Some(lease) => end(lease, Ending::Abort("replaced by a new export")).await,
                None => {}
            }
        }
        Ok(id)
    }

    /// How a disk of the export is served: converted as it streams when the
    /// streamer reads its format, else converted in the scratch directory
    /// first, before Harvester is told the URL.
    async fn disk_source(
        &self,
        client: &VsphereClient,
        url: &str,
        capacity: u64,
    ) -> Result<Arc<dyn DiskSource>, Refused> {
        let (format, reader) = download(client, url).await.map_err(|e| {
            Refused::new(
                "ExportUnreadable",
                format!("cannot read the source's export at {url}: {e}"),
            )
        })?;
        if matches!(
            format,
            SourceFormat::StreamOptimizedVmdk | SourceFormat::Unknown
        ) {
            return Ok(Arc::new(Exported {
                client: client.clone(),
                url: url.to_owned(),
                capacity,
            }));
        }
        tracing::info!(%format, url, "not streamable in one pass: converting with qemu-img first");
        let raw = self
            .scratch
            .convert(reader, format, capacity)
            .await
            .map_err(|e| {
                Refused::new(
                    "ConversionFailed",
                    format!("cannot convert the source's {format} disk to raw: {e}"),
                )
            })?;
        Ok(raw)
    }

    /// Ends the job's export, if this process holds it: `Complete` once
    /// every disk is imported, `Abort` otherwise. Its URLs stop working.
    /// Returns whether there was one.
    pub async fn finish(&self, job: &JobKey, how: Ending) -> bool {
        let Some(mut active) = self.active.lock().await.remove(job) else {
            return false;
        };
        for token in &active.tokens {
            self.registry.unregister(token);
        }
        if let Some(lease) = active.lease.take() {
            end(lease, how).await;
        }
        true
    }
}

/// Ends a lease a previous run of the controller left behind, if it is
/// still open.
pub async fn release(client: &VsphereClient, lease_id: &str, how: Ending) {
    match ExportLease::attach(client, lease_id, Duration::from_secs(30)).await {
        Ok(Attached::Ready(lease)) => end(*lease, how).await,
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(lease = %lease_id, %error, "cannot read a left-over export lease")
        }
    }
}

async fn end(lease: ExportLease, how: Ending) {
    let id = lease.id().to_owned();
    let ended = match how {
        Ending::Complete => lease.complete().await,
        Ending::Abort(reason) => lease.abort(reason).await,
    };
    if let Err(error) = ended {
        tracing::warn!(lease = %id, %error, "cannot end an export lease (it times out by itself)");
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Ending {
    Complete,
    Abort(&'static str),
}

async fn open_lease(
    client: &VsphereClient,
    vm_id: &str,
    lease_id: Option<&str>,
) -> Result<ExportLease, Refused> {
    if let Some(id) = lease_id {
        match ExportLease::attach(client, id, Duration::from_secs(60)).await {
            Ok(Attached::Ready(lease)) => return Ok(*lease),
            Ok(_) => {}
            Err(error) => {
                tracing::info!(lease = %id, %error, "the earlier export is gone; exporting again")
            }
        }
    }
    client.export(vm_id).await.map_err(|e| vsphere_refused(&e))
}

/// A download of an export's disk file, and its format.
async fn download(
    client: &VsphereClient,
    url: &str,
) -> io::Result<(SourceFormat, Sniffed<impl AsyncRead + Unpin + use<>>)> {
    let download = client.open_disk(url, 0).await.map_err(io::Error::other)?;
    let reader = StreamReader::new(download.into_stream().map_err(io::Error::other).boxed());
    Ok(vmm_diskstream::sniff(reader).await?)
}

/// A disk of a vSphere export: its streamOptimized VMDK, converted to raw as
/// it downloads (a flat file passes through).
struct Exported {
    client: VsphereClient,
    url: String,
    capacity: u64,
}

impl DiskSource for Exported {
    fn open(&self) -> BoxFuture<'static, io::Result<RawStream>> {
        let client = self.client.clone();
        let url = self.url.clone();
        let capacity = self.capacity;
        Box::pin(async move {
            let (format, reader) = download(&client, &url).await?;
            let segments = match format {
                SourceFormat::StreamOptimizedVmdk => SegmentReader::vmdk(reader, Progress::new())
                    .await
                    .map_err(io::Error::from)?,
                SourceFormat::Unknown => SegmentReader::flat(reader, capacity, Progress::new()),
                other => {
                    return Err(io::Error::other(format!(
                        "the export now serves a {other}, not what it served when it opened"
                    )));
                }
            };
            if segments.capacity() != capacity {
                return Err(io::Error::other(format!(
                    "the export's disk holds {} bytes, the source says {capacity}",
                    segments.capacity()
                )));
            }
            Ok(segments.into_raw_stream().map_err(io::Error::from).boxed())
        })
    }
}
