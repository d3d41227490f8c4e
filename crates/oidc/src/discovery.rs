//! An issuer's discovery document, `/.well-known/openid-configuration`.

use serde::Deserialize;

/// What an issuer says about itself (the fields Shoal uses).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The issuer identifier; must equal the URL it was discovered from.
    pub issuer: String,
    /// Where the browser goes to sign in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// The issuer's signing keys.
    pub jwks_uri: String,
    /// Token revocation (RFC 7009), if offered.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// The device authorization endpoint (RFC 8628), if offered.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// Where a session ends, if offered.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// The signing algorithms the issuer uses for ID tokens.
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The issuer could not be reached or answered with an error.
    #[error("cannot fetch {url}: {source}")]
    Fetch {
        /// The discovery URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The document names another issuer.
    #[error("the discovery document at {url} names the issuer {found:?}, not {expected:?}: check the issuer URL (scheme, host, port and path must match exactly)")]
    IssuerMismatch {
        /// The discovery URL.
        url: String,
        /// The configured issuer.
        expected: String,
        /// The issuer the document names.
        found: String,
    },
}

/// The discovery URL of `issuer`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetches and checks `issuer`'s discovery document.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<ProviderMetadata, DiscoveryError> {
    let url = discovery_url(issuer);
    let fetch = |source| DiscoveryError::Fetch {
        url: url.clone(),
        source,
    };
    let meta: ProviderMetadata = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fetch)?
        .json()
        .await
        .map_err(fetch)?;
    if meta.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(DiscoveryError::IssuerMismatch {
            url,
            expected: issuer.to_owned(),
            found: meta.issuer,
        });
    }
    Ok(meta)
}
