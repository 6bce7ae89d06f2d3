//! `get` and `list` of inventory resources: selectors, pages, JSON or Table.
//! One generic path serves every resource (`resources/`).

use std::sync::Arc;

use axum::Json;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use vmm_api::inventory;

use crate::json;
use crate::resources::{InventoryResource, selected};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::Store;
use crate::table::{self, IncludeObject};

/// The query parameters of a list; others (e.g. `timeoutSeconds`) are ignored,
/// as kube-apiserver ignores what does not apply.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    include_object: Option<String>,
    watch: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) send_initial_events: Option<String>,
    pub(crate) allow_watch_bookmarks: Option<String>,
    pub(crate) timeout_seconds: Option<String>,
}

impl ListQuery {
    /// `watch` counts as asked for unless it is `0` or `false`, as `authz::attributes` reads it.
    pub fn wants_watch(&self) -> bool {
        self.watch
            .as_deref()
            .is_some_and(|w| w != "0" && w != "false")
    }
}

/// How the client wants the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Table { version: &'static str },
}

pub(crate) fn negotiate(headers: &HeaderMap) -> Result<Format, ApiError> {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("");
        let params: Vec<&str> = parts.collect();
        let table = params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io");
        match kind {
            "application/json" | "*/*" | "application/*" if table => {
                if params.contains(&"v=v1") {
                    return Ok(Format::Table {
                        version: "meta.k8s.io/v1",
                    });
                }
                if params.contains(&"v=v1beta1") {
                    return Ok(Format::Table {
                        version: "meta.k8s.io/v1beta1",
                    });
                }
            }
            "application/json" | "*/*" | "application/*"
                if !params.iter().any(|p| p.starts_with("as=")) =>
            {
                return Ok(Format::Json);
            }
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(accept))
}

pub(crate) fn include_object(query: &ListQuery) -> Result<IncludeObject, ApiError> {
    match query.include_object.as_deref() {
        None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
        Some("None") => Ok(IncludeObject::None),
        Some("Object") => Ok(IncludeObject::Object),
        Some(other) => Err(ApiError::bad_request(format!(
            "includeObject must be None, Metadata or Object, not {other:?}"
        ))),
    }
}

/// A page boundary: the version the list was read at and the last key served.
/// Names and namespaces are DNS-1123, so `/` cannot occur inside them.
fn continue_token(version: u64, namespace: &str, name: &str) -> String {
    format!("{version}/{namespace}/{name}")
}

fn parse_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let malformed = || {
        ApiError::bad_request(format!(
            "continue token {token:?} is not one this server issued"
        ))
    };
    let mut parts = token.splitn(3, '/');
    let version = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(malformed)?;
    let namespace = parts.next().ok_or_else(malformed)?;
    let name = parts
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(malformed)?;
    Ok((version, namespace.to_owned(), name.to_owned()))
}

/// `(namespace, name)`, the order the store keeps and pages follow.
fn key<T: InventoryResource>(item: &T) -> (&str, &str) {
    let meta = item.metadata();
    (
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    )
}

/// The query's label and field selectors, parsed for kind `T`.
pub(crate) fn selectors<T: InventoryResource>(
    query: &ListQuery,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let bad = |e: crate::selector::SelectorError| ApiError::bad_request(e.to_string());
    let labels =
        LabelSelector::parse(query.label_selector.as_deref().unwrap_or("")).map_err(bad)?;
    let fields = T::FIELDS
        .parse(query.field_selector.as_deref().unwrap_or(""))
        .map_err(bad)?;
    Ok((labels, fields))
}

/// `GET` of a collection.
pub fn list<T: InventoryResource>(
    store: &Store,
    namespace: Option<&str>,
    query: &ListQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let format = negotiate(headers)?;
    let include = include_object(query)?;
    let (labels, fields) = selectors::<T>(query)?;
    let limit = match query.limit.as_deref() {
        None | Some("") => 0,
        Some(text) => text.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("limit must be a whole number, not {text:?}"))
        })?,
    };

    let current = T::snapshot(store, namespace);
    let (snapshot, start_after) = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
        None => (current, None),
        Some(token) => {
            let (version, ns, name) = parse_continue(token)?;
            let snapshot = match version == current.version {
                true => current,
                false => store
                    .pages()
                    .find(T::NAMES.plural, namespace, version)
                    .ok_or_else(|| {
                        ApiError::expired(
                            "this list's continue token expired (it is kept 5 minutes, or until 64 newer lists are paged); list again without it",
                        )
                    })?,
            };
            (snapshot, Some((ns, name)))
        }
    };
    let mut matching = snapshot.items.iter().filter(|item| {
        start_after
            .as_ref()
            .is_none_or(|(ns, name)| key(item.as_ref()) > (ns.as_str(), name.as_str()))
            && selected(item.as_ref(), &labels, &fields)
    });
    let page: Vec<&Arc<T>> = if limit == 0 {
        matching.by_ref().collect()
    } else {
        matching.by_ref().take(limit).collect()
    };
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": snapshot.version.to_string()});
    if let (true, Some(last)) = (remaining > 0, page.last()) {
        store.pages().keep(T::NAMES.plural, namespace, &snapshot);
        let (ns, name) = key(last.as_ref());
        metadata["continue"] = json!(continue_token(snapshot.version, ns, name));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(match format {
        Format::Table { version } => {
            let mut table = table::table(page.iter().map(|i| i.as_ref()), metadata, include);
            table["apiVersion"] = json!(version);
            Json(table).into_response()
        }
        Format::Json => json::list(
            inventory::API_VERSION,
            &format!("{}List", T::NAMES.kind),
            &metadata,
            page.into_iter().cloned().collect(),
        ),
    })
}

/// `GET` of one object.
pub fn get<T: InventoryResource>(
    store: &Store,
    namespace: &str,
    name: &str,
    query: &ListQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let format = negotiate(headers)?;
    let object = T::one(store, namespace, name)
        .ok_or_else(|| ApiError::not_found(inventory::GROUP, T::NAMES.plural, name))?;
    Ok(match format {
        Format::Table { version } => {
            let mut table = table::table([object.as_ref()], json!({}), include_object(query)?);
            table["apiVersion"] = json!(version);
            Json(table).into_response()
        }
        Format::Json => Json(object.as_ref()).into_response(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn negotiates_what_kubectl_and_clients_send() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let cases = [
            ("", Ok(Format::Json)),
            ("application/json", Ok(Format::Json)),
            ("*/*", Ok(Format::Json)),
            (
                kubectl,
                Ok(Format::Table {
                    version: "meta.k8s.io/v1",
                }),
            ),
            (
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
                Ok(Format::Table {
                    version: "meta.k8s.io/v1beta1",
                }),
            ),
            (
                "application/vnd.kubernetes.protobuf,application/json",
                Ok(Format::Json),
            ),
            ("application/vnd.kubernetes.protobuf", Err(())),
            (
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
                Err(()),
            ),
            ("text/html", Err(())),
        ];
        for (accept, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_str(accept).unwrap());
            assert_eq!(negotiate(&headers).map_err(|_| ()), want, "{accept}");
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        assert_eq!(
            parse_continue(&continue_token(7, "ns", "vc-vm-1")).unwrap(),
            (7, "ns".into(), "vc-vm-1".into())
        );
        for garbage in [
            "", "x", "7", "7/ns", "7/ns/", "abc/ns/x", "-1/ns/x", "\u{0}",
        ] {
            assert_eq!(
                parse_continue(garbage).unwrap_err().code(),
                axum::http::StatusCode::BAD_REQUEST,
                "{garbage:?}"
            );
        }
    }
}
