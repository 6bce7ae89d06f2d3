//! A stopped server's disks as Glance images: per volume a snapshot, a
//! volume made from it and that volume uploaded to an image (raw); for an
//! image-backed server, a snapshot image of its root disk. Every temporary
//! is named after the export's id (`<id>-<volume id>`, `<id>-root`; the id
//! holds the job's UID, so no one else's names start so), which the
//! controller records before the first is made: the steps can be repeated
//! after a restart (each finds what an earlier run made) and
//! [`OpenstackClient::release`] finds everything to remove by that id alone.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use vmm_core::ByteStream;

use crate::model::Server;
use crate::watch::id_of;
use crate::{OpenstackClient, OpenstackError, ServiceKind};

/// The waits between attempts to remove an export's temporaries.
const RELEASE_RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(10),
];

/// The metadata key the snapshots and volumes carry, valued with the
/// export's id, for the cloud's operators.
pub const EXPORT_METADATA: &str = "vm-migration-export";
/// How often a snapshot, volume or image on its way is looked at.
const POLL: Duration = Duration::from_secs(2);
/// How long one step (snapshot, volume, upload) may take before it is given
/// up on; an upload of a large volume takes long, hence generous.
const STEP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// One disk of the server, ready as a Glance image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedDisk {
    /// The provider's key of the disk: the volume id, or `root`.
    pub key: String,
    pub image_id: String,
}

impl OpenstackClient {
    /// Makes a Glance image of each of `server`'s volumes (and its local
    /// root disk when image-backed), reusing what an earlier run with the
    /// same `export_id` made, and removes each snapshot and volume as soon as
    /// its image is complete.
    pub async fn export_images(
        &self,
        server: &Server,
        export_id: &str,
    ) -> Result<Vec<ExportedDisk>, OpenstackError> {
        let mut disks = Vec::new();
        if matches!(
            server.image,
            openstack_types::compute::v2::server::response::list_detailed_247::ImageEnum::F1(_)
        ) {
            let image_id = self.root_image(server, export_id).await?;
            disks.push(ExportedDisk {
                key: "root".into(),
                image_id,
            });
        }
        for attached in &server.os_extended_volumes_volumes_attached {
            let image_id = self.volume_image(&attached.id, export_id).await?;
            disks.push(ExportedDisk {
                key: attached.id.clone(),
                image_id,
            });
        }
        Ok(disks)
    }

    /// The image of volume `volume_id`, made through a snapshot and a volume
    /// of its own unless an earlier run made it.
    async fn volume_image(
        &self,
        volume_id: &str,
        export_id: &str,
    ) -> Result<String, OpenstackError> {
        let name = format!("{export_id}-{volume_id}");
        let disk = format!("volume {volume_id}");
        if let Some(image) = self.find_image(&name).await? {
            let id = image_id(&image);
            self.wait_image_made(&id, &disk).await?;
            self.remove_volume_temporaries(&name).await?;
            return Ok(id);
        }
        let snapshot = match self.find_cinder("snapshots", &name).await? {
            Some(snapshot) => snapshot,
            None => {
                let body = json!({"snapshot": {"volume_id": volume_id, "name": name, "force": true,
                    "description": "vm-migration: temporary, removed when the import ends",
                    "metadata": {EXPORT_METADATA: export_id}}});
                self.post(
                    ServiceKind::BlockStorage,
                    "snapshots",
                    &body,
                    "create snapshot",
                )
                .await?["snapshot"]
                    .take()
            }
        };
        let snapshot_id = id_of(&snapshot);
        tracing::info!(volume = %volume_id, snapshot = %snapshot_id, "export: snapshot of the volume");
        self.wait_status(
            ServiceKind::BlockStorage,
            &format!("snapshots/{snapshot_id}"),
            "snapshot",
            &["available"],
        )
        .await?;
        let volume = match self.find_cinder("volumes", &name).await? {
            Some(volume) => volume,
            None => {
                let body = json!({"volume": {"snapshot_id": snapshot_id, "name": name,
                    "description": "vm-migration: temporary, removed when the import ends",
                    "metadata": {EXPORT_METADATA: export_id}}});
                self.post(ServiceKind::BlockStorage, "volumes", &body, "create volume")
                    .await?["volume"]
                    .take()
            }
        };
        let copy_id = id_of(&volume);
        tracing::info!(volume = %volume_id, copy = %copy_id, "export: volume made from the snapshot");
        self.wait_status(
            ServiceKind::BlockStorage,
            &format!("volumes/{copy_id}"),
            "volume",
            &["available"],
        )
        .await?;
        let upload = json!({"os-volume_upload_image": {"image_name": name, "disk_format": "raw",
            "container_format": "bare", "force": false, "visibility": "private"}});
        let answer = self
            .post(
                ServiceKind::BlockStorage,
                &format!("volumes/{copy_id}/action"),
                &upload,
                "upload volume to image",
            )
            .await?;
        let image_id = answer["os-volume_upload_image"]["image_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        tracing::info!(volume = %volume_id, image = %image_id, "export: uploading the copy to an image");
        self.wait_image_made(&image_id, &disk).await?;
        // Cinder marks the volume available again once the upload is done.
        self.wait_status(
            ServiceKind::BlockStorage,
            &format!("volumes/{copy_id}"),
            "volume",
            &["available"],
        )
        .await?;
        self.remove_volume_temporaries(&name).await?;
        Ok(image_id)
    }

    /// A snapshot image of an image-backed server's root disk.
    async fn root_image(&self, server: &Server, export_id: &str) -> Result<String, OpenstackError> {
        let name = format!("{export_id}-root");
        let id = match self.find_image(&name).await? {
            Some(image) => image_id(&image),
            None => {
                let body = json!({"createImage": {"name": name, "metadata": {EXPORT_METADATA: export_id}}});
                let answer = self
                    .post(
                        ServiceKind::Compute,
                        &format!("servers/{}/action", server.id),
                        &body,
                        "create server image",
                    )
                    .await?;
                answer["image_id"].as_str().unwrap_or_default().to_owned()
            }
        };
        self.wait_image_made(&id, &format!("server {}'s root disk", server.id))
            .await?;
        Ok(id)
    }

    /// Removes every snapshot, volume and image the export `export_id`
    /// made, wherever it got to, trying again after [`RELEASE_RETRIES`]
    /// while something is left: nothing of an export expires by itself,
    /// and a cloud's API fails now and then (Glance answered a DELETE 500
    /// `database is locked` under load, and the image stayed). Errors are
    /// logged and the rest still removed; the number left is returned.
    pub async fn release(&self, export_id: &str) -> usize {
        let mut left = self.release_once(export_id).await;
        for delay in RELEASE_RETRIES {
            if left == 0 {
                break;
            }
            tokio::time::sleep(delay).await;
            left = self.release_once(export_id).await;
        }
        left
    }

    async fn release_once(&self, export_id: &str) -> usize {
        let mut left = 0;
        let prefix = format!("{export_id}-");
        match self
            .list::<Value>(ServiceKind::Image, "v2/images?", "images")
            .await
        {
            Ok(images) => {
                for image in images.iter().filter(|i| ours(i, &prefix)) {
                    let id = image_id(image);
                    if let Err(error) = self
                        .delete(
                            ServiceKind::Image,
                            &format!("v2/images/{id}"),
                            "delete image",
                        )
                        .await
                    {
                        tracing::warn!(image = %id, %error, "cannot remove a temporary image");
                        left += 1;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list the export's images");
                left += 1;
            }
        }
        if let Err(error) = self.remove_volume_temporaries(&prefix).await {
            tracing::warn!(%error, "cannot remove the export's snapshots and volumes");
            left += 1;
        }
        left
    }

    /// The bytes of image `image_id`, from Glance.
    pub async fn open_image(&self, image_id: &str) -> Result<ByteStream, OpenstackError> {
        let response = self
            .send_transfer(
                ServiceKind::Image,
                &format!("v2/images/{image_id}/file"),
                "download image",
            )
            .await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other))
            .boxed())
    }

    /// Removes the temporary volumes (first: a volume may hold its snapshot)
    /// and snapshots whose names start with `prefix` and that carry the
    /// export's id, waiting until each volume is gone.
    async fn remove_volume_temporaries(&self, prefix: &str) -> Result<(), OpenstackError> {
        let volumes: Vec<Value> = self
            .list(ServiceKind::BlockStorage, "volumes/detail?", "volumes")
            .await?;
        for volume in volumes.iter().filter(|v| ours(v, prefix)) {
            let id = id_of(volume);
            self.delete(
                ServiceKind::BlockStorage,
                &format!("volumes/{id}"),
                "delete volume",
            )
            .await?;
            self.wait_gone(ServiceKind::BlockStorage, &format!("volumes/{id}"))
                .await?;
        }
        let snapshots: Vec<Value> = self
            .list(ServiceKind::BlockStorage, "snapshots/detail?", "snapshots")
            .await?;
        for snapshot in snapshots.iter().filter(|s| ours(s, prefix)) {
            let id = id_of(snapshot);
            self.delete(
                ServiceKind::BlockStorage,
                &format!("snapshots/{id}"),
                "delete snapshot",
            )
            .await?;
        }
        Ok(())
    }

    async fn find_cinder(
        &self,
        collection: &str,
        name: &str,
    ) -> Result<Option<Value>, OpenstackError> {
        let found: Vec<Value> = self
            .list(
                ServiceKind::BlockStorage,
                &format!("{collection}/detail?name={name}"),
                collection,
            )
            .await?;
        Ok(found.into_iter().find(|item| item["name"] == name))
    }

    async fn find_image(&self, name: &str) -> Result<Option<Value>, OpenstackError> {
        let found: Vec<Value> = self
            .list(
                ServiceKind::Image,
                &format!("v2/images?name={name}"),
                "images",
            )
            .await?;
        Ok(found.into_iter().find(|image| image["name"] == name))
    }

    /// Waits until the image the cloud is making of `disk` is active. One
    /// that is deleted (Cinder deletes the image of a failed upload) or
    /// killed meanwhile is [`OpenstackError::ImageLost`], which a retry
    /// cures: the next run finds no image by its name and makes it again
    /// from the snapshot and volume it finds.
    async fn wait_image_made(&self, image_id: &str, disk: &str) -> Result<(), OpenstackError> {
        let waited = self
            .wait_status(
                ServiceKind::Image,
                &format!("v2/images/{image_id}"),
                "",
                &["active"],
            )
            .await;
        match waited {
            Err(OpenstackError::Api {
                url,
                status: 404,
                detail,
                ..
            }) => Err(lost(url, disk, detail)),
            Err(OpenstackError::Api { url, detail, .. })
                if detail.starts_with("it is killed") || detail.starts_with("it is deleted") =>
            {
                Err(lost(url, disk, detail))
            }
            other => other,
        }
    }

    /// Waits until the object at `path` (wrapped in `key`, or bare when
    /// empty) has one of `statuses`; an error when it turns `error` or
    /// after [`STEP_TIMEOUT`].
    async fn wait_status(
        &self,
        service: ServiceKind,
        path: &str,
        key: &str,
        statuses: &[&str],
    ) -> Result<(), OpenstackError> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let body: Value = self.get(service, path, "wait for status").await?;
            let object = if key.is_empty() { &body } else { &body[key] };
            let status = object["status"].as_str().unwrap_or_default();
            if statuses.contains(&status) {
                return Ok(());
            }
            if status.starts_with("error")
                || status == "killed"
                || status == "deleted"
                || tokio::time::Instant::now() > deadline
            {
                return Err(OpenstackError::Api {
                    url: self.endpoints().url(service).to_owned(),
                    call: format!("wait for {path}"),
                    status: 200,
                    detail: format!("it is {status}, not {}", statuses.join(" or ")),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_gone(&self, service: ServiceKind, path: &str) -> Result<(), OpenstackError> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            match self.get::<Value>(service, path, "wait for deletion").await {
                Err(OpenstackError::Api { status: 404, .. }) => return Ok(()),
                Err(other) => return Err(other),
                Ok(_) if tokio::time::Instant::now() > deadline => {
                    return Err(OpenstackError::Api {
                        url: self.endpoints().url(service).to_owned(),
                        call: format!("wait for deletion of {path}"),
                        status: 200,
                        detail: "it is still there".into(),
                    });
                }
                Ok(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

/// Whether `item` is a temporary of an export: named with `prefix` (the
/// export's id, or one temporary's whole name).
fn ours(item: &Value, prefix: &str) -> bool {
    item["name"].as_str().is_some_and(|n| n.starts_with(prefix))
}

fn lost(url: String, disk: &str, detail: String) -> OpenstackError {
    OpenstackError::ImageLost {
        url,
        disk: disk.to_owned(),
        detail,
    }
}

fn image_id(image: &Value) -> String {
    id_of(image)
}
