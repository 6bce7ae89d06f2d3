//! What the stand-in did, for tests to read, and how they wait for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail};

/// An image's storage backend (`spec.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    BackingImage,
    Cdi,
}

/// One HTTP request Harvester's image controller sent (redirects followed
/// inside it). The downloaders' own requests are the server's to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// `HEAD` or `GET`.
    pub method: &'static str,
    /// The Range header, if any.
    pub range: Option<String>,
    /// The final status, or `None` when no response came.
    pub status: Option<u16>,
}

/// Where an image's import stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still working (or waiting to retry).
    InProgress,
    /// `Imported=True`.
    Imported,
    /// `RetryLimitExceeded=True`, with its message.
    Failed(String),
    /// The stand-in itself failed (e.g. the image was deleted mid-way).
    Error(String),
}

/// What the stand-in did for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    pub uid: String,
    pub backend: Backend,
    pub url: String,
    /// Download attempts started (CDI importer restarts count too).
    pub attempts: u32,
    /// Harvester's own requests (the downloaders' are not seen here).
    pub requests: Vec<SentRequest>,
    /// Why each failed attempt failed.
    pub errors: Vec<String>,
    /// SHA-256 (hex) of the imported bytes.
    pub sha256: Option<String>,
    /// Bytes of the imported image.
    pub bytes: u64,
    /// `status.storageClassName` once initialized.
    pub storage_class_name: Option<String>,
    pub outcome: Outcome,
}

impl ImportRecord {
    pub(super) fn new(uid: &str, backend: Backend, url: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            backend,
            url: url.to_owned(),
            attempts: 0,
            requests: Vec::new(),
            errors: Vec::new(),
            sha256: None,
            bytes: 0,
            storage_class_name: None,
            outcome: Outcome::InProgress,
        }
    }
}

/// What the VM part did for one VM (one value of its annotation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmRecord {
    pub uid: String,
    /// PVCs this stand-in created.
    pub created_pvcs: Vec<String>,
    /// PVCs given the VM in `harvesterhci.io/owned-by`.
    pub owned_pvcs: Vec<String>,
    /// Templates refused, with why (also in [`ERROR_ANNOTATION`](super::ERROR_ANNOTATION) on the VM).
    pub errors: Vec<String>,
}

impl VmRecord {
    /// All errors in one line, or `None`.
    pub fn error(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| self.errors.join("; "))
    }
}

pub(super) type Key = (String, String);

pub(super) fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

#[derive(Default)]
pub(super) struct State {
    pub images: HashMap<Key, ImportRecord>,
    pub vms: HashMap<Key, VmRecord>,
}

/// Records, and a signal for waiters whenever one changes.
pub(super) struct Shared {
    pub state: Mutex<State>,
    pub changed: tokio::sync::watch::Sender<()>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.send_replace(());
        out
    }

    pub fn update_image(&self, key: &Key, f: impl FnOnce(&mut ImportRecord)) {
        self.update(|s| s.images.get_mut(key).map(f));
    }

    /// Waits until `check` gives a value, or `timeout`.
    pub async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(v) = check(&self.lock()) {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("{what}: the stand-in stopped"),
                Err(_) => bail!("{what}: not within {timeout:?}"),
            }
        }
    }
}
