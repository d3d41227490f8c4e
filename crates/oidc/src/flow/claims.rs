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
    /// Issue time, seconds since the epoch, if the issuer sent it.
    #[serde(default)]
    pub iat: Option<u64>,
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

/// True when the token should be refreshed before use: it expires within
/// `max_margin_secs`, or within a quarter of its lifetime when that is shorter
/// (a token that lives 60 s is used for 45 s, not refreshed on every use).
pub fn refresh_due(claims: &UnverifiedClaims, now: u64, max_margin_secs: u64) -> bool {
    let margin = match claims.iat {
        Some(iat) => max_margin_secs.min(claims.exp.saturating_sub(iat) / 4),
        None => max_margin_secs,
    };
    expires_within(claims, now, margin)
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
    fn short_lived_tokens_are_used_for_three_quarters_of_their_life() {
        let c = decode(&jwt(
            &serde_json::json!({"iat": 1_000u64, "exp": 1_060u64, "sub": "alice"}),
        ))
        .expect("decodes");
        assert_eq!(c.iat, Some(1_000));
        assert!(!refresh_due(&c, 1_044, 30));
        assert!(refresh_due(&c, 1_045, 30));
        // A long-lived token keeps the full margin.
        let long = UnverifiedClaims {
            iat: Some(0),
            exp: 3_600,
            ..UnverifiedClaims::default()
        };
        assert!(!refresh_due(&long, 3_569, 30));
        assert!(refresh_due(&long, 3_570, 30));
        // Without iat the margin is the maximum.
        let no_iat = UnverifiedClaims {
            exp: 1_060,
            ..UnverifiedClaims::default()
        };
        assert!(refresh_due(&no_iat, 1_030, 30));
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
