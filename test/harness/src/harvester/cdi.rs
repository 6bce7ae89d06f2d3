//! `backend: cdi`: Harvester's `initializeDownload` (`pkg/image/cdi`), then
//! CDI's importer.
//!
//! Harvester probes the URL with `GET Range: bytes=0-127` (the qcow2 header:
//! virtual size) and a HEAD that must carry Content-Length, then needs
//! `spec.targetStorageClassName` to name a StorageClass, which becomes
//! `status.storageClassName`. Any failure there is a failed attempt
//! (`Initialized`), counted against `spec.retry`.
//!
//! Stricter than Harvester on purpose: it reads the first 128 bytes of
//! whatever answers the Range GET (even a 200 with the whole image) and does
//! not look at the HEAD's status. Here the Range GET must be answered 206
//! and the HEAD 200, since CDI's importer reads ranges through nbdkit.
//!
//! The importer is CDI's own ([`CdiRun`]). Its failures never reach the
//! image (DataVolume failures are not mirrored, docs/harvester.md §1): the
//! image stays `Imported=Unknown` (Importing) and the importer runs again
//! after the retry delay, for ever, the way CDI restarts its pod.

use anyhow::{Result, anyhow, bail, ensure};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;

use super::attempt::{Digest, digest};
use super::fetch;
use super::image::{Failure, Job};
use crate::downloaders::CdiRun;

/// The qcow2 magic, `QFI\xfb`.
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

impl Job {
    /// One attempt (see [`backing_image_attempt`](Job::backing_image_attempt)
    /// for the result).
    pub(super) async fn cdi_attempt(&mut self) -> Result<Option<Failure>> {
        let (size, virtual_size) = match self.cdi_probe().await {
            Ok(sizes) => sizes,
            Err(e) => return Ok(Some(Failure::initial(&e))),
        };
        if self.status.size == 0 && self.status.virtual_size == 0 {
            self.status.size = i64::try_from(size)?;
            self.status.virtual_size = i64::try_from(virtual_size)?;
            self.patch_status().await?;
        }
        let target = self.spec.target_storage_class_name.clone();
        let storage_classes: Api<StorageClass> = Api::all(self.ctx.client.clone());
        let found = if target.is_empty() {
            Err(anyhow!("spec.targetStorageClassName is empty"))
        } else {
            storage_classes.get(&target).await.map_err(|e| anyhow!(e))
        };
        if let Err(e) = found {
            let e = e.context(format!("failed to get StorageClass {target}"));
            return Ok(Some(Failure::initial(&e)));
        }
        let url = self.spec.url.clone();
        self.status.initialized(&url, &target);
        self.patch_status().await?;
        self.record(|r| r.storage_class_name = Some(target));

        loop {
            match self.cdi_import(size).await {
                Ok(digest) => {
                    self.finish_imported(digest).await?;
                    return Ok(None);
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::info!(
                        "harvester stand-in: {}: CDI importer failed, runs again: {message}",
                        self.name()
                    );
                    self.record(|r| r.errors.push(message));
                    tokio::time::sleep(self.ctx.options.retry_delay).await;
                    self.record(|r| r.attempts += 1);
                }
            }
        }
    }

    /// `fetchImageVirtualSize` and `fetchImageSize`: (size, virtual size).
    async fn cdi_probe(&self) -> Result<(u64, u64)> {
        let idle = self.ctx.options.idle_timeout;
        let range = Some("bytes=0-127".to_owned());
        let mut response = self.send("GET", range, idle).await?;
        self.expect_status(&response, 206)?;
        let mut header = Vec::with_capacity(128);
        while header.len() < 128 {
            match fetch::next_chunk(&mut response, idle).await? {
                Some(chunk) => header.extend_from_slice(&chunk),
                None => break,
            }
        }
        ensure!(header.len() >= 128, "content length is less than 128 bytes");
        let virtual_size = if header.starts_with(QCOW2_MAGIC) {
            let mut be = [0u8; 8];
            be.copy_from_slice(&header[24..32]);
            u64::from_be_bytes(be)
        } else {
            0
        };
        drop(response);

        let head = self.send("HEAD", None, idle).await?;
        self.expect_status(&head, 200)?;
        let Some(size) = fetch::content_length(head.headers()) else {
            bail!("Content-Length is not found in the header");
        };
        ensure!(size > 0, "virtual size is not set (Content-Length 0)");
        // Not qcow2: the virtual size is the size.
        Ok((
            size,
            if virtual_size == 0 {
                size
            } else {
                virtual_size
            },
        ))
    }

    /// CDI's importer, the real program, run as CDI's controller runs its
    /// pod: first without scratch space, again with it when that run asks.
    /// Progress is the bytes fetched so far ([`CdiRun::fetched_bytes`]:
    /// CDI's own figure is a Prometheus metric of the pod, which importers
    /// sharing the host's network cannot all serve).
    async fn cdi_import(&mut self, size: u64) -> Result<Digest> {
        let attempt = self
            .attempt(self.ctx.options.cdi_uses_additional_ca)
            .await?;
        let mut scratch = false;
        loop {
            let mut run = CdiRun::start(attempt.source(), attempt.dir(), scratch)?;
            let result = loop {
                if let Some(result) = run.try_result()? {
                    break result;
                }
                let percent = i64::try_from(run.fetched_bytes().saturating_mul(100) / size.max(1))?;
                if percent != self.status.progress {
                    self.status.importing("Image Importing", percent);
                    self.patch_progress().await;
                }
                tokio::time::sleep(self.ctx.options.progress_interval).await;
            };
            if !result.success {
                bail!("{}", result.message());
            }
            if !result.scratch_space_required() {
                return digest(&run.disk(), self.ctx.options.hashing).await;
            }
            if scratch {
                bail!("asked for scratch space again: {}", result.log);
            }
            scratch = true;
        }
    }
}
