//! The inventory kept by watches on the remote cluster (no polling): the
//! VirtualMachines, the PersistentVolumeClaims their disks are on (for
//! sizes and storage classes) and the NetworkAttachmentDefinitions, in
//! every namespace read. Until each watch has listed once nothing is sent;
//! then everything and [`InventoryEvent::Synced`]; then, after each change,
//! what it changed and [`InventoryEvent::Current`]. A watch that fails is
//! listed again by kube's watcher with backoff (a restarted API server is
//! survived that way); credentials refused several times in a row end the
//! watch with an error.

use std::collections::BTreeMap;

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use vmm_api::inventory::{NetworkSpec, VirtualMachineSpec};
use vmm_core::{InventoryEvent, Reported};

use crate::model::{self, Vm};
use crate::{HarvesterClient, HarvesterError};

/// A watched object of any of the three kinds.
enum Object {
    Vm(DynamicObject),
    Claim(Box<PersistentVolumeClaim>),
    Network(DynamicObject),
}

impl Object {
    fn key(&self) -> (String, String) {
        let meta = match self {
            Object::Vm(o) | Object::Network(o) => &o.metadata,
            Object::Claim(o) => &o.metadata,
        };
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// Refusals in a row (401 or 403, each after the watcher's backoff) that
/// end the watch: a restarting API server refuses for a moment while its
/// authorizer loads, so one refusal is not the credentials' fault.
const MAX_REFUSALS: u32 = 4;

/// A watch's events, tagged with the index of its [`Scope`].
type Watch = BoxStream<'static, (usize, Result<Event<Object>, watcher::Error>)>;

/// One watch: a kind in one namespace, or in all.
struct Scope {
    kind: Kind,
    /// `None`: every namespace.
    namespace: Option<String>,
    /// Objects of a list in progress.
    listing: Option<Vec<Object>>,
    listed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vm,
    Claim,
    Network,
}

/// What the watches hold now, read once as each object arrives: VMs and
/// networks by `(namespace, name)`, claims by namespace and name (a VM's
/// disks look theirs up in its namespace).
#[derive(Default)]
struct Held {
    vms: BTreeMap<(String, String), Vm>,
    claims: BTreeMap<String, BTreeMap<String, PersistentVolumeClaim>>,
    networks: BTreeMap<(String, String), NetworkSpec>,
}

impl Held {
    fn insert(&mut self, object: Object) {
        let (namespace, name) = object.key();
        match object {
            // One that cannot be read is left out (logged), as if gone.
            Object::Vm(o) => match Vm::from_dynamic(&o) {
                Some(vm) => self.vms.insert((namespace, name), vm),
                None => self.vms.remove(&(namespace, name)),
            }
            .map(|_| ()),
            Object::Claim(o) => self
                .claims
                .entry(namespace)
                .or_default()
                .insert(name, *o)
                .map(|_| ()),
            Object::Network(o) => self
                .networks
                .insert((namespace, name), model::network(&o))
                .map(|_| ()),
        };
    }

    fn remove(&mut self, object: &Object) {
        let (namespace, name) = object.key();
        match object {
            Object::Vm(_) => self.vms.remove(&(namespace, name)).map(|_| ()),
            Object::Claim(_) => self
                .claims
                .get_mut(&namespace)
                .and_then(|claims| claims.remove(&name))
                .map(|_| ()),
            Object::Network(_) => self.networks.remove(&(namespace, name)).map(|_| ()),
        };
    }

    /// Forgets what `scope` held, before its new list replaces it.
    fn clear(&mut self, scope: &Scope) {
        let keep = |namespace: &String| scope.namespace.as_ref().is_some_and(|ns| ns != namespace);
        match scope.kind {
            Kind::Vm => self.vms.retain(|(ns, _), _| keep(ns)),
            Kind::Claim => self.claims.retain(|ns, _| keep(ns)),
            Kind::Network => self.networks.retain(|(ns, _), _| keep(ns)),
        }
    }

    /// Every VM's spec and every network's, by id.
    fn specs(
        &self,
    ) -> (
        BTreeMap<String, VirtualMachineSpec>,
        BTreeMap<String, NetworkSpec>,
    ) {
        let none = BTreeMap::new();
        let vms = self
            .vms
            .values()
            .map(|vm| {
                let spec = vm.spec(self.claims.get(&vm.namespace).unwrap_or(&none));
                (spec.id.clone(), spec)
            })
            .collect();
        let networks = self
            .networks
            .values()
            .map(|spec| (spec.id.clone(), spec.clone()))
            .collect();
        (vms, networks)
    }
}

impl HarvesterClient {
    /// Sends every VM and network, then [`InventoryEvent::Synced`], then
    /// changes as the watches see them, until `events` is closed (`Ok`) or
    /// the credentials are refused (`Err`).
    pub async fn watch(&self, events: mpsc::Sender<InventoryEvent>) -> Result<(), HarvesterError> {
        let mut scopes = Vec::new();
        let mut streams: Vec<Watch> = Vec::new();
        let namespaces: Vec<Option<String>> = if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        };
        for namespace in namespaces {
            for kind in [Kind::Vm, Kind::Claim, Kind::Network] {
                let index = scopes.len();
                streams.push(self.stream(kind, namespace.as_deref(), index));
                scopes.push(Scope {
                    kind,
                    namespace: namespace.clone(),
                    listing: None,
                    listed: false,
                });
            }
        }
        let mut changes = stream::select_all(streams);
        let mut held = Held::default();
        let mut reported = Reported::default();
        let mut synced = false;
        let mut refusals = 0;
        loop {
            let next = tokio::select! {
                () = events.closed() => return Ok(()),
                next = changes.next() => next,
            };
            let Some((index, event)) = next else {
                return Ok(());
            };
            let scope = &mut scopes[index];
            if event.is_ok() {
                refusals = 0;
            }
            match event {
                Ok(Event::Init) => scope.listing = Some(Vec::new()),
                Ok(Event::InitApply(object)) => scope.listing.get_or_insert_default().push(object),
                Ok(Event::InitDone) => {
                    held.clear(scope);
                    for object in scope.listing.take().unwrap_or_default() {
                        held.insert(object);
                    }
                    scope.listed = true;
                }
                Ok(Event::Apply(object)) => held.insert(object),
                Ok(Event::Delete(object)) => held.remove(&object),
                Err(error) => {
                    if let Some(refused) = refused(&self.url, &error) {
                        refusals += 1;
                        if refusals > MAX_REFUSALS {
                            return Err(refused);
                        }
                    }
                    tracing::warn!(url = %self.url, error = %vmm_core::tls::chain(&error), "a watch on the remote cluster failed: listing again");
                    continue;
                }
            }
            if !scopes.iter().all(|s| s.listed) {
                continue;
            }
            let done = if synced {
                InventoryEvent::Current
            } else {
                synced = true;
                InventoryEvent::Synced
            };
            let (vms, networks) = held.specs();
            if !reported.report(vms, networks, &events, done).await {
                return Ok(());
            }
        }
    }

    /// The watch of `kind` in `namespace` (all when `None`), its events
    /// tagged with `index`.
    fn stream(&self, kind: Kind, namespace: Option<&str>, index: usize) -> Watch {
        let config = watcher::Config::default();
        let client = self.client.clone();
        let dynamic = |resource: kube::core::ApiResource| match namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let tagged = move |event: Result<Event<Object>, watcher::Error>| (index, event);
        match kind {
            Kind::Vm => watcher::watcher(dynamic(model::virtual_machines()), config)
                .default_backoff()
                .map(move |e| tagged(e.map(|e| wrap(e, Object::Vm))))
                .boxed(),
            Kind::Network => {
                watcher::watcher(dynamic(model::network_attachment_definitions()), config)
                    .default_backoff()
                    .map(move |e| tagged(e.map(|e| wrap(e, Object::Network))))
                    .boxed()
            }
            Kind::Claim => {
                let api: Api<PersistentVolumeClaim> = match namespace {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                watcher::watcher(api, config)
                    .default_backoff()
                    .map(move |e| {
                        tagged(e.map(|e| wrap(e, |claim| Object::Claim(Box::new(claim)))))
                    })
                    .boxed()
            }
        }
    }
}

/// A watch event of one kind as one of [`Object`].
fn wrap<K>(event: Event<K>, object: fn(K) -> Object) -> Event<Object> {
    match event {
        Event::Apply(o) => Event::Apply(object(o)),
        Event::Delete(o) => Event::Delete(object(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(object(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// The credentials refused (401) or not allowed to watch (403): retrying
/// cannot help.
fn refused(url: &str, error: &watcher::Error) -> Option<HarvesterError> {
    let (watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e)) = error else {
        return None;
    };
    match e {
        kube::Error::Api(status) if status.code == 401 => Some(HarvesterError::Unauthorized {
            url: url.to_owned(),
        }),
        kube::Error::Api(status) if status.code == 403 => Some(HarvesterError::Forbidden {
            url: url.to_owned(),
            verb: "watch",
            resource: "virtualmachines, persistentvolumeclaims or network-attachment-definitions",
            scope: status.message.clone(),
        }),
        _ => None,
    }
}
