//! The CLI's side of OpenID Connect: getting, refreshing and revoking a user's
//! tokens for a public (native) client.
//!
//! - [`pkce`]: the PKCE verifier and S256 challenge, and random state and nonce.
//! - [`auth_code`]: the authorization code flow with PKCE through a loopback
//!   redirect ([`loopback`] answers the browser on 127.0.0.1).
//! - [`device`]: the device authorization grant (RFC 8628).
//! - [`web`]: the same flow for a web page (the web UI) whose callback URL is
//!   its own, with the round trip's values kept by the page.
//! - [`token`]: the token endpoint (code exchange, refresh) and revocation (RFC 7009).
//! - [`claims`]: reading an ID token's `exp` and `nonce` without verifying it
//!   (the server verifies; the client only needs to know when to refresh).

pub mod auth_code;
pub mod claims;
pub mod device;
pub mod loopback;
pub mod pkce;
pub mod token;
pub mod web;

/// The HTTP client the flows take ([`crate::http::client`] builds one), so that
/// callers need no direct reqwest dependency.
pub type HttpClient = reqwest::Client;

/// The scopes Shoal asks for: identity, email, groups and a refresh token.
pub const SCOPES: &str = "openid email profile groups offline_access";

/// Why a flow failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// An endpoint could not be reached.
    #[error("cannot reach {url}: {source}")]
    Http {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An endpoint answered with something that is not the expected JSON.
    #[error("{url} answered HTTP {status} with an unexpected body: {detail}")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The issuer refused the request with an OAuth error.
    #[error("{url} refused the request ({error}){}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        /// The endpoint.
        url: String,
        /// The OAuth `error` code, e.g. `invalid_grant`.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The issuer does not offer the device flow.
    #[error("the issuer {issuer} offers no device_authorization_endpoint: log in without --device (the browser flow)")]
    NoDeviceEndpoint {
        /// The issuer.
        issuer: String,
    },
    /// The issuer does not offer token revocation.
    #[error("the issuer {issuer} offers no revocation_endpoint: the refresh token was only removed locally; end the session at the issuer")]
    NoRevocationEndpoint {
        /// The issuer.
        issuer: String,
    },
    /// The loopback listener could not be opened.
    #[error("cannot listen on 127.0.0.1 for the browser's redirect: {0}; try --device")]
    Listen(#[source] std::io::Error),
    /// The browser did not come back in time.
    #[error("no sign-in arrived at the loopback redirect within {seconds} s: open the printed URL in a browser on this machine, or use --device")]
    CallbackTimeout {
        /// How long the flow waited.
        seconds: u64,
    },
    /// The redirect carried another state than the one sent (a forged or stale redirect).
    #[error("the redirect's state does not match this sign-in: start 'shoal login --oidc' again")]
    StateMismatch,
    /// The issuer sent the browser back with an error.
    #[error("the issuer refused the sign-in ({error}){}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        /// The OAuth `error` code, e.g. `access_denied`.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The ID token's nonce is not the one sent.
    #[error("the ID token's nonce does not match this sign-in: start 'shoal login --oidc' again")]
    NonceMismatch,
    /// The token response has no ID token (the `openid` scope was dropped?).
    #[error("{url} returned no id_token: check that the client may use the openid scope")]
    NoIdToken {
        /// The token endpoint.
        url: String,
    },
    /// The ID token is not a JWT with a JSON payload.
    #[error("the ID token is malformed: {0}")]
    MalformedIdToken(String),
    /// The device code expired before anyone approved it.
    #[error(
        "the device code expired before it was approved: run the login again and approve it sooner"
    )]
    DeviceExpired,
}

impl FlowError {
    /// True when the issuer says the grant (refresh token, code) is no longer
    /// valid: the user has to sign in again.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, FlowError::OAuth { error, .. } if error == "invalid_grant")
    }
}
