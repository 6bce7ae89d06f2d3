//! Sources: can the endpoint be reached and logged in to with the Secret it
//! names? The answer is the `Ready` condition (with a reason that names what
//! to fix: `SecretNotFound`, `SecretInvalid`, `EndpointUnreachable`,
//! `CertificateUntrusted`, `AuthenticationFailed`, ...), `endpointVersion`,
//! `observedGeneration` and an Event on each change. A source is checked
//! again periodically (sooner while it is failing) and at once when its
//! Secret changes. The Secret is always read from the source's own namespace:
//! the API has no field to name another. Secrets are watched only in the
//! namespaces that hold a source of the kind ([`SecretWatch`]); where the
//! controller may not read them, the source says so (`SecretForbidden`, naming
//! the ClusterRole to bind) and turns Ready as soon as someone binds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::conditions::{self, Observed, READY};
use crate::connect;
use crate::context::Context;
use crate::error::Error;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use vmm_api::source::{AnySource, SourceKind, SourceSpec};
use vmm_secretwatch::SecretWatch;

/// How often a Ready source is checked again.
const RECHECK: Duration = Duration::from_secs(300);
/// The soonest a failing source is checked again, unless told otherwise
/// (`--source-retry-seconds`).
pub const RETRY_MIN: Duration = Duration::from_secs(15);

/// What one check found.
#[derive(Debug, PartialEq)]
struct SourceCheck {
    ready: Observed,
    endpoint_version: Option<String>,
}

impl SourceCheck {
    fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: Observed::new(READY, false, reason, message),
            endpoint_version: None,
        }
    }
}

/// One kind's reconciler: the context and the kind.
struct KindContext {
    ctx: Arc<Context>,
    kind: SourceKind,
    resource: ApiResource,
    retry_min: Duration,
    /// The sources of the kind, as the controller sees them.
    sources: Store<AnySource>,
    /// The Secrets of the namespaces that hold them.
    secret_watch: Mutex<SecretWatch>,
}

impl KindContext {
    /// Watches the Secrets of exactly the namespaces that hold a source of
    /// the kind (a namespace that lost its last source is dropped here too).
    fn follow_secrets(&self) {
        let namespaces = self
            .sources
            .state()
            .into_iter()
            .filter_map(|s| s.namespace());
        self.secret_watch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .follow(namespaces);
    }
}

/// Reconciles the sources of every kind until the process ends; a failing
/// source is checked again `retry_min` at the soonest (and at once when its
/// Secret changes).
pub async fn run_all(ctx: Arc<Context>, retry_min: Duration) {
    futures::future::join_all(SourceKind::ALL.map(|kind| run(ctx.clone(), kind, retry_min))).await;
}

/// Reconciles every source of `kind` until the process ends.
async fn run(ctx: Arc<Context>, kind: SourceKind, retry_min: Duration) {
    let resource = kind.api_resource();
    let sources = Api::<AnySource>::all_with(ctx.client.clone(), &resource);
    let controller = Controller::new_with(sources, watcher::Config::default(), resource.clone());
    let store = controller.store();
    let (secret_watch, mut secret_events) = SecretWatch::new(ctx.client.clone());
    // A Secret's change (or its first list once the controller may read it)
    // is a reason to check the sources that name it.
    let secrets = futures::stream::poll_fn(move |cx| secret_events.poll_recv(cx)).filter_map(
        |secret| async move {
            match secret.event {
                watcher::Event::Apply(meta)
                | watcher::Event::InitApply(meta)
                | watcher::Event::Delete(meta) => Some(Ok(meta)),
                watcher::Event::Init | watcher::Event::InitDone => None,
            }
        },
    );
    let kind_context = Arc::new(KindContext {
        ctx,
        kind,
        resource: resource.clone(),
        retry_min,
        sources: store.clone(),
        secret_watch: Mutex::new(secret_watch),
    });
    controller
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|source| {
                    source.namespace() == namespace
                        && source.spec.connection.credentials.name == name
                })
                .map(|source| ObjectRef::from_obj_with(source.as_ref(), resource.clone()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, kind_context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "source reconcile");
            }
        })
        .await;
    tracing::info!("{kind} sources: reconciler stopped");
}

async fn reconcile(source: Arc<AnySource>, kc: Arc<KindContext>) -> Result<Action, Error> {
    let ctx = &kc.ctx;
    let name = source.name_any();
    let namespace = source.namespace().ok_or_else(|| Error::NoNamespace {
        kind: kc.kind.as_str(),
        name: name.clone(),
    })?;
    kc.follow_secrets();
    let checked = check(ctx, &namespace, kc.kind, &source.spec).await;

    let previous = source
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let before = conditions::find(&previous, READY).map(|c| (c.status.clone(), c.reason.clone()));
    let generation = source.meta().generation;
    let updated = conditions::set(&previous, &checked.ready, generation);
    let mut status = json!({"conditions": updated, "observedGeneration": generation});
    if let Some(version) = &checked.endpoint_version {
        status["endpointVersion"] = json!(version);
    }
    Api::<AnySource>::namespaced_with(ctx.client.clone(), &namespace, &kc.resource)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;

    let status_word = if checked.ready.status {
        "True"
    } else {
        "False"
    };
    if before.as_ref().map(|(s, r)| (s.as_str(), r.as_str()))
        != Some((status_word, checked.ready.reason.as_str()))
    {
        let event = Event {
            type_: if checked.ready.status {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: checked.ready.reason.clone(),
            note: Some(truncate(&checked.ready.message, 1000)),
            action: "CheckConnection".into(),
            secondary: None,
        };
        let reference = source.object_ref(&kc.resource);
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, source = %name, "cannot publish an event");
        }
        tracing::info!(
            source = %format!("{namespace}/{name}"),
            ready = checked.ready.status,
            reason = %checked.ready.reason,
            "source checked"
        );
    }
    Ok(Action::requeue(next_check(
        checked.ready.status,
        updated
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| c.last_transition_time.0),
        kc.retry_min,
    )))
}

/// A failing source is retried sooner the more recently it failed: a quarter
/// of the time since it went unready, between `retry_min` and the normal
/// interval (or `retry_min`, when that is longer).
fn next_check(ready: bool, since: Option<Timestamp>, retry_min: Duration) -> Duration {
    if ready {
        return RECHECK;
    }
    let failing_for = since
        .and_then(|t| Timestamp::now().duration_since(t).try_into().ok())
        .unwrap_or(Duration::ZERO);
    (failing_for / 4).clamp(retry_min, RECHECK.max(retry_min))
}

fn error_policy(_: Arc<AnySource>, error: &Error, ctx: Arc<KindContext>) -> Action {
    tracing::warn!(%error, "cannot update a source's status; retrying");
    Action::requeue(ctx.retry_min)
}

async fn check(ctx: &Context, namespace: &str, kind: SourceKind, spec: &SourceSpec) -> SourceCheck {
    match connect::session(ctx, namespace, kind, spec).await {
        Ok(session) => {
            let version = session.endpoint_version();
            session.logout().await;
            SourceCheck {
                ready: Observed::new(READY, true, "Connected", format!("logged in to {version}")),
                endpoint_version: Some(version),
            }
        }
        Err(error) => SourceCheck::failed(error.reason().as_str(), error.message()),
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_sources_are_retried_sooner_the_fresher_the_failure() {
        let now = Timestamp::now();
        assert_eq!(next_check(true, Some(now), RETRY_MIN), RECHECK);
        assert_eq!(next_check(false, Some(now), RETRY_MIN), RETRY_MIN);
        let hour_ago = now - std::time::Duration::from_secs(3600);
        assert_eq!(next_check(false, Some(hour_ago), RETRY_MIN), RECHECK);
        let four_min_ago = now - std::time::Duration::from_secs(240);
        let next = next_check(false, Some(four_min_ago), RETRY_MIN);
        assert!(
            next >= Duration::from_secs(59) && next <= Duration::from_secs(61),
            "{next:?}"
        );
    }

    #[test]
    fn messages_are_cut_at_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
