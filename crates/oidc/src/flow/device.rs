//! The device authorization grant (RFC 8628): the user approves a code on
//! another device while this one polls the token endpoint.

use std::time::Duration;

use serde::Deserialize;

use super::token::{post_form, TokenResponse};
use super::{FlowError, SCOPES};
use crate::discovery::ProviderMetadata;

/// What the device authorization endpoint returns.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct DeviceAuthorization {
    /// The code this device polls with (secret).
    pub device_code: String,
    /// The code the user types.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// The same, with the user code filled in, if offered.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds between polls (5 when absent).
    #[serde(default)]
    pub interval: Option<u64>,
}

/// What one poll says.
#[derive(Debug)]
pub enum Poll {
    /// Signed in.
    Done(Box<TokenResponse>),
    /// Not yet: poll again after the interval.
    Pending,
    /// Not yet, and poll less often: add 5 s to the interval.
    SlowDown,
}

/// The outcome of a poll's answer: `authorization_pending` and `slow_down`
/// keep the flow going; `expired_token` and every other error end it.
pub fn classify(answer: Result<TokenResponse, FlowError>) -> Result<Poll, FlowError> {
    match answer {
        Ok(t) => Ok(Poll::Done(Box::new(t))),
        Err(FlowError::OAuth { error, .. }) if error == "authorization_pending" => {
            Ok(Poll::Pending)
        }
        Err(FlowError::OAuth { error, .. }) if error == "slow_down" => Ok(Poll::SlowDown),
        Err(FlowError::OAuth { error, .. }) if error == "expired_token" => {
            Err(FlowError::DeviceExpired)
        }
        Err(e) => Err(e),
    }
}

/// Asks the issuer for a device code.
pub async fn start(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
) -> Result<DeviceAuthorization, FlowError> {
    let url = meta
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| FlowError::NoDeviceEndpoint {
            issuer: meta.issuer.clone(),
        })?;
    post_form(http, url, &[("client_id", client_id), ("scope", SCOPES)]).await
}

/// Polls the token endpoint until the user approved `auth`, it was denied, or
/// it expired.
pub async fn wait(
    http: &reqwest::Client,
    meta: &ProviderMetadata,
    client_id: &str,
    auth: &DeviceAuthorization,
) -> Result<TokenResponse, FlowError> {
    let mut interval = Duration::from_secs(auth.interval.unwrap_or(5).max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(auth.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(FlowError::DeviceExpired);
        }
        let answer = post_form::<TokenResponse>(
            http,
            &meta.token_endpoint,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &auth.device_code),
                ("client_id", client_id),
            ],
        )
        .await;
        match classify(answer)? {
            Poll::Done(tokens) => {
                if tokens.id_token.is_none() {
                    return Err(FlowError::NoIdToken {
                        url: meta.token_endpoint.clone(),
                    });
                }
                return Ok(*tokens);
            }
            Poll::Pending => {}
            Poll::SlowDown => interval += Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(error: &str) -> Result<TokenResponse, FlowError> {
        Err(FlowError::OAuth {
            url: "https://i/token".into(),
            error: error.into(),
            description: None,
        })
    }

    #[test]
    fn poll_answers_are_classified_as_rfc_8628_says() {
        assert!(matches!(
            classify(oauth("authorization_pending")),
            Ok(Poll::Pending)
        ));
        assert!(matches!(classify(oauth("slow_down")), Ok(Poll::SlowDown)));
        assert!(matches!(
            classify(oauth("expired_token")),
            Err(FlowError::DeviceExpired)
        ));
        assert!(matches!(
            classify(oauth("access_denied")),
            Err(FlowError::OAuth { error, .. }) if error == "access_denied"
        ));
        let done = TokenResponse {
            access_token: None,
            id_token: Some("x.y.z".into()),
            refresh_token: None,
            expires_in: None,
        };
        assert!(matches!(classify(Ok(done)), Ok(Poll::Done(_))));
    }
}
