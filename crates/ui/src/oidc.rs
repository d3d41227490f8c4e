//! Sign-in with the identity provider (OIDC): the authorization code flow with
//! PKCE, the browser going to the issuer and coming back to
//! `/ui/oidc/callback`. The server wires in the flow ([`OidcSignIn`]); the UI
//! keeps what the round trip needs in a short-lived cookie, and on return stores
//! the ID token as the session's bearer token, after the API has accepted it.

use std::future::Future;
use std::pin::Pin;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

use crate::html::{escape, page};
use crate::pages::{check_token, TokenCheck};
use crate::{session, UiConfig};

/// A boxed future, so that [`OidcSignIn`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a sign-in with the identity provider did not work; the text is for the
/// user and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The issuer could not be reached, or answered with something unusable.
    #[error("{0}")]
    Unavailable(String),
    /// The issuer or the flow's checks refused this sign-in.
    #[error("{0}")]
    Refused(String),
}

impl SignInError {
    fn status(&self) -> StatusCode {
        match self {
            SignInError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            SignInError::Refused(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

/// The browser sign-in with one OIDC issuer, provided by the server, which
/// already speaks OIDC for the CLI.
pub trait OidcSignIn: Send + Sync {
    /// The issuer's URL, named on the sign-in page.
    fn issuer(&self) -> &str;

    /// Where to send the browser, and what must be kept until it comes back
    /// (state, PKCE verifier and nonce) as one cookie-safe text.
    fn start<'a>(
        &'a self,
        redirect_uri: &'a str,
    ) -> BoxFuture<'a, Result<(String, String), SignInError>>;

    /// The ID token for the callback's `code` and `state`, given what
    /// [`OidcSignIn::start`] kept; a message for the user otherwise.
    fn finish<'a>(
        &'a self,
        redirect_uri: &'a str,
        code: &'a str,
        state: &'a str,
        kept: &'a str,
    ) -> BoxFuture<'a, Result<String, SignInError>>;
}

/// The cookie that carries the round trip's kept values.
const FLOW_COOKIE: &str = "shoal_oidc";

/// How long a sign-in at the issuer may take, in seconds.
const FLOW_SECS: u32 = 600;

/// The callback URL on the host the browser used: the request's authority
/// (HTTP/2 carries it there) or its Host header (HTTP/1.1).
fn redirect_uri(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = match uri.authority() {
        Some(authority) => authority.as_str(),
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let safe = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    safe.then(|| format!("https://{host}/ui/oidc/callback"))
}

/// A page that explains why the sign-in failed, with the way back.
fn failed(status: StatusCode, message: &str) -> Response {
    let body = format!(
        r#"<p class="error" role="alert">{}</p><p><a href="/ui/sign-in">Back to sign-in</a></p>"#,
        escape(message)
    );
    (status, Html(page("Sign-in failed", false, &body))).into_response()
}

/// `GET /ui/oidc/start`: sends the browser to the issuer.
pub async fn start(State(config): State<UiConfig>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(oidc) = config.oidc.as_deref() else {
        return failed(
            StatusCode::NOT_FOUND,
            "This server has no identity provider configured (shoal server --oidc-issuer-url): sign in with a token.",
        );
    };
    let Some(callback) = redirect_uri(&uri, &headers) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "The request names no usable host to come back to.",
        );
    };
    let (url, kept) = match oidc.start(&callback).await {
        Ok(started) => started,
        Err(e) => return failed(e.status(), &e.to_string()),
    };
    // Lax, not Strict: the browser must send it when the issuer sends it back.
    let cookie = format!(
        "{FLOW_COOKIE}={kept}; Path=/ui/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age={FLOW_SECS}"
    );
    let Ok(cookie) = HeaderValue::from_str(&cookie) else {
        return failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The sign-in could not be started.",
        );
    };
    let mut out = HeaderMap::new();
    out.append(SET_COOKIE, cookie);
    (out, Redirect::to(&url)).into_response()
}

/// What the issuer sends back.
#[derive(serde::Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /ui/oidc/callback`: exchanges the code, checks the ID token with the
/// API, and signs the browser in with it.
pub async fn callback(
    State(config): State<UiConfig>,
    uri: Uri,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Response {
    let Some(oidc) = config.oidc.as_deref() else {
        return failed(
            StatusCode::NOT_FOUND,
            "This server has no identity provider configured.",
        );
    };
    if let Some(error) = back.error {
        let detail = back.error_description.unwrap_or_default();
        return failed(
            StatusCode::UNAUTHORIZED,
            &format!("The identity provider refused the sign-in ({error}) {detail}"),
        );
    }
    let (Some(code), Some(state)) = (back.code, back.state) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "The identity provider sent no code and state: start the sign-in again.",
        );
    };
    let Some(kept) = session::cookie(&headers, FLOW_COOKIE) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here or took longer than 10 minutes: start it again.",
        );
    };
    let Some(callback) = redirect_uri(&uri, &headers) else {
        return failed(StatusCode::BAD_REQUEST, "The request names no usable host.");
    };
    let id_token = match oidc.finish(&callback, &code, &state, &kept).await {
        Ok(token) => token,
        Err(e) => return failed(e.status(), &e.to_string()),
    };
    match check_token(&config, &id_token).await {
        Ok(()) => {}
        Err(TokenCheck::Refused(e)) => {
            return failed(
                StatusCode::UNAUTHORIZED,
                &format!("The API did not accept your identity provider's token: {e}"),
            );
        }
        Err(TokenCheck::Unavailable(e)) => return failed(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
    let mut out = HeaderMap::new();
    if !session::cookie_safe(&id_token) || session::set(&mut out, &id_token).is_err() {
        return failed(
            StatusCode::BAD_GATEWAY,
            "The identity provider's token cannot be stored in a cookie.",
        );
    }
    out.append(
        SET_COOKIE,
        HeaderValue::from_static(
            "shoal_oidc=; Path=/ui/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age=0",
        ),
    );
    // A page that moves on by itself rather than a redirect: this response ends
    // a navigation the issuer started, and a browser sends SameSite=Strict cookies
    // only on navigations that start on this site.
    let body = r#"<p>Signed in. <a href="/ui/clusters">Continue to your clusters</a>.</p>"#;
    let html = page("Signed in", false, body).replacen(
        "<head>",
        r#"<head><meta http-equiv="refresh" content="0; url=/ui/clusters">"#,
        1,
    );
    (out, Html(html)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(http::header::HOST, v);
        }
        headers
    }

    #[test]
    fn the_callback_is_on_the_host_the_browser_used() {
        let h2: Uri = "https://shoal.example:6443/ui/oidc/start"
            .parse()
            .unwrap_or_default();
        assert_eq!(
            redirect_uri(&h2, &HeaderMap::new()).as_deref(),
            Some("https://shoal.example:6443/ui/oidc/callback")
        );
        let h1: Uri = "/ui/oidc/start".parse().unwrap_or_default();
        assert_eq!(
            redirect_uri(&h1, &host("127.0.0.1:8443")).as_deref(),
            Some("https://127.0.0.1:8443/ui/oidc/callback")
        );
        assert_eq!(redirect_uri(&h1, &HeaderMap::new()), None);
        assert_eq!(redirect_uri(&h1, &host("evil/path?x")), None);
    }
}
