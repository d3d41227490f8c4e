//! The web UI's sign-in with the server's first OIDC issuer: the UI asks, this
//! speaks OIDC (`shoal-oidc`), so the two crates stay apart.

use shoal_oidc::discovery::{discover, ProviderMetadata};
use shoal_oidc::error_chain;
use shoal_oidc::flow::web;
use shoal_oidc::verify::IssuerConfig;
use shoal_ui::oidc::{BoxFuture, OidcSignIn};
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
    pub fn new(config: &IssuerConfig) -> Result<Self, String> {
        let http = shoal_oidc::http::client(config.ca_file.as_deref())
            .map_err(|e| format!("OIDC sign-in for the web UI: {}", error_chain(&e)))?;
        Ok(Self {
            issuer: config.issuer_url.clone(),
            client_id: config.client_id.clone(),
            http,
            meta: OnceCell::new(),
        })
    }

    async fn meta(&self) -> Result<&ProviderMetadata, String> {
        self.meta
            .get_or_try_init(|| discover(&self.http, &self.issuer))
            .await
            .map_err(|e| {
                format!(
                    "The identity provider {} cannot be reached: {}",
                    self.issuer,
                    error_chain(&e)
                )
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
    ) -> BoxFuture<'a, Result<(String, String), String>> {
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
    ) -> BoxFuture<'a, Result<String, String>> {
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
            .map_err(|e| error_chain(&e))
        })
    }
}
