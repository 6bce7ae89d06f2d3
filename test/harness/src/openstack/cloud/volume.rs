//! Cinder v3: volumes, snapshots, and uploading a volume to a Glance image
//! (`os-volume_upload_image`), which writes the volume's bytes into the real
//! Glance through its API, as Cinder's own upload does. Snapshots and
//! volumes made from them are copies of the bytes; each is `creating` until
//! the copy is done.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path as FsPath;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Cloud, CloudState, Project, SnapshotRecord, VolumeRecord, error, rfc3339};

/// Random bytes written at each of a new volume's start, middle and end.
const PATTERN_BYTES: usize = 1 << 20;

/// Writes a sparse file of `size` bytes with random bytes in three places.
pub(super) fn write_pattern(path: &FsPath, size: u64) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(size)?;
    let mut chunk = vec![0u8; PATTERN_BYTES];
    for offset in [0, size / 2, size.saturating_sub(PATTERN_BYTES as u64)] {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut chunk)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&chunk)?;
    }
    Ok(())
}

impl CloudState {
    /// A volume's view, as `GET /volumes/{id}` shows it: its status is
    /// `in-use` while a server has it attached.
    fn volume_view(&self, volume: &VolumeRecord) -> Value {
        let attachments: Vec<Value> = self
            .servers
            .values()
            .filter(|s| s.status != "DELETED")
            .filter_map(|s| {
                let index = s.seed.volumes.iter().position(|v| *v == volume.id)?;
                let device = format!("/dev/vd{}", (b'a' + index as u8) as char);
                Some(
                    json!({"id": volume.id, "attachment_id": format!("att-{}-{}", s.id, index),
                    "volume_id": volume.id, "server_id": s.id, "host_name": "compute-0",
                    "device": device, "attached_at": rfc3339(s.created)}),
                )
            })
            .collect();
        let status = match volume.status {
            "available" if !attachments.is_empty() => "in-use",
            other => other,
        };
        json!({
            "id": volume.id, "name": volume.name, "size": volume.size_gib, "status": status,
            "bootable": volume.bootable.to_string(), "encrypted": false, "multiattach": volume.multiattach,
            "availability_zone": "nova", "volume_type": volume.volume_type,
            "user_id": "stand-in-user", "os-vol-tenant-attr:tenant_id": volume.project_id,
            "created_at": rfc3339(volume.updated), "updated_at": rfc3339(volume.updated),
            "replication_status": null, "consistencygroup_id": null, "snapshot_id": volume.snapshot_id,
            "source_volid": null, "description": null, "metadata": volume.metadata,
            "attachments": attachments, "links": []
        })
    }
}

fn snapshot_view(snapshot: &SnapshotRecord) -> Value {
    json!({
        "id": snapshot.id, "name": snapshot.name, "volume_id": snapshot.volume_id,
        "size": snapshot.size_gib, "status": snapshot.status, "metadata": snapshot.metadata,
        "created_at": rfc3339(snapshot.created), "updated_at": null, "description": null,
        "os-extended-snapshot-attributes:project_id": snapshot.project_id,
        "os-extended-snapshot-attributes:progress": if snapshot.status == "available" { "100%" } else { "0%" }
    })
}

/// Cinder's `name` filter: exact.
fn named(query: &[(String, String)]) -> Option<&str> {
    query
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str())
}

fn wrong_project() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Policy doesn't allow this project's volumes to be used.".into(),
    )
}

fn not_found(what: &str, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        format!("{what} {id} could not be found."),
    )
}

/// The newest volume microversion the stand-in answers to.
const MAX_VOLUME_MICROVERSION: (u32, u32) = (3, 70);

/// The volume microversion a request asks for (`OpenStack-API-Version:
/// volume 3.60`; 3.0 when it names none); 406 for one newer than the
/// stand-in's, as Cinder answers (the message is the error).
fn volume_microversion(headers: &HeaderMap) -> Result<(u32, u32), String> {
    let asked = headers
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("volume "))
        .map(str::trim);
    let version = match asked {
        None => (3, 0),
        Some("latest") => MAX_VOLUME_MICROVERSION,
        Some(text) => {
            let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
        }
    };
    if version > MAX_VOLUME_MICROVERSION {
        return Err(format!(
            "Version {}.{} is not supported by the API.",
            version.0, version.1
        ));
    }
    Ok(version)
}

/// `updated_at=<op>:<time>` (microversion 3.60): whether `updated` passes.
fn updated_filter(query: &[(String, String)]) -> Result<Option<(String, Timestamp)>, String> {
    let Some((_, value)) = query.iter().find(|(k, _)| k == "updated_at") else {
        return Ok(None);
    };
    let (op, time) = value
        .split_once(':')
        .ok_or_else(|| format!("Invalid updated_at value {value:?}"))?;
    let time = time
        .parse::<Timestamp>()
        .map_err(|_| format!("Invalid updated_at time {time:?}"))?;
    if !matches!(op, "gt" | "gte" | "lt" | "lte" | "eq" | "neq") {
        return Err(format!("Invalid updated_at operator {op:?}"));
    }
    Ok(Some((op.to_owned(), time)))
}

fn passes(filter: &Option<(String, Timestamp)>, updated: Timestamp) -> bool {
    let Some((op, time)) = filter else {
        return true;
    };
    match op.as_str() {
        "gt" => updated > *time,
        "gte" => updated >= *time,
        "lt" => updated < *time,
        "lte" => updated <= *time,
        "eq" => updated == *time,
        _ => updated != *time,
    }
}

/// `GET /volumes/detail`, with the `name` filter and, from microversion
/// 3.60, the `updated_at` one.
pub(super) async fn list_volumes(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path(path_project): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let version = match volume_microversion(&headers) {
        Ok(version) => version,
        Err(message) => return error(StatusCode::NOT_ACCEPTABLE, "computeFault", message),
    };
    let updated = match updated_filter(&query) {
        Ok(Some(_)) if version < (3, 60) => {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "Invalid filter keys: updated_at".into(),
            );
        }
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, "badRequest", message),
    };
    let state = cloud.state.lock().unwrap();
    let volumes: Vec<Value> = state
        .volumes
        .values()
        .filter(|v| v.project_id == project && named(&query).is_none_or(|n| v.name == n))
        .filter(|v| passes(&updated, v.updated))
        .map(|v| state.volume_view(v))
        .collect();
    Json(json!({"volumes": volumes})).into_response()
}

/// `GET /volumes`: each volume's id, name and links only.
pub(super) async fn list_volume_summaries(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path(path_project): Path<String>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let state = cloud.state.lock().unwrap();
    let volumes: Vec<Value> = state
        .volumes
        .values()
        .filter(|v| v.project_id == project)
        .map(|v| json!({"id": v.id, "name": v.name, "links": []}))
        .collect();
    Json(json!({"volumes": volumes})).into_response()
}

pub(super) async fn show_volume(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path((path_project, id)): Path<(String, String)>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let state = cloud.state.lock().unwrap();
    match state.volumes.get(&id).filter(|v| v.project_id == project) {
        Some(volume) => Json(json!({"volume": state.volume_view(volume)})).into_response(),
        None => not_found("Volume", &id),
    }
}

/// `POST /volumes` from a snapshot: `creating` until its bytes are copied.
pub(super) async fn create_volume(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path(path_project): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let request = &body["volume"];
    let Some(snapshot_id) = request["snapshot_id"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "the stand-in makes volumes from snapshots only".into(),
        );
    };
    let mut state = cloud.state.lock().unwrap();
    let Some(snapshot) = state
        .snapshots
        .get(snapshot_id)
        .filter(|s| s.project_id == project)
        .cloned()
    else {
        return not_found("Snapshot", snapshot_id);
    };
    if snapshot.status != "available" {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!(
                "Invalid snapshot: snapshot {snapshot_id} is {}",
                snapshot.status
            ),
        );
    }
    let id = state.id(super::VOLUME);
    let data = cloud.dir.join(&id);
    let volume = VolumeRecord {
        id: id.clone(),
        name: request["name"].as_str().unwrap_or_default().to_owned(),
        project_id: project,
        size_gib: request["size"].as_i64().unwrap_or(snapshot.size_gib),
        bootable: false,
        multiattach: false,
        volume_type: "standard".into(),
        updated: Timestamp::now(),
        status: "creating",
        data: data.clone(),
        snapshot_id: Some(snapshot_id.to_owned()),
        metadata: request["metadata"].clone(),
    };
    let view = state.volume_view(&volume);
    state.volumes.insert(id.clone(), volume);
    drop(state);
    cloud.copy_then(snapshot.data, data, move |state| {
        if let Some(volume) = state.volumes.get_mut(&id) {
            volume.status = "available";
        }
    });
    (StatusCode::ACCEPTED, Json(json!({"volume": view}))).into_response()
}

pub(super) async fn delete_volume(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path((path_project, id)): Path<(String, String)>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    if let Some(refused) = cloud.refused_delete(&project) {
        return refused;
    }
    let mut state = cloud.state.lock().unwrap();
    let Some(volume) = state.volumes.get(&id).filter(|v| v.project_id == project) else {
        return not_found("Volume", &id);
    };
    let status = state.volume_view(volume)["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if status != "available" {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer. (status {status})"
            ),
        );
    }
    if let Some(volume) = state.volumes.remove(&id) {
        let _ = std::fs::remove_file(volume.data);
    }
    StatusCode::ACCEPTED.into_response()
}

/// `os-volume_upload_image`: makes the image in Glance with the caller's
/// token and streams the volume's bytes into it; the volume is `uploading`
/// until Glance has them all.
pub(super) async fn volume_action(
    State(cloud): State<Cloud>,
    Extension(Project(project, token)): Extension<Project>,
    Path((path_project, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let Some(upload) = body.get("os-volume_upload_image") else {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "the stand-in knows only os-volume_upload_image".into(),
        );
    };
    let (data, size_gib) = {
        let state = cloud.state.lock().unwrap();
        let Some(volume) = state.volumes.get(&id).filter(|v| v.project_id == project) else {
            return not_found("Volume", &id);
        };
        let status = state.volume_view(volume)["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let force = upload["force"].as_bool().unwrap_or(false);
        if !(status == "available" || (force && status == "in-use")) {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!(
                    "Invalid volume: Volume {id} status must be available or in-use, but current status is: {status}."
                ),
            );
        }
        (volume.data.clone(), volume.size_gib)
    };
    let name = upload["image_name"].as_str().unwrap_or_default().to_owned();
    let disk_format = upload["disk_format"].as_str().unwrap_or("raw").to_owned();
    cloud.set_volume_status(&id, "uploading");
    let (volume_id, uploading) = (id.clone(), cloud.clone());
    let done = move || uploading.set_volume_status(&volume_id, "available");
    let image_id = match cloud
        .image_from_file(&token, &name, &disk_format, data, done)
        .await
    {
        Ok(image_id) => image_id,
        Err(e) => {
            cloud.set_volume_status(&id, "available");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "computeFault",
                format!("{e:#}"),
            );
        }
    };
    (
        StatusCode::ACCEPTED,
        Json(json!({"os-volume_upload_image": {
            "id": id, "updated_at": rfc3339(Timestamp::now()), "status": "uploading",
            "display_description": null, "size": size_gib, "volume_type": {"name": "standard"},
            "image_id": image_id, "container_format": "bare", "disk_format": disk_format,
            "image_name": name, "visibility": "private", "protected": false
        }})),
    )
        .into_response()
}

pub(super) async fn create_snapshot(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path(path_project): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let request = &body["snapshot"];
    let volume_id = request["volume_id"].as_str().unwrap_or_default().to_owned();
    let mut state = cloud.state.lock().unwrap();
    let Some(volume) = state
        .volumes
        .get(&volume_id)
        .filter(|v| v.project_id == project)
    else {
        return not_found("Volume", &volume_id);
    };
    let in_use = state.volume_view(volume)["status"] == "in-use";
    if in_use && !request["force"].as_bool().unwrap_or(false) {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            format!(
                "Invalid volume: Volume {volume_id} status must be available, but current status is: in-use."
            ),
        );
    }
    let (source, size_gib) = (volume.data.clone(), volume.size_gib);
    let id = state.id(super::SNAPSHOT);
    let snapshot = SnapshotRecord {
        id: id.clone(),
        name: request["name"].as_str().unwrap_or_default().to_owned(),
        project_id: project,
        volume_id,
        size_gib,
        status: "creating",
        data: cloud.dir.join(&id),
        metadata: request["metadata"].clone(),
        created: Timestamp::now(),
    };
    let view = snapshot_view(&snapshot);
    let target = snapshot.data.clone();
    state.snapshots.insert(id.clone(), snapshot);
    drop(state);
    cloud.copy_then(source, target, move |state| {
        if let Some(snapshot) = state.snapshots.get_mut(&id) {
            snapshot.status = "available";
        }
    });
    (StatusCode::ACCEPTED, Json(json!({"snapshot": view}))).into_response()
}

pub(super) async fn list_snapshots(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path(path_project): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let state = cloud.state.lock().unwrap();
    let snapshots: Vec<Value> = state
        .snapshots
        .values()
        .filter(|s| s.project_id == project && named(&query).is_none_or(|n| s.name == n))
        .map(snapshot_view)
        .collect();
    Json(json!({"snapshots": snapshots})).into_response()
}

pub(super) async fn show_snapshot(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path((path_project, id)): Path<(String, String)>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    let state = cloud.state.lock().unwrap();
    match state.snapshots.get(&id).filter(|s| s.project_id == project) {
        Some(snapshot) => Json(json!({"snapshot": snapshot_view(snapshot)})).into_response(),
        None => not_found("Snapshot", &id),
    }
}

pub(super) async fn delete_snapshot(
    State(cloud): State<Cloud>,
    Extension(Project(project, _)): Extension<Project>,
    Path((path_project, id)): Path<(String, String)>,
) -> Response {
    if path_project != project {
        return wrong_project();
    }
    if let Some(refused) = cloud.refused_delete(&project) {
        return refused;
    }
    let mut state = cloud.state.lock().unwrap();
    match state.snapshots.remove(&id) {
        Some(snapshot) if snapshot.project_id == project => {
            let _ = std::fs::remove_file(snapshot.data);
            StatusCode::ACCEPTED.into_response()
        }
        Some(other) => {
            state.snapshots.insert(id.clone(), other);
            not_found("Snapshot", &id)
        }
        None => not_found("Snapshot", &id),
    }
}

impl Cloud {
    /// Copies `from` to `to` in the background, then applies `done`.
    fn copy_then(
        &self,
        from: std::path::PathBuf,
        to: std::path::PathBuf,
        done: impl FnOnce(&mut CloudState) + Send + 'static,
    ) {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::copy(&from, &to) {
                tracing::warn!("the stand-in cannot copy {}: {e}", from.display());
                return;
            }
            done(&mut state.lock().unwrap());
        });
    }

    fn set_volume_status(&self, id: &str, status: &'static str) {
        if let Some(volume) = self.state.lock().unwrap().volumes.get_mut(id) {
            volume.status = status;
            volume.updated = Timestamp::now();
        }
    }

    /// Creates an image of `disk_format` in Glance as the caller and, in the
    /// background, streams the raw file at `data` into it (converted first
    /// when the format is not raw), then runs `done`; the image's id. All of
    /// it runs on a task of its own, as Cinder's volume service works on
    /// whatever the API call's client does: a client killed mid-call must
    /// not leave the image half-made (`queued` for ever).
    pub(super) async fn image_from_file(
        &self,
        token: &str,
        name: &str,
        disk_format: &str,
        data: std::path::PathBuf,
        done: impl FnOnce() + Send + 'static,
    ) -> Result<String> {
        let (cloud, token, name, disk_format) = (
            self.clone(),
            token.to_owned(),
            name.to_owned(),
            disk_format.to_owned(),
        );
        tokio::spawn(async move {
            let image_id = cloud.create_image(&token, &name, &disk_format).await?;
            let image = image_id.clone();
            let fail = cloud.upload_fails(&name);
            tokio::spawn(async move {
                let uploaded = match fail {
                    true => cloud.delete_image(&token, &image).await,
                    false => cloud.upload(&token, &image, &data, &disk_format).await,
                };
                if let Err(e) = uploaded {
                    // On stderr, uncaptured: a test whose image vanished shows why.
                    eprintln!("the stand-in's upload of image {image} to Glance failed: {e:#}");
                }
                done();
            });
            Ok(image_id)
        })
        .await
        .context("the stand-in's image task")?
    }

    /// Creates an image record in Glance (`queued`), as the caller.
    async fn create_image(&self, token: &str, name: &str, disk_format: &str) -> Result<String> {
        let created: Value = self
            .http
            .post(format!("{}/v2/images", self.glance_url))
            .header("X-Auth-Token", token)
            .json(&json!({"name": name, "disk_format": disk_format, "container_format": "bare", "visibility": "private"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(created["id"]
            .as_str()
            .context("Glance gave the image no id")?
            .to_owned())
    }

    /// Streams the raw file at `data` into the image's file, converted to
    /// `disk_format` first unless raw, at the upload rate set; when that
    /// fails, deletes the image, as Cinder does.
    async fn upload(
        &self,
        token: &str,
        image_id: &str,
        data: &FsPath,
        disk_format: &str,
    ) -> Result<()> {
        let converted = self.dir.join(format!("{image_id}.{disk_format}"));
        let result = async {
            if disk_format == "raw" {
                return self.put_image_file(token, image_id, data).await;
            }
            convert(data, disk_format, &converted).await?;
            self.put_image_file(token, image_id, &converted).await
        }
        .await;
        let _ = std::fs::remove_file(&converted);
        if result.is_err() {
            let _ = self.delete_image(token, image_id).await;
        }
        result
    }

    /// Whether the upload into the image `name` is one a test made fail
    /// ([`Cloud::fail_next_upload_of`]); it fails once.
    fn upload_fails(&self, name: &str) -> bool {
        let failing = &mut self.settings.lock().unwrap().failing_uploads;
        let volume = failing.iter().find(|v| name.ends_with(v.as_str())).cloned();
        volume.is_some_and(|v| failing.remove(&v))
    }

    /// Deletes the image, as Cinder does when its upload failed; the
    /// upload's failure.
    async fn delete_image(&self, token: &str, image_id: &str) -> Result<()> {
        self.http
            .delete(format!("{}/v2/images/{image_id}", self.glance_url))
            .header("X-Auth-Token", token)
            .send()
            .await?;
        anyhow::bail!("the upload failed (a test's fault); the image is deleted")
    }

    /// `PUT` of the file with its length: uWSGI's chunked reader takes no
    /// chunk above its buffer size.
    async fn put_image_file(&self, token: &str, image_id: &str, data: &FsPath) -> Result<()> {
        let rate = self.settings.lock().unwrap().upload_rate;
        let file = tokio::fs::File::open(data).await?;
        let length = file.metadata().await?.len();
        let chunks = futures::stream::unfold(file, move |mut file| async move {
            let mut chunk = vec![0u8; 1 << 20];
            match file.read(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    if let Some(rate) = rate {
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                    }
                    Some((Ok::<_, std::io::Error>(chunk), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        self.http
            .put(format!("{}/v2/images/{image_id}/file", self.glance_url))
            .header("X-Auth-Token", token)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", length)
            .body(reqwest::Body::wrap_stream(chunks.boxed()))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// `qemu-img convert` of the raw file `raw` to `format` at `output`.
async fn convert(raw: &FsPath, format: &str, output: &FsPath) -> Result<()> {
    let result = tokio::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", format])
        .arg(raw)
        .arg(output)
        .output()
        .await
        .context("run qemu-img")?;
    anyhow::ensure!(
        result.status.success(),
        "qemu-img convert to {format}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    Ok(())
}
