//! A stand-in kube-apiserver for unit tests of the review clients: a
//! `kube::Client` whose every POST is answered by a closure.

use std::sync::Arc;

use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::Value;

/// `handler(path, request body)` returns the fields to set on the echoed
/// request object (e.g. `{"status": …}`), or the HTTP status of a failure.
pub fn fake_apiserver(
    handler: impl Fn(&str, Value) -> Result<Value, StatusCode> + Send + Sync + 'static,
) -> kube::Client {
    let handler = Arc::new(handler);
    let service = tower::service_fn(move |request: Request<Body>| {
        let handler = handler.clone();
        async move {
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect().await?.to_bytes();
            let mut object: Value = serde_json::from_slice(&bytes)?;
            let response = match handler(&path, object.clone()) {
                Ok(Value::Object(fields)) => {
                    for (key, value) in fields {
                        object[key] = value;
                    }
                    Response::new(Body::from(serde_json::to_vec(&object)?))
                }
                Ok(other) => panic!("answer with an object, not {other}"),
                Err(code) => {
                    let status = serde_json::json!({
                        "apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "code": code.as_u16(), "message": "fake failure", "reason": "ServiceUnavailable",
                    });
                    let mut response = Response::new(Body::from(serde_json::to_vec(&status)?));
                    *response.status_mut() = code;
                    response
                }
            };
            Ok::<_, tower::BoxError>(response)
        }
    });
    kube::Client::new(service, "default")
}
