//! Errors as Kubernetes `Status` objects: kubectl prints a clean message only when
//! the body is `kind: Status` with a `reason` and a `code` matching the HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};

/// A failed request, ready to be answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    /// Boxed: `StatusDetails` is large, and `ApiError` is every handler's `Err`.
    details: Option<Box<StatusDetails>>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// A path this server does not serve at all.
    pub fn no_such_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource}.{group} {name:?} not found"),
        )
    }

    /// A `continue` token the server can no longer serve: list again.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!("only application/json and meta.k8s.io Tables are served, not {accept:?}"),
        )
    }

    /// The inventory is read-only: it mirrors the sources.
    pub fn method_not_allowed(verb: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported: the inventory is read-only and mirrors its sources; change the VM at its source"
            ),
        )
    }

    /// 403, worded like kube-apiserver's `NewForbidden`: `<resource>.<group>
    /// ["<name>"] is forbidden: <why>`, or `forbidden: <why>` for a path that is
    /// no resource (empty `resource`). `details` names the group, the resource
    /// (as `kind`, like kube-apiserver) and the object.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = match (resource, group) {
            ("", _) => String::new(),
            (resource, "") => resource.to_owned(),
            (resource, group) => format!("{resource}.{group}"),
        };
        let message = match (qualified.as_str(), name) {
            ("", _) => format!("forbidden: {why}"),
            (qualified, "") => format!("{qualified} is forbidden: {why}"),
            (qualified, name) => format!("{qualified} {name:?} is forbidden: {why}"),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            details: Some(Box::new(StatusDetails {
                group: some(group),
                kind: some(resource),
                name: some(name),
                ..StatusDetails::default()
            })),
            ..Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
        }
    }

    /// 500 for a failure of ours (or of a server we depend on), worded like
    /// kube-apiserver's `NewInternalError`.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// The HTTP status this error is answered with.
    pub fn code(&self) -> StatusCode {
        self.code
    }

    /// The `Status` object, also what a watch sends in an `ERROR` event.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code.as_u16())),
            message: Some(self.message.clone()),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
            details: self.details.as_deref().cloned(),
            ..Status::default()
        }
    }
}

/// A bad selector or list parameter: 400, with the query crate's message.
impl From<vmm_query::Error> for ApiError {
    fn from(error: vmm_query::Error) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(self.to_status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_is_what_kubectl_expects() {
        let status = serde_json::to_value(ApiError::unauthorized().to_status()).unwrap();
        assert_eq!(
            status,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            })
        );
    }

    #[test]
    fn forbidden_and_internal_read_like_kube_apiserver() {
        let status = serde_json::to_value(
            ApiError::forbidden("g.io", "things", "t-1", "User \"a\" cannot get").to_status(),
        )
        .unwrap();
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            "things.g.io \"t-1\" is forbidden: User \"a\" cannot get"
        );
        assert_eq!(
            status["details"],
            serde_json::json!({"group": "g.io", "kind": "things", "name": "t-1"})
        );
        let core = ApiError::forbidden("", "pods", "", "why").to_status();
        assert_eq!(core.message.as_deref(), Some("pods is forbidden: why"));
        let path = ApiError::forbidden("", "", "", "why").to_status();
        assert_eq!(path.message.as_deref(), Some("forbidden: why"));

        let internal = ApiError::internal("boom");
        assert_eq!(internal.code(), StatusCode::INTERNAL_SERVER_ERROR);
        let internal = internal.to_status();
        assert_eq!(internal.reason.as_deref(), Some("InternalError"));
        assert_eq!(
            internal.message.as_deref(),
            Some("Internal error occurred: boom")
        );
    }
}
