//! Reading an ID token's claims without verifying it: the API server verifies
//! tokens; the client only needs to know when one expires and whether its
//! nonce is the one it sent.

use base64::Engine;
use serde::Deserialize;

use super::FlowError;

/// The claims the client looks at.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct UnverifiedClaims {
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// The nonce of the authorization request, if any.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// The email, if the issuer sent one.
    #[serde(default)]
    pub email: Option<String>,
}

/// Decodes the payload of `id_token` (no signature check).
pub fn decode(id_token: &str) -> Result<UnverifiedClaims, FlowError> {
    let mut parts = id_token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FlowError::MalformedIdToken(
            "not three dot-separated parts".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| FlowError::MalformedIdToken(format!("payload is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| FlowError::MalformedIdToken(format!("payload has no numeric exp: {e}")))
}

/// True when the token expires within `margin_secs` of `now` (seconds since
/// the epoch), so it should be refreshed before use.
pub fn expires_within(claims: &UnverifiedClaims, now: u64, margin_secs: u64) -> bool {
    claims.exp <= now.saturating_add(margin_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &serde_json::Value) -> String {
        let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            enc(br#"{"alg":"RS256"}"#),
            enc(payload.to_string().as_bytes())
        )
    }

    #[test]
    fn exp_and_nonce_are_read() {
        let c = decode(&jwt(
            &serde_json::json!({"exp": 1700000000u64, "nonce": "n", "sub": "alice"}),
        ))
        .expect("decodes");
        assert_eq!(c.exp, 1_700_000_000);
        assert_eq!(c.nonce.as_deref(), Some("n"));
        assert!(expires_within(&c, 1_699_999_980, 30));
        assert!(!expires_within(&c, 1_699_999_900, 30));
    }

    #[test]
    fn malformed_tokens_are_named() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "a.!!.c",
            &jwt(&serde_json::json!({"sub": "x"})),
        ] {
            assert!(
                matches!(decode(t), Err(FlowError::MalformedIdToken(_))),
                "{t:?}"
            );
        }
    }
}
