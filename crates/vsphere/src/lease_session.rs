//! The session an export lease is driven with. vCenter ends sessions by
//! itself (its idle timeout, an administrator, a restart), and a lease
//! outlives the session that opened it: the transfer of a large disk easily
//! outlasts vCenter's idle timeout. So a lease call that finds its session
//! ended logs in again (same endpoint and credentials) and is made once
//! more; the keep-alive, the lease's end and later downloads all go on with
//! the new session. Without this the keep-alive kept failing
//! `NotAuthenticated` until vCenter timed the lease out under a running
//! transfer (`test/e2e/tests/vcenter_faults.rs`).

use std::future::Future;
use std::sync::{Arc, Mutex};

use vim_rs::core::client::Error as ClientError;

use super::VsphereClient;
use super::error::{VsphereError, classify};

/// Every clone sees the session logged in last.
#[derive(Clone)]
pub struct LeaseSession {
    /// vCenter's SDK URL, the same for every session.
    url: String,
    current: Arc<Mutex<VsphereClient>>,
}

impl LeaseSession {
    pub(crate) fn new(client: VsphereClient) -> Self {
        Self {
            url: client.url.clone(),
            current: Arc::new(Mutex::new(client)),
        }
    }

    /// The session as of now.
    pub fn client(&self) -> VsphereClient {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// vCenter's SDK URL, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `call` with the current session; if vCenter ended it, once more with
    /// a new one. A failed login leaves the first error (and is logged).
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(VsphereClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let client = self.client();
        let error = match call(client.clone()).await {
            Err(error) if session_ended(&self.url, &error) => error,
            other => return other,
        };
        match client.new_session().await {
            Ok(fresh) => {
                tracing::info!(url = %self.url, "the vCenter session of an export lease ended; logged in again");
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
                call(fresh).await
            }
            Err(login) => {
                tracing::warn!(error = %login, "the vCenter session of an export lease ended and logging in again failed");
                Err(error)
            }
        }
    }
}

fn session_ended(url: &str, error: &ClientError) -> bool {
    matches!(
        classify(url, "", error, None),
        VsphereError::SessionLost { .. }
    )
}
