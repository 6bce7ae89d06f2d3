//! The metadata of Secrets, watched in exactly the namespaces that hold a
//! source.
//!
//! Neither binary may read every Secret of the cluster: the chart grants
//! `get`, `list` and `watch` on Secrets only in the namespaces it is told
//! hold sources (or a tenant binds the shipped ClusterRole in their own), so
//! each binary keeps one watch per namespace that holds a source, started
//! with the first source there and stopped with the last. Only metadata
//! crosses the wire (`PartialObjectMetadata`): a change is the cue to `get`
//! the one Secret a source names. Where the grant is missing, the watch is
//! retried with backoff, logged once with the fix, and its events flow as
//! soon as someone binds the role.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the watch of one namespace saw.
#[derive(Debug)]
pub struct SecretEvent {
    pub namespace: String,
    pub event: Event<PartialObjectMeta<Secret>>,
}

/// One metadata watch of Secrets per namespace followed; see the
/// [crate docs](crate). Dropping it stops them all.
pub struct SecretWatch {
    client: kube::Client,
    watching: HashMap<String, Watching>,
    events: mpsc::UnboundedSender<SecretEvent>,
}

/// A namespace's watch task, stopped when dropped.
struct Watching(JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SecretWatch {
    /// A watch of no namespace yet, and where its events arrive.
    pub fn new(client: kube::Client) -> (Self, mpsc::UnboundedReceiver<SecretEvent>) {
        let (events, received) = mpsc::unbounded_channel();
        let watch = Self {
            client,
            watching: HashMap::new(),
            events,
        };
        (watch, received)
    }

    /// Watches exactly `namespaces` from now on: starts the new ones (each
    /// begins with a full list: `Init`, `InitApply`…, `InitDone`) and stops
    /// those no longer named.
    pub fn follow(&mut self, namespaces: impl IntoIterator<Item = String>) {
        let wanted: BTreeSet<String> = namespaces.into_iter().collect();
        self.watching
            .retain(|namespace, _| wanted.contains(namespace));
        for namespace in wanted {
            if self.watching.contains_key(&namespace) {
                continue;
            }
            let task = tokio::spawn(watch_namespace(
                self.client.clone(),
                namespace.clone(),
                self.events.clone(),
            ));
            tracing::debug!(
                namespace,
                "watching the Secrets of a namespace with sources"
            );
            self.watching.insert(namespace, Watching(task));
        }
    }

    /// Whether `namespace` is followed.
    pub fn follows(&self, namespace: &str) -> bool {
        self.watching.contains_key(namespace)
    }
}

async fn watch_namespace(
    client: kube::Client,
    namespace: String,
    events: mpsc::UnboundedSender<SecretEvent>,
) {
    // `PartialObjectMeta` makes kube ask for metadata only.
    let api = Api::<PartialObjectMeta<Secret>>::namespaced(client, &namespace);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(
                        namespace,
                        "the Secrets of the namespace can be watched again"
                    );
                }
                let event = SecretEvent {
                    namespace: namespace.clone(),
                    event,
                };
                if events.send(event).is_err() {
                    return;
                }
            }
            Err(error) if !failing => {
                failing = true;
                if is_forbidden(&error) {
                    tracing::warn!(
                        namespace,
                        %error,
                        "may not watch the Secrets of a namespace that holds sources: bind the chart's credentials ClusterRole there (a RoleBinding, or the value credentials.namespaces; docs/install.md); retrying"
                    );
                } else {
                    tracing::warn!(namespace, %error, "cannot watch the Secrets of a namespace; retrying");
                }
            }
            Err(_) => {}
        }
    }
}

/// Whether the API server refused the watch for want of RBAC.
pub fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}
