//! The browser session: the user's bearer token in an HttpOnly, SameSite=Strict,
//! Secure cookie for the whole server (`Path=/`), set by the web UI's sign-in and
//! read by the UI and the monitoring front ends. Both are served only on the
//! API's TLS listener, so the cookie is always Secure; the API itself reads only
//! `Authorization` headers, never the cookie.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

/// The cookie that holds the token.
pub const COOKIE_NAME: &str = "shoal_token";

/// The signed-in user's token from the request's cookies, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE_NAME)
}

/// The value of the request's cookie `wanted`, if it is there and not empty.
pub fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// Whether `token` can be stored in a cookie as is: RFC 6265 cookie-octets, which
/// Shoal tokens and JWTs always are.
pub fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.bytes().all(|b| {
            b == 0x21
                || (0x23..=0x2B).contains(&b)
                || (0x2D..=0x3A).contains(&b)
                || (0x3C..=0x5B).contains(&b)
                || (0x5D..=0x7E).contains(&b)
        })
}

/// The `Set-Cookie` header that stores `token` for the browser session.
pub fn set(headers: &mut HeaderMap, token: &str) -> Result<(), http::header::InvalidHeaderValue> {
    let value = HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; Path=/; HttpOnly; Secure; SameSite=Strict"
    ))?;
    headers.append(SET_COOKIE, value);
    Ok(())
}

/// The `Set-Cookie` header that removes the token.
pub fn clear(headers: &mut HeaderMap) {
    headers.append(
        SET_COOKIE,
        HeaderValue::from_static(
            "shoal_token=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; shoal_token=shoal.abc.def; b=2"),
        );
        assert_eq!(token(&h).as_deref(), Some("shoal.abc.def"));
        let mut empty = HeaderMap::new();
        empty.append(COOKIE, HeaderValue::from_static("shoal_token="));
        assert_eq!(token(&empty), None);
    }

    #[test]
    fn cookie_safe_refuses_separators_and_controls() {
        assert!(cookie_safe("shoal.ab_c-1.DEF="));
        assert!(!cookie_safe("a;b"));
        assert!(!cookie_safe("a b"));
        assert!(!cookie_safe("a\r\nSet-Cookie: x"));
        assert!(!cookie_safe(""));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure() {
        let mut h = HeaderMap::new();
        set(&mut h, "t").expect("a cookie-safe token");
        let v = h
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        for part in [
            "shoal_token=t",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
        ] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
    }
}
