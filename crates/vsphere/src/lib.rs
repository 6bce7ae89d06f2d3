//! A vSphere client for the vSphere provider (`crates/providers/src/vsphere.rs`):
//! VMs and networks of a vCenter (or ESXi), read over the SOAP API with
//! `vim_rs`, their power, and their export. Only the provider and this
//! crate's own tests use it.
//!
//! - [`VsphereClient::connect`] logs in over TLS that trusts exactly the CA
//!   given (`vmm_core::tls`) and reads `about`.
//! - [`VsphereClient::inventory`] reads every VM and network in one paged
//!   PropertyCollector retrieve over a ContainerView.
//! - [`VsphereClient::watch`] streams [`InventoryEvent`]s: the full set, then
//!   [`InventoryEvent::Synced`], then only changes (WaitForUpdatesEx on a
//!   PropertyCollector of its own; never a rescan).
//! - For imports: [`VsphereClient::find_vms`] and guest shutdown (`vm`),
//!   [`VsphereClient::export`] and its [`ExportLease`] guard (`export`,
//!   `lease`), and disk reads with the session's TLS trust and cookie,
//!   [`VsphereClient::open_disk`] (`download`).
//!
//! Templates are skipped: they are not VMs to import (a VM turned into a
//! template is reported as removed).

#![forbid(unsafe_code)]
// The methods the provider awaits return boxed futures on purpose: the
// futures of vim_rs are types so deep that every crate holding one spent
// minutes proving it `Send` and collecting its drop and poll code; boxed,
// that work stays in this crate (docs/decisions.md §27).

mod convert;
mod disks;
mod download;
mod error;
mod export;
mod lease;
mod lease_session;
mod model;
mod vm;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use vim_rs::core::client::{Client, ClientBuilder, TransportMode, VimClient};
use vim_rs::mo::{ContainerView, PropertyCollector, ViewManager};
use vim_rs::types::enums::ObjectUpdateKindEnum;
use vim_rs::types::structs::{
    ManagedObjectReference, ObjectContent, ObjectSpec, PropertyFilterSpec, PropertySpec,
    RetrieveOptions, SelectionSpec, TraversalSpec, UpdateSet, WaitOptions,
};

pub use disks::{DiskBacking, DiskDetails};
pub use download::DiskDownload;
pub use error::VsphereError;
use error::classify;
pub use export::{Attached, DEFAULT_READY_TIMEOUT, ExportDisk, ExportLease};
pub use lease::LeaseState;
pub use lease_session::LeaseSession;
use model::{Dirty, ObjKind, ObjectCache};
pub use vm::VmDetails;
use vmm_core::{Credentials, InventoryEvent, InventorySnapshot};

/// How long one WaitForUpdatesEx may wait on the server; the HTTP timeout is
/// above it, so a vCenter that stops answering ends the watch with an error.
const WAIT_SECONDS: i32 = 30;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(WAIT_SECONDS as u64 + 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Objects per RetrievePropertiesEx page.
const PAGE_SIZE: i32 = 100;
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint says it is (`ServiceContent.about`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct About {
    /// e.g. `VMware vCenter Server`.
    pub name: String,
    /// e.g. `VMware vCenter Server 8.0.3 build-24022515`.
    pub full_name: String,
    /// e.g. `8.0.3`.
    pub version: String,
    pub build: String,
    /// `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    pub api_version: String,
    pub instance_uuid: Option<String>,
}

impl About {
    /// Product and version, for a source's `status.endpointVersion`:
    /// `VMware vCenter Server 8.0.3 (build 24022515)`.
    pub fn endpoint_version(&self) -> String {
        if self.build.is_empty() {
            format!("{} {}", self.name, self.version)
        } else {
            format!("{} {} (build {})", self.name, self.version, self.build)
        }
    }
}

/// A logged-in session with a vCenter. Cheap to clone (one session shared).
#[derive(Clone)]
pub struct VsphereClient {
    client: Arc<Client>,
    url: String,
    about: About,
    /// Disk downloads: same TLS and cookies, no overall request timeout.
    transfer: reqwest::Client,
    /// The session's cookies (`vmware_soap_session`), shared by both clients.
    cookies: Arc<reqwest::cookie::Jar>,
    /// What this session logged in with: an export logs in a session of its
    /// own with it (see `session`).
    login: Arc<Login>,
}

/// The arguments of [`VsphereClient::connect`].
struct Login {
    endpoint: String,
    credentials: Credentials,
    ca_pem: Option<String>,
    insecure: bool,
}

impl std::fmt::Debug for VsphereClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsphereClient")
            .field("url", &self.url)
            .field("about", &self.about)
            .finish_non_exhaustive()
    }
}

impl VsphereClient {
    /// Logs in to `endpoint_url` (`https://HOST[:PORT]/sdk`; `/sdk` and the
    /// scheme may be left out). `ca_pem` is the only trust anchor when given;
    /// without it the platform's trust store is used. `insecure` accepts any
    /// certificate (tests and labs only).
    pub fn connect<'a>(
        endpoint_url: &'a str,
        credentials: &'a Credentials,
        ca_pem: Option<&'a str>,
        insecure: bool,
    ) -> BoxFuture<'a, Result<Self, VsphereError>> {
        Box::pin(async move {
            let (username, password) = match credentials {
                Credentials::UsernamePassword {
                    username, password, ..
                } => (username.as_str(), password.expose()),
                Credentials::ApplicationCredential { .. } => {
                    return Err(VsphereError::UnsupportedCredentials {
                        given: "an OpenStack application credential",
                    });
                }
                Credentials::Kubeconfig(_) => {
                    return Err(VsphereError::UnsupportedCredentials {
                        given: "a kubeconfig",
                    });
                }
                Credentials::Token(_) => {
                    return Err(VsphereError::UnsupportedCredentials { given: "a token" });
                }
            };
            let (url, server) = vmm_wire::vsphere::parse_endpoint(endpoint_url).map_err(|e| {
                VsphereError::InvalidEndpoint {
                    url: endpoint_url.to_owned(),
                    detail: e.to_string(),
                }
            })?;
            let tls = vmm_core::tls::client_config(ca_pem, insecure).map_err(|e| {
                VsphereError::InvalidCaBundle {
                    url: url.clone(),
                    detail: e.0,
                }
            })?;
            let cookies = Arc::new(reqwest::cookie::Jar::default());
            let transfer =
                download::transfer_client(&url, tls.clone(), cookies.clone(), CONNECT_TIMEOUT)?;
            let http = reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .cookie_provider(cookies.clone())
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .tcp_keepalive(Duration::from_secs(30))
                .build()
                .map_err(|e| VsphereError::Fault {
                    url: url.clone(),
                    call: "build HTTP client",
                    detail: e.to_string(),
                })?;
            let client = ClientBuilder::new(&server, http)
                .basic_authn(username, password)
                .app_details(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                .transport(TransportMode::Soap)
                .build()
                .await
                .map_err(|e| {
                    if is_fault(&e, "InvalidLogin") {
                        VsphereError::AuthenticationFailed {
                            url: url.clone(),
                            username: username.to_owned(),
                        }
                    } else {
                        classify(&url, "Login", &e, Some(password))
                    }
                })?;
            let a = &client.service_content().about;
            let about = About {
                name: a.name.clone(),
                full_name: a.full_name.clone(),
                version: a.version.clone(),
                build: a.build.clone(),
                api_type: a.api_type.clone(),
                api_version: a.api_version.clone(),
                instance_uuid: a.instance_uuid.clone(),
            };
            tracing::debug!(url, version = %about.endpoint_version(), "logged in to vSphere");
            let login = Arc::new(Login {
                endpoint: endpoint_url.to_owned(),
                credentials: credentials.clone(),
                ca_pem: ca_pem.map(str::to_owned),
                insecure,
            });
            Ok(Self {
                client,
                url,
                about,
                transfer,
                cookies,
                login,
            })
        })
    }

    /// A new session with the same endpoint and credentials.
    pub fn new_session<'a>(&'a self) -> BoxFuture<'a, Result<Self, VsphereError>> {
        Box::pin(async move {
            let login = &self.login;
            Self::connect(
                &login.endpoint,
                &login.credentials,
                login.ca_pem.as_deref(),
                login.insecure,
            )
            .await
        })
    }

    pub fn about(&self) -> &About {
        &self.about
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Ends the session (idempotent). Stop watches first.
    pub fn logout(&self) -> BoxFuture<'_, Result<(), VsphereError>> {
        Box::pin(async move {
            self.client
                .close()
                .await
                .map_err(|e| classify(&self.url, "Logout", &e, None))
        })
    }

    fn handle(&self) -> Arc<dyn VimClient> {
        self.client.clone()
    }

    /// Every VM (templates skipped) and network, in one paged retrieve.
    pub async fn inventory(&self) -> Result<InventorySnapshot, VsphereError> {
        let view = self.create_view().await?;
        let result = self.retrieve_all(&view).await;
        self.destroy_view(&view).await;
        let store = result?;
        Ok(InventorySnapshot {
            vms: store.vms(),
            networks: store.networks(),
        })
    }

    async fn retrieve_all(
        &self,
        view: &ManagedObjectReference,
    ) -> Result<ObjectCache, VsphereError> {
        let pc = PropertyCollector::new(
            self.handle(),
            &self.client.service_content().property_collector.value,
        );
        let options = RetrieveOptions {
            max_objects: Some(PAGE_SIZE),
        };
        let mut store = ObjectCache::default();
        let mut dirty = Dirty::default();
        let page = pc
            .retrieve_properties_ex(&[filter_spec(view)], &options)
            .await
            .map_err(|e| classify(&self.url, "RetrievePropertiesEx", &e, None))?;
        let Some(mut page) = page else {
            return Ok(store);
        };
        loop {
            for content in page.objects {
                apply_content(&mut store, content, &mut dirty);
            }
            let Some(token) = page.token else { break };
            page = pc
                .continue_retrieve_properties_ex(&token)
                .await
                .map_err(|e| classify(&self.url, "ContinueRetrievePropertiesEx", &e, None))?;
        }
        tracing::debug!(objects = store.len(), "vSphere inventory retrieved");
        Ok(store)
    }

    /// Streams the inventory into `events`: every network and VM, then
    /// [`InventoryEvent::Synced`], then changes as vSphere reports them.
    /// Returns `Ok` when the receiver is dropped, and an error when the
    /// connection or session fails (the caller reconnects, with backoff: the
    /// apiserver's `sources::task`). Never panics, never waits past the HTTP
    /// timeout.
    pub fn watch<'a>(
        &'a self,
        events: mpsc::Sender<InventoryEvent>,
    ) -> BoxFuture<'a, Result<(), VsphereError>> {
        Box::pin(async move {
            // vcsim delivers updates only to the last session waiting on the
            // default collector, so each watch creates its own.
            let default_pc = PropertyCollector::new(
                self.handle(),
                &self.client.service_content().property_collector.value,
            );
            let pc_ref = default_pc
                .create_property_collector()
                .await
                .map_err(|e| classify(&self.url, "CreatePropertyCollector", &e, None))?;
            let pc = PropertyCollector::new(self.handle(), &pc_ref.value);
            let view = match self.create_view().await {
                Ok(view) => view,
                Err(e) => {
                    self.destroy_collector(&pc).await;
                    return Err(e);
                }
            };
            let result = self.watch_loop(&pc, &view, &events).await;
            if result.is_ok() {
                // The receiver is gone: a wait may still be in flight on the server.
                let _ = tokio::time::timeout(CLEANUP_TIMEOUT, pc.cancel_wait_for_updates()).await;
            }
            self.destroy_collector(&pc).await;
            self.destroy_view(&view).await;
            result
        })
    }

    async fn watch_loop(
        &self,
        pc: &PropertyCollector,
        view: &ManagedObjectReference,
        events: &mpsc::Sender<InventoryEvent>,
    ) -> Result<(), VsphereError> {
        pc.create_filter(&filter_spec(view), false)
            .await
            .map_err(|e| classify(&self.url, "CreateFilter", &e, None))?;
        let options = WaitOptions {
            max_wait_seconds: Some(WAIT_SECONDS),
            max_object_updates: None,
        };
        let mut store = ObjectCache::default();
        let mut emitter = Emitter::default();
        let mut version: Option<String> = None;
        let mut synced = false;
        let mut dirty = Dirty::default();
        loop {
            let wait = pc.wait_for_updates_ex(version.as_deref(), Some(&options));
            let update = tokio::select! {
                _ = events.closed() => return Ok(()),
                update = wait => update,
            };
            let update = match update {
                Ok(update) => update,
                Err(e) => return Err(classify(&self.url, "WaitForUpdatesEx", &e, None)),
            };
            let Some(set) = update else {
                // Nothing changed within WAIT_SECONDS; this also keeps the
                // session alive.
                if synced {
                    if events.send(InventoryEvent::Current).await.is_err() {
                        return Ok(());
                    }
                } else {
                    // An empty inventory still syncs.
                    synced = true;
                    if !emitter.flush(&store, &mut dirty, true, events).await {
                        return Ok(());
                    }
                    if events.send(InventoryEvent::Synced).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            };
            let truncated = set.truncated == Some(true);
            version = Some(set.version.clone());
            apply_update_set(&mut store, set, &mut dirty);
            if truncated {
                // More of this batch to come (vcsim pages at 100 objects).
                continue;
            }
            if !emitter.flush(&store, &mut dirty, !synced, events).await {
                return Ok(());
            }
            let confirmation = if synced {
                InventoryEvent::Current
            } else {
                synced = true;
                tracing::debug!(objects = store.len(), "vSphere watch synced");
                InventoryEvent::Synced
            };
            if events.send(confirmation).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Powers the VM (managed object id, e.g. `vm-42`) on or off (hard, like
    /// pulling the plug) and waits for vSphere's task to finish.
    pub fn set_power<'a>(
        &'a self,
        vm_id: &'a str,
        on: bool,
    ) -> BoxFuture<'a, Result<(), VsphereError>> {
        Box::pin(async move {
            let call = if on {
                "PowerOnVM_Task"
            } else {
                "PowerOffVM_Task"
            };
            let vm = vim_rs::mo::VirtualMachine::new(self.handle(), vm_id);
            let task = if on {
                vm.power_on_vm_task(None).await
            } else {
                vm.power_off_vm_task().await
            }
            .map_err(|e| classify(&self.url, call, &e, None))?;
            let tracker = vim_rs::core::tasks::TaskTracker::new(self.handle());
            let outcome = tracker.wait::<()>(task).await;
            tracker.shutdown().await;
            outcome.map_err(|e| VsphereError::Fault {
                url: self.url.clone(),
                call,
                detail: e.to_string(),
            })
        })
    }

    async fn create_view(&self) -> Result<ManagedObjectReference, VsphereError> {
        let content = self.client.service_content();
        let Some(vm_ref) = &content.view_manager else {
            return Err(VsphereError::Fault {
                url: self.url.clone(),
                call: "CreateContainerView",
                detail: "the endpoint has no ViewManager".into(),
            });
        };
        let types: Vec<String> = model::PROPERTY_PATHS
            .iter()
            .map(|(t, _)| (*t).to_owned())
            .collect();
        ViewManager::new(self.handle(), &vm_ref.value)
            .create_container_view(&content.root_folder, Some(&types), true)
            .await
            .map_err(|e| classify(&self.url, "CreateContainerView", &e, None))
    }

    async fn destroy_view(&self, view: &ManagedObjectReference) {
        let call = ContainerView::new(self.handle(), &view.value);
        match tokio::time::timeout(CLEANUP_TIMEOUT, call.destroy_view()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "DestroyView failed"),
            Err(_) => tracing::debug!("DestroyView timed out"),
        }
    }

    async fn destroy_collector(&self, pc: &PropertyCollector) {
        match tokio::time::timeout(CLEANUP_TIMEOUT, pc.destroy_property_collector()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "DestroyPropertyCollector failed"),
            Err(_) => tracing::debug!("DestroyPropertyCollector timed out"),
        }
    }
}

/// Remembers which objects were sent, so that one that is gone (or is no
/// longer a VM to import, or a network to map) is reported removed. Their
/// specs are not kept: the receiver compares what it holds with what comes.
#[derive(Default)]
struct Emitter {
    vms: HashSet<String>,
    networks: HashSet<String>,
}

impl Emitter {
    /// Sends the objects `dirty` names (all of them with `everything`) as
    /// they are now; false when the receiver is gone.
    async fn flush(
        &mut self,
        store: &ObjectCache,
        dirty: &mut Dirty,
        everything: bool,
        events: &mpsc::Sender<InventoryEvent>,
    ) -> bool {
        let dirty = std::mem::take(dirty);
        let all = everything || dirty.all;
        let (net_ids, vm_ids): (Vec<String>, Vec<String>) = if all {
            (
                dedup(
                    store
                        .network_ids()
                        .map(str::to_owned)
                        .chain(self.networks.iter().cloned())
                        .collect(),
                ),
                dedup(
                    store
                        .vm_ids()
                        .map(str::to_owned)
                        .chain(self.vms.iter().cloned())
                        .collect(),
                ),
            )
        } else {
            let is_vm = |id: &String| match store.kind(id) {
                Some(kind) => kind == ObjKind::VirtualMachine,
                None => self.vms.contains(id),
            };
            dirty.ids.into_iter().partition(|id| !is_vm(id))
        };
        // Networks first, so a consumer knows them before the VMs naming them.
        for id in net_ids {
            let event = match store.network_spec(&id) {
                Some(spec) => {
                    self.networks.insert(id);
                    InventoryEvent::Network(spec)
                }
                None if self.networks.remove(&id) => InventoryEvent::NetworkRemoved { id },
                None => continue,
            };
            if events.send(event).await.is_err() {
                return false;
            }
        }
        for id in vm_ids {
            let event = match store.vm_spec(&id) {
                Some(spec) => {
                    self.vms.insert(id);
                    InventoryEvent::Vm(spec)
                }
                None if self.vms.remove(&id) => InventoryEvent::VmRemoved { id },
                None => continue,
            };
            if events.send(event).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn dedup(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids.dedup();
    ids
}

fn apply_content(store: &mut ObjectCache, content: ObjectContent, dirty: &mut Dirty) {
    let Some(kind) = ObjKind::from_type_name(content.obj.r#type.as_str()) else {
        return;
    };
    let id = content.obj.value;
    store.enter(&id, kind, dirty);
    for prop in content.prop_set.unwrap_or_default() {
        let value = convert::value(&prop.name, prop.val);
        store.set(&id, kind, &prop.name, Some(value), dirty);
    }
}

fn apply_update_set(store: &mut ObjectCache, set: UpdateSet, dirty: &mut Dirty) {
    for filter in set.filter_set.unwrap_or_default() {
        for update in filter.object_set.unwrap_or_default() {
            let Some(kind) = ObjKind::from_type_name(update.obj.r#type.as_str()) else {
                continue;
            };
            let id = update.obj.value;
            match update.kind {
                ObjectUpdateKindEnum::Leave => store.leave(&id, dirty),
                ObjectUpdateKindEnum::Enter
                | ObjectUpdateKindEnum::Modify
                | ObjectUpdateKindEnum::Other_(_) => {
                    if matches!(update.kind, ObjectUpdateKindEnum::Enter) {
                        store.enter(&id, kind, dirty);
                    }
                    for change in update.change_set.unwrap_or_default() {
                        // partialUpdates=false: only assign and indirectRemove come.
                        let value = change.val.map(|v| convert::value(&change.name, v));
                        store.set(&id, kind, &change.name, value, dirty);
                    }
                }
            }
        }
    }
}

/// Every watched type under the view, with its property paths.
fn filter_spec(view: &ManagedObjectReference) -> PropertyFilterSpec {
    PropertyFilterSpec {
        prop_set: model::PROPERTY_PATHS
            .iter()
            .map(|(t, paths)| PropertySpec {
                r#type: (*t).to_owned(),
                all: Some(false),
                path_set: Some(paths.iter().map(|p| (*p).to_owned()).collect()),
            })
            .collect(),
        object_set: vec![view_object_spec(view)],
        report_missing_objects_in_results: None,
    }
}

/// Every object in a container view (the view itself skipped).
pub(crate) fn view_object_spec(view: &ManagedObjectReference) -> ObjectSpec {
    ObjectSpec {
        obj: view.clone(),
        skip: Some(true),
        select_set: Some(vec![Box::new(TraversalSpec {
            selection_spec_: SelectionSpec {
                name: Some("traverseView".to_owned()),
            },
            r#type: "ContainerView".to_owned(),
            path: "view".to_owned(),
            skip: Some(false),
            select_set: None,
        })]),
    }
}

fn is_fault(err: &vim_rs::core::client::Error, name: &str) -> bool {
    matches!(err, vim_rs::core::client::Error::MethodFault(f)
        if f.type_.is_some_and(|t| t.as_str() == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_version() {
        let about = About {
            name: "VMware vCenter Server".into(),
            full_name: String::new(),
            version: "8.0.3".into(),
            build: "24022515".into(),
            api_type: "VirtualCenter".into(),
            api_version: "8.0.3.0".into(),
            instance_uuid: None,
        };
        assert_eq!(
            about.endpoint_version(),
            "VMware vCenter Server 8.0.3 (build 24022515)"
        );
    }
}
