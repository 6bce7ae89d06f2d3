//! May this user do this? kube-apiserver decides: each request becomes a
//! SubjectAccessReview (the user as authn found it, and the request's
//! attributes, derived from method, path and query the way kube-apiserver's
//! `RequestInfoFactory` does). Both answers are kept for a short while; when
//! kube-apiserver cannot be asked, the request fails with 500, never passes.
//!
//! Refusals are worded like kube-apiserver's own, so `kubectl` prints the
//! familiar `… is forbidden: User "alice" cannot list resource …`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use vmm_query::{RequestInfo, percent_decode};

use crate::authn::UserInfo;
use crate::authn::cache::TtlCache;
use crate::status::ApiError;

/// How long an allow or a deny is reused (kube-apiserver's delegating
/// authorizer defaults to 10 s for both).
pub const DEFAULT_AUTHZ_CACHE_TTL: Duration = Duration::from_secs(10);
/// At most this many (user, request) decisions are remembered.
pub const AUTHZ_CACHE_CAPACITY: usize = 8192;
/// Members are allowed everything without asking, as in every kube-apiserver
/// (and the delegating authorizer's default `alwaysAllowGroups`). The
/// aggregator's discovery polls come from this group.
pub const ALWAYS_ALLOWED_GROUP: &str = "system:masters";

/// What a request does, as authorization sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attributes {
    Resource(ResourceRequest),
    /// Any other path (`/apis`, `/openapi/v2`, …); `verb` is the lowercased
    /// HTTP method.
    NonResource {
        path: String,
        verb: String,
    },
}

/// A request on `/apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceRequest {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: Option<String>,
    /// `None`: all namespaces (cluster scope).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => &r.verb,
            Self::NonResource { verb, .. } => verb,
        }
    }
}

/// The attributes of a request, as kube-apiserver's `RequestInfoFactory`
/// derives them: a collection GET is `list`, or `watch` with a true `watch`
/// parameter (anything but `0`/`false`); a collection DELETE is
/// `deletecollection`; a list or watch with the field selector
/// `metadata.name=<n>` is about the object `<n>`. Paths with fewer than
/// `/apis/<group>/<version>/<resource>` are non-resource requests.
pub fn attributes(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let non_resource = || Attributes::NonResource {
        path: path.to_owned(),
        verb: method.as_str().to_ascii_lowercase(),
    };
    let trimmed = path.trim_matches('/');
    let parts: Vec<String> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').map(percent_decode).collect()
    };
    if parts.len() < 3 {
        return non_resource();
    }
    let (group, rest) = match parts[0].as_str() {
        "api" => ("", &parts[1..]),
        "apis" if parts.len() >= 4 => (parts[1].as_str(), &parts[2..]),
        _ => return non_resource(),
    };
    let version = rest[0].clone();
    let mut rest = &rest[1..];
    let verb = match rest.first().map(String::as_str) {
        Some(special @ ("watch" | "proxy")) => {
            if rest.len() < 2 {
                return non_resource();
            }
            rest = &rest[1..];
            special.to_owned()
        }
        _ => match *method {
            Method::GET | Method::HEAD => "get".to_owned(),
            Method::POST => "create".to_owned(),
            Method::PUT => "update".to_owned(),
            Method::PATCH => "patch".to_owned(),
            Method::DELETE => "delete".to_owned(),
            ref other => other.as_str().to_ascii_lowercase(),
        },
    };
    let mut namespace = None;
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = Some(rest[1].clone());
        if rest.len() > 2 && !matches!(rest[2].as_str(), "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    // `proxy` keeps the rest of the path to itself: no subresource.
    let subresource = rest.get(2).filter(|_| verb != "proxy").cloned();
    let mut request = ResourceRequest {
        verb,
        group: group.to_owned(),
        version,
        resource: rest[0].clone(),
        subresource,
        namespace,
        name: rest.get(1).cloned(),
    };
    if request.name.is_none() && request.verb == "get" {
        let info = RequestInfo::from_query(query.unwrap_or(""));
        request.verb = if info.watch { "watch" } else { "list" }.to_owned();
        request.name = info.name;
    }
    if request.name.is_none() && request.verb == "delete" {
        request.verb = "deletecollection".to_owned();
    }
    Attributes::Resource(request)
}

/// kube-apiserver's `forbiddenMessage` plus the authorizer's reason, in its
/// `NewForbidden` frame.
pub fn forbidden(user: &UserInfo, attributes: &Attributes, reason: &str) -> ApiError {
    let name = &user.name;
    let (group, resource, object, why) = match attributes {
        Attributes::NonResource { path, verb } => (
            "",
            "",
            "",
            format!("User {name:?} cannot {verb} path {path:?}"),
        ),
        Attributes::Resource(r) => {
            let what = match &r.subresource {
                Some(sub) => format!("{}/{sub}", r.resource),
                None => r.resource.clone(),
            };
            let scope = match &r.namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_owned(),
            };
            (
                r.group.as_str(),
                r.resource.as_str(),
                r.name.as_deref().unwrap_or(""),
                format!(
                    "User {name:?} cannot {} resource {what:?} in API group {:?} {scope}",
                    r.verb, r.group
                ),
            )
        }
    };
    let why = if reason.is_empty() {
        why
    } else {
        format!("{why}: {reason}")
    };
    ApiError::forbidden(group, resource, object, &why)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny { reason: String },
}

type CacheKey = (UserInfo, Attributes);

/// Asks kube-apiserver, by SubjectAccessReview, and remembers the answers.
pub struct Authorizer {
    client: Client,
    cache: TtlCache<CacheKey, Decision>,
}

impl Authorizer {
    /// Allows and denies are both kept for `ttl` (zero: ask every time).
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            cache: TtlCache::new(ttl, AUTHZ_CACHE_CAPACITY),
        }
    }

    /// `Ok` when the user may; 403 `Forbidden` when not; 500 `InternalError`
    /// when kube-apiserver could not be asked.
    pub async fn authorize(
        &self,
        user: &UserInfo,
        attributes: &Attributes,
    ) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == ALWAYS_ALLOWED_GROUP) {
            return Ok(());
        }
        let key = (user.clone(), attributes.clone());
        let decision = match self.cache.get(&key, Instant::now()) {
            Some(decision) => decision,
            None => {
                let decision = self.review(user, attributes).await?;
                self.cache.insert(key, decision.clone(), Instant::now());
                decision
            }
        };
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny { reason } => Err(forbidden(user, attributes, &reason)),
        }
    }

    async fn review(&self, user: &UserInfo, attributes: &Attributes) -> Result<Decision, ApiError> {
        let review = SubjectAccessReview {
            spec: review_spec(user, attributes),
            ..SubjectAccessReview::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                tracing::warn!(%error, user = %user.name, "SubjectAccessReview failed: refusing the request");
                ApiError::internal(format!(
                    "authorization could not be checked: SubjectAccessReview failed: {error}"
                ))
            })?;
        let status = reviewed.status.unwrap_or_default();
        Ok(if status.allowed {
            Decision::Allow
        } else {
            Decision::Deny {
                reason: status.reason.unwrap_or_default(),
            }
        })
    }
}

fn review_spec(user: &UserInfo, attributes: &Attributes) -> SubjectAccessReviewSpec {
    let some = |s: &str| Some(s.to_owned());
    let (resource_attributes, non_resource_attributes) = match attributes {
        Attributes::Resource(r) => (
            Some(ResourceAttributes {
                verb: some(&r.verb),
                group: some(&r.group),
                version: some(&r.version),
                resource: some(&r.resource),
                subresource: r.subresource.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                ..ResourceAttributes::default()
            }),
            None,
        ),
        Attributes::NonResource { path, verb } => (
            None,
            Some(NonResourceAttributes {
                path: some(path),
                verb: some(verb),
            }),
        ),
    };
    SubjectAccessReviewSpec {
        user: some(&user.name),
        uid: user.uid.clone(),
        groups: Some(user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes,
        non_resource_attributes,
    }
}

/// Axum middleware: authorizes the [`UserInfo`] an authentication layer put
/// in the request's extensions (401 when there is none), for the request's
/// [`attributes`]. Add it inside (before, in `.layer` order) authentication.
pub async fn middleware(
    State(authorizer): State<Arc<Authorizer>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(user) = request.extensions().get::<UserInfo>() else {
        return ApiError::unauthorized().into_response();
    };
    let attributes = attributes(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    match authorizer.authorize(user, &attributes).await {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::*;
    use crate::authn::fake_apiserver;

    const G: &str = "inventory.harvesterhci.io";

    fn res(
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> Attributes {
        Attributes::Resource(ResourceRequest {
            verb: verb.into(),
            group: G.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: subresource.map(Into::into),
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
        })
    }

    fn non(path: &str, verb: &str) -> Attributes {
        Attributes::NonResource {
            path: path.into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn attributes_follow_kube_apiserver_request_info() {
        let base = "/apis/inventory.harvesterhci.io/v1";
        let ns = format!("{base}/namespaces/team-a");
        let vms = "virtualmachines";
        let a = Some("team-a");
        let cases: Vec<(&str, String, Option<&str>, Attributes)> = vec![
            // Discovery and OpenAPI are paths, not resources.
            ("GET", "/apis".into(), None, non("/apis", "get")),
            ("GET", "/".into(), None, non("/", "get")),
            (
                "GET",
                format!("/apis/{G}"),
                None,
                non(&format!("/apis/{G}"), "get"),
            ),
            ("GET", base.into(), None, non(base, "get")),
            (
                "GET",
                format!("{base}/"),
                None,
                non(&format!("{base}/"), "get"),
            ),
            ("GET", "/openapi/v2".into(), None, non("/openapi/v2", "get")),
            (
                "GET",
                "/openapi/v3/apis/x/v1".into(),
                None,
                non("/openapi/v3/apis/x/v1", "get"),
            ),
            ("POST", "/apis".into(), None, non("/apis", "post")),
            ("HEAD", "/healthz".into(), None, non("/healthz", "head")),
            // Collections: list, watch, create, deletecollection.
            (
                "GET",
                format!("{ns}/{vms}"),
                None,
                res("list", vms, a, None, None),
            ),
            (
                "GET",
                format!("{ns}/{vms}/"),
                None,
                res("list", vms, a, None, None),
            ),
            (
                "GET",
                format!("{base}/{vms}"),
                None,
                res("list", vms, None, None, None),
            ),
            (
                "GET",
                format!("{base}/{vms}"),
                Some("limit=5&continue=x"),
                res("list", vms, None, None, None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("watch=true"),
                res("watch", vms, a, None, None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("watch=1&resourceVersion=7"),
                res("watch", vms, a, None, None),
            ),
            (
                "GET",
                format!("{base}/{vms}"),
                Some("watch=True"),
                res("watch", vms, None, None, None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("watch=false"),
                res("list", vms, a, None, None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("watch=0"),
                res("list", vms, a, None, None),
            ),
            (
                "GET",
                format!("{base}/watch/namespaces/team-a/{vms}"),
                None,
                res("watch", vms, a, None, None),
            ),
            (
                "HEAD",
                format!("{ns}/{vms}"),
                None,
                res("list", vms, a, None, None),
            ),
            (
                "POST",
                format!("{ns}/{vms}"),
                None,
                res("create", vms, a, None, None),
            ),
            (
                "DELETE",
                format!("{ns}/networks"),
                None,
                res("deletecollection", "networks", a, None, None),
            ),
            (
                "DELETE",
                format!("{base}/networks"),
                None,
                res("deletecollection", "networks", None, None, None),
            ),
            // `kubectl get NAME -w` lists with a name selector: about that object.
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("fieldSelector=metadata.name%3Dvm-1&watch=true"),
                res("watch", vms, a, Some("vm-1"), None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("fieldSelector=status.phase%3DReady,metadata.name%3D%3Dvm-1"),
                res("list", vms, a, Some("vm-1"), None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("fieldSelector=metadata.name%21%3Dvm-1"),
                res("list", vms, a, None, None),
            ),
            (
                "GET",
                format!("{ns}/{vms}"),
                Some("fieldSelector=metadata.name%3D.."),
                res("list", vms, a, None, None),
            ),
            // Objects.
            (
                "GET",
                format!("{ns}/{vms}/vm-1"),
                None,
                res("get", vms, a, Some("vm-1"), None),
            ),
            (
                "GET",
                format!("{ns}/{vms}/vm-1"),
                Some("watch=true"),
                res("get", vms, a, Some("vm-1"), None),
            ),
            (
                "PUT",
                format!("{ns}/{vms}/vm-1"),
                None,
                res("update", vms, a, Some("vm-1"), None),
            ),
            (
                "PATCH",
                format!("{ns}/{vms}/vm-1"),
                None,
                res("patch", vms, a, Some("vm-1"), None),
            ),
            (
                "DELETE",
                format!("{ns}/{vms}/vm-1"),
                None,
                res("delete", vms, a, Some("vm-1"), None),
            ),
            (
                "GET",
                format!("{ns}/{vms}/vm-1/status"),
                None,
                res("get", vms, a, Some("vm-1"), Some("status")),
            ),
            (
                "GET",
                format!("{ns}/{vms}/vm%2D1"),
                None,
                res("get", vms, a, Some("vm-1"), None),
            ),
            (
                "GET",
                format!("{base}/{vms}/vm-1"),
                None,
                res("get", vms, None, Some("vm-1"), None),
            ),
            // The namespace itself, as kube-apiserver reads such paths.
            (
                "GET",
                format!("{base}/namespaces/team-a"),
                None,
                Attributes::Resource(ResourceRequest {
                    verb: "get".into(),
                    group: G.into(),
                    version: "v1".into(),
                    resource: "namespaces".into(),
                    namespace: Some("team-a".into()),
                    name: Some("team-a".into()),
                    subresource: None,
                }),
            ),
            // Any group, as kube-apiserver would; and the core group.
            (
                "GET",
                "/api/v1/namespaces/x/pods".into(),
                None,
                Attributes::Resource(ResourceRequest {
                    verb: "list".into(),
                    group: String::new(),
                    version: "v1".into(),
                    resource: "pods".into(),
                    namespace: Some("x".into()),
                    ..ResourceRequest::default()
                }),
            ),
            ("GET", "/api/v1".into(), None, non("/api/v1", "get")),
            // A special verb with nothing after it is no resource.
            (
                "GET",
                format!("{base}/watch"),
                None,
                non(&format!("{base}/watch"), "get"),
            ),
        ];
        for (method, path, query, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let got = attributes(&method, &path, query);
            assert_eq!(got, want, "{method} {path}?{}", query.unwrap_or(""));
        }
    }

    fn alice() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            groups: vec!["team".into(), "system:authenticated".into()],
            ..UserInfo::default()
        }
    }

    #[test]
    fn forbidden_reads_like_kube_apiserver() {
        let cases = [
            (
                res("list", "virtualmachines", Some("team-b"), None, None),
                "",
                r#"virtualmachines.inventory.harvesterhci.io is forbidden: User "alice" cannot list resource "virtualmachines" in API group "inventory.harvesterhci.io" in the namespace "team-b""#,
                json!({"group": G, "kind": "virtualmachines"}),
            ),
            (
                res("watch", "virtualmachines", None, None, None),
                "",
                r#"virtualmachines.inventory.harvesterhci.io is forbidden: User "alice" cannot watch resource "virtualmachines" in API group "inventory.harvesterhci.io" at the cluster scope"#,
                json!({"group": G, "kind": "virtualmachines"}),
            ),
            (
                res("get", "networks", Some("a"), Some("net-1"), Some("status")),
                "RBAC: no rule",
                r#"networks.inventory.harvesterhci.io "net-1" is forbidden: User "alice" cannot get resource "networks/status" in API group "inventory.harvesterhci.io" in the namespace "a": RBAC: no rule"#,
                json!({"group": G, "kind": "networks", "name": "net-1"}),
            ),
            (
                non("/openapi/v2", "get"),
                "",
                r#"forbidden: User "alice" cannot get path "/openapi/v2""#,
                json!({}),
            ),
        ];
        for (attributes, reason, message, details) in cases {
            let error = forbidden(&alice(), &attributes, reason);
            assert_eq!(error.code(), StatusCode::FORBIDDEN);
            let status = serde_json::to_value(error.to_status()).unwrap();
            assert_eq!(status["message"], message);
            assert_eq!(status["reason"], "Forbidden");
            assert_eq!(status["code"], 403);
            assert_eq!(status["details"], details, "{status}");
        }
    }

    /// A SubjectAccessReview endpoint that allows `alice` to list in `team-a`
    /// only, fails for user `broken`, and records every review it is sent.
    fn fake_rbac() -> (kube::Client, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let client = fake_apiserver(move |path, body| {
            assert_eq!(path, "/apis/authorization.k8s.io/v1/subjectaccessreviews");
            record.lock().unwrap().push(body["spec"].clone());
            let spec = &body["spec"];
            if spec["user"] == "broken" {
                return Err(StatusCode::SERVICE_UNAVAILABLE);
            }
            let r = &spec["resourceAttributes"];
            let allowed =
                spec["user"] == "alice" && r["namespace"] == "team-a" && r["verb"] == "list";
            Ok(json!({"status": {"allowed": allowed}}))
        });
        (client, seen)
    }

    #[tokio::test]
    async fn asks_once_per_user_and_request_and_keeps_both_answers() {
        let (client, seen) = fake_rbac();
        let authz = Authorizer::new(client, Duration::from_secs(60));
        let in_a = res("list", "virtualmachines", Some("team-a"), None, None);
        let in_b = res("list", "virtualmachines", Some("team-b"), None, None);
        for _ in 0..3 {
            authz.authorize(&alice(), &in_a).await.unwrap();
            let denied = authz.authorize(&alice(), &in_b).await.unwrap_err();
            assert_eq!(denied.code(), StatusCode::FORBIDDEN);
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "allow and deny are cached");
        assert_eq!(
            seen.lock().unwrap()[0],
            json!({
                "user": "alice",
                "groups": ["team", "system:authenticated"],
                "resourceAttributes": {
                    "verb": "list", "group": G, "version": "v1",
                    "resource": "virtualmachines", "namespace": "team-a",
                },
            })
        );

        // The whole identity is the key: other groups, extra or uid ask again.
        let mut other = alice();
        other.groups.pop();
        let mut with_extra = alice();
        with_extra.extra = BTreeMap::from([("scopes".into(), vec!["view".into()])]);
        let mut with_uid = alice();
        with_uid.uid = Some("u-1".into());
        for user in [&other, &with_extra, &with_uid] {
            authz.authorize(user, &in_a).await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[3]["extra"], json!({"scopes": ["view"]}));
        assert_eq!(seen[4]["uid"], "u-1");
    }

    #[tokio::test]
    async fn non_resource_requests_are_reviewed_as_paths() {
        let (client, seen) = fake_rbac();
        let authz = Authorizer::new(client, Duration::ZERO);
        let error = authz
            .authorize(&alice(), &non("/openapi/v2", "get"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), StatusCode::FORBIDDEN);
        assert_eq!(
            seen.lock().unwrap()[0]["nonResourceAttributes"],
            json!({"path": "/openapi/v2", "verb": "get"})
        );
    }

    #[tokio::test]
    async fn no_answer_is_a_500_never_an_allow_and_is_not_kept() {
        let (client, seen) = fake_rbac();
        let authz = Authorizer::new(client, Duration::from_secs(60));
        let broken = UserInfo {
            name: "broken".into(),
            ..UserInfo::default()
        };
        let in_a = res("list", "virtualmachines", Some("team-a"), None, None);
        for _ in 0..2 {
            let error = authz.authorize(&broken, &in_a).await.unwrap_err();
            assert_eq!(error.code(), StatusCode::INTERNAL_SERVER_ERROR);
            let status = error.to_status();
            assert_eq!(status.reason.as_deref(), Some("InternalError"));
            assert!(
                status
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("authorization could not be checked"),
                "{status:?}"
            );
        }
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn system_masters_need_no_review() {
        let (client, seen) = fake_rbac();
        let authz = Authorizer::new(client, Duration::from_secs(60));
        let aggregator = UserInfo {
            name: "system:kube-aggregator".into(),
            groups: vec![ALWAYS_ALLOWED_GROUP.into()],
            ..UserInfo::default()
        };
        authz
            .authorize(&aggregator, &non("/apis", "get"))
            .await
            .unwrap();
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_requests_do_not_block_each_other() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let client = fake_apiserver(move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            Ok(json!({"status": {"allowed": true}}))
        });
        let authz = Arc::new(Authorizer::new(client, Duration::from_secs(60)));
        let in_a = res("list", "virtualmachines", Some("team-a"), None, None);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (authz, in_a) = (authz.clone(), in_a.clone());
                tokio::spawn(async move { authz.authorize(&alice(), &in_a).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let asked = calls.load(Ordering::SeqCst);
        assert!((1..=8).contains(&asked), "{asked}");
        authz.authorize(&alice(), &in_a).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), asked, "then cached");
    }
}
