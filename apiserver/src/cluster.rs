//! The cluster facts some concerns need, kept current by two watches:
//! NetworkAttachmentDefinitions (what a source network could map to) and
//! KubeVirt VirtualMachines (the names an import's default target name would
//! clash with, and the MAC addresses an import must not repeat). A cluster without one of these CRDs simply has no such facts:
//! the concerns that need them are not raised.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use vmm_api::external;

use crate::concerns::{ClusterFacts, NadVlans};
use crate::sources::map_event;
use crate::store::{ObjectKey, Store};

/// One watch's view: complete only after its first full list.
struct Known<V> {
    listing: BTreeMap<ObjectKey, V>,
    current: Option<BTreeMap<ObjectKey, V>>,
}

impl<V: Clone + PartialEq> Known<V> {
    fn new() -> Self {
        Self {
            listing: BTreeMap::new(),
            current: None,
        }
    }

    /// Applies one event; true when the view changed.
    fn apply(&mut self, event: Event<(ObjectKey, V)>) -> bool {
        match event {
            Event::Init => {
                self.listing.clear();
                false
            }
            Event::InitApply((key, value)) => {
                self.listing.insert(key, value);
                false
            }
            Event::InitDone => {
                let listed = std::mem::take(&mut self.listing);
                let changed = self.current.as_ref() != Some(&listed);
                self.current = Some(listed);
                changed
            }
            Event::Apply((key, value)) => match &mut self.current {
                Some(current) => current.insert(key, value.clone()).as_ref() != Some(&value),
                None => false,
            },
            Event::Delete((key, _)) => self
                .current
                .as_mut()
                .is_some_and(|current| current.remove(&key).is_some()),
        }
    }
}

fn key(meta: &kube::api::ObjectMeta) -> ObjectKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

enum Update {
    Nad(Event<(ObjectKey, NadVlans)>),
    Vm(Event<(ObjectKey, Vec<String>)>),
}

/// Logs a watch failure once per run of failures, not on every retry.
fn logged<T>(what: &'static str) -> impl FnMut(Result<T, watcher::Error>) -> Option<T> {
    let mut failing = false;
    move |result| match result {
        Ok(value) => {
            failing = false;
            Some(value)
        }
        Err(error) => {
            if !failing {
                tracing::warn!(%error, "watching {what} failed (retrying); concerns that need them are not computed meanwhile");
            }
            failing = true;
            None
        }
    }
}

fn nad_updates(client: Client) -> impl Stream<Item = Update> {
    let api = Api::<DynamicObject>::all_with(client, &external::network_attachment_definition());
    let mut log = logged("NetworkAttachmentDefinitions");
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |result| std::future::ready(log(result)))
        .map(|event| {
            Update::Nad(map_event(event, |nad| {
                let config = nad
                    .data
                    .pointer("/spec/config")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default();
                (key(nad.meta()), NadVlans::from_config(config))
            }))
        })
}

fn vm_updates(client: Client) -> impl Stream<Item = Update> {
    let api = Api::<DynamicObject>::all_with(client, &external::kubevirt_vm());
    let mut log = logged("KubeVirt VirtualMachines");
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |result| std::future::ready(log(result)))
        .map(|event| {
            Update::Vm(map_event(event, |vm| {
                (key(vm.meta()), external::kubevirt_vm_macs(&vm.data))
            }))
        })
}

/// Keeps the store's cluster facts current until the task is dropped.
pub async fn watch(client: Client, store: Arc<Store>) {
    let mut nads = Known::new();
    let mut vms = Known::new();
    let updates = futures::stream::select(nad_updates(client.clone()), vm_updates(client));
    futures::pin_mut!(updates);
    while let Some(update) = updates.next().await {
        let changed = match update {
            Update::Nad(event) => nads.apply(event),
            Update::Vm(event) => vms.apply(event),
        };
        if changed {
            store.set_cluster_facts(ClusterFacts {
                nads: nads
                    .current
                    .as_ref()
                    .map(|current| current.values().cloned().collect()),
                vms: vms
                    .current
                    .as_ref()
                    .map(|current| current.keys().cloned().collect::<BTreeSet<_>>()),
                macs: vms.current.as_ref().map(|current| {
                    current
                        .iter()
                        .flat_map(|(vm, macs)| macs.iter().map(|mac| (mac.clone(), vm.clone())))
                        .collect()
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> ObjectKey {
        ("ns".to_owned(), name.to_owned())
    }

    #[test]
    fn a_view_is_known_only_after_its_first_full_list() {
        let mut view = Known::<i32>::new();
        assert!(
            !view.apply(Event::Apply((k("a"), 1))),
            "unknown until listed"
        );
        assert!(!view.apply(Event::Init));
        assert!(!view.apply(Event::InitApply((k("a"), 1))));
        assert!(view.apply(Event::InitDone));
        assert!(!view.apply(Event::Apply((k("a"), 1))), "same value");
        assert!(view.apply(Event::Apply((k("a"), 2))));
        assert!(view.apply(Event::Delete((k("a"), 2))));
        assert!(!view.apply(Event::Delete((k("a"), 2))));
        // A relist that finds the same set changes nothing.
        view.apply(Event::Init);
        assert!(!view.apply(Event::InitDone));
        assert_eq!(view.current, Some(BTreeMap::new()));
    }
}
