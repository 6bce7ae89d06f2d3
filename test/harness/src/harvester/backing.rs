//! `backend: backingimage`: Harvester's `Initialize` (delete the previous
//! attempt's StorageClass, HEAD the URL, create the StorageClass), then
//! Longhorn's backing-image downloader, the real one
//! ([`LonghornDownload`]).

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ObjectMeta};

use super::LONGHORN_PROVISIONER;
use super::attempt::{Digest, digest};
use super::fetch;
use super::image::{Failure, Job};
use crate::downloaders::LonghornDownload;

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
        let response = self.send("HEAD", None, timeout).await?;
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

    /// Longhorn's data source, the real program, as longhorn-manager runs
    /// it: started for the backing image, its `/v1/file` polled (its
    /// progress is the image's), and once the file is ready for transfer,
    /// the `transfer` action. `progress` is left at the last percentage.
    async fn longhorn_download(&mut self, progress: &mut i64) -> Result<Digest> {
        let attempt = self.attempt(true).await?;
        let checksum = Some(self.spec.checksum.as_str()).filter(|c| !c.is_empty());
        let mut download = LonghornDownload::start(
            attempt.source(),
            attempt.dir(),
            &super::backing_image_name(&self.uid),
            checksum,
        )?;
        loop {
            download.check_running()?;
            let file = download.file().await?;
            match file.state.as_str() {
                "ready-for-transfer" => break,
                "failed" => bail!("{}", file.message),
                _ if file.progress != *progress => {
                    *progress = file.progress;
                    self.status.importing("", file.progress);
                    self.patch_progress().await;
                }
                _ => {}
            }
            tokio::time::sleep(self.ctx.options.progress_interval).await;
        }
        let stored = download.transfer().await?;
        digest(&stored, self.ctx.options.hashing).await
    }
}
