//! The authorization code flow with PKCE for a web page that signs its users
//! in: the browser goes to the issuer and comes back to the page's callback
//! URL. What the round trip needs (state, PKCE verifier, nonce) travels as one
//! text the page keeps, in a cookie, between [`start`] and [`finish`].

use super::auth_code::{authorization_url, AuthRequest};
use super::claims;
use super::pkce::{random_token, Pkce};
use super::token::{post_form, TokenResponse};
use super::FlowError;
use crate::discovery::ProviderMetadata;

/// Why the browser's sign-in did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WebFlowError {
    /// The kept text is not what [`start`] made.
    #[error("this sign-in's saved state is damaged: start the sign-in again")]
    BadKept,
    /// The redirect carried another state than the one sent.
    #[error("the redirect does not belong to this browser's sign-in: start the sign-in again")]
    StateMismatch,
    /// The ID token's nonce is not the one sent.
    #[error("the ID token was not issued for this sign-in: start the sign-in again")]
    NonceMismatch,
    /// The code exchange failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
}

/// The kept values, joined by dots (base64url never holds one).
struct Kept {
    state: String,
    verifier: String,
    nonce: String,
}

impl Kept {
    fn encode(&self) -> String {
        format!("{}.{}.{}", self.state, self.verifier, self.nonce)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let kept = Self {
            state: parts.next()?.to_owned(),
            verifier: parts.next()?.to_owned(),
            nonce: parts.next()?.to_owned(),
        };
        let whole = parts.next().is_none()
            && [&kept.state, &kept.verifier, &kept.nonce]
                .iter()
                .all(|p| !p.is_empty());
        whole.then_some(kept)
    }
}

/// The authorization URL to send the browser to, and the text to keep until it
/// comes back to `redirect_uri`.
pub fn start(meta: &ProviderMetadata, client_id: &str, redirect_uri: &str) -> (String, String) {
    let pkce = Pkce::generate();
    let kept = Kept {
        state: random_token(24),
        verifier: pkce.verifier,
        nonce: random_token(24),
    };
    let url = authorization_url(
        &meta.authorization_endpoint,
        &AuthRequest {
            client_id,
            redirect_uri,
            state: &kept.state,
            nonce: &kept.nonce,
            code_challenge: &pkce.challenge,
        },
    );
    (url, kept.encode())
}

/// Exchanges the callback's `code` after checking its `state` against `kept`;
/// returns the ID token once its nonce matches.
pub async fn finish(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    redirect_uri: &str,
    code: &str,
    state: &str,
    kept: &str,
) -> Result<String, WebFlowError> {
    let kept = Kept::decode(kept).ok_or(WebFlowError::BadKept)?;
    if kept.state != state {
        return Err(WebFlowError::StateMismatch);
    }
    let tokens: TokenResponse = post_form(
        http,
        &meta.token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("code_verifier", &kept.verifier),
        ],
    )
    .await?;
    let id_token = tokens.id_token.ok_or_else(|| FlowError::NoIdToken {
        url: meta.token_endpoint.clone(),
    })?;
    if claims::decode(&id_token)?.nonce.as_deref() != Some(kept.nonce.as_str()) {
        return Err(WebFlowError::NonceMismatch);
    }
    Ok(id_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_values_survive_the_round_trip_and_damage_is_seen() {
        let kept = Kept {
            state: "s".into(),
            verifier: "v".into(),
            nonce: "n".into(),
        };
        let back = Kept::decode(&kept.encode());
        assert_eq!(
            back.map(|k| (k.state, k.verifier, k.nonce)),
            Some(("s".into(), "v".into(), "n".into()))
        );
        for bad in ["", "a.b", "a.b.c.d", "a..c"] {
            assert!(Kept::decode(bad).is_none(), "{bad:?}");
        }
    }
}
