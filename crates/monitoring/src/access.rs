//! Who is asking: the caller's token, a client of the public API that acts with
//! it, and refusals as Kubernetes `Status` answers. Discovery and the front ends
//! both decide through the API what a token may see, so Shoal's authorization
//! stays in one place.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// A Kubernetes `Status` answer with `reason` and a message that says what to do.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// A client of the API (settings `api`, without credentials) that acts as `token`.
pub(crate) fn user_client(api: &kube::Config, token: &str) -> Result<kube::Client, kube::Error> {
    let mut api = api.clone();
    api.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_needs_the_scheme_and_a_token() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  "));
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer shoal.a.b"),
        );
        assert_eq!(bearer(&h).as_deref(), Some("shoal.a.b"));
    }
}
