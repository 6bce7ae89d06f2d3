//! Disk export through an NFC lease (`ExportVm` → `HttpNfcLease`).
//!
//! A lease blocks operations on the VM (power on, migrate, delete) until it
//! ends, and vCenter ends it by itself only when `HttpNfcLeaseProgress` stops
//! for `info.leaseTimeout` (300 s by default). So every lease this module
//! hands out is a guard: [`ExportLease::complete`], [`ExportLease::abort`] or
//! [`ExportLease::detach`] end it explicitly, and dropping it without one of
//! them aborts it in the background (best effort: that needs a Tokio runtime
//! still running; otherwise the lease times out on the server).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use vim_rs::mo::HttpNfcLease;
use vim_rs::types::structs::HttpNfcLeaseInfo;
use vmm_wire::vsphere::{redact_url, replace_star_host};

use super::error::classify;
use super::lease::{
    LeaseState, abort_call, lease_ended, lease_properties, match_device, progress_call,
};
use super::lease_session::LeaseSession;
use super::vm::power_name;
use super::{VsphereClient, VsphereError, is_fault};

/// How long [`VsphereClient::export`] waits for a lease to become ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How often the lease state is read while it initializes.
const READY_POLL: Duration = Duration::from_millis(500);
const ABORT_TIMEOUT: Duration = Duration::from_secs(30);

/// One disk of a ready lease.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportDisk {
    /// Where to GET the disk, a streamOptimized VMDK (`*` hosts already
    /// replaced by the vCenter host). The URL carries the lease's ticket:
    /// keep it out of logs (`Debug` shows it redacted).
    pub url: String,
    /// The lease's device key, e.g. `/vm-42/VirtualLsiLogicController0:0`.
    pub key: String,
    /// The file name the server suggests, e.g. `disk-0.vmdk`.
    pub target_id: Option<String>,
    /// The VMDK's size in bytes when the server says (vCenter may not
    /// before the download; vcsim does).
    pub file_size: Option<u64>,
    /// The key of the VM's virtual disk this URL serves
    /// ([`DiskDetails::key`](super::DiskDetails::key)), matched by controller type, bus and unit;
    /// `None` when the device key could not be matched.
    pub device_key: Option<i32>,
    /// SHA-1 thumbprint of the serving host's certificate, when given.
    pub ssl_thumbprint: Option<String>,
}

impl std::fmt::Debug for ExportDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportDisk")
            .field("url", &redact_url(&self.url))
            .field("key", &self.key)
            .field("target_id", &self.target_id)
            .field("file_size", &self.file_size)
            .field("device_key", &self.device_key)
            .finish_non_exhaustive()
    }
}

/// What [`ExportLease::attach`] found.
#[derive(Debug)]
pub enum Attached {
    /// The lease is (now) ready: use it like a fresh one, or abort it.
    Ready(Box<ExportLease>),
    /// The lease already ended: start a new export.
    Ended(LeaseState),
    /// vCenter does not know the lease (any more): start a new export.
    Gone,
}

/// A ready export lease of one VM. End it with [`complete`](Self::complete)
/// or [`abort`](Self::abort); dropping it aborts it (see the module docs).
pub struct ExportLease {
    session: LeaseSession,
    id: String,
    vm_id: String,
    disks: Vec<ExportDisk>,
    lease_timeout: Duration,
    total_capacity_bytes: u64,
    keep_alive: Option<KeepAlive>,
    /// Not yet ended by us (complete, abort, detach) nor seen ended.
    open: bool,
}

impl std::fmt::Debug for ExportLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportLease")
            .field("id", &self.id)
            .field("vm_id", &self.vm_id)
            .field("disks", &self.disks)
            .field("lease_timeout", &self.lease_timeout)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// The background task of [`ExportLease::keep_alive`]; stopped on drop.
struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VsphereClient {
    /// Starts an export of the (powered-off) VM: its lease, not ready yet
    /// ([`ExportLease::wait_ready`]). Fails with
    /// [`VsphereError::InvalidPowerState`] when the VM is not powered off (no
    /// lease is created then).
    pub fn create_export<'a>(
        &'a self,
        vm_id: &'a str,
    ) -> BoxFuture<'a, Result<ExportLease, VsphereError>> {
        Box::pin(async move {
            const CALL: &str = "ExportVm";
            let vm = vim_rs::mo::VirtualMachine::new(self.handle(), vm_id);
            let lease = match vm.export_vm().await {
                Ok(lease) => lease,
                Err(e) if is_fault(&e, "InvalidPowerState") => {
                    let actual = match self.power_state(vm_id).await {
                        Ok(state) => power_name(state).to_owned(),
                        Err(_) => "not powered off".to_owned(),
                    };
                    return Err(VsphereError::InvalidPowerState {
                        url: self.url.clone(),
                        vm: vm_id.to_owned(),
                        call: CALL,
                        required: "powered off",
                        actual,
                        fix: "shut the guest down (or power the VM off) before exporting",
                    });
                }
                Err(e) if is_fault(&e, "ManagedObjectNotFound") => {
                    return Err(self.vm_not_found(vm_id));
                }
                Err(e) => return Err(classify(&self.url, CALL, &e, None)),
            };
            tracing::debug!(vm = vm_id, lease = %lease.value, "export lease created");
            Ok(ExportLease::opened(
                self.clone(),
                lease.value,
                vm_id.to_owned(),
            ))
        })
    }

    /// [`Self::create_export`], then waits up to [`DEFAULT_READY_TIMEOUT`]
    /// for the lease to be ready.
    pub async fn export(&self, vm_id: &str) -> Result<ExportLease, VsphereError> {
        let mut lease = self.create_export(vm_id).await?;
        lease.wait_ready(DEFAULT_READY_TIMEOUT).await?;
        Ok(lease)
    }
}

impl ExportLease {
    /// Re-opens a lease by id (`HttpNfcLease` managed object, e.g. after a
    /// controller restart), waiting up to `ready_timeout` if it is still
    /// initializing. A ready lease comes back as a fresh one (device URLs
    /// re-read, guard armed): continue with it, or abort it if stale.
    pub fn attach<'a>(
        client: &'a VsphereClient,
        lease_id: &'a str,
        ready_timeout: Duration,
    ) -> BoxFuture<'a, Result<Attached, VsphereError>> {
        Box::pin(async move {
            let Some(props) = lease_properties(client, lease_id).await? else {
                return Ok(Attached::Gone);
            };
            let state = props.state.unwrap_or(LeaseState::Initializing);
            if !state.is_open() {
                return Ok(Attached::Ended(state));
            }
            let vm_id = props
                .info
                .as_ref()
                .map(|i| i.entity.value.clone())
                .unwrap_or_default();
            let mut lease = ExportLease::opened(client.clone(), lease_id.to_owned(), vm_id);
            match lease.wait_ready(ready_timeout).await {
                Ok(()) => Ok(Attached::Ready(Box::new(lease))),
                Err(VsphereError::LeaseFailed { .. }) => {
                    let state = lease.state().await?;
                    Ok(Attached::Ended(state))
                }
                Err(VsphereError::LeaseNotFound { .. }) => Ok(Attached::Gone),
                Err(e) => Err(e),
            }
        })
    }

    fn opened(client: VsphereClient, id: String, vm_id: String) -> Self {
        Self {
            session: LeaseSession::new(client),
            id,
            vm_id,
            disks: Vec::new(),
            lease_timeout: Duration::from_secs(300),
            total_capacity_bytes: 0,
            keep_alive: None,
            open: true,
        }
    }

    /// The session the lease is driven with now: the one it was opened in
    /// until vCenter ended that.
    pub fn client(&self) -> VsphereClient {
        self.session.client()
    }

    /// The lease's session, followed as it is logged in again.
    pub fn session(&self) -> LeaseSession {
        self.session.clone()
    }

    /// The lease's managed object id, to record for [`attach`](Self::attach).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The exported VM.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// The disks to download, in the lease's order.
    pub fn disks(&self) -> &[ExportDisk] {
        &self.disks
    }

    /// Without progress for this long, vSphere ends the lease with `Timedout`.
    pub fn lease_timeout(&self) -> Duration {
        self.lease_timeout
    }

    /// The capacity of all disks (`info.totalDiskCapacityInKB`).
    pub fn total_capacity_bytes(&self) -> u64 {
        self.total_capacity_bytes
    }

    /// The lease's state as of now.
    pub async fn state(&self) -> Result<LeaseState, VsphereError> {
        match lease_properties(&self.client(), &self.id).await? {
            Some(props) => Ok(props.state.unwrap_or(LeaseState::Initializing)),
            None => Err(self.not_found()),
        }
    }

    /// Reports progress (0–100 %) and so keeps the lease alive. Fails with
    /// [`VsphereError::LeaseFailed`] when the lease has ended.
    pub async fn progress(&self, percent: u8) -> Result<(), VsphereError> {
        self.session
            .call(|client| async move { progress_call(&client, &self.id, percent).await })
            .await
            .map_err(|e| self.lease_error(e))
    }

    /// Reports `percent` (0–100) every quarter of the lease timeout (at most
    /// every minute) from a background task, until the lease ends or is
    /// dropped. Replaces an earlier keep-alive. A keep-alive that finds the
    /// lease ended stops and says so in
    /// [`keep_alive_failure`](Self::keep_alive_failure).
    pub fn keep_alive(&mut self, percent: Arc<AtomicU8>) {
        let interval =
            (self.lease_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let failure = Arc::new(Mutex::new(None));
        let session = self.session.clone();
        let id = self.id.clone();
        let failed = failure.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let percent = percent.load(Ordering::Relaxed).min(100);
                let progress = session
                    .call(|client| {
                        let id = &id;
                        async move { progress_call(&client, id, percent).await }
                    })
                    .await;
                match progress {
                    Ok(()) => {}
                    Err(e) if lease_ended(&e) => {
                        let message = classify(session.url(), "HttpNfcLeaseProgress", &e, None);
                        tracing::warn!(lease = %id, error = %message, "export lease ended; keep-alive stops");
                        if let Ok(mut slot) = failed.lock() {
                            *slot = Some(message.to_string());
                        }
                        return;
                    }
                    Err(e) => {
                        let message = classify(session.url(), "HttpNfcLeaseProgress", &e, None);
                        tracing::warn!(lease = %id, error = %message, "export lease progress failed; retrying");
                    }
                }
            }
        });
        self.keep_alive = Some(KeepAlive { task, failure });
    }

    /// Why the keep-alive stopped, if it found the lease ended.
    pub fn keep_alive_failure(&self) -> Option<String> {
        let keep_alive = self.keep_alive.as_ref()?;
        keep_alive.failure.lock().ok()?.clone()
    }

    /// Ends the lease successfully (`HttpNfcLeaseComplete`): call it after
    /// every disk was read. If the call fails for another reason than the
    /// lease having ended, the lease is aborted when dropped.
    pub fn complete(mut self) -> BoxFuture<'static, Result<(), VsphereError>> {
        Box::pin(async move {
            self.keep_alive = None;
            let completed = self
                .session
                .call(|client| {
                    let id = &self.id;
                    async move {
                        HttpNfcLease::new(client.handle(), id)
                            .http_nfc_lease_complete()
                            .await
                    }
                })
                .await;
            match completed {
                Ok(()) => {
                    self.open = false;
                    tracing::debug!(lease = %self.id, vm = %self.vm_id, "export lease completed");
                    Ok(())
                }
                Err(e) => {
                    if lease_ended(&e) {
                        self.open = false;
                    }
                    Err(self.lease_error(e))
                }
            }
        })
    }

    /// Ends the lease unsuccessfully (`HttpNfcLeaseAbort`), releasing the VM.
    /// A lease that already ended is fine. `reason` goes to our log only:
    /// the SOAP `fault` argument is a `LocalizedMethodFault`, which vim_rs
    /// models as a `MethodFault`, so it is not sent (vSphere records
    /// `RequestCanceled`).
    pub fn abort<'a>(mut self, reason: &'a str) -> BoxFuture<'a, Result<(), VsphereError>> {
        Box::pin(async move {
            self.keep_alive = None;
            tracing::info!(lease = %self.id, vm = %self.vm_id, reason, "aborting export lease");
            let aborted = self
                .session
                .call(|client| {
                    let id = &self.id;
                    async move { abort_call(&client, id).await }
                })
                .await;
            match aborted {
                Ok(()) => {}
                Err(e) if lease_ended(&e) => {}
                Err(e) => return Err(classify(self.session.url(), "HttpNfcLeaseAbort", &e, None)),
            }
            // Through a method: the flag is read by `Drop`, which the
            // unused-assignment lint does not see in an async block.
            self.ended();
            Ok(())
        })
    }

    /// Gives up the guard without ending the lease and returns its id: the
    /// caller now owns ending it (e.g. it recorded the id and hands the
    /// transfer to another process that will [`attach`](Self::attach)).
    /// Nobody reports progress any more, so it times out unless someone does.
    pub fn detach(mut self) -> String {
        self.keep_alive = None;
        self.open = false;
        std::mem::take(&mut self.id)
    }

    /// The lease is over: dropping the guard no longer aborts it.
    fn ended(&mut self) {
        self.open = false;
    }

    /// Polls until ready; fills in the device URLs. Fails with
    /// [`VsphereError::LeaseFailed`] when the lease turns to `error`, and
    /// with [`VsphereError::LeaseNotReady`] (after aborting the lease) when
    /// it is not ready in `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), VsphereError> {
        let started = Instant::now();
        loop {
            let props = match lease_properties(&self.client(), &self.id).await? {
                Some(props) => props,
                None => {
                    self.open = false;
                    return Err(self.not_found());
                }
            };
            match props.state {
                Some(LeaseState::Ready) => {
                    if let Some(info) = props.info {
                        return self.take_info(*info).await;
                    }
                }
                Some(state @ (LeaseState::Error { .. } | LeaseState::Done)) => {
                    self.open = false;
                    return Err(self.failed(format!("the lease is {state}")));
                }
                Some(LeaseState::Initializing) | None => {}
            }
            let waited = started.elapsed();
            if waited >= timeout {
                let state = self
                    .state()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| "initializing".into());
                match tokio::time::timeout(ABORT_TIMEOUT, abort_call(&self.client(), &self.id))
                    .await
                {
                    Ok(Ok(())) => self.open = false,
                    Ok(Err(e)) if lease_ended(&e) => self.open = false,
                    // Still open: the guard tries again when dropped.
                    Ok(Err(e)) => {
                        let e = classify(self.session.url(), "HttpNfcLeaseAbort", &e, None);
                        tracing::warn!(lease = %self.id, error = %e, "abort of a lease that was not ready failed");
                    }
                    Err(_) => {
                        tracing::warn!(lease = %self.id, "abort of a lease that was not ready timed out")
                    }
                }
                return Err(VsphereError::LeaseNotReady {
                    url: self.session.url().to_owned(),
                    lease: self.id.clone(),
                    vm: self.vm_id.clone(),
                    state,
                    waited,
                });
            }
            tokio::time::sleep(READY_POLL.min(timeout - waited)).await;
        }
    }

    async fn take_info(&mut self, info: HttpNfcLeaseInfo) -> Result<(), VsphereError> {
        if self.vm_id.is_empty() {
            self.vm_id = info.entity.value.clone();
        }
        if info.lease_timeout > 0 {
            self.lease_timeout = Duration::from_secs(info.lease_timeout as u64);
        }
        self.total_capacity_bytes = u64::try_from(info.total_disk_capacity_in_kb)
            .unwrap_or(0)
            .saturating_mul(1024);
        // The VM cannot change while leased; read its disks to map the URLs.
        let layout = self.client().disk_layout(&self.vm_id).await?;
        self.disks = info
            .device_url
            .unwrap_or_default()
            .into_iter()
            .filter(|d| {
                d.disk
                    .unwrap_or_else(|| d.url.split('?').next().unwrap_or("").ends_with(".vmdk"))
            })
            .map(|d| {
                let device_key = match_device(&d.key, &layout);
                if device_key.is_none() {
                    tracing::warn!(lease = %self.id, key = %d.key, "export device key matches no disk of the VM");
                }
                ExportDisk {
                    url: replace_star_host(&d.url, self.session.url()),
                    device_key,
                    target_id: d.target_id,
                    file_size: d.file_size.and_then(|s| u64::try_from(s).ok()),
                    ssl_thumbprint: Some(d.ssl_thumbprint).filter(|t| !t.is_empty()),
                    key: d.key,
                }
            })
            .collect();
        tracing::debug!(lease = %self.id, vm = %self.vm_id, disks = self.disks.len(), "export lease ready");
        Ok(())
    }

    fn not_found(&self) -> VsphereError {
        VsphereError::LeaseNotFound {
            url: self.session.url().to_owned(),
            lease: self.id.clone(),
        }
    }

    fn failed(&self, detail: String) -> VsphereError {
        VsphereError::LeaseFailed {
            url: self.session.url().to_owned(),
            lease: self.id.clone(),
            vm: self.vm_id.clone(),
            detail,
        }
    }

    /// A failed lease call: faults that mean "the lease ended" become
    /// [`VsphereError::LeaseFailed`] or [`VsphereError::LeaseNotFound`].
    fn lease_error(&self, e: vim_rs::core::client::Error) -> VsphereError {
        if is_fault(&e, "ManagedObjectNotFound") {
            return self.not_found();
        }
        if lease_ended(&e) {
            let detail = match classify(self.session.url(), "HttpNfcLease", &e, None) {
                VsphereError::Fault { detail, .. } => detail,
                other => other.to_string(),
            };
            return self.failed(format!("the lease has ended ({detail})"));
        }
        classify(self.session.url(), "HttpNfcLease", &e, None)
    }
}

impl Drop for ExportLease {
    fn drop(&mut self) {
        self.keep_alive = None;
        if !self.open {
            return;
        }
        self.open = false;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lease = %self.id, vm = %self.vm_id, timeout = ?self.lease_timeout,
                "export lease dropped outside a Tokio runtime: it stays open until it times out");
            return;
        };
        tracing::warn!(lease = %self.id, vm = %self.vm_id,
            "export lease dropped without complete() or abort(): aborting it");
        let client = self.client();
        let id = std::mem::take(&mut self.id);
        runtime.spawn(async move {
            match tokio::time::timeout(ABORT_TIMEOUT, abort_call(&client, &id)).await {
                Ok(Ok(())) => tracing::debug!(lease = %id, "dropped export lease aborted"),
                Ok(Err(e)) if lease_ended(&e) => {}
                Ok(Err(e)) => {
                    let e = classify(&client.url, "HttpNfcLeaseAbort", &e, None);
                    tracing::warn!(lease = %id, error = %e, "abort of a dropped export lease failed");
                }
                Err(_) => tracing::warn!(lease = %id, "abort of a dropped export lease timed out"),
            }
        });
    }
}
