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
//! and the HEAD 200, since CDI's importer reads with ranges anyway [I].
//!
//! The importer is modelled as ranged GETs of [`Options::cdi_chunk_size`]
//! bytes, in order, each a 206 with the matching Content-Range. Its failures
//! never reach the image (notes §1: DataVolume failures are not mirrored):
//! the image stays `Imported=Unknown` (Importing) and the importer runs
//! again after the retry delay, for ever, the way CDI restarts its pod.
//!
//! [`Options::cdi_chunk_size`]: super::Options::cdi_chunk_size

use std::time::Instant;

use anyhow::{Result, anyhow, bail, ensure};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;

use super::Requester;
use super::fetch::{self, Digest, Sink};
use super::image::{Failure, Job};

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
        let mut response = self.send(Requester::Harvester, "GET", range, idle).await?;
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

        let head = self.send(Requester::Harvester, "HEAD", None, idle).await?;
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

    /// One run of the importer.
    async fn cdi_import(&mut self, size: u64) -> Result<Digest> {
        let idle = self.ctx.options.idle_timeout;
        let chunk_size = self.ctx.options.cdi_chunk_size.max(1);
        let mut sink = Sink::new(self.keep_path().as_deref(), self.ctx.options.hashing, false)
            .await?
            .limited_to(self.ctx.options.download_rate);
        let mut offset = 0;
        let mut last_report = Instant::now();
        while offset < size {
            let last = offset.saturating_add(chunk_size).min(size) - 1;
            let range = format!("bytes={offset}-{last}");
            let mut response = self
                .send(Requester::CdiImporter, "GET", Some(range.clone()), idle)
                .await?;
            self.expect_status(&response, 206)?;
            let content_range = fetch::content_range(response.headers());
            if content_range != Some((offset, last, size)) {
                bail!(
                    "GET {range}: Content-Range {content_range:?}, expected bytes {offset}-{last}/{size}"
                );
            }
            let want = last - offset + 1;
            let mut got = 0u64;
            while let Some(chunk) = fetch::next_chunk(&mut response, idle).await? {
                got += chunk.len() as u64;
                ensure!(got <= want, "GET {range}: more than {want} bytes");
                sink.write(&chunk).await?;
            }
            ensure!(got == want, "GET {range}: {got} bytes, expected {want}");
            offset = last + 1;
            if last_report.elapsed() >= self.ctx.options.progress_interval {
                last_report = Instant::now();
                let percent = i64::try_from(offset.saturating_mul(100) / size)?;
                self.status.importing("Image Importing", percent);
                self.patch_progress().await;
            }
        }
        sink.finish().await
    }
}
