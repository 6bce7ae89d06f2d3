//! `get` and `list` of inventory resources: selectors, pages, JSON or Table.
//! One generic path serves every resource (`resources/`).

use std::sync::Arc;

use axum::Json;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vmm_api::inventory;
use vmm_query::selector::{FieldSelector, LabelSelector};
use vmm_query::{ContinueToken, ListQuery};

use crate::json;
use crate::resources::{InventoryResource, selected};
use crate::status::ApiError;
use crate::store::Store;
use crate::table;

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
    Ok((query.label_selector()?, query.field_selector(&T::FIELDS)?))
}

/// `GET` of a collection.
pub fn list<T: InventoryResource>(
    store: &Store,
    namespace: Option<&str>,
    query: &ListQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let format = negotiate(headers)?;
    let include = query.include_object()?;
    let (labels, fields) = selectors::<T>(query)?;
    let limit = query.limit()?;

    let current = T::snapshot(store, namespace);
    let (snapshot, start_after) = match query.continue_token()? {
        None => (current, None),
        Some(token) => {
            let snapshot = match token.version == current.version {
                true => current,
                false => store
                    .pages()
                    .find(T::NAMES.plural, namespace, token.version)
                    .ok_or_else(|| {
                        ApiError::expired(
                            "this list's continue token expired (it is kept 5 minutes, or until 64 newer lists are paged); list again without it",
                        )
                    })?,
            };
            (snapshot, Some((token.namespace, token.name)))
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
        let token = ContinueToken {
            version: snapshot.version,
            namespace: ns.to_owned(),
            name: name.to_owned(),
        };
        metadata["continue"] = json!(token.to_string());
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
            let mut table = table::table([object.as_ref()], json!({}), query.include_object()?);
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
}
