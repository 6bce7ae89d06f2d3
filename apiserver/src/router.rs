//! The HTTP surface of the inventory API, built by one function so tests drive
//! it in-process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use vmm_api::inventory::{GROUP, RESOURCES, VERSION};

use crate::authn::{self, RequestHeaderConfig};
use crate::discovery;
use crate::serve::ConnectionPeer;
use crate::status::ApiError;

/// Every route of the inventory API, behind authentication.
pub fn router(authn: Arc<RequestHeaderConfig>) -> Router {
    let group = format!("/apis/{GROUP}");
    let version = format!("{group}/{VERSION}");
    Router::new()
        .route("/apis", get(|| async { Json(discovery::api_group_list()) }))
        .route(&group, get(|| async { Json(discovery::api_group()) }))
        .route(
            &version,
            get(|| async { Json(discovery::api_resource_list()) }),
        )
        .route(&format!("{version}/{{resource}}"), any(collection))
        .route(
            &format!("{version}/namespaces/{{namespace}}/{{resource}}"),
            any(namespaced_collection),
        )
        .route(
            &format!("{version}/namespaces/{{namespace}}/{{resource}}/{{name}}"),
            any(object),
        )
        .fallback(|| async { ApiError::no_such_path() })
        .layer(middleware::from_fn_with_state(authn, authenticate))
}

/// Rejects with 401 whatever the front proxy did not vouch for; hands the user
/// to the handlers otherwise.
async fn authenticate(
    State(config): State<Arc<RequestHeaderConfig>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectionPeer>()
        .and_then(|peer| peer.0.as_ref());
    match authn::authenticate(&config, peer, request.headers()) {
        Ok(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn collection(method: Method, Path(resource): Path<String>) -> Response {
    read_only(&method, &resource, true)
}

async fn namespaced_collection(
    method: Method,
    Path((_namespace, resource)): Path<(String, String)>,
) -> Response {
    read_only(&method, &resource, true)
}

async fn object(
    method: Method,
    Path((_namespace, resource, _name)): Path<(String, String, String)>,
) -> Response {
    read_only(&method, &resource, false)
}

/// Known resources refuse every write with 405; reads are not served yet.
fn read_only(method: &Method, resource: &str, collection: bool) -> Response {
    if !RESOURCES.iter().any(|r| r.plural == resource) {
        return ApiError::no_such_path().into_response();
    }
    let verb = match (method.as_str(), collection) {
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => return ApiError::no_such_path().into_response(),
    };
    ApiError::method_not_allowed(verb).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    use crate::authn::PeerCertificate;

    fn config() -> Arc<RequestHeaderConfig> {
        Arc::new(RequestHeaderConfig {
            client_ca_pem: String::new(),
            allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_header_prefixes: vec!["X-Remote-Extra-".into()],
        })
    }

    /// A request as kube-apiserver proxies it for user `alice`.
    async fn call(method: &str, path: &str) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("X-Remote-User", "alice")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectionPeer(Some(PeerCertificate {
                common_name: Some("front-proxy-client".into()),
            })));
        send(request).await
    }

    async fn send(request: Request<Body>) -> (StatusCode, Value) {
        let response = router(config()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn answers_discovery_and_refuses_writes() {
        let base = "/apis/inventory.harvesterhci.io/v1";
        let ns = format!("{base}/namespaces/team-a");
        let cases = [
            ("GET", "/apis".to_owned(), StatusCode::OK, "APIGroupList"),
            (
                "GET",
                "/apis/inventory.harvesterhci.io".to_owned(),
                StatusCode::OK,
                "APIGroup",
            ),
            ("GET", base.to_owned(), StatusCode::OK, "APIResourceList"),
            (
                "POST",
                format!("{ns}/virtualmachines"),
                StatusCode::METHOD_NOT_ALLOWED,
                "Status",
            ),
            (
                "PUT",
                format!("{ns}/virtualmachines/vm-1"),
                StatusCode::METHOD_NOT_ALLOWED,
                "Status",
            ),
            (
                "PATCH",
                format!("{ns}/networks/net-1"),
                StatusCode::METHOD_NOT_ALLOWED,
                "Status",
            ),
            (
                "DELETE",
                format!("{ns}/networks/net-1"),
                StatusCode::METHOD_NOT_ALLOWED,
                "Status",
            ),
            (
                "DELETE",
                format!("{ns}/networks"),
                StatusCode::METHOD_NOT_ALLOWED,
                "Status",
            ),
            (
                "GET",
                format!("{ns}/flavors"),
                StatusCode::NOT_FOUND,
                "Status",
            ),
            (
                "POST",
                format!("{base}/datastores"),
                StatusCode::NOT_FOUND,
                "Status",
            ),
            (
                "GET",
                "/apis/other.example.com".to_owned(),
                StatusCode::NOT_FOUND,
                "Status",
            ),
        ];
        for (method, path, want_status, want_kind) in cases {
            let (status, body) = call(method, &path).await;
            assert_eq!(status, want_status, "{method} {path}: {body}");
            assert_eq!(body["kind"], want_kind, "{method} {path}: {body}");
            if want_kind == "Status" {
                assert_eq!(
                    body["code"],
                    want_status.as_u16(),
                    "{method} {path}: {body}"
                );
            }
        }
    }

    #[tokio::test]
    async fn without_the_front_proxy_every_path_is_401() {
        for path in ["/apis", "/apis/inventory.harvesterhci.io/v1", "/nope"] {
            // No peer certificate, or a user header from someone who is not the proxy.
            let bare = Request::get(path)
                .header("X-Remote-User", "mallory")
                .body(Body::empty())
                .unwrap();
            let (status, body) = send(bare).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(body["reason"], "Unauthorized", "{path}");
        }
    }

    #[tokio::test]
    async fn a_write_says_why_it_is_refused() {
        let (_, body) = call(
            "DELETE",
            "/apis/inventory.harvesterhci.io/v1/namespaces/a/virtualmachines/x",
        )
        .await;
        assert_eq!(body["reason"], "MethodNotAllowed");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("delete is not supported: the inventory is read-only")
        );
    }
}
