//! `watch=true`: newline-delimited watch events, as client-go and kubectl read
//! them. A watch starts from the current state (ADDED events), from a version
//! (the changes after it, or a 410 ERROR event when the log no longer reaches
//! back), or as a streaming list (`sendInitialEvents=true`: ADDED events, then a
//! BOOKMARK annotated `k8s.io/initial-events-end`). It ends after
//! `timeoutSeconds`, or when the client goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vmm_api::inventory::API_VERSION;

use vmm_query::selector::{FieldSelector, LabelSelector};
use vmm_query::{IncludeObject, ListQuery};

use crate::json;
use crate::list::{self, Format};
use crate::resources::{InventoryResource, selected};
use crate::status::ApiError;
use crate::store::{Change, ChangeType, Store};
use crate::table;

/// A watch that names no timeout ends after this, as kube-apiserver's do
/// (clients reconnect from the last version they saw).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// What a watch needs for its whole life.
struct Watch<T> {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    format: Format,
    include: IncludeObject,
    bookmarks: bool,
    _kind: std::marker::PhantomData<fn() -> T>,
}

pub fn watch<T: InventoryResource>(
    store: Arc<Store>,
    namespace: Option<&str>,
    query: &ListQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = list::selectors::<T>(query)?;
    let timeout = query.timeout()?.unwrap_or(DEFAULT_TIMEOUT);
    let initial_events = query.send_initial_events();
    let from = query.watch_from()?;
    let watch = Watch::<T> {
        namespace: namespace.map(str::to_owned),
        labels,
        fields,
        format: list::negotiate(headers)?,
        include: query.include_object()?,
        bookmarks: query.allow_watch_bookmarks(),
        _kind: std::marker::PhantomData,
    };
    let (lines, receiver) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        // Ends quietly when the client goes away (the channel closes).
        let _ =
            tokio::time::timeout(timeout, watch.run(&store, from, initial_events, &lines)).await;
    });
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|line| (Ok::<_, Infallible>(line), receiver))
    });
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

impl<T: InventoryResource> Watch<T> {
    async fn run(
        &self,
        store: &Store,
        from: Option<u64>,
        initial_events: bool,
        lines: &mpsc::Sender<Bytes>,
    ) {
        // Subscribe before reading, so no change between the two is missed.
        let mut versions = store.subscribe();
        let mut sent = match from {
            Some(version) => version,
            None => {
                let snapshot = T::snapshot(store, self.namespace.as_deref());
                for item in &snapshot.items {
                    if self.selected(item) && !self.send_object(lines, "ADDED", item).await {
                        return;
                    }
                }
                if initial_events
                    && !self
                        .send(lines, "BOOKMARK", &bookmark::<T>(snapshot.version, true))
                        .await
                {
                    return;
                }
                snapshot.version
            }
        };
        loop {
            let changes = match store.changes_since(sent) {
                Ok(changes) => changes,
                Err(_) => {
                    let expired = ApiError::expired(format!(
                        "resourceVersion {sent} is too old to watch from: list again, then watch from the list's version"
                    ));
                    let _ = self.send(lines, "ERROR", &expired.to_status()).await;
                    return;
                }
            };
            for change in changes {
                sent = change.version;
                let Some(item) = T::of(&change.object) else {
                    continue;
                };
                let Some(kind) = self.event_type(&change, item) else {
                    continue;
                };
                if !self.send_object(lines, kind, item).await {
                    return;
                }
            }
            tokio::select! {
                changed = versions.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(BOOKMARK_INTERVAL), if self.bookmarks => {
                    if !self.send(lines, "BOOKMARK", &bookmark::<T>(sent, false)).await {
                        return;
                    }
                }
                () = lines.closed() => return,
            }
        }
    }

    /// The event this watch sends for a change, as kube-apiserver's watch
    /// cache does: an object that starts matching the selectors is ADDED for
    /// this watcher, one that stops matching is DELETED (with its new state).
    fn event_type(&self, change: &Change, item: &T) -> Option<&'static str> {
        let now = self.selected(item);
        let before = match (&change.kind, change.previous.as_ref().and_then(T::of)) {
            (ChangeType::Modified, Some(previous)) => self.selected(previous),
            _ => now,
        };
        match (change.kind, before, now) {
            (_, false, false) => None,
            (ChangeType::Added, _, _) | (ChangeType::Modified, false, true) => Some("ADDED"),
            (ChangeType::Modified, true, true) => Some("MODIFIED"),
            (ChangeType::Deleted, _, _) | (ChangeType::Modified, true, false) => Some("DELETED"),
        }
    }

    fn selected(&self, item: &T) -> bool {
        let namespace = item.metadata().namespace.as_deref();
        self.namespace
            .as_deref()
            .is_none_or(|ns| Some(ns) == namespace)
            && selected(item, &self.labels, &self.fields)
    }

    /// Sends one event about `item`: the object itself, or a one-row Table.
    async fn send_object(&self, lines: &mpsc::Sender<Bytes>, kind: &str, item: &T) -> bool {
        match self.format {
            Format::Json => self.send(lines, kind, item).await,
            Format::Table { version } => {
                let version_of_item = item.metadata().resource_version.clone();
                let mut table = table::table(
                    [item],
                    json!({"resourceVersion": version_of_item}),
                    self.include,
                );
                table["apiVersion"] = json!(version);
                self.send(lines, kind, &table).await
            }
        }
    }

    /// Sends one event; false once the client is gone (or the object does
    /// not serialize, which none of ours fails to).
    async fn send(
        &self,
        lines: &mpsc::Sender<Bytes>,
        kind: &str,
        object: &(impl Serialize + Sync),
    ) -> bool {
        match json::event(kind, object) {
            Ok(line) => lines.send(line).await.is_ok(),
            Err(error) => {
                tracing::error!(%error, "a watch event does not serialize; ending the watch");
                false
            }
        }
    }
}

fn bookmark<T: InventoryResource>(version: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": version.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"apiVersion": API_VERSION, "kind": T::NAMES.kind, "metadata": metadata})
}
