//! The task of one source: log in, watch, forward every event to the sink in
//! order; on failure log, back off and log in again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vmm_api::source::SourceSpec;
use vmm_core::{Credentials, CredentialsError, InventoryEvent, Provider, ProviderError};

use super::plan::Backoff;
use super::{Settled, label};
use crate::sink::{InventorySink, SourceId};

/// Events buffered between the provider and the sink.
const EVENT_BUFFER: usize = 256;
/// How long a stopped task may take to end its watch and log out.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a task needs, copied out of the source and its Secret when it
/// starts: a change of either starts a new task.
pub(super) struct TaskConfig {
    pub id: SourceId,
    pub provider: Arc<dyn Provider>,
    pub spec: SourceSpec,
    /// The Secret's data; read by [`Credentials::from_secret`] at each login.
    pub secret_data: Arc<BTreeMap<String, ByteString>>,
}

/// The controller's end of a task. Stopping (or dropping) it fences the task
/// off the sink at once: once [`stop`](Self::stop) returns, the task delivers
/// nothing more, so the controller may `forget` the source or start its next
/// task right away, while this one ends its watch and logs out on its own.
pub(super) struct TaskControl {
    fence: Arc<Mutex<bool>>,
    stop: watch::Sender<bool>,
}

/// The task's end.
pub(super) struct TaskHandle {
    fence: Arc<Mutex<bool>>,
    stop: watch::Receiver<bool>,
}

pub(super) fn control() -> (TaskControl, TaskHandle) {
    let fence = Arc::new(Mutex::new(true));
    let (tx, rx) = watch::channel(false);
    (
        TaskControl {
            fence: fence.clone(),
            stop: tx,
        },
        TaskHandle { fence, stop: rx },
    )
}

impl TaskControl {
    pub fn stop(&self) {
        // Waits for a delivery in progress; a sink that panicked leaves the
        // lock poisoned, which changes nothing here.
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.stop.send_replace(true);
    }
}

impl Drop for TaskControl {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hands the sink something (an event, a resync) unless the task was
/// stopped; false when stopped.
fn deliver(fence: &Mutex<bool>, hand: impl FnOnce()) -> bool {
    let alive = fence.lock().unwrap_or_else(|p| p.into_inner());
    if *alive {
        hand();
    }
    *alive
}

/// Resolves when the task is told to stop (or its control is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Why an attempt ended.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the inventory watch ended without an error")]
    WatchEnded,
}

impl AttemptError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Credentials(_) => false,
            Self::Provider(e) => e.is_transient(),
            Self::WatchEnded => true,
        }
    }
}

enum Outcome {
    Stopped,
    Failed { error: AttemptError, synced: bool },
}

/// Runs until stopped: never panics on a source's errors and never retries
/// without a wait. Reports to `settled` once, after the first `Synced` or the
/// first failure, whichever comes first.
pub(super) async fn run(
    config: TaskConfig,
    sink: Arc<dyn InventorySink>,
    mut handle: TaskHandle,
    settled: mpsc::UnboundedSender<Settled>,
    epoch: u64,
) {
    let source = label(&config.id);
    let mut reported = false;
    let mut report = || {
        if !reported {
            reported = true;
            let _ = settled.send(Settled {
                id: config.id.clone(),
                epoch,
            });
        }
    };
    let mut backoff = Backoff::new();
    loop {
        let began = Instant::now();
        let (error, synced) = match attempt(&config, &*sink, &mut handle, &mut report).await {
            Outcome::Stopped => return,
            Outcome::Failed { error, synced } => (error, synced),
        };
        report();
        if synced && began.elapsed() >= Backoff::HEALTHY {
            backoff.reset();
        }
        let transient = error.is_transient();
        let delay = backoff.failed(transient);
        if transient {
            tracing::warn!(source, error = %error, retry_in = ?delay, "inventory watch failed; reconnecting");
        } else {
            tracing::error!(
                source,
                error = %error,
                retry_in = ?delay,
                "cannot read the source's inventory until its spec or Secret is fixed"
            );
        }
        tokio::select! {
            _ = stopped(&mut handle.stop) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn attempt(
    config: &TaskConfig,
    sink: &dyn InventorySink,
    handle: &mut TaskHandle,
    on_synced: &mut impl FnMut(),
) -> Outcome {
    let failed = |error: AttemptError, synced| Outcome::Failed { error, synced };
    let secret_name = &config.spec.connection.credentials.name;
    let credentials =
        match Credentials::from_secret(config.id.kind, secret_name, &config.secret_data) {
            Ok(c) => c,
            Err(e) => return failed(e.into(), false),
        };
    let connect = config.provider.connect(&config.spec, &credentials);
    let client = tokio::select! {
        _ = stopped(&mut handle.stop) => return Outcome::Stopped,
        client = connect => match client {
            Ok(client) => client,
            Err(e) => return failed(e.into(), false),
        },
    };
    drop(credentials);
    let source = label(&config.id);
    tracing::info!(source, endpoint = %client.endpoint_version(), "logged in; watching inventory");

    // Logged in: a new watch begins (stopped already, it ends at once and
    // logs out below).
    let began = deliver(&handle.fence, || sink.resync(&config.id));
    let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
    let watch = client.watch(tx);
    tokio::pin!(watch);
    let mut ended: Option<Result<(), ProviderError>> = None;
    let mut synced = false;
    let mut initial = 0usize;
    let stop_requested = !began
        || loop {
            tokio::select! {
                biased;
                _ = stopped(&mut handle.stop) => break true,
                event = rx.recv() => {
                    let Some(event) = event else {
                        // The watch returned and everything it sent was delivered.
                        break false;
                    };
                    let is_synced = event == InventoryEvent::Synced;
                    if !deliver(&handle.fence, || sink.apply(&config.id, event)) {
                        break true;
                    }
                    if synced {
                        continue;
                    }
                    if is_synced {
                        synced = true;
                        tracing::info!(source, objects = initial, "inventory synced");
                        on_synced();
                    } else {
                        initial += 1;
                    }
                }
                result = &mut watch, if ended.is_none() => ended = Some(result),
            }
        };
    // Closing the channel ends a running watch (it cancels its wait).
    drop(rx);
    if ended.is_none() {
        ended = tokio::time::timeout(CLEANUP_TIMEOUT, &mut watch).await.ok();
    }
    if tokio::time::timeout(CLEANUP_TIMEOUT, client.logout())
        .await
        .is_err()
    {
        tracing::debug!(source, "logout timed out");
    }
    if stop_requested {
        return Outcome::Stopped;
    }
    match ended {
        Some(Err(e)) => failed(e.into(), synced),
        _ => failed(AttemptError::WatchEnded, synced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_api::SourceKind;

    struct Count(Mutex<usize>);

    impl InventorySink for Count {
        fn resync(&self, _: &SourceId) {}
        fn apply(&self, _: &SourceId, _: InventoryEvent) {
            *self.0.lock().unwrap() += 1;
        }
        fn forget(&self, _: &SourceId) {}
    }

    #[test]
    fn a_stopped_task_delivers_nothing() {
        let id = SourceId {
            namespace: "ns".into(),
            kind: SourceKind::Vsphere,
            name: "vc".into(),
        };
        let sink = Count(Mutex::new(0));
        let (control, handle) = control();
        let synced = || sink.apply(&id, InventoryEvent::Synced);
        assert!(deliver(&handle.fence, synced));
        drop(control);
        assert!(!deliver(&handle.fence, synced));
        assert_eq!(*sink.0.lock().unwrap(), 1);
        assert!(*handle.stop.borrow(), "dropping the control stops the task");
    }
}
