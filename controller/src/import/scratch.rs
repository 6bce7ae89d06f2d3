//! The fallback for disk formats the streamer cannot read in one pass (sparse
//! VMDK, qcow2, VHDX): the export's file is downloaded into the scratch
//! directory, `qemu-img convert` (Debian `qemu-utils`) makes a sparse raw
//! image of it, the download is deleted, and the raw file is served. It costs
//! local space (the download, then the raw image's allocated blocks), so it is
//! used only where streaming cannot work. Files are removed when their export
//! ends, and at start for anything a previous process left.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::io::ReaderStream;
use vmm_diskstream::SourceFormat;

use crate::disks::{DiskSource, RawStream};

/// Every scratch file's name starts with this, so leftovers are ours to remove.
pub const PREFIX: &str = "vmm-scratch-";
/// Bytes per chunk when serving a raw file.
const CHUNK: usize = 256 << 10;

/// The scratch directory.
pub struct Scratch {
    dir: PathBuf,
    next: AtomicU64,
}

impl Scratch {
    /// Uses `dir` (created if missing) and removes what an earlier process
    /// left in it.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                tracing::info!(file = %entry.path().display(), "removing a scratch file an earlier run left");
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Self {
            dir,
            next: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Downloads `source` (a `format` file), converts it to a raw image of
    /// `capacity` bytes and returns it, ready to serve. A full scratch
    /// directory is an error of kind `StorageFull`, whether the download or
    /// qemu-img ran into it.
    pub async fn convert(
        &self,
        mut source: impl AsyncRead + Unpin,
        format: SourceFormat,
        capacity: u64,
    ) -> io::Result<Arc<RawFile>> {
        let qemu_format = match format {
            SourceFormat::SparseVmdk => "vmdk",
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Vhdx => "vhdx",
            other => {
                return Err(io::Error::other(format!(
                    "a {other} cannot be converted on its own"
                )));
            }
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let download = Removed(self.dir.join(format!("{PREFIX}{n}.{qemu_format}")));
        let raw = RawFile {
            path: self.dir.join(format!("{PREFIX}{n}.raw")),
        };
        let mut file = tokio::fs::File::create(&download.0).await?;
        tokio::io::copy(&mut source, &mut file).await?;
        file.flush().await?;
        drop(file);

        let output = tokio::process::Command::new("qemu-img")
            .args(["convert", "-f", qemu_format, "-O", "raw"])
            .arg(&download.0)
            .arg(&raw.path)
            .output()
            .await
            .map_err(|e| {
                io::Error::other(format!(
                    "cannot run qemu-img (Debian package qemu-utils): {e}"
                ))
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // qemu-img prints strerror(ENOSPC).
            let kind = if stderr.contains("No space left on device") {
                io::ErrorKind::StorageFull
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!("qemu-img convert of a {format} failed: {}", stderr.trim()),
            ));
        }
        let size = tokio::fs::metadata(&raw.path).await?.len();
        if size != capacity {
            return Err(io::Error::other(format!(
                "the {format} holds {size} bytes, the source says {capacity}"
            )));
        }
        Ok(Arc::new(raw))
    }
}

/// A file removed when this is dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), %error, "cannot remove a scratch file");
    }
}

/// A converted raw image in the scratch directory, removed when its export
/// ends (a read in progress keeps its open file).
pub struct RawFile {
    path: PathBuf,
}

impl Drop for RawFile {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

impl DiskSource for RawFile {
    fn open(&self) -> BoxFuture<'static, io::Result<RawStream>> {
        let path = self.path.clone();
        Box::pin(async move {
            let file = tokio::fs::File::open(path).await?;
            Ok(ReaderStream::with_capacity(file, CHUNK).boxed())
        })
    }
}
