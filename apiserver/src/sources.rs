//! One sync task per source: [`SourceSync`] watches the source objects
//! (`source.harvesterhci.io/v1`) of every namespace and the Secrets they name,
//! and keeps exactly one task per source, keyed by [`SourceId`], that logs in
//! to the source and forwards its inventory watch to an [`InventorySink`].
//!
//! - A task starts when its source appears (and its Secret exists), restarts
//!   when the source's `metadata.generation` or its Secret's data changes
//!   (credential rotation; compared by a keyed hash, never logged), and stops,
//!   with [`InventorySink::forget`], when the source or its Secret is deleted.
//! - Tenancy: a source's Secret is always read from the source's own namespace.
//!   [`SecretReference`](vmm_api::source::SecretReference) has no namespace,
//!   and the key of every Secret read here is `(source namespace, name)`.
//! - Secrets: a *metadata-only* watch per namespace that holds a source
//!   ([`SecretWatch`]: no Secret data crosses the wire or stays in memory for
//!   Secrets no source names); a change of the `resourceVersion` of a Secret
//!   some source names triggers one targeted `get` of it. Only the data of
//!   named Secrets is kept, to log in again. Needs `get`, `list`, `watch` on
//!   `secrets` in those namespaces only (the chart's credentials role).
//! - Sources of a kind without a provider (`vmm_providers::provider`) are
//!   watched, logged once and skipped: no task, no inventory, and they do not
//!   hold up readiness.
//!
//! Readiness ([`SourceSync::ready`]) turns true once, and stays true, when the
//! first full list of every kind with a provider has been read and each source present
//! then (or added before it turned true) has *settled*: its task delivered its
//! first `Synced`, or failed for the first time, or the source cannot start
//! because its Secret does not exist. A failing source counts as done trying,
//! so one unreachable vCenter cannot keep every replica unready forever (its
//! inventory is simply empty and its task keeps retrying). Sources added later
//! never turn readiness false again: all replicas would go unready at once for
//! what is not a fault of any replica.

mod plan;
mod task;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_objects};
use kube::{Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use vmm_api::SourceKind;
use vmm_api::source::{AnySource, SourceSpec};
use vmm_core::Provider;
use vmm_secretwatch::{SecretEvent, SecretWatch};

use self::plan::{Fingerprint, Plan, plan};
use self::task::{TaskConfig, TaskControl};
use crate::sink::{InventorySink, SourceId};

/// How often a Secret that could not be read (API error) is read again.
const SECRET_RETRY: Duration = Duration::from_secs(10);
/// How long tasks get to end their watches and log out on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Keeps one inventory sync task per source; see the [module docs](self).
pub struct SourceSync {
    client: kube::Client,
    sink: Arc<dyn InventorySink>,
    ready: watch::Sender<bool>,
}

impl SourceSync {
    pub fn new(client: kube::Client, sink: Arc<dyn InventorySink>) -> Self {
        Self {
            client,
            sink,
            ready: watch::Sender::new(false),
        }
    }

    /// True once every source present at start has synced or failed once (see
    /// the [module docs](self)); never false again after that.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Runs until `shutdown` resolves, then stops every task (they end their
    /// watches and log out, or are aborted after a grace period).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut changes = futures::stream::select_all(
            SourceKind::ALL.map(|kind| source_changes(&self.client, kind)),
        );
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel();
        let (secret_watch, mut secret_events) = SecretWatch::new(self.client.clone());
        let mut state = SyncState {
            client: self.client,
            secret_watch,
            sink: self.sink,
            ready: self.ready,
            hasher: RandomState::new(),
            sources: BTreeMap::new(),
            unsupported: HashSet::new(),
            secrets: HashMap::new(),
            source_relist: HashMap::new(),
            secret_relist: HashMap::new(),
            listed: HashSet::new(),
            tasks: JoinSet::new(),
            next_epoch: 0,
            settled_tx,
        };
        let mut retry = tokio::time::interval(SECRET_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                change = changes.next() => match change {
                    Some(change) => state.handle(change).await,
                    // Watchers never end; if they did, nothing would be kept current.
                    None => {
                        tracing::error!("source watches ended");
                        break;
                    }
                },
                Some(secret) = secret_events.recv() => state.secret_event(secret).await,
                Some(settled) = settled_rx.recv() => state.settled(settled),
                Some(joined) = state.tasks.join_next(), if !state.tasks.is_empty() => {
                    if let Err(e) = joined && e.is_panic() {
                        tracing::error!(error = %e, "a source task panicked");
                    }
                }
                _ = retry.tick() => state.retry_secrets().await,
            }
            state.update_ready();
        }
        state.shutdown().await;
    }
}

/// A source object, reduced to what the sync needs.
#[derive(Clone, Debug)]
struct WatchedSource {
    id: SourceId,
    generation: Option<i64>,
    spec: SourceSpec,
}

impl WatchedSource {
    fn secret_key(&self) -> SecretKey {
        // Always the source's own namespace (tenancy): never from the spec.
        (
            self.id.namespace.clone(),
            self.spec.connection.credentials.name.clone(),
        )
    }
}

/// `(namespace, name)` of a Secret.
type SecretKey = (String, String);

/// What the source watches report, merged into one stream.
enum Change {
    Source(SourceKind, Event<WatchedSource>),
    WatchFailed {
        what: &'static str,
        error: watcher::Error,
    },
}

/// `source`'s kind, namespace and name, for logs.
fn label(id: &SourceId) -> String {
    format!("{:?} {}/{}", id.kind, id.namespace, id.name)
}

/// A watch event about a `K`, as one about what `f` makes of it.
pub(crate) fn map_event<K, T>(event: Event<K>, mut f: impl FnMut(K) -> T) -> Event<T> {
    match event {
        Event::Apply(k) => Event::Apply(f(k)),
        Event::Delete(k) => Event::Delete(f(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(f(k)),
        Event::InitDone => Event::InitDone,
    }
}

fn source_changes(client: &kube::Client, kind: SourceKind) -> BoxStream<'static, Change> {
    let api = Api::<AnySource>::all_with(client.clone(), &kind.api_resource());
    watch_objects(api, watcher::Config::default())
        .default_backoff()
        .map(move |result| match result {
            Ok(event) => Change::Source(
                kind,
                map_event(event, |object: AnySource| WatchedSource {
                    id: SourceId {
                        namespace: object.namespace().unwrap_or_default(),
                        kind,
                        name: object.name_any(),
                    },
                    generation: object.meta().generation,
                    spec: object.spec,
                }),
            ),
            Err(error) => Change::WatchFailed {
                what: kind.plural(),
                error,
            },
        })
        .boxed()
}

/// A keyed hash of a Secret's data: equal data, equal hash, within one process.
fn hash_data(hasher: &RandomState, data: Option<&BTreeMap<String, ByteString>>) -> u64 {
    let mut h = hasher.build_hasher();
    for (key, ByteString(value)) in data.into_iter().flatten() {
        key.hash(&mut h);
        value.hash(&mut h);
    }
    h.finish()
}

/// A task reports that it synced or failed once: see [`SourceSync::ready`].
struct Settled {
    id: SourceId,
    epoch: u64,
}

enum SecretState {
    /// Not read yet, or the last read failed: read again soon.
    Unread,
    Absent,
    Present {
        resource_version: Option<String>,
        hash: u64,
        data: Arc<BTreeMap<String, ByteString>>,
    },
}

struct Running {
    fingerprint: Fingerprint,
    /// Dropping it stops the task.
    _control: TaskControl,
    epoch: u64,
    settled: bool,
}

struct Entry {
    object: WatchedSource,
    provider: Arc<dyn Provider>,
    running: Option<Running>,
}

struct SyncState {
    client: kube::Client,
    sink: Arc<dyn InventorySink>,
    ready: watch::Sender<bool>,
    /// Keys the Secret data hash per process, so the hash says nothing about
    /// the data outside it.
    hasher: RandomState,
    /// Sources of the kinds with a provider.
    sources: BTreeMap<SourceId, Entry>,
    /// Sources of kinds without a provider, logged once.
    unsupported: HashSet<SourceId>,
    /// Only the Secrets some source names.
    secrets: HashMap<SecretKey, SecretState>,
    /// Sources seen during a relist of their kind.
    source_relist: HashMap<SourceKind, HashSet<SourceId>>,
    /// The metadata watches of Secrets, one per namespace with a source.
    secret_watch: SecretWatch,
    /// Named Secrets seen during a relist of a namespace's Secrets.
    secret_relist: HashMap<String, HashSet<SecretKey>>,
    /// The kinds whose first full list has been read.
    listed: HashSet<SourceKind>,
    tasks: JoinSet<()>,
    next_epoch: u64,
    settled_tx: mpsc::UnboundedSender<Settled>,
}

impl SyncState {
    async fn handle(&mut self, change: Change) {
        match change {
            Change::Source(kind, event) => self.source_event(kind, event).await,
            Change::WatchFailed { what, error } => {
                tracing::warn!(resource = what, error = %error, "watch failed; retrying");
            }
        }
    }

    async fn source_event(&mut self, kind: SourceKind, event: Event<WatchedSource>) {
        match event {
            Event::Init => {
                self.source_relist.insert(kind, HashSet::new());
            }
            Event::InitApply(object) => {
                if let Some(seen) = self.source_relist.get_mut(&kind) {
                    seen.insert(object.id.clone());
                }
                self.source_applied(object).await;
            }
            Event::Apply(object) => self.source_applied(object).await,
            Event::Delete(object) => {
                self.source_deleted(&object.id);
                self.follow_secrets();
            }
            Event::InitDone => {
                let seen = self.source_relist.remove(&kind).unwrap_or_default();
                let gone: Vec<SourceId> = self
                    .sources
                    .keys()
                    .chain(self.unsupported.iter())
                    .filter(|id| id.kind == kind && !seen.contains(id))
                    .cloned()
                    .collect();
                for id in gone {
                    self.source_deleted(&id);
                }
                self.follow_secrets();
                self.listed.insert(kind);
            }
        }
    }

    async fn source_applied(&mut self, object: WatchedSource) {
        let id = object.id.clone();
        let Some(provider) = vmm_providers::provider(id.kind) else {
            if self.unsupported.insert(id.clone()) {
                tracing::info!(
                    source = label(&id),
                    "no inventory provider for this kind of source yet; skipping it"
                );
            }
            return;
        };
        let key = object.secret_key();
        let old_key = match self.sources.get_mut(&id) {
            Some(entry) => Some(std::mem::replace(&mut entry.object, object).secret_key()),
            None => {
                self.sources.insert(
                    id.clone(),
                    Entry {
                        object,
                        provider,
                        running: None,
                    },
                );
                if !self.secret_watch.follows(&id.namespace) {
                    self.follow_secrets();
                }
                None
            }
        };
        if !self.secrets.contains_key(&key) {
            self.secrets.insert(key.clone(), SecretState::Unread);
            self.read_secret(&key).await;
        }
        self.reconcile(&id);
        if let Some(old_key) = old_key
            && old_key != key
        {
            self.untrack_unused_secret(&old_key);
        }
    }

    fn source_deleted(&mut self, id: &SourceId) {
        if self.unsupported.remove(id) {
            return;
        }
        let Some(entry) = self.sources.remove(id) else {
            return;
        };
        if let Some(running) = entry.running {
            drop(running);
            self.sink.forget(id);
        }
        tracing::info!(source = label(id), "source deleted; inventory dropped");
        self.untrack_unused_secret(&entry.object.secret_key());
    }

    /// Watches the Secrets of exactly the namespaces that hold a source.
    fn follow_secrets(&mut self) {
        let namespaces: HashSet<String> =
            self.sources.keys().map(|id| id.namespace.clone()).collect();
        self.secret_relist.retain(|n, _| namespaces.contains(n));
        self.secret_watch.follow(namespaces);
    }

    fn untrack_unused_secret(&mut self, key: &SecretKey) {
        if !self.sources.values().any(|e| &e.object.secret_key() == key) {
            self.secrets.remove(key);
        }
    }

    async fn secret_event(&mut self, secret: SecretEvent) {
        let namespace = secret.namespace;
        let mut version = None;
        let event = map_event(secret.event, |meta: PartialObjectMeta<Secret>| {
            version = meta.resource_version();
            (namespace.clone(), meta.name_any())
        });
        match event {
            Event::Init => {
                self.secret_relist.insert(namespace, HashSet::new());
            }
            Event::InitApply(key) | Event::Apply(key) => {
                if let Some(seen) = self.secret_relist.get_mut(&namespace) {
                    seen.insert(key.clone());
                }
                let stale = match self.secrets.get(&key) {
                    None => false,
                    Some(SecretState::Present {
                        resource_version, ..
                    }) => version.is_none() || *resource_version != version,
                    Some(SecretState::Absent | SecretState::Unread) => true,
                };
                if stale {
                    self.read_secret(&key).await;
                }
            }
            Event::Delete(key) => {
                if let Some(state) = self.secrets.get_mut(&key) {
                    *state = SecretState::Absent;
                    self.secret_changed(&key);
                }
            }
            Event::InitDone => {
                // A Secret deleted while the watch was down: read what we hold
                // in that namespace and did not see again.
                let seen = self.secret_relist.remove(&namespace).unwrap_or_default();
                let missing: Vec<SecretKey> = self
                    .secrets
                    .keys()
                    .filter(|k| k.0 == namespace && !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in missing {
                    self.read_secret(&key).await;
                }
            }
        }
    }

    async fn retry_secrets(&mut self) {
        let unread: Vec<SecretKey> = self
            .secrets
            .iter()
            .filter(|(_, s)| matches!(s, SecretState::Unread))
            .map(|(k, _)| k.clone())
            .collect();
        for key in unread {
            self.read_secret(&key).await;
        }
    }

    /// Reads a named Secret, in the namespace of the sources that name it.
    async fn read_secret(&mut self, key: &SecretKey) {
        let (namespace, name) = key;
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let state = match api.get_opt(name).await {
            Ok(Some(secret)) => SecretState::Present {
                resource_version: secret.resource_version(),
                hash: hash_data(&self.hasher, secret.data.as_ref()),
                data: Arc::new(secret.data.unwrap_or_default()),
            },
            Ok(None) => SecretState::Absent,
            Err(error) => {
                tracing::warn!(namespace, secret = name, error = %error, "cannot read the Secret of a source; retrying");
                SecretState::Unread
            }
        };
        if let SecretState::Absent = state {
            for entry in self.sources.values() {
                if &entry.object.secret_key() == key {
                    tracing::warn!(
                        source = label(&entry.object.id),
                        secret = name,
                        "the source's credentials Secret does not exist in its namespace: create it there (keys username, password)"
                    );
                }
            }
        }
        match self.secrets.get_mut(key) {
            // No source names it any more.
            None => return,
            Some(slot) => *slot = state,
        }
        self.secret_changed(key);
    }

    fn secret_changed(&mut self, key: &SecretKey) {
        let ids: Vec<SourceId> = self
            .sources
            .values()
            .filter(|e| &e.object.secret_key() == key)
            .map(|e| e.object.id.clone())
            .collect();
        for id in ids {
            self.reconcile(&id);
        }
    }

    /// Brings the task of `id` in line with its source and Secret.
    fn reconcile(&mut self, id: &SourceId) {
        let Some(entry) = self.sources.get(id) else {
            return;
        };
        let key = entry.object.secret_key();
        let secret = match self.secrets.get(&key) {
            Some(SecretState::Present { hash, data, .. }) => Some((*hash, data.clone())),
            Some(SecretState::Absent) => None,
            // Keep whatever runs until the Secret can be read.
            Some(SecretState::Unread) | None => return,
        };
        let desired = secret.as_ref().map(|(hash, _)| Fingerprint {
            generation: entry.object.generation,
            secret_hash: *hash,
        });
        let running = entry.running.as_ref().map(|r| &r.fingerprint);
        let decision = plan(running, desired.as_ref());
        let source = label(id);
        match decision {
            Plan::Idle | Plan::Keep => {}
            Plan::StopAndForget => {
                if let Some(entry) = self.sources.get_mut(id) {
                    entry.running = None;
                }
                self.sink.forget(id);
                tracing::info!(
                    source,
                    "the source's Secret is gone; inventory dropped until it exists again"
                );
            }
            Plan::Start | Plan::Restart => {
                if let Some(entry) = self.sources.get_mut(id) {
                    // Stops the old task, fenced off the sink from here on.
                    entry.running = None;
                }
                if decision == Plan::Restart {
                    tracing::info!(source, "source spec or credentials changed; reconnecting");
                }
                let (Some(fingerprint), Some((_, data))) = (desired, secret) else {
                    return;
                };
                let running = self.spawn(id, data, fingerprint);
                if let Some(entry) = self.sources.get_mut(id) {
                    entry.running = Some(running);
                }
            }
        }
    }

    fn spawn(
        &mut self,
        id: &SourceId,
        secret_data: Arc<BTreeMap<String, ByteString>>,
        fingerprint: Fingerprint,
    ) -> Running {
        let entry = &self.sources[id];
        let config = TaskConfig {
            id: id.clone(),
            provider: entry.provider.clone(),
            spec: entry.object.spec.clone(),
            secret_data,
        };
        let (control, handle) = task::control();
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.tasks.spawn(task::run(
            config,
            self.sink.clone(),
            handle,
            self.settled_tx.clone(),
            epoch,
        ));
        Running {
            fingerprint,
            _control: control,
            epoch,
            settled: false,
        }
    }

    fn settled(&mut self, settled: Settled) {
        if let Some(Entry {
            running: Some(running),
            ..
        }) = self.sources.get_mut(&settled.id)
            && running.epoch == settled.epoch
        {
            running.settled = true;
        }
    }

    fn update_ready(&self) {
        let all_listed = SourceKind::ALL
            .into_iter()
            .filter(|kind| vmm_providers::provider(*kind).is_some())
            .all(|kind| self.listed.contains(&kind));
        if *self.ready.borrow() || !all_listed {
            return;
        }
        let all_settled = self.sources.values().all(|entry| {
            match self.secrets.get(&entry.object.secret_key()) {
                // Cannot start: done trying until the Secret appears.
                Some(SecretState::Absent) => true,
                Some(SecretState::Present { .. }) => {
                    entry.running.as_ref().is_some_and(|r| r.settled)
                }
                Some(SecretState::Unread) | None => false,
            }
        });
        if all_settled {
            tracing::info!(
                sources = self.sources.len(),
                "every source synced or tried once"
            );
            self.ready.send_replace(true);
        }
    }

    async fn shutdown(mut self) {
        for entry in self.sources.values_mut() {
            entry.running = None;
        }
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("source tasks did not end in time; aborting them");
        }
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn secret_hash_follows_the_data() {
        let h = RandomState::new();
        let a = hash_data(&h, Some(&data(&[("password", b"one"), ("username", b"u")])));
        let same = hash_data(&h, Some(&data(&[("username", b"u"), ("password", b"one")])));
        let rotated = hash_data(&h, Some(&data(&[("password", b"two"), ("username", b"u")])));
        // Key and value boundaries count: ("ab", "c") is not ("a", "bc").
        let shifted = hash_data(&h, Some(&data(&[("passwordo", b"ne"), ("username", b"u")])));
        assert_eq!(a, same);
        assert_ne!(a, rotated);
        assert_ne!(a, shifted);
        assert_eq!(hash_data(&h, None), hash_data(&h, Some(&BTreeMap::new())));
    }

    #[test]
    fn the_secret_is_always_read_from_the_source_namespace() {
        let object = WatchedSource {
            id: SourceId {
                namespace: "team-b".into(),
                kind: SourceKind::Vsphere,
                name: "vc".into(),
            },
            generation: Some(1),
            // A namespace smuggled into the reference is not even parsed.
            spec: serde_json::from_value(serde_json::json!({
                "endpoint": "https://vc/sdk",
                "credentials": {"name": "creds", "namespace": "team-a"},
            }))
            .unwrap(),
        };
        assert_eq!(object.secret_key(), ("team-b".into(), "creds".into()));
    }
}
