//! Building responses: JSON bodies, Status errors and list documents.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use shoal_api::KindInfo;

use crate::error::ApiError;

/// A JSON response.
pub fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A `metav1.Status` error response.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let (code, _) = err.code_and_reason();
    let mut resp = json_response(code, &err.to_status());
    if code == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"shoal\""),
        );
    }
    let retry_after = err
        .to_status()
        .pointer("/details/retryAfterSeconds")
        .and_then(Value::as_u64);
    if let Some(secs) = retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// A `<Kind>List` document.
pub fn list_document(kind: &KindInfo, items: Vec<Value>, rv: i64, cont: Option<String>) -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    if let Some(c) = cont {
        meta.insert("continue".into(), Value::String(c));
    }
    json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": meta,
        "items": items,
    })
}
