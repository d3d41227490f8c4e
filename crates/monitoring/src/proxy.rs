//! `/monitoring/prometheus/…` and `/monitoring/alertmanager/…`: the front ends of
//! the all-in-one server's Prometheus and Alertmanager, served on the API's TLS
//! listener behind its authentication, so that they are opened where the API is
//! (through the host cluster's load balancer) and never on their own ports.
//!
//! Only an administrator gets through: a token that may list Hosts, asked of the
//! API the way discovery asks. The token comes from `Authorization: Bearer` or,
//! in a browser, from the web UI's session cookie; a browser without either is
//! sent to the UI's sign-in. Neither is passed on to Prometheus or Alertmanager.
//! Their lifecycle endpoints (`/-/reload`, `/-/quit`) are not served: the server
//! owns those processes. The children run with `--web.route-prefix=/` and an
//! external URL under this prefix, so their own links point back here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::api::ListParams;
use kube::Api;
use sha2::{Digest, Sha256};
use shoal_api::Host;

use crate::access::{bearer, status, user_client};

/// The path under which both front ends are served.
pub const PREFIX: &str = "/monitoring";

/// How long a token's verdict is reused before the API is asked again: a page
/// of Prometheus's UI loads a dozen assets, and a revoked token is refused again
/// within this time.
const VERDICT_TTL: Duration = Duration::from_secs(10);

/// At most this many verdicts are remembered.
const VERDICTS_MAX: usize = 1024;

/// How long Prometheus or Alertmanager may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// One of the two front ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontEnd {
    /// Prometheus: its UI and HTTP API.
    Prometheus,
    /// Alertmanager: its API (Debian ships it without its UI).
    Alertmanager,
}

impl FrontEnd {
    /// Its name, as in its path.
    pub const fn name(self) -> &'static str {
        match self {
            FrontEnd::Prometheus => "prometheus",
            FrontEnd::Alertmanager => "alertmanager",
        }
    }

    /// Its path on the server, without a trailing slash (`/monitoring/prometheus`).
    pub fn path(self) -> String {
        format!("{PREFIX}/{}", self.name())
    }

    /// Its external URL for the server at `server_url`, as given to the child
    /// (`--web.external-url`).
    pub fn external_url(self, server_url: &str) -> String {
        format!("{}{}/", server_url.trim_end_matches('/'), self.path())
    }
}

/// What the API says a token may do here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// It may list Hosts: an administrator.
    Admin,
    /// A valid token of a tenant.
    Tenant,
}

/// Recent verdicts by the SHA-256 of the token, with when they were given.
type Verdicts = HashMap<[u8; 32], (Instant, Verdict)>;

/// Where the front ends are and how callers are checked.
#[derive(Clone)]
pub struct ProxyConfig {
    api: kube::Config,
    prometheus: SocketAddr,
    alertmanager: SocketAddr,
    http: Client<HttpConnector, Body>,
    verdicts: Arc<Mutex<Verdicts>>,
}

impl ProxyConfig {
    /// Front ends at `prometheus` and `alertmanager` (plain HTTP on loopback);
    /// callers are checked against the API at `api`, whose credentials are dropped.
    pub fn new(mut api: kube::Config, prometheus: SocketAddr, alertmanager: SocketAddr) -> Self {
        api.auth_info = kube::config::AuthInfo::default();
        Self {
            api,
            prometheus,
            alertmanager,
            http: Client::builder(TokioExecutor::new()).build_http(),
            verdicts: Arc::default(),
        }
    }

    fn upstream(&self, front: FrontEnd) -> SocketAddr {
        match front {
            FrontEnd::Prometheus => self.prometheus,
            FrontEnd::Alertmanager => self.alertmanager,
        }
    }

    /// The API's verdict on `token`, remembered for [`VERDICT_TTL`].
    async fn verdict(&self, token: &str) -> Result<Verdict, Refusal> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Ok(cache) = self.verdicts.lock() {
            if let Some((at, v)) = cache.get(&key) {
                if now.duration_since(*at) < VERDICT_TTL {
                    return Ok(*v);
                }
            }
        }
        let user = user_client(&self.api, token).map_err(Refusal::Api)?;
        let verdict = match Api::<Host>::all(user)
            .list(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => Verdict::Admin,
            Err(kube::Error::Api(s)) if s.code == 403 => Verdict::Tenant,
            Err(kube::Error::Api(s)) if s.code == 401 => {
                return Err(Refusal::Unauthorized(s.message.clone()))
            }
            Err(e) => return Err(Refusal::Api(e)),
        };
        if let Ok(mut cache) = self.verdicts.lock() {
            if cache.len() >= VERDICTS_MAX {
                cache.retain(|_, (at, _)| now.duration_since(*at) < VERDICT_TTL);
                if cache.len() >= VERDICTS_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (now, verdict));
        }
        Ok(verdict)
    }
}

/// Why a caller is not let through.
#[derive(Debug)]
enum Refusal {
    Unauthorized(String),
    Api(kube::Error),
}

/// The routes of both front ends, for merging beside the API.
pub fn router(config: ProxyConfig) -> Router {
    let mut router = Router::new();
    for front in [FrontEnd::Prometheus, FrontEnd::Alertmanager] {
        let path = front.path();
        let handler = move |State(config): State<ProxyConfig>, req: Request| async move {
            forward(config, front, req).await
        };
        router = router
            .route(&path, any(handler))
            .route(&format!("{path}/"), any(handler))
            .route(&format!("{path}/{{*rest}}"), any(handler));
    }
    router.with_state(config)
}

/// Whether a request looks like a browser's page load (rather than an API client).
fn wants_html(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::GET
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// The path on the child for `path` on the server, or `None` when it is not
/// under `front`'s prefix; `Some("")` for the prefix itself.
fn upstream_path(front: FrontEnd, path: &str) -> Option<&str> {
    let rest = path.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(front.name())?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// A redirect of the child to a root-relative path outside `front`'s prefix
/// (Go's router adds a slash that way), moved under the prefix; `None` for a
/// location that needs no change.
fn within(front: FrontEnd, location: &str) -> Option<String> {
    let prefix = front.path();
    let under = location == prefix || location.starts_with(&format!("{prefix}/"));
    (location.starts_with('/') && !location.starts_with("//") && !under)
        .then(|| format!("{prefix}{location}"))
}

/// Whether `rest` is a lifecycle endpoint (everything under `/-/` except the
/// health and readiness probes), which only the server itself may use.
fn is_lifecycle(rest: &str) -> bool {
    rest.starts_with("/-/") && !matches!(rest, "/-/healthy" | "/-/ready")
}

/// Headers that describe one connection, or carry the caller's credentials:
/// never passed on.
fn is_dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "cookie"
    )
}

async fn forward(config: ProxyConfig, front: FrontEnd, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let token = bearer(&parts.headers).or_else(|| shoal_kube::session::token(&parts.headers));
    let Some(token) = token else {
        if wants_html(&parts.method, &parts.headers) {
            return Redirect::to("/ui/sign-in").into_response();
        }
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            &format!(
                "{} is for administrators: give an administrator's token as `Authorization: Bearer <token>`, or sign in to the web UI at /ui first",
                front.path()
            ),
        );
    };
    match config.verdict(&token).await {
        Ok(Verdict::Admin) => {}
        Ok(Verdict::Tenant) => {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "{} shows every organization's metrics and is for administrators (tokens that may list Hosts); a tenant scrapes its own guests through /sd/prometheus with its own Prometheus",
                    front.path()
                ),
            );
        }
        Err(Refusal::Unauthorized(why)) => {
            return status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                &format!("the API refused the token ({why}): sign in again or create a new token"),
            );
        }
        Err(Refusal::Api(e)) => {
            return status(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                &format!("the token could not be checked, try again: {e}"),
            );
        }
    }
    let Some(rest) = upstream_path(front, parts.uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} is not under {}", parts.uri.path(), front.path()),
        );
    };
    if rest.is_empty() {
        return Redirect::permanent(&format!("{}/", front.path())).into_response();
    }
    if is_lifecycle(rest) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{}{rest} is not served through the server: `shoal server` owns {} and reloads or stops it itself (restart the server instead)",
                front.path(),
                front.name()
            ),
        );
    }
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let addr = config.upstream(front);
    let uri: Uri = match format!("http://{addr}{rest}{query}").parse() {
        Ok(u) => u,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the path or query cannot be passed on: {e}"),
            )
        }
    };
    let mut upstream = axum::http::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    for (name, value) in &parts.headers {
        if !is_dropped(name) {
            upstream.headers_mut().append(name, value.clone());
        }
    }
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, config.http.request(upstream)).await;
    match answer {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            let dropped: Vec<HeaderName> = parts
                .headers
                .keys()
                .filter(|n| is_dropped(n))
                .cloned()
                .collect();
            for name in dropped {
                parts.headers.remove(name);
            }
            if let Some(location) = parts.headers.get(header::LOCATION) {
                let rewritten = location
                    .to_str()
                    .ok()
                    .and_then(|l| within(front, l))
                    .and_then(|l| HeaderValue::from_str(&l).ok());
                if let Some(l) = rewritten {
                    parts.headers.insert(header::LOCATION, l);
                }
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => status(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            &format!(
                "{} at {addr} did not answer ({e}): it runs only with `shoal server --monitoring`; see its log under <data-dir>/monitoring/",
                front.name()
            ),
        ),
        Err(_) => status(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            &format!(
                "{} at {addr} did not answer in {} s",
                front.name(),
                UPSTREAM_TIMEOUT.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_under_each_front_end() {
        let p = FrontEnd::Prometheus;
        assert_eq!(upstream_path(p, "/monitoring/prometheus"), Some(""));
        assert_eq!(upstream_path(p, "/monitoring/prometheus/"), Some("/"));
        assert_eq!(
            upstream_path(p, "/monitoring/prometheus/api/v1/query"),
            Some("/api/v1/query")
        );
        assert_eq!(upstream_path(p, "/monitoring/prometheusx/graph"), None);
        assert_eq!(upstream_path(p, "/monitoring/alertmanager/"), None);
        assert_eq!(
            upstream_path(
                FrontEnd::Alertmanager,
                "/monitoring/alertmanager/api/v2/alerts"
            ),
            Some("/api/v2/alerts")
        );
    }

    #[test]
    fn redirects_stay_under_the_prefix() {
        let p = FrontEnd::Prometheus;
        assert_eq!(
            within(p, "/graph/").as_deref(),
            Some("/monitoring/prometheus/graph/")
        );
        assert_eq!(within(p, "/monitoring/prometheus/classic/graph"), None);
        assert_eq!(within(p, "https://elsewhere/"), None);
        assert_eq!(within(p, "//elsewhere/"), None);
    }

    #[test]
    fn lifecycle_endpoints_stay_with_the_server() {
        assert!(is_lifecycle("/-/quit"));
        assert!(is_lifecycle("/-/reload"));
        assert!(!is_lifecycle("/-/healthy"));
        assert!(!is_lifecycle("/-/ready"));
        assert!(!is_lifecycle("/graph"));
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_passed_on() {
        for name in [
            header::AUTHORIZATION,
            header::COOKIE,
            header::CONNECTION,
            header::HOST,
        ] {
            assert!(is_dropped(&name), "{name}");
        }
        assert!(!is_dropped(&header::ACCEPT));
        assert!(!is_dropped(&header::CONTENT_TYPE));
    }

    #[test]
    fn external_urls_end_under_the_prefix() {
        assert_eq!(
            FrontEnd::Prometheus.external_url("https://127.0.0.1:6443/"),
            "https://127.0.0.1:6443/monitoring/prometheus/"
        );
    }
}
