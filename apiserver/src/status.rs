//! Errors as Kubernetes `Status` objects: kubectl prints a clean message only when
//! the body is `kind: Status` with a `reason` and a `code` matching the HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

/// A failed request, ready to be answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
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

    /// The `Status` object, also what a watch sends in an `ERROR` event.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code.as_u16())),
            message: Some(self.message.clone()),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
            ..Status::default()
        }
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
}
