//! JSON answers written straight from the typed objects, never through a
//! `serde_json::Value` tree of them. A list is streamed in chunks, so even a
//! list of every VM is never one buffer in memory.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// A list body is sent in chunks of about this size.
const CHUNK: usize = 64 * 1024;
/// Room past [`CHUNK`] for the object that fills a chunk.
const SLACK: usize = 16 * 1024;

/// A list of `kind` with `metadata` and `items`, each serialized as the body
/// is sent. A serialization error (none of our types has one) cuts the body.
pub fn list<T: Serialize + Send + Sync + 'static>(
    api_version: &str,
    kind: &str,
    metadata: &Value,
    items: Vec<Arc<T>>,
) -> Response {
    let mut chunk = Vec::with_capacity(CHUNK + SLACK);
    chunk.extend_from_slice(
        format!(
            r#"{{"apiVersion":{},"kind":{},"metadata":{metadata},"items":["#,
            Value::from(api_version),
            Value::from(kind),
        )
        .as_bytes(),
    );
    let mut items = items.into_iter().peekable();
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        while let Some(item) = items.next() {
            if let Err(e) = serde_json::to_writer(&mut chunk, item.as_ref()) {
                done = true;
                return Some(Err(e));
            }
            if items.peek().is_some() {
                chunk.push(b',');
            }
            if chunk.len() >= CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK + SLACK));
                return Some(Ok(Bytes::from(full)));
            }
        }
        chunk.extend_from_slice(b"]}");
        done = true;
        Some(Ok(Bytes::from(std::mem::take(&mut chunk))))
    });
    (
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

#[derive(Serialize)]
struct Event<'a, O: ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a O,
}

/// One line of a watch: `{"type":…,"object":…}` and a newline.
pub fn event<O: Serialize + ?Sized>(kind: &str, object: &O) -> Result<Bytes, serde_json::Error> {
    let mut line = serde_json::to_vec(&Event { kind, object })?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn lists_stream_every_item() {
        let metadata = json!({"resourceVersion": "7"});
        let big = json!({"pad": "x".repeat(CHUNK)});
        for items in [
            vec![],
            vec![json!(1)],
            vec![json!({}), big.clone(), json!([]), big],
        ] {
            let response = list(
                "v1",
                "ThingList",
                &metadata,
                items.iter().cloned().map(Arc::new).collect(),
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let list: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                list,
                json!({"apiVersion": "v1", "kind": "ThingList", "metadata": metadata, "items": items})
            );
        }
    }

    #[test]
    fn events_wrap_the_object() {
        let line = event("ADDED", &json!({"a": 1})).unwrap();
        assert_eq!(&line[..], b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
    }
}
