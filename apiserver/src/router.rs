//! The HTTP surface of the inventory API, built by one function so tests drive
//! it in-process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::Value;
use vmm_api::inventory::{GROUP, ResourceNames, VERSION};
use vmm_query::ListQuery;

use crate::authn::{self, RequestHeaderConfig, TokenAuthenticator};
use crate::authz::{self, Authorizer};
use crate::discovery;
use crate::list;
use crate::metrics::{self, Metrics};
use crate::openapi::{self, OpenApi};
use crate::resources::{self, InventoryResource, Visitor};
use crate::serve::ConnectionPeer;
use crate::status::ApiError;
use crate::store::Store;
use crate::watch;

/// What the routes need.
#[derive(Clone)]
pub struct AppState {
    /// How to read the front proxy's headers, as it is now.
    pub requestheader: tokio::sync::watch::Receiver<Arc<RequestHeaderConfig>>,
    pub tokens: Arc<TokenAuthenticator>,
    pub authorizer: Arc<Authorizer>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
}

/// Every route of the inventory API, behind authentication and authorization.
pub fn router(state: AppState) -> Router {
    let group = format!("/apis/{GROUP}");
    let version = format!("{group}/{VERSION}");
    let openapi = Arc::new(OpenApi::new());
    let document = |pick: fn(&OpenApi) -> &Value| {
        let openapi = openapi.clone();
        get(move || async move { Json(pick(&openapi).clone()) })
    };
    Router::new()
        .route("/openapi/v2", document(|o| &o.v2))
        .route("/openapi/v3", document(|o| &o.v3_index))
        .route(&openapi::v3_path(), document(|o| &o.v3_group_version))
        .route("/apis", get(|| async { Json(discovery::api_group_list()) }))
        .route(&group, get(|| async { Json(discovery::api_group()) }))
        .route(
            &version,
            get(|| async { Json(discovery::api_resource_list()) }),
        )
        .route(&format!("{version}/{{resource}}"), any(all_namespaces))
        .route(
            &format!("{version}/namespaces/{{namespace}}/{{resource}}"),
            any(namespaced),
        )
        .route(
            &format!("{version}/namespaces/{{namespace}}/{{resource}}/{{name}}"),
            any(object),
        )
        .fallback(|| async { ApiError::no_such_path() })
        .with_state(state.store.clone())
        // Layers run last-added first: authentication, then authorization.
        .layer(middleware::from_fn_with_state(
            state.authorizer.clone(),
            authz::middleware,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Outermost, so refused requests are counted too.
        .layer(middleware::from_fn_with_state(
            state.metrics,
            metrics::middleware,
        ))
}

/// Rejects with 401 whatever neither the front proxy nor a valid bearer token
/// vouches for; hands the user to the next layers otherwise.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectionPeer>()
        .and_then(|peer| peer.0.as_ref());
    let requestheader = state.requestheader.borrow().clone();
    let user =
        authn::authenticate_request(&requestheader, peer, request.headers(), &state.tokens).await;
    match user {
        Ok(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

type Reply = Result<Response, ApiError>;

/// What serves one resource, by its plural (`resources::visit_all`).
struct ResourceRoutes {
    names: ResourceNames,
    list: fn(&Store, Option<&str>, &ListQuery, &HeaderMap) -> Reply,
    watch: fn(Arc<Store>, Option<&str>, &ListQuery, &HeaderMap) -> Reply,
    get: fn(&Store, &str, &str, &ListQuery, &HeaderMap) -> Reply,
}

/// The resource named `plural`, if one is served.
fn served(plural: &str) -> Option<&'static ResourceRoutes> {
    struct Collect(Vec<ResourceRoutes>);
    impl Visitor for Collect {
        fn visit<T: InventoryResource>(&mut self) {
            self.0.push(ResourceRoutes {
                names: T::NAMES,
                list: list::list::<T>,
                watch: watch::watch::<T>,
                get: list::get::<T>,
            });
        }
    }
    static SERVED: std::sync::OnceLock<Vec<ResourceRoutes>> = std::sync::OnceLock::new();
    SERVED
        .get_or_init(|| {
            let mut all = Collect(Vec::new());
            resources::visit_all(&mut all);
            all.0
        })
        .iter()
        .find(|served| served.names.plural == plural)
}

async fn all_namespaces(
    State(store): State<Arc<Store>>,
    method: Method,
    Path(resource): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Reply {
    collection(&store, &method, None, &resource, &query, &headers)
}

async fn namespaced(
    State(store): State<Arc<Store>>,
    method: Method,
    Path((namespace, resource)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Reply {
    collection(
        &store,
        &method,
        Some(&namespace),
        &resource,
        &query,
        &headers,
    )
}

fn collection(
    store: &Arc<Store>,
    method: &Method,
    namespace: Option<&str>,
    resource: &str,
    query: &ListQuery,
    headers: &HeaderMap,
) -> Reply {
    let served = served(resource).ok_or_else(ApiError::no_such_path)?;
    if *method != Method::GET {
        return Err(refuse(method, true));
    }
    if query.wants_watch() {
        (served.watch)(store.clone(), namespace, query, headers)
    } else {
        (served.list)(store, namespace, query, headers)
    }
}

async fn object(
    State(store): State<Arc<Store>>,
    method: Method,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Reply {
    let served = served(&resource).ok_or_else(ApiError::no_such_path)?;
    if method != Method::GET {
        return Err(refuse(&method, false));
    }
    (served.get)(&store, &namespace, &name, &query, &headers)
}

/// ResourceRoutes resources refuse every write with 405.
fn refuse(method: &Method, collection: bool) -> ApiError {
    let verb = match (method.as_str(), collection) {
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => return ApiError::no_such_path(),
    };
    ApiError::method_not_allowed(verb)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    use std::time::Duration;

    use vmm_api::SourceKind;
    use vmm_api::inventory::{PowerState, VirtualMachineSpec};
    use vmm_core::InventoryEvent;

    use crate::authn::{PeerCertificate, fake_apiserver};
    use crate::sink::{InventorySink, SourceId};

    /// Routes over a store holding VMs `vm-1` (on) … `vm-3` (off) of source
    /// `vc` in `team-a`, with a kube-apiserver stand-in that allows everything.
    fn app() -> Router {
        app_with_store().0
    }

    fn app_with_store() -> (Router, Arc<Store>) {
        let (_, requestheader) = tokio::sync::watch::channel(Arc::new(RequestHeaderConfig {
            client_ca_pem: String::new(),
            allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_header_prefixes: vec!["X-Remote-Extra-".into()],
        }));
        let allow_all = || {
            fake_apiserver(|_, _| {
                Ok(serde_json::json!({"status": {"allowed": true, "authenticated": false}}))
            })
        };
        let store = Arc::new(Store::default());
        let source = SourceId {
            namespace: "team-a".into(),
            kind: SourceKind::Vsphere,
            name: "vc".into(),
        };
        for (id, power_state) in [
            ("vm-1", PowerState::On),
            ("vm-2", PowerState::On),
            ("vm-3", PowerState::Off),
        ] {
            let spec = VirtualMachineSpec {
                id: id.into(),
                display_name: format!("Web {id}"),
                power_state,
                ..VirtualMachineSpec::default()
            };
            store.apply(&source, InventoryEvent::Vm(spec));
        }
        let app = router(AppState {
            requestheader,
            tokens: Arc::new(TokenAuthenticator::new(
                allow_all(),
                Duration::from_secs(10),
            )),
            authorizer: Arc::new(Authorizer::new(allow_all(), Duration::from_secs(10))),
            store: store.clone(),
            metrics: Arc::new(Metrics::register(&mut Default::default(), store.clone())),
        });
        (app, store)
    }

    /// A request as kube-apiserver proxies it for user `alice`.
    async fn call(method: &str, path: &str) -> (StatusCode, Value) {
        call_accepting(method, path, "application/json").await
    }

    async fn call_accepting(method: &str, path: &str, accept: &str) -> (StatusCode, Value) {
        send(proxied(method, path, accept)).await
    }

    /// A request as kube-apiserver's front proxy forwards it for `alice`.
    fn proxied(method: &str, path: &str, accept: &str) -> Request<Body> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("Accept", accept)
            .header("X-Remote-User", "alice")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectionPeer(Some(PeerCertificate {
                common_name: Some("front-proxy-client".into()),
            })));
        request
    }

    async fn send(request: Request<Body>) -> (StatusCode, Value) {
        send_to(&app(), request).await
    }

    async fn send_to(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = app.clone().oneshot(request).await.unwrap();
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

    fn names(list: &Value) -> Vec<&str> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn lists_with_selectors() {
        let vms = "/apis/inventory.harvesterhci.io/v1/namespaces/team-a/virtualmachines";
        let cases = [
            ("", vec!["vc-vm-1", "vc-vm-2", "vc-vm-3"]),
            ("?fieldSelector=spec.powerState%3DOff", vec!["vc-vm-3"]),
            (
                "?fieldSelector=spec.powerState!%3DOff,metadata.name!%3Dvc-vm-1",
                vec!["vc-vm-2"],
            ),
            (
                "?labelSelector=inventory.harvesterhci.io%2Fsource%3Dvc",
                vec!["vc-vm-1", "vc-vm-2", "vc-vm-3"],
            ),
            (
                "?labelSelector=inventory.harvesterhci.io%2Fsource+notin+(vc)",
                vec![],
            ),
            ("?labelSelector=!inventory.harvesterhci.io%2Fsource", vec![]),
        ];
        for (query, want) in cases {
            let (status, list) = call("GET", &format!("{vms}{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {list}");
            assert_eq!(list["kind"], "VirtualMachineList");
            assert_eq!(names(&list), want, "{query}");
        }
        let (_, other) = call(
            "GET",
            "/apis/inventory.harvesterhci.io/v1/namespaces/team-b/virtualmachines",
        )
        .await;
        assert!(names(&other).is_empty(), "another namespace sees nothing");
        let (_, all) = call("GET", "/apis/inventory.harvesterhci.io/v1/virtualmachines").await;
        assert_eq!(names(&all).len(), 3);
    }

    #[tokio::test]
    async fn pages_follow_continue_tokens() {
        let vms = "/apis/inventory.harvesterhci.io/v1/virtualmachines";
        // One store: another one's tokens are expired by design.
        let (app, store) = app_with_store();
        let get = |path: String| send_to(&app, proxied("GET", &path, "application/json"));
        let mut seen = Vec::new();
        let mut query = "?limit=2".to_owned();
        loop {
            let (status, page) = get(format!("{vms}{query}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(names(&page).into_iter().map(str::to_owned));
            match page["metadata"]["continue"].as_str() {
                Some(token) => {
                    assert_eq!(page["metadata"]["remainingItemCount"], 1);
                    query = format!("?limit=2&continue={token}");
                }
                None => break,
            }
        }
        assert_eq!(seen, ["vc-vm-1", "vc-vm-2", "vc-vm-3"]);
        // A change between pages: the walk goes on at the version it began,
        // as kube-apiserver's does (before, it got 410 Expired).
        let (_, first) = get(format!("{vms}?limit=2")).await;
        let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
        let source = SourceId {
            namespace: "team-a".into(),
            kind: SourceKind::Vsphere,
            name: "vc".into(),
        };
        let spec = VirtualMachineSpec {
            id: "vm-3".into(),
            display_name: "Web vm-3".into(),
            power_state: PowerState::On,
            ..VirtualMachineSpec::default()
        };
        store.apply(&source, InventoryEvent::Vm(spec));
        let (status, rest) = get(format!("{vms}?limit=2&continue={token}")).await;
        assert_eq!(status, StatusCode::OK, "{rest}");
        assert_eq!(names(&rest), ["vc-vm-3"]);
        assert_eq!(rest["items"][0]["spec"]["powerState"], "Off");
        assert_eq!(
            rest["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        let one = "/apis/inventory.harvesterhci.io/v1/namespaces/team-a/virtualmachines/vc-vm-3";
        let (_, now) = get(one.to_owned()).await;
        assert_eq!(now["spec"]["powerState"], "On", "{now}");
        let (status, stale) =
            call("GET", &format!("{vms}?limit=2&continue=999/team-a/vc-vm-1")).await;
        assert_eq!(
            (status, stale["reason"].as_str()),
            (StatusCode::GONE, Some("Expired"))
        );
    }

    #[tokio::test]
    async fn malformed_queries_are_400_never_a_panic() {
        let vms = "/apis/inventory.harvesterhci.io/v1/namespaces/team-a/virtualmachines";
        for query in [
            "labelSelector=a%3D%3D%3Db",
            "labelSelector=a+in+(b",
            "labelSelector=%21%21a",
            "labelSelector=a%3Db%2C",
            "fieldSelector=spec.cpus%3D4",
            "fieldSelector=metadata.name%3Da%5Cb",
            "limit=-1",
            "limit=ten",
            "continue=garbage",
            "continue=1%2F",
            "includeObject=Everything",
            "watch=true&resourceVersion=abc",
            "watch=true&timeoutSeconds=soon",
            "watch=true&sendInitialEvents=true&resourceVersion=5",
        ] {
            let (status, body) = call("GET", &format!("{vms}?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["kind"], "Status", "{query}");
        }
    }

    #[tokio::test]
    async fn tables_and_gets() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        let base = "/apis/inventory.harvesterhci.io/v1/namespaces/team-a/virtualmachines";
        let (status, table) = call_accepting("GET", base, kubectl).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["rows"].as_array().unwrap().len(), 3);
        assert_eq!(table["rows"][2]["cells"][1], "Web vm-3");

        let (status, vm) = call("GET", &format!("{base}/vc-vm-2")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vm["kind"], "VirtualMachine");
        assert_eq!(vm["spec"]["powerState"], "On");
        let (status, missing) = call("GET", &format!("{base}/vc-vm-9")).await;
        assert_eq!(
            (status, missing["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("NotFound"))
        );
        let (status, _) = call_accepting("GET", base, "application/vnd.kubernetes.protobuf").await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    }

    /// Opens a watch on team-a's VMs and returns its event stream.
    async fn open_watch(app: &Router, query: &str) -> axum::body::BodyDataStream {
        let path = format!(
            "/apis/inventory.harvesterhci.io/v1/namespaces/team-a/virtualmachines?watch=1&{query}"
        );
        let request = proxied("GET", &path, "application/json");
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().into_data_stream()
    }

    /// The next `count` events as `(type, object name or Status code)`.
    async fn next_events(
        stream: &mut axum::body::BodyDataStream,
        count: usize,
    ) -> Vec<(String, Value)> {
        use futures::StreamExt;
        let mut events = Vec::new();
        let mut buffer = String::new();
        while events.len() < count {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find('\n') {
                let event: Value = serde_json::from_str(&buffer[..end]).unwrap();
                buffer.drain(..=end);
                let object = &event["object"];
                let what = object["metadata"]["name"].clone();
                let what = if what.is_null() {
                    object["code"].clone()
                } else {
                    what
                };
                events.push((event["type"].as_str().unwrap().to_owned(), what));
            }
        }
        events
    }

    fn event(kind: &str, what: Value) -> (String, Value) {
        (kind.to_owned(), what)
    }

    #[tokio::test]
    async fn watches_stream_initial_events_changes_and_resume() {
        let (app, store) = app_with_store();
        let source = SourceId {
            namespace: "team-a".into(),
            kind: SourceKind::Vsphere,
            name: "vc".into(),
        };
        let not_vm_2 = "fieldSelector=metadata.name!%3Dvc-vm-2";
        let mut watch = open_watch(
            &app,
            &format!("sendInitialEvents=true&allowWatchBookmarks=true&{not_vm_2}"),
        )
        .await;
        let initial = next_events(&mut watch, 3).await;
        assert_eq!(
            initial,
            [
                event("ADDED", "vc-vm-1".into()),
                event("ADDED", "vc-vm-3".into()),
                event("BOOKMARK", Value::Null)
            ]
        );
        let listed_at = store.virtual_machines(None).version;

        let power_on = VirtualMachineSpec {
            id: "vm-3".into(),
            display_name: "Web vm-3".into(),
            power_state: PowerState::On,
            ..VirtualMachineSpec::default()
        };
        store.apply(&source, InventoryEvent::Vm(power_on));
        store.apply(&source, InventoryEvent::VmRemoved { id: "vm-2".into() });
        store.apply(&source, InventoryEvent::VmRemoved { id: "vm-1".into() });
        let changes = [
            event("MODIFIED", "vc-vm-3".into()),
            event("DELETED", "vc-vm-1".into()),
        ];
        assert_eq!(
            next_events(&mut watch, 2).await,
            changes,
            "vm-2 is filtered out"
        );

        // Resuming from the list's version replays exactly the changes since.
        let mut resumed =
            open_watch(&app, &format!("resourceVersion={listed_at}&{not_vm_2}")).await;
        assert_eq!(next_events(&mut resumed, 2).await, changes);

        // A version this server never issued: 410 in an ERROR event, relist.
        let mut stale = open_watch(&app, "resourceVersion=999999").await;
        assert_eq!(
            next_events(&mut stale, 1).await,
            [event("ERROR", 410.into())]
        );
    }

    #[tokio::test]
    async fn a_watch_with_a_selector_sees_objects_enter_and_leave_it() {
        let (app, store) = app_with_store();
        let source = SourceId {
            namespace: "team-a".into(),
            kind: SourceKind::Vsphere,
            name: "vc".into(),
        };
        let power = |id: &str, power_state| {
            InventoryEvent::Vm(VirtualMachineSpec {
                id: id.into(),
                display_name: format!("Web {id}"),
                power_state,
                ..VirtualMachineSpec::default()
            })
        };
        let mut watch = open_watch(&app, "fieldSelector=spec.powerState%3DOff").await;
        assert_eq!(
            next_events(&mut watch, 1).await,
            [event("ADDED", "vc-vm-3".into())]
        );
        // vm-1 starts matching, vm-3 stops, vm-1 changes while matching, vm-2
        // changes without ever matching (no event).
        store.apply(&source, power("vm-1", PowerState::Off));
        store.apply(&source, power("vm-3", PowerState::On));
        store.apply(&source, power("vm-2", PowerState::Suspended));
        store.apply(
            &source,
            InventoryEvent::Vm(VirtualMachineSpec {
                cpus: 8,
                ..match power("vm-1", PowerState::Off) {
                    InventoryEvent::Vm(spec) => spec,
                    _ => unreachable!(),
                }
            }),
        );
        assert_eq!(
            next_events(&mut watch, 3).await,
            [
                event("ADDED", "vc-vm-1".into()),
                event("DELETED", "vc-vm-3".into()),
                event("MODIFIED", "vc-vm-1".into()),
            ]
        );
    }
}
