//! The image watch and one job per image: attempts and retries as in
//! Harvester's `vmImageHandler` (`pkg/controller/master/image/
//! vm_image_controller.go`): an image whose `RetryLimitExceeded` or
//! `Imported` is True is left alone; otherwise it is (re)initialized, and a
//! failed attempt is retried no sooner than the retry delay after it. A
//! deleted image's download is stopped and its StorageClass deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::{AbortHandle, JoinSet};

use super::attempt::{Attempt, Digest};
use super::status::{IMPORTED, INITIALIZED, ImageStatus, RETRY_LIMIT_EXCEEDED};
use super::{
    Backend, Ctx, ImportRecord, Key, Outcome, SHA256_ANNOTATION, SentRequest, image_resource,
};

/// How long a status write the API server did not answer is tried again.
const UNANSWERED_RETRY: Duration = Duration::from_secs(120);

/// The spec fields the controller reads (`pkg/apis/harvesterhci.io/v1beta1/image.go`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ImageSpec {
    pub backend: String,
    pub source_type: String,
    pub url: String,
    /// SHA-512 hex, checked by Longhorn's downloader.
    pub checksum: String,
    /// Default 3 (the CRD's default).
    pub retry: Option<i64>,
    pub storage_class_parameters: BTreeMap<String, String>,
    pub target_storage_class_name: String,
}

/// Why an attempt failed, and which condition it counts against.
pub(super) struct Failure {
    pub condition: &'static str,
    pub message: String,
    pub progress: i64,
}

impl Failure {
    /// Harvester's own checks failed (`FailInitial`).
    pub fn initial(error: &anyhow::Error) -> Self {
        Self {
            condition: INITIALIZED,
            message: format!("{error:#}"),
            progress: 0,
        }
    }

    /// The download failed (`FailImported`).
    pub fn import(error: &anyhow::Error, progress: i64) -> Self {
        Self {
            condition: IMPORTED,
            message: format!("{error:#}"),
            progress,
        }
    }
}

/// Watches images until aborted; one job per image UID.
pub(super) async fn run(ctx: Arc<Ctx>) {
    let api = ctx.api(&image_resource());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut jobs = JoinSet::new();
    let mut running: HashMap<String, AbortHandle> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => break,
                Some(Err(e)) => tracing::warn!("harvester stand-in: image watch: {e}"),
                Some(Ok(Event::Apply(image) | Event::InitApply(image))) => {
                    if let Some(job) = Job::for_image(&ctx, &image, &mut seen) {
                        let uid = job.uid.clone();
                        running.insert(uid, jobs.spawn(job.run()));
                    }
                }
                Some(Ok(Event::Delete(image))) => {
                    let Some(uid) = image.metadata.uid.clone() else { continue };
                    if let Some(task) = running.remove(&uid) {
                        task.abort();
                    }
                    let backend = image.data.pointer("/spec/backend").and_then(Value::as_str);
                    if seen.contains(&uid) && backend != Some("cdi") {
                        let client = ctx.client.clone();
                        jobs.spawn(async move {
                            if let Err(e) = super::backing::delete_storage_class(&client, &uid).await {
                                tracing::warn!("harvester stand-in: {e:#}");
                            }
                        });
                    }
                }
                Some(Ok(Event::Init | Event::InitDone)) => {}
            },
            Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("harvester stand-in: an image job panicked: {e}");
                }
            }
        }
    }
}

/// One image being imported.
pub(super) struct Job {
    pub ctx: Arc<Ctx>,
    pub api: Api<DynamicObject>,
    pub key: Key,
    pub uid: String,
    pub spec: ImageSpec,
    pub status: ImageStatus,
}

impl Job {
    /// A job for an image not handled yet, or `None`.
    fn for_image(ctx: &Arc<Ctx>, image: &DynamicObject, seen: &mut HashSet<String>) -> Option<Job> {
        let meta = &image.metadata;
        let (uid, namespace, name) = (
            meta.uid.clone()?,
            meta.namespace.clone()?,
            meta.name.clone()?,
        );
        if meta.deletion_timestamp.is_some() || seen.contains(&uid) {
            return None;
        }
        seen.insert(uid.clone());
        let spec: ImageSpec = image
            .data
            .get("spec")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        if spec.source_type != "download" {
            tracing::debug!(
                "harvester stand-in: {namespace}/{name}: sourceType {:?} ignored",
                spec.source_type
            );
            return None;
        }
        let status = ImageStatus::of(image);
        if status.is_true(RETRY_LIMIT_EXCEEDED) || status.is_true(IMPORTED) {
            tracing::debug!("harvester stand-in: {namespace}/{name} is already done");
            return None;
        }
        let api = Api::namespaced_with(ctx.client.clone(), &namespace, &image_resource());
        Some(Job {
            ctx: ctx.clone(),
            api,
            key: (namespace, name),
            uid,
            spec,
            status,
        })
    }

    pub fn backend(&self) -> Backend {
        match self.spec.backend.as_str() {
            "cdi" => Backend::Cdi,
            _ => Backend::BackingImage,
        }
    }

    fn retry(&self) -> i64 {
        self.spec.retry.unwrap_or(3)
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.key.0, self.key.1)
    }

    pub fn record(&self, f: impl FnOnce(&mut ImportRecord)) {
        self.ctx.shared.update_image(&self.key, f);
    }

    async fn run(mut self) {
        let record = ImportRecord::new(&self.uid, self.backend(), &self.spec.url);
        let key = self.key.clone();
        self.ctx.shared.update(|s| s.images.insert(key, record));
        let outcome = match self.attempts().await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!("harvester stand-in: {}: {e:#}", self.name());
                Outcome::Error(format!("{e:#}"))
            }
        };
        tracing::info!("harvester stand-in: {}: {outcome:?}", self.name());
        self.record(|r| r.outcome = outcome);
    }

    async fn attempts(&mut self) -> Result<Outcome> {
        loop {
            if self.status.failed > 0 {
                tokio::time::sleep(self.ctx.options.retry_delay).await;
            }
            self.record(|r| r.attempts += 1);
            let failure = match self.backend() {
                Backend::BackingImage => self.backing_image_attempt().await?,
                Backend::Cdi => self.cdi_attempt().await?,
            };
            let Some(failure) = failure else {
                return Ok(Outcome::Imported);
            };
            tracing::info!(
                "harvester stand-in: {}: attempt failed: {}",
                self.name(),
                failure.message
            );
            self.record(|r| r.errors.push(failure.message.clone()));
            let retry = self.retry();
            let exceeded =
                self.status
                    .fail(failure.condition, &failure.message, failure.progress, retry);
            self.patch_status().await?;
            if exceeded {
                return Ok(Outcome::Failed(self.status.retry_message()));
            }
        }
    }

    /// Writes the whole status (no status subresource: the main resource).
    pub async fn patch_status(&self) -> Result<()> {
        self.patch(self.status.merge_patch()).await
    }

    /// Progress is best effort, as in Harvester (errors only logged).
    pub async fn patch_progress(&self) {
        if let Err(e) = self.patch_status().await {
            tracing::warn!("harvester stand-in: {}: progress: {e:#}", self.name());
        }
    }

    /// A merge patch of the image. One the API server never answered (it
    /// restarts) is tried again for up to [`UNANSWERED_RETRY`], as
    /// Harvester's controller requeues a failed update; an answer, even a
    /// refusal, is final.
    async fn patch(&self, patch: Value) -> Result<()> {
        let deadline = tokio::time::Instant::now() + UNANSWERED_RETRY;
        loop {
            let patched = self
                .api
                .patch(&self.key.1, &super::patch_params(), &Patch::Merge(&patch))
                .await;
            match patched {
                Ok(_) => return Ok(()),
                Err(e)
                    if !matches!(e, kube::Error::Api(_))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(
                        "harvester stand-in: {}: status not written, trying again: {e}",
                        self.name()
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("patch image {}", self.name())),
            }
        }
    }

    /// The import succeeded: status, the SHA-256 annotation (removed when
    /// not hashed: a merge patch's null) and the record.
    pub async fn finish_imported(&mut self, digest: Digest) -> Result<()> {
        let bytes = i64::try_from(digest.bytes).context("image size")?;
        self.status.imported(bytes, bytes);
        let mut patch = self.status.merge_patch();
        patch["metadata"] = json!({"annotations": {SHA256_ANNOTATION: digest.sha256}});
        self.patch(patch).await?;
        self.record(|r| {
            r.sha256 = digest.sha256;
            r.bytes = digest.bytes;
        });
        Ok(())
    }

    /// A place for the next run of a downloader (see [`Attempt::new`]).
    pub async fn attempt(&self, trusts_ca: bool) -> Result<Attempt> {
        let n = self
            .ctx
            .shared
            .lock()
            .images
            .get(&self.key)
            .map_or(0, |r| r.attempts);
        Attempt::new(&self.ctx, &self.name(), n, &self.spec.url, trusts_ca).await
    }

    /// Sends one of Harvester's own requests and records it. `timeout`
    /// bounds the whole request (HEAD); a GET's wait for headers is bounded
    /// by the idle timeout, its body by [`next_chunk`](super::fetch::next_chunk).
    pub async fn send(
        &self,
        method: &'static str,
        range: Option<String>,
        timeout: Duration,
    ) -> Result<reqwest::Response> {
        // Harvester's CDI probes use Go's default client.
        let http = match self.backend() {
            Backend::BackingImage => &self.ctx.http.harvester,
            Backend::Cdi => &self.ctx.http.cdi,
        };
        let mut request = match method {
            "HEAD" => http.head(&self.spec.url).timeout(timeout),
            _ => http.get(&self.spec.url),
        };
        if let Some(range) = &range {
            request = request.header(reqwest::header::RANGE, range);
        }
        let result = match tokio::time::timeout(timeout, request.send()).await {
            Ok(r) => {
                r.map_err(|e| anyhow::Error::new(e).context(format!("{method} {}", self.spec.url)))
            }
            Err(_) => Err(anyhow::anyhow!(
                "{method} {}: no response within {timeout:?}",
                self.spec.url
            )),
        };
        let sent = SentRequest {
            method,
            range,
            status: result.as_ref().ok().map(|r| r.status().as_u16()),
        };
        self.record(|r| r.requests.push(sent));
        result
    }

    /// Fails unless `status` is what was expected, in Longhorn's words.
    pub fn expect_status(&self, response: &reqwest::Response, expected: u16) -> Result<()> {
        if response.status().as_u16() != expected {
            bail!(
                "expected status code {expected} from {}, got {}",
                self.spec.url,
                super::fetch::status_text(response.status())
            );
        }
        Ok(())
    }
}
