//! The inventory apiserver's review clients against the real kube-apiserver:
//! SubjectAccessReview follows RBAC (a Role and RoleBinding made with kubectl)
//! and its refusals read like kube-apiserver's own; a ServiceAccount token
//! from `kubectl create token` authenticates by TokenReview, a garbage token
//! does not, and the service account's identity (uid, extra) is authorized.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use vmm_apiserver::authn::{TokenAuthenticator, UserInfo};
use vmm_apiserver::authz::{Attributes, Authorizer, attributes};
use vmm_apiserver::status::ApiError;
use vmm_testkit::{ControlPlane, TestNamespace};

const GROUP: &str = "inventory.harvesterhci.io";
/// Generous limit for RBAC to see a new binding (never a pass/fail timing).
const WAIT: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(10);

/// A Role allowing `list` on our virtual machines, bound to `subjects`.
fn lister_yaml(subjects: &str) -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: vm-lister
rules:
  - apiGroups: ["{GROUP}"]
    resources: ["virtualmachines"]
    verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: vm-lister
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: vm-lister
subjects:
{subjects}
"#
    )
}

/// What `kubectl get virtualmachines.inventory… [-n ns | -A]` asks.
fn list_vms(namespace: Option<&str>) -> Attributes {
    let path = match namespace {
        Some(ns) => format!("/apis/{GROUP}/v1/namespaces/{ns}/virtualmachines"),
        None => format!("/apis/{GROUP}/v1/virtualmachines"),
    };
    attributes(&Method::GET, &path, None)
}

/// Polls (uncached) until RBAC allows; a fresh binding can take a moment.
async fn wait_allowed(client: &kube::Client, user: &UserInfo, attributes: &Attributes) {
    let uncached = Authorizer::new(client.clone(), Duration::ZERO);
    let deadline = Instant::now() + WAIT;
    loop {
        match uncached.authorize(user, attributes).await {
            Ok(()) => return,
            Err(error) if Instant::now() > deadline => {
                panic!("{} still refused {attributes:?}: {error:?}", user.name)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn forbidden_message(error: ApiError) -> String {
    let status = error.to_status();
    assert_eq!(status.code, Some(403), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("Forbidden"), "{status:?}");
    let details = status.details.expect("details");
    assert_eq!(details.group.as_deref(), Some(GROUP));
    assert_eq!(details.kind.as_deref(), Some("virtualmachines"));
    status.message.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_access_review_follows_rbac() {
    let cp = ControlPlane::shared();
    let client = cp.client();
    let a = TestNamespace::new(cp, "authz-a").unwrap();
    let b = TestNamespace::new(cp, "authz-b").unwrap();
    a.apply(&lister_yaml(
        "  - kind: User\n    name: alice\n    apiGroup: rbac.authorization.k8s.io",
    ))
    .unwrap();
    let alice = UserInfo {
        name: "alice".into(),
        groups: vec!["system:authenticated".into()],
        ..UserInfo::default()
    };
    wait_allowed(&client, &alice, &list_vms(Some(a.name()))).await;

    let authz = Authorizer::new(client.clone(), TTL);
    authz
        .authorize(&alice, &list_vms(Some(a.name())))
        .await
        .expect("alice lists in her namespace");

    let in_b = forbidden_message(
        authz
            .authorize(&alice, &list_vms(Some(b.name())))
            .await
            .unwrap_err(),
    );
    let want = format!(
        r#"virtualmachines.{GROUP} is forbidden: User "alice" cannot list resource "virtualmachines" in API group "{GROUP}" in the namespace "{}""#,
        b.name()
    );
    assert!(in_b.starts_with(&want), "{in_b}\nwanted {want}");

    let everywhere = forbidden_message(authz.authorize(&alice, &list_vms(None)).await.unwrap_err());
    let want = format!(
        r#"virtualmachines.{GROUP} is forbidden: User "alice" cannot list resource "virtualmachines" in API group "{GROUP}" at the cluster scope"#
    );
    assert!(everywhere.starts_with(&want), "{everywhere}\nwanted {want}");

    // Only `list` was granted: a watch or a get in the same namespace is refused.
    let vms = format!("/apis/{GROUP}/v1/namespaces/{}/virtualmachines", a.name());
    for (method, path, query) in [
        (Method::GET, vms.clone(), Some("watch=true")),
        (Method::GET, format!("{vms}/vm-1"), None),
        (Method::DELETE, format!("{vms}/vm-1"), None),
    ] {
        let attributes = attributes(&method, &path, query);
        let error = authz.authorize(&alice, &attributes).await.unwrap_err();
        assert_eq!(error.to_status().code, Some(403), "{attributes:?}");
    }

    // Someone else, and a path nobody granted, are refused too.
    let bob = UserInfo {
        name: "bob".into(),
        ..alice.clone()
    };
    assert!(
        authz
            .authorize(&bob, &list_vms(Some(a.name())))
            .await
            .is_err()
    );
    let metrics = authz
        .authorize(&alice, &attributes(&Method::GET, "/metrics", None))
        .await
        .unwrap_err()
        .to_status();
    assert_eq!(metrics.code, Some(403));
    let message = metrics.message.unwrap_or_default();
    assert!(
        message.starts_with(r#"forbidden: User "alice" cannot get path "/metrics""#),
        "{message}"
    );
    // Discovery and OpenAPI are open to every authenticated user (system:discovery).
    for path in ["/apis", "/openapi/v2"] {
        authz
            .authorize(&alice, &attributes(&Method::GET, path, None))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
    }

    // A decision is kept for the TTL: removing the binding does not change
    // the cached answer at once (RBAC would refuse now).
    a.kubectl(["delete", "rolebinding", "vm-lister"])
        .expect_success();
    authz
        .authorize(&alice, &list_vms(Some(a.name())))
        .await
        .expect("cached allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_by_token_review() {
    let cp = ControlPlane::shared();
    let client = cp.client();
    let ns = TestNamespace::new(cp, "authz-sa").unwrap();
    let other = TestNamespace::new(cp, "authz-sa-other").unwrap();
    ns.kubectl(["create", "serviceaccount", "reader"])
        .expect_success();
    let token = ns
        .kubectl(["create", "token", "reader"])
        .expect_success()
        .trim()
        .to_owned();
    assert!(!token.is_empty());

    let tokens = TokenAuthenticator::new(client.clone(), TTL);
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let user = tokens
        .authenticate_bearer(&headers)
        .await
        .expect("a ServiceAccount token authenticates");
    assert_eq!(
        user.name,
        format!("system:serviceaccount:{}:reader", ns.name())
    );
    for group in [
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{}", ns.name()),
        "system:authenticated".to_owned(),
    ] {
        assert!(user.groups.contains(&group), "{group} in {:?}", user.groups);
    }
    assert!(user.uid.is_some(), "{user:?}");
    // The same token again comes from the cache, with the same answer.
    assert_eq!(tokens.authenticate(&token).await.unwrap(), user);

    for garbage in [
        "garbage".to_owned(),
        format!("{token}x"),
        token.chars().rev().collect(),
    ] {
        assert_eq!(
            tokens.authenticate(&garbage).await,
            Err(ApiError::unauthorized())
        );
    }
    assert_eq!(
        tokens.authenticate_bearer(&HeaderMap::new()).await,
        Err(ApiError::unauthorized())
    );

    // The identity TokenReview returns (uid, extra) is what SAR authorizes.
    ns.apply(&lister_yaml(&format!(
        "  - kind: ServiceAccount\n    name: reader\n    namespace: {}",
        ns.name()
    )))
    .unwrap();
    wait_allowed(&client, &user, &list_vms(Some(ns.name()))).await;
    let authz = Authorizer::new(client.clone(), TTL);
    authz
        .authorize(&user, &list_vms(Some(ns.name())))
        .await
        .expect("the service account lists in its namespace");
    let refused = forbidden_message(
        authz
            .authorize(&user, &list_vms(Some(other.name())))
            .await
            .unwrap_err(),
    );
    assert!(
        refused.contains(&format!(r#"User "{}" cannot list"#, user.name)),
        "{refused}"
    );
}
