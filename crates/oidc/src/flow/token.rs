//! The token endpoint (code exchange, refresh) and revocation (RFC 7009).

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::FlowError;
use crate::discovery::ProviderMetadata;

/// What a token endpoint returns.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    /// The access token (Shoal does not use it).
    #[serde(default)]
    pub access_token: Option<String>,
    /// The ID token, what Shoal sends as the bearer token.
    #[serde(default)]
    pub id_token: Option<String>,
    /// The refresh token, when the issuer grants `offline_access`.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds the access token lives.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The OAuth error body (RFC 6749 section 5.2).
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The error for a non-success answer: the OAuth error when the body is one,
/// else the status and the start of the body.
pub fn error_from_body(url: &str, status: u16, body: &str) -> FlowError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => FlowError::OAuth {
            url: url.to_owned(),
            error: e.error,
            description: e.error_description.filter(|d| !d.is_empty()),
        },
        Err(_) => FlowError::BadResponse {
            url: url.to_owned(),
            status,
            detail: body.chars().take(200).collect(),
        },
    }
}

/// POSTs `form` to `url` and reads a JSON answer; OAuth errors become
/// [`FlowError::OAuth`].
pub async fn post_form<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<T, FlowError> {
    let http_err = |source| FlowError::Http {
        url: url.to_owned(),
        source,
    };
    let resp = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(http_err)?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(http_err)?;
    if !(200..300).contains(&status) {
        return Err(error_from_body(url, status, &body));
    }
    serde_json::from_str(&body).map_err(|e| FlowError::BadResponse {
        url: url.to_owned(),
        status,
        detail: e.to_string(),
    })
}

/// Exchanges a refresh token for fresh tokens. The response's `refresh_token`
/// replaces the old one when the issuer rotates them.
pub async fn refresh(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    refresh_token: &str,
) -> Result<TokenResponse, FlowError> {
    let tokens: TokenResponse = post_form(
        http,
        &meta.token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await?;
    if tokens.id_token.is_none() {
        return Err(FlowError::NoIdToken {
            url: meta.token_endpoint.clone(),
        });
    }
    Ok(tokens)
}

/// Revokes a refresh token (RFC 7009). Revoking an unknown or already revoked
/// token succeeds, as the RFC says.
pub async fn revoke(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    refresh_token: &str,
) -> Result<(), FlowError> {
    let url =
        meta.revocation_endpoint
            .as_deref()
            .ok_or_else(|| FlowError::NoRevocationEndpoint {
                issuer: meta.issuer.clone(),
            })?;
    let http_err = |source| FlowError::Http {
        url: url.to_owned(),
        source,
    };
    let resp = http
        .post(url)
        .form(&[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .map_err(http_err)?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = resp.text().await.map_err(http_err)?;
    Err(error_from_body(url, status, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_are_mapped_with_their_description() {
        let e = error_from_body(
            "https://i/token",
            400,
            r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
        );
        assert!(e.is_invalid_grant(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "https://i/token refused the request (invalid_grant): grant request is invalid"
        );
        let e = error_from_body("https://i/token", 400, r#"{"error":"invalid_client"}"#);
        assert!(!e.is_invalid_grant());
        assert_eq!(
            e.to_string(),
            "https://i/token refused the request (invalid_client)"
        );
    }

    #[test]
    fn other_bodies_keep_status_and_text() {
        let e = error_from_body("https://i/token", 502, "<html>bad gateway</html>");
        assert!(
            matches!(&e, FlowError::BadResponse { status: 502, detail, .. } if detail.contains("bad gateway")),
            "{e:?}"
        );
    }

    #[test]
    fn tokens_are_redacted_in_debug_output() {
        let t: TokenResponse = serde_json::from_str(
            r#"{"id_token":"secret-id","refresh_token":"secret-rt","expires_in":60}"#,
        )
        .expect("parses");
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
