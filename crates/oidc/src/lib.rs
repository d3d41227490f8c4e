//! OpenID Connect for Shoal.
//!
//! - [`discovery`]: an issuer's `/.well-known/openid-configuration`.
//! - [`http`]: the HTTP client used to reach an issuer, trusting an optional CA file.
//! - [`verify`]: ID token verification for the API server (signature against the
//!   issuer's JWKS, `iss`, `aud`, `exp`, `nbf`), with the keys cached and refreshed
//!   on an unknown `kid`.
//! - [`flow`]: the CLI's side: authorization code with PKCE and a loopback
//!   redirect, the device code flow, refresh and revocation.
//!
//! It depends on no other Shoal crate and keeps no state beyond caches: it never
//! touches the store, the API server's internals or a user's files.

pub mod discovery;
pub mod flow;
pub mod http;
pub mod verify;

/// An error and its sources, joined with ": ", so that a TLS or connection
/// failure's cause (an unknown CA, a refused connection) reaches the message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
