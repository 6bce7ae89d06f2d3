//! The exports in progress: per job, the source's export (kept alive by its
//! provider) and its disks registered at the disk endpoint. Each GET
//! Harvester makes streams the disk from the export, converted to raw on the
//! way (`vmm-diskstream`), so nothing is copied to local disk.
//!
//! This state lives in memory; what a restarted controller needs to rebuild
//! it is in the job's status (the export's id, each disk's source key) and in
//! the images (each URL's token).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;
use vmm_core::{DiskFile, Export, ExportEnd, ExportRecorder, ProviderError, Session};
use vmm_diskstream::{Progress, SegmentReader, Sniffed, SourceFormat};

use crate::connect::Refused;
use crate::disks::{DiskSource, Preparation, RawStream, Registry, ServedDisk};
use crate::import::scratch::Scratch;
use crate::import::step::PhaseError;

/// `(namespace, name)` of a job.
pub type JobKey = (String, String);

/// One job's export and what is being served of it.
pub struct Active {
    export: Option<Box<dyn Export>>,
    /// The disks served, by their index in the job's status (after a
    /// restart only those still importing are).
    pub disks: Vec<(usize, Arc<ServedDisk>)>,
    tokens: Vec<String>,
    /// When progress was last written to status.
    pub sampled: Instant,
}

impl Active {
    pub fn export_id(&self) -> Option<&str> {
        self.export.as_deref().map(|export| export.id())
    }

    /// Tells the source how far the export is (0–100).
    pub fn report(&self, percent: u8) {
        if let Some(export) = &self.export {
            export.report_progress(percent);
        }
    }

    /// Why the export stopped being usable, if it did.
    pub fn broken(&self) -> Option<String> {
        self.export.as_ref().and_then(|export| export.failure())
    }
}

/// The jobs being exported, and the endpoint their disks are served from.
pub struct Exports {
    pub registry: Arc<Registry>,
    active: tokio::sync::Mutex<HashMap<JobKey, Active>>,
    /// Where disks the streamer cannot read are converted.
    scratch: Scratch,
}

/// One disk to serve: its index in the job's status, its key at the
/// source, raw size, and token.
pub struct DiskToServe {
    pub index: usize,
    pub key: String,
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

    /// Exports `vm_id` (or re-opens the export `export_id` a previous run
    /// left open) and serves `wanted` disks from it.
    pub async fn start(
        &self,
        job: JobKey,
        session: &dyn Session,
        vm_id: &str,
        export_id: Option<&str>,
        wanted: &[DiskToServe],
        recorder: &dyn ExportRecorder,
    ) -> Result<String, PhaseError> {
        // A reconcile that read the job before this process's own status
        // writes landed asks again for the export this process serves: it is
        // the one wanted (re-attaching would end it as "replaced").
        let serving = self
            .active
            .lock()
            .await
            .get(&job)
            .and_then(Active::export_id)
            .map(str::to_owned);
        if let Some(serving) = serving
            && export_id.is_none_or(|id| id == serving)
        {
            return Ok(serving);
        }
        let export = session.export(vm_id, export_id, recorder).await?;
        let disks = match self.serve(export.as_ref(), wanted).await {
            Ok(disks) => disks,
            Err(refused) => {
                // Logged; what is left is released again when the job fails.
                let _ = end(export, ExportEnd::Abort("its disks cannot be served")).await;
                return Err(refused.into());
            }
        };
        let id = export.id().to_owned();
        let active = Active {
            export: Some(export),
            disks,
            tokens: wanted.iter().map(|w| w.token.clone()).collect(),
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
            match replaced.export.take() {
                // The same export, opened twice: ending one ends both.
                Some(export) if export.id() == id => export.detach(),
                Some(export) => {
                    let _ = end(export, ExportEnd::Abort("replaced by a new export")).await;
                }
                None => {}
            }
        }
        Ok(id)
    }

    /// Registers each of `wanted` at its token, served from `export`.
    async fn serve(
        &self,
        export: &dyn Export,
        wanted: &[DiskToServe],
    ) -> Result<Vec<(usize, Arc<ServedDisk>)>, Refused> {
        let mut disks = Vec::new();
        for want in wanted {
            let file = export.disk(&want.key).ok_or_else(|| {
                Refused::new(
                    "ExportIncomplete",
                    format!(
                        "the source's export has no file for disk {}: the VM's disks changed since preflight; delete and recreate the job",
                        want.key
                    ),
                )
            })?;
            let (source, preparation) = self.disk_source(file, want.capacity).await?;
            disks.push((
                want.index,
                ServedDisk::new(want.capacity, source, preparation),
            ));
        }
        for ((_, disk), want) in disks.iter().zip(wanted) {
            self.registry.register(&want.token, disk.clone());
        }
        Ok(disks)
    }

    /// How a disk of the export is served: converted as it streams when the
    /// streamer reads its format, else converted in the scratch directory
    /// first, before Harvester is told the URL.
    async fn disk_source(
        &self,
        file: Arc<dyn DiskFile>,
        capacity: u64,
    ) -> Result<(Arc<dyn DiskSource>, Preparation), Refused> {
        let (format, reader) = download(file.as_ref()).await.map_err(|e| {
            Refused::new(
                "ExportUnreadable",
                format!("cannot read the source's export: {e}"),
            )
        })?;
        if matches!(
            format,
            SourceFormat::StreamOptimizedVmdk | SourceFormat::Unknown
        ) {
            return Ok((Arc::new(Exported { file, capacity }), Preparation::Streamed));
        }
        tracing::info!(%format, "not streamable in one pass: converting with qemu-img first");
        let raw = self
            .scratch
            .convert(reader, format, capacity)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::StorageFull => Refused::new(
                    "ScratchFull",
                    format!(
                        "the scratch directory {} has no room to convert the source's {format} disk of {capacity} bytes (the download and the raw image's written blocks need up to twice that): give the controller more scratch space (the chart's controller.scratchSizeLimit, or --scratch-dir on a larger volume)",
                        self.scratch.dir().display()
                    ),
                ),
                _ => Refused::new(
                    "ConversionFailed",
                    format!("cannot convert the source's {format} disk to raw: {e}"),
                ),
            })?;
        Ok((raw, Preparation::Converted))
    }

    /// Ends the job's export, if this process holds it: `Complete` once
    /// every disk is imported, `Abort` otherwise. Its URLs stop working.
    /// Returns whether there was one.
    pub async fn finish(&self, job: &JobKey, how: ExportEnd) -> Option<Result<(), ProviderError>> {
        let mut active = self.active.lock().await.remove(job)?;
        for token in &active.tokens {
            self.registry.unregister(token);
        }
        Some(match active.export.take() {
            Some(export) => end(export, how).await,
            None => Ok(()),
        })
    }
}

impl Exports {
    /// Stops serving the job's disks and lets go of its export without
    /// ending it: whoever else holds the same id goes on with it.
    pub async fn detach(&self, job: &JobKey) {
        let Some(mut active) = self.active.lock().await.remove(job) else {
            return;
        };
        for token in &active.tokens {
            self.registry.unregister(token);
        }
        if let Some(export) = active.export.take() {
            export.detach();
        }
    }
}

/// Ends `export`; an error (also logged) when the source still holds
/// something of it that does not expire.
async fn end(export: Box<dyn Export>, how: ExportEnd) -> Result<(), ProviderError> {
    let id = export.id().to_owned();
    let ended = export.end(how).await;
    if let Err(error) = &ended {
        tracing::warn!(export = %id, %error, "cannot end an export");
    }
    ended
}

/// A download of an export's disk file, and its format.
async fn download(
    file: &dyn DiskFile,
) -> io::Result<(SourceFormat, Sniffed<impl AsyncRead + Unpin + use<>>)> {
    let reader = StreamReader::new(file.open().await?);
    Ok(vmm_diskstream::sniff(reader).await?)
}

/// A disk of an export whose format streams: a streamOptimized VMDK
/// converted to raw as it downloads, or raw bytes passed through.
struct Exported {
    file: Arc<dyn DiskFile>,
    capacity: u64,
}

impl DiskSource for Exported {
    fn open(&self) -> BoxFuture<'static, io::Result<RawStream>> {
        let file = self.file.clone();
        let capacity = self.capacity;
        Box::pin(async move {
            let (format, reader) = download(file.as_ref()).await?;
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
