//! `backend: backingimage`: Harvester's `Initialize` (delete the previous
//! attempt's StorageClass, HEAD the URL, create the StorageClass) and
//! Longhorn's backing-image download (`pkg/sync/handler.go` of
//! backing-image-manager: HEAD exactly 200, one GET exactly 200, idle
//! timeout, checksum).

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ObjectMeta};

use super::fetch::{self, Digest, Sink};
use super::image::{Failure, Job};
use super::{LONGHORN_PROVISIONER, Requester};

/// Deletes the image's StorageClass, if any: at the start of every attempt
/// and when the image is deleted (Harvester's `deleteBackingImageAndStorageClass`).
pub(super) async fn delete_storage_class(client: &kube::Client, image_uid: &str) -> Result<()> {
    let name = super::storage_class_name(image_uid);
    match Api::<StorageClass>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("delete StorageClass {name}"))),
    }
}

impl Job {
    /// One attempt; `Ok(None)` when imported, `Ok(Some(_))` when it failed,
    /// `Err` when the stand-in could not go on (e.g. the image is gone).
    pub(super) async fn backing_image_attempt(&mut self) -> Result<Option<Failure>> {
        let sc_name = super::storage_class_name(&self.uid);
        let storage_classes: Api<StorageClass> = Api::all(self.ctx.client.clone());
        // Initialize starts by deleting what an earlier attempt created.
        delete_storage_class(&self.ctx.client, &self.uid).await?;

        // CheckURLAndUpdate: appliedUrl is set even when the HEAD fails.
        self.status.applied_url.clone_from(&self.spec.url);
        match self.harvester_head().await {
            Ok(Some(size)) if size > 0 => self.status.size = size,
            Ok(_) => {}
            Err(e) => return Ok(Some(Failure::initial(&e))),
        }
        self.patch_status().await?;

        if let Err(e) = storage_classes
            .create(&super::post_params(), &self.storage_class(&sc_name))
            .await
        {
            match e {
                kube::Error::Api(s) if s.code == 409 => {}
                e => {
                    let e = anyhow!(e).context(format!("create StorageClass {sc_name}"));
                    return Ok(Some(Failure::initial(&e)));
                }
            }
        }
        let url = self.spec.url.clone();
        self.status.initialized(&url, &sc_name);
        self.patch_status().await?;
        self.record(|r| r.storage_class_name = Some(sc_name));

        let mut progress = 0;
        match self.longhorn_download(&mut progress).await {
            Ok(digest) => {
                self.finish_imported(digest).await?;
                Ok(None)
            }
            Err(e) => Ok(Some(Failure::import(&e, progress))),
        }
    }

    /// Harvester's HEAD: 15 s, 200–399; the Content-Length if any.
    async fn harvester_head(&self) -> Result<Option<i64>> {
        let timeout = self.ctx.options.head_timeout;
        let response = self
            .send(Requester::Harvester, "HEAD", None, timeout)
            .await?;
        let status = response.status().as_u16();
        if !(200..400).contains(&status) {
            bail!("got {status} status code from {}", self.spec.url);
        }
        Ok(fetch::content_length(response.headers()).and_then(|n| i64::try_from(n).ok()))
    }

    /// The per-image StorageClass, as `createStorageClass` makes it: the
    /// image's parameters (which Harvester's image mutator fills, where
    /// admission runs: `crate::admission`) and the backing image.
    fn storage_class(&self, name: &str) -> StorageClass {
        let mut parameters = self.spec.storage_class_parameters.clone();
        parameters.insert(
            "backingImage".to_owned(),
            super::backing_image_name(&self.uid),
        );
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            provisioner: LONGHORN_PROVISIONER.to_owned(),
            reclaim_policy: Some("Delete".to_owned()),
            allow_volume_expansion: Some(true),
            volume_binding_mode: Some("Immediate".to_owned()),
            parameters: Some(parameters),
            ..StorageClass::default()
        }
    }

    /// Longhorn's data source: `GetSizeFromURL`, then `DownloadFromURL`.
    /// `progress` is left at the last percentage reported.
    async fn longhorn_download(&mut self, progress: &mut i64) -> Result<Digest> {
        let idle = self.ctx.options.idle_timeout;
        let head = self.send(Requester::Longhorn, "HEAD", None, idle).await?;
        self.expect_status(&head, 200)?;
        // No Content-Length is allowed: the size is then unknown (-1).
        let size = fetch::content_length(head.headers());
        drop(head);

        let mut response = self.send(Requester::Longhorn, "GET", None, idle).await?;
        self.expect_status(&response, 200)?;
        let want_sha512 = !self.spec.checksum.is_empty();
        let hashing = self.ctx.options.hashing;
        let mut sink = Sink::new(self.keep_path().as_deref(), hashing, want_sha512)
            .await?
            .limited_to(self.ctx.options.download_rate);
        let mut last_report = Instant::now();
        while let Some(chunk) = fetch::next_chunk(&mut response, idle).await? {
            sink.write(&chunk).await?;
            if last_report.elapsed() >= self.ctx.options.progress_interval
                && let Some(total) = size.filter(|&t| t > 0)
            {
                last_report = Instant::now();
                let percent = i64::try_from(sink.bytes().saturating_mul(100) / total)?;
                if percent != *progress {
                    *progress = percent;
                    self.status.importing("", percent);
                    self.patch_progress().await;
                }
            }
        }
        let digest = sink.finish().await?;
        if let Some(total) = size
            && total != digest.bytes
        {
            bail!(
                "downloaded {} bytes from {}, but its HEAD said Content-Length {total}",
                digest.bytes,
                self.spec.url
            );
        }
        if let Some(sha512) = &digest.sha512
            && !sha512.eq_ignore_ascii_case(&self.spec.checksum)
        {
            bail!(
                "the checksum of the downloaded file is {sha512}, expected {}",
                self.spec.checksum
            );
        }
        Ok(digest)
    }
}
