//! The web UI's sign-in with the server's first OIDC issuer: the UI asks, this
//! speaks OIDC (`shoal-oidc`), so the two crates stay apart.

use shoal_oidc::discovery::{discover, ProviderMetadata};
use shoal_oidc::error_chain;
use shoal_oidc::flow::web;
use shoal_oidc::flow::FlowError;
use shoal_oidc::verify::IssuerConfig;
use shoal_ui::oidc::{BoxFuture, OidcSignIn, SignInError};
use tokio::sync::OnceCell;

/// The browser flow against one issuer, with its discovery document read once.
pub struct UiSignIn {
    issuer: String,
    client_id: String,
    http: shoal_oidc::flow::HttpClient,
    meta: OnceCell<ProviderMetadata>,
}

impl UiSignIn {
    /// The flow for `config`'s issuer and client id, trusting its CA file.
    pub fn new(config: &IssuerConfig) -> Result<Self, shoal_oidc::http::HttpClientError> {
        let http = shoal_oidc::http::client(config.ca_file.as_deref())?;
        Ok(Self {
            issuer: config.issuer_url.clone(),
            client_id: config.client_id.clone(),
            http,
            meta: OnceCell::new(),
        })
    }

    async fn meta(&self) -> Result<&ProviderMetadata, SignInError> {
        self.meta
            .get_or_try_init(|| discover(&self.http, &self.issuer))
            .await
            .map_err(|e| {
                SignInError::Unavailable(format!(
                    "The identity provider {} cannot be reached: {}",
                    self.issuer,
                    error_chain(&e)
                ))
            })
    }
}

impl OidcSignIn for UiSignIn {
    fn issuer(&self) -> &str {
        &self.issuer
    }

    fn start<'a>(
        &'a self,
        redirect_uri: &'a str,
    ) -> BoxFuture<'a, Result<(String, String), SignInError>> {
        Box::pin(async move {
            let meta = self.meta().await?;
            Ok(web::start(meta, &self.client_id, redirect_uri))
        })
    }

    fn finish<'a>(
        &'a self,
        redirect_uri: &'a str,
        code: &'a str,
        state: &'a str,
        kept: &'a str,
    ) -> BoxFuture<'a, Result<String, SignInError>> {
        Box::pin(async move {
            let meta = self.meta().await?;
            web::finish(
                &self.http,
                meta,
                &self.client_id,
                redirect_uri,
                code,
                state,
                kept,
            )
            .await
            .map_err(|e| {
                let message = error_chain(&e);
                match e {
                    web::WebFlowError::Flow(
                        FlowError::Http { .. } | FlowError::BadResponse { .. },
                    ) => SignInError::Unavailable(message),
                    _ => SignInError::Refused(message),
                }
            })
        })
    }
}
