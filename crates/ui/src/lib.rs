//! Shoal's web UI, served at `/ui` by `shoal server`.
//!
//! Every page is rendered on the server from the public API, called with the
//! signed-in user's own bearer token through a kube-rs client, so the UI can see
//! and do exactly what that token may. It must not depend on the API server's
//! internals or the store: peer crates share only `shoal-api` and `shoal-kube`.
//!
//! Pages work without JavaScript for reading. Two places use a little script:
//! the live clusters table (server-sent events) and Create kubeconfig, whose key
//! pair is made in the browser with WebCrypto so that only a CSR reaches the
//! server. Sign-in takes a Shoal token, or goes through the identity provider
//! (OIDC) when the server has one ([`oidc`]).

mod can;
mod catalog;
mod create;
mod detail;
mod guide;
mod html;
mod keypairs;
pub mod oidc;
mod orgs;
mod pages;

use shoal_kube::session;

use axum::routing::{get, post};
use axum::Router;

/// Where the UI reaches the API: its URL and CA, with no credentials; each
/// request adds the signed-in user's token.
#[derive(Clone)]
pub struct UiConfig {
    /// The API's client settings, without auth.
    pub api: kube::Config,
    /// The identity provider's browser sign-in, when the server has one.
    pub oidc: Option<std::sync::Arc<dyn oidc::OidcSignIn>>,
}

impl UiConfig {
    /// The API settings from `api`, with any credentials in it removed.
    pub fn new(mut api: kube::Config) -> Self {
        api.auth_info = kube::config::AuthInfo::default();
        Self { api, oidc: None }
    }

    /// The same, offering sign-in with `oidc` beside tokens.
    pub fn with_oidc(mut self, oidc: std::sync::Arc<dyn oidc::OidcSignIn>) -> Self {
        self.oidc = Some(oidc);
        self
    }
}

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The API client could not be built from the config.
    #[error("building an API client: {0}")]
    Client(#[source] kube::Error),
    /// The API refused or failed a request.
    #[error("the API answered: {0}")]
    Api(#[source] kube::Error),
}

/// The UI's routes, already under `/ui`, for merging beside the API.
pub fn router(config: UiConfig) -> Router {
    Router::new()
        .route("/ui", get(pages::home))
        .route("/ui/", get(pages::home))
        .route("/ui/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/ui/sign-out", post(pages::sign_out))
        .route("/ui/oidc/start", get(oidc::start))
        .route("/ui/oidc/callback", get(oidc::callback))
        .route("/ui/clusters", get(pages::clusters))
        .route("/ui/clusters/events", get(pages::cluster_events))
        .route(
            "/ui/clusters/new",
            get(create::new_form).post(create::create),
        )
        .route("/ui/clusters/{org}/{name}", get(detail::show))
        .route("/ui/clusters/{org}/{name}/delete", post(detail::delete))
        .route("/ui/clusters/{org}/{name}/scale", post(detail::scale))
        .route("/ui/clusters/{org}/{name}/upgrade", post(detail::upgrade))
        .route("/ui/clusters/{org}/{name}/keypairs", post(keypairs::create))
        .route("/ui/organizations", get(orgs::organizations))
        .route("/ui/organizations/{org}/members", post(orgs::add_member))
        .route(
            "/ui/organizations/{org}/members/remove",
            post(orgs::remove_member),
        )
        .route("/ui/releases", get(catalog::releases))
        .route("/ui/hosts", get(catalog::hosts))
        .route("/ui/getting-started", get(guide::getting_started))
        .with_state(config)
}
