//! Streaming a watch as newline-delimited JSON events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use shoal_api::KindInfo;

use crate::http::table::{self, IncludeObject};
use crate::http::Closing;
use crate::metrics::Metrics;
use crate::resource::WatchItem;

/// How watch events are rendered.
#[derive(Clone, Copy, Debug)]
pub struct WatchFormat {
    /// Objects as Table rows (kubectl get -w).
    pub table: Option<IncludeObject>,
}

struct OpenWatch(Arc<Metrics>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.watches.dec();
    }
}

fn bookmark(kind: &KindInfo, rv: i64, annotations: Value) -> Value {
    json!({
        "type": "BOOKMARK",
        "object": {
            "kind": kind.kind, "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": rv.to_string(), "annotations": annotations},
        },
    })
}

/// One watch item as a line of the stream. An event's object is written from
/// its shared serialisation, made once for every watch that sends it.
fn encode(kind: &KindInfo, item: WatchItem, format: WatchFormat, first: &mut bool) -> Bytes {
    let value = match item {
        WatchItem::Event(ty, obj) => match format.table {
            Some(include) => {
                let t = table::table(
                    kind,
                    std::slice::from_ref(obj.value()),
                    include,
                    *first,
                    None,
                    None,
                );
                *first = false;
                json!({ "type": ty.as_str(), "object": t })
            }
            None => return event_line(ty.as_str(), &obj.json()),
        },
        WatchItem::Bookmark(rv) => bookmark(kind, rv, json!({})),
        WatchItem::InitialEventsEnd(rv) => {
            bookmark(kind, rv, json!({ "k8s.io/initial-events-end": "true" }))
        }
        WatchItem::Error(e) => json!({ "type": "ERROR", "object": e.to_status() }),
    };
    let mut line = serde_json::to_vec(&value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `{"type":TYPE,"object":OBJECT}` and a newline, around an object already in JSON.
fn event_line(ty: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + ty.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(ty.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// The streaming response of a watch, ending after `timeout` or when the
/// server starts shutting down; clients then watch again from their last
/// resourceVersion.
pub fn watch_response(
    kind: &'static KindInfo,
    items: impl Stream<Item = WatchItem> + Send + 'static,
    format: WatchFormat,
    timeout: Option<Duration>,
    closing: Closing,
    metrics: Arc<Metrics>,
) -> Response<Body> {
    metrics.watches.inc();
    let guard = OpenWatch(metrics);
    let deadline = async move {
        let timer = async move {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => futures::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = timer => {}
            () = closing.wait() => {}
        }
    };
    let mut first = true;
    let mut ended = false;
    let body = items
        .take_until(deadline)
        .take_while(move |item| {
            let go = !ended;
            ended = matches!(item, WatchItem::Error(_));
            futures::future::ready(go)
        })
        .map(move |item| {
            let _keep = &guard;
            Ok::<_, Infallible>(encode(kind, item, format, &mut first))
        });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}
