//! The authorization code flow with PKCE for a native client: the user signs
//! in in a browser, which comes back to a loopback listener with the code.

use std::time::Duration;

use super::claims;
use super::loopback::Loopback;
use super::pkce::{random_token, Pkce};
use super::token::{post_form, TokenResponse};
use super::{FlowError, SCOPES};
use crate::discovery::ProviderMetadata;

/// What an authorization request carries.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    /// The client id.
    pub client_id: &'a str,
    /// The loopback redirect URI.
    pub redirect_uri: &'a str,
    /// The state the redirect must carry back.
    pub state: &'a str,
    /// The nonce the ID token must carry.
    pub nonce: &'a str,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
}

/// The URL the browser opens.
pub fn authorization_url(authorization_endpoint: &str, req: &AuthRequest<'_>) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", req.client_id)
        .append_pair("redirect_uri", req.redirect_uri)
        .append_pair("scope", SCOPES)
        .append_pair("state", req.state)
        .append_pair("nonce", req.nonce)
        .append_pair("code_challenge", req.code_challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("prompt", "consent")
        .finish();
    let sep = if authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{authorization_endpoint}{sep}{query}")
}

/// Runs the flow: opens a loopback listener, hands the authorization URL to
/// `show` (which prints it and may open a browser), waits up to `timeout` for
/// the redirect, exchanges the code and checks the ID token's nonce.
pub async fn login(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    show: impl FnOnce(&str),
    timeout: Duration,
) -> Result<TokenResponse, FlowError> {
    let loopback = Loopback::bind().await?;
    let pkce = Pkce::generate();
    let state = random_token(24);
    let nonce = random_token(24);
    let url = authorization_url(
        &meta.authorization_endpoint,
        &AuthRequest {
            client_id,
            redirect_uri: loopback.redirect_uri(),
            state: &state,
            nonce: &nonce,
            code_challenge: &pkce.challenge,
        },
    );
    show(&url);
    let code = loopback.wait(&state, timeout).await?;
    let tokens: TokenResponse = post_form(
        http,
        &meta.token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", loopback.redirect_uri()),
            ("client_id", client_id),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await?;
    let id_token = tokens
        .id_token
        .as_deref()
        .ok_or_else(|| FlowError::NoIdToken {
            url: meta.token_endpoint.clone(),
        })?;
    if claims::decode(id_token)?.nonce.as_deref() != Some(nonce.as_str()) {
        return Err(FlowError::NonceMismatch);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_url_carries_every_parameter_encoded() {
        let url = authorization_url(
            "https://issuer.example/auth",
            &AuthRequest {
                client_id: "shoal",
                redirect_uri: "http://127.0.0.1:4711/callback",
                state: "st",
                nonce: "no",
                code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            },
        );
        let parsed = reqwest::Url::parse(&url).expect("a URL");
        assert_eq!(parsed.path(), "/auth");
        let q: std::collections::HashMap<String, String> =
            parsed.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "shoal");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:4711/callback");
        assert_eq!(q["scope"], SCOPES);
        assert_eq!(q["state"], "st");
        assert_eq!(q["nonce"], "no");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["code_challenge"],
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A4711%2Fcallback"));
        assert!(url.contains("scope=openid+email"));
    }

    #[test]
    fn an_endpoint_with_a_query_keeps_it() {
        let url = authorization_url(
            "https://issuer.example/auth?tenant=a",
            &AuthRequest {
                client_id: "c",
                redirect_uri: "r",
                state: "s",
                nonce: "n",
                code_challenge: "x",
            },
        );
        assert!(url.starts_with("https://issuer.example/auth?tenant=a&response_type=code"));
    }
}
