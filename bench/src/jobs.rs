//! A benchmark's namespace as it drives import jobs and images through
//! kube-apiserver.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use vmm_testkit::harvester::ImageController;

/// How long a job or an image may take.
pub const WAIT: Duration = Duration::from_secs(1800);
/// How often a job or an image is looked at: often, so timings are close.
const POLL: Duration = Duration::from_millis(20);

pub struct Namespace {
    client: kube::Client,
    name: String,
}

impl Namespace {
    pub fn new(client: kube::Client, name: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates `body` in the namespace's `resource` of API `group_version`
    /// (`harvesterhci.io/v1beta1`).
    pub async fn create(&self, group_version: &str, resource: &str, body: &Value) -> Result<()> {
        let path = format!("/apis/{group_version}/namespaces/{}/{resource}", self.name);
        let request = http::Request::post(&path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?)?;
        self.client
            .request_text(request)
            .await
            .with_context(|| format!("POST {path}"))?;
        Ok(())
    }

    /// Creates the import job `manifest`.
    pub async fn create_job(&self, manifest: &Value) -> Result<()> {
        self.create("importjob.harvesterhci.io/v1", "importjobs", manifest)
            .await
    }

    /// Waits until `images` sees `image`, which the job `job` makes.
    pub async fn wait_image(&self, images: &ImageController, job: &str, image: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while images.result(&self.name, image).is_none() {
            self.job_status(job).await?;
            ensure!(Instant::now() < deadline, "no image {image} after {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    pub async fn wait_succeeded(&self, job: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while self.job_status(job).await?["phase"] != "Succeeded" {
            ensure!(
                Instant::now() < deadline,
                "job {job} not done after {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// The job's status; an error once it failed.
    async fn job_status(&self, job: &str) -> Result<Value> {
        let path = format!(
            "/apis/importjob.harvesterhci.io/v1/namespaces/{}/importjobs/{job}",
            self.name
        );
        let request = http::Request::get(path).body(Vec::new())?;
        let mut now: Value = serde_json::from_str(&self.client.request_text(request).await?)?;
        let status = now["status"].take();
        ensure!(status["phase"] != "Failed", "job {job} failed: {status}");
        Ok(status)
    }
}
