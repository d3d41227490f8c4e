//! OIDC sign-in for the CLI: `shoal login --oidc`, `shoal logout` and
//! `shoal kubeconfig token`, the exec credential plugin that hands kubectl and
//! kube-rs a fresh ID token, refreshing it when it is about to expire.
//!
//! The session (issuer, client id, tokens) lives in the `shoal.io/oidc`
//! extension of a kubeconfig-format file only its owner can read: Shoal's own
//! config, or for guest clusters a cache file under ~/.cache/shoal/oidc.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_oidc::discovery::{discover, DiscoveryError, ProviderMetadata};
use shoal_oidc::flow::{self, claims, token::TokenResponse, FlowError, HttpClient};
use shoal_oidc::http::{client, HttpClientError};

use crate::args::{IssuerArgs, KubeconfigTokenArgs, LoginArgs, LogoutArgs};
use crate::client::{shoal_config_path, CliError};
use crate::commands::kubeconfig::write_atomic;
use crate::oidc_session::{
    answer_api_version, exec_credential, read_session, render_config, token_args_for_config,
    write_session, OidcSession, SessionError,
};

/// A cached ID token is refreshed when it expires within this many seconds.
pub const REFRESH_MARGIN_SECS: u64 = 30;

/// Why an OIDC command failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The issuer or client id is missing.
    #[error("{0}")]
    Usage(String),
    /// The issuer's HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// Discovery failed.
    #[error("{source}; check --issuer (and --oidc-ca-file for a private CA)")]
    Discovery {
        /// Why.
        #[from]
        source: DiscoveryError,
    },
    /// A flow failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The refresh token is no longer valid.
    #[error("your OIDC sign-in at {issuer} has ended ({source}): run 'shoal login --oidc{config}' again")]
    LoggedOut {
        /// The issuer.
        issuer: String,
        /// The config flag to repeat, if not the default.
        config: String,
        /// What the issuer said.
        #[source]
        source: FlowError,
    },
    /// The session has no refresh token (after `shoal logout`).
    #[error("{path} holds no OIDC sign-in (logged out): run 'shoal login --oidc{config}' again")]
    NoSession {
        /// The file.
        path: PathBuf,
        /// The config flag to repeat, if not the default.
        config: String,
    },
    /// The config file does not exist.
    #[error("{path} does not exist: run 'shoal login --oidc{config}' first")]
    NoConfig {
        /// The file.
        path: PathBuf,
        /// The config flag to repeat, if not the default.
        config: String,
    },
    /// The file holds no readable session.
    #[error("{path}: {source}")]
    Session {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SessionError,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<OidcError> for CliError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Usage(m) => CliError::Usage(m),
            OidcError::File { path, source } => CliError::File { path, source },
            e @ (OidcError::Http(_)
            | OidcError::Discovery { .. }
            | OidcError::Flow(FlowError::Http { .. })) => CliError::Connect(e.to_string()),
            e @ (OidcError::Flow(_)
            | OidcError::LoggedOut { .. }
            | OidcError::NoSession { .. }
            | OidcError::NoConfig { .. }
            | OidcError::Session { .. }) => CliError::Config(e.to_string()),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> OidcError + '_ {
    move |source| OidcError::File {
        path: path.to_owned(),
        source,
    }
}

/// The config path: the flag, else ~/.config/shoal/config.
fn config_path(flag: Option<&PathBuf>) -> Result<PathBuf, OidcError> {
    match flag {
        Some(p) => Ok(p.clone()),
        None => shoal_config_path()
            .ok_or_else(|| OidcError::Usage("HOME is not set: pass --config FILE".into())),
    }
}

/// ` --config FILE` when the file is not the default one, for messages.
fn config_hint(path: &Path) -> String {
    if shoal_config_path().as_deref() == Some(path) {
        String::new()
    } else {
        format!(" --config {}", path.display())
    }
}

/// An absolute path, so that the plugin finds the file from any directory.
fn absolute(path: &Path) -> Result<PathBuf, OidcError> {
    std::path::absolute(path).map_err(file_err(path))
}

/// The issuer's HTTP client and discovery document.
async fn provider(
    issuer: &str,
    ca_file: Option<&Path>,
) -> Result<(HttpClient, ProviderMetadata), OidcError> {
    let http = client(ca_file)?;
    let meta = discover(&http, issuer).await?;
    Ok((http, meta))
}

/// Opens `url` with xdg-open when there is one; the URL is printed either way.
fn open_browser(url: &str) {
    // Where no browser should appear (CI, a shared desktop), only the URL is printed.
    if std::env::var_os("SHOAL_NO_BROWSER").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("xdg-open").is_file()));
    if !found {
        return;
    }
    let spawned = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        eprintln!("(could not start xdg-open; open the URL yourself)");
    }
}

/// How to sign in.
#[derive(Clone, Copy, Debug)]
pub struct SignIn {
    /// Print the URL only.
    pub no_browser: bool,
    /// The device code flow.
    pub device: bool,
    /// How long to wait for the user.
    pub timeout: Duration,
}

/// Signs the user in at `issuer`; prompts go to stderr.
async fn sign_in(
    http: &HttpClient,
    meta: &ProviderMetadata,
    client_id: &str,
    how: SignIn,
) -> Result<TokenResponse, OidcError> {
    if how.device {
        let auth = flow::device::start(http, meta, client_id).await?;
        eprintln!(
            "To sign in, open {} and enter the code {}",
            auth.verification_uri, auth.user_code
        );
        if let Some(complete) = &auth.verification_uri_complete {
            eprintln!("or open {complete}");
            if !how.no_browser {
                open_browser(complete);
            }
        }
        let tokens = tokio::time::timeout(
            how.timeout,
            flow::device::wait(http, meta, client_id, &auth),
        )
        .await
        .map_err(|_| FlowError::DeviceExpired)??;
        return Ok(tokens);
    }
    let show = |url: &str| {
        eprintln!("To sign in, open this URL in a browser on this machine:\n\n    {url}\n");
        if !how.no_browser {
            open_browser(url);
        }
    };
    Ok(flow::auth_code::login(http, meta, client_id, show, how.timeout).await?)
}

/// The ID token of a token response and its expiry.
fn id_token_of(
    tokens: &TokenResponse,
    meta: &ProviderMetadata,
) -> Result<(String, u64), OidcError> {
    let id = tokens
        .id_token
        .clone()
        .ok_or_else(|| FlowError::NoIdToken {
            url: meta.token_endpoint.clone(),
        })?;
    let exp = claims::decode(&id)?.exp;
    Ok((id, exp))
}

/// `shoal login --oidc`: signs in and writes Shoal's config; returns its path.
pub async fn login(args: &LoginArgs, server: Option<&str>) -> Result<PathBuf, CliError> {
    let (Some(issuer), Some(client_id)) = (&args.issuer.issuer, &args.issuer.client_id) else {
        return Err(CliError::Usage(
            "give the issuer and client: shoal login --oidc --issuer https://ISSUER --client-id ID \
             (the server's --oidc-issuer-url and --oidc-client-id; ask your Shoal administrator)"
                .into(),
        ));
    };
    let server = server.ok_or_else(|| {
        CliError::Usage("give the API server: shoal login --oidc --server https://HOST:PORT".into())
    })?;
    if !server.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--server {server:?} must be an https:// URL"
        )));
    }
    let ca_path = args.certificate_authority.as_ref().ok_or_else(|| {
        CliError::Usage(
            "give --certificate-authority FILE: the management CA (tls/ca.crt in the server's data dir)"
                .into(),
        )
    })?;
    let ca = std::fs::read_to_string(ca_path).map_err(|source| CliError::File {
        path: ca_path.clone(),
        source,
    })?;
    let path = absolute(&config_path(args.config.as_ref())?)?;
    let oidc_ca = args
        .issuer
        .oidc_ca_file
        .as_deref()
        .map(absolute)
        .transpose()?;
    let (http, meta) = provider(issuer, oidc_ca.as_deref()).await?;
    let how = SignIn {
        no_browser: args.no_browser,
        device: args.device,
        timeout: args.login_timeout,
    };
    let tokens = sign_in(&http, &meta, client_id, how).await?;
    let (id_token, _) = id_token_of(&tokens, &meta)?;
    if tokens.refresh_token.is_none() {
        eprintln!(
            "warning: the issuer granted no refresh token (offline_access): you will have to log in again when the ID token expires"
        );
    }
    let session = OidcSession {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        ca_file: oidc_ca,
        refresh_token: tokens.refresh_token,
        id_token: Some(id_token),
    };
    let exe = std::env::current_exe().map_err(|source| CliError::File {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let text = render_config(server, &ca, &exe, &token_args_for_config(&path), &session).map_err(
        |source| OidcError::Session {
            path: path.clone(),
            source,
        },
    )?;
    write_atomic(&path, &text)?;
    Ok(path)
}

/// Reads the session kept in `path`.
fn load(path: &Path) -> Result<(String, OidcSession), OidcError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OidcError::NoConfig {
                path: path.to_owned(),
                config: config_hint(path),
            })
        }
        Err(source) => return Err(file_err(path)(source)),
    };
    let session = read_session(&text).map_err(|source| OidcError::Session {
        path: path.to_owned(),
        source,
    })?;
    Ok((text, session))
}

/// Writes `session` back into `path`, keeping the rest of the file.
fn store(path: &Path, session: &OidcSession) -> Result<(), CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(CliError::File {
                path: path.to_owned(),
                source,
            })
        }
    };
    let text = write_session(&text, session).map_err(|source| OidcError::Session {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &text)
}

/// `shoal logout`: revokes the refresh token and removes the tokens.
pub async fn logout(args: &LogoutArgs) -> Result<String, CliError> {
    let path = config_path(args.config.as_ref())?;
    let (_, mut session) = load(&path)?;
    let Some(refresh_token) = session.refresh_token.take() else {
        return Ok(format!(
            "not logged in ({} holds no OIDC tokens)",
            path.display()
        ));
    };
    session.id_token = None;
    let revoked = async {
        let (http, meta) = provider(&session.issuer, session.ca_file.as_deref()).await?;
        flow::token::revoke(&http, &meta, &session.client_id, &refresh_token).await?;
        Ok::<_, OidcError>(())
    }
    .await;
    // The tokens leave the file whether or not the issuer could be told.
    store(&path, &session)?;
    match revoked {
        Ok(()) => Ok(format!(
            "logged out of {}: the refresh token was revoked and the tokens removed from {}",
            session.issuer,
            path.display()
        )),
        Err(e) => Err(CliError::Connect(format!(
            "the tokens were removed from {}, but the issuer was not told: {e}; the refresh token stays valid there until it expires",
            path.display()
        ))),
    }
}

/// Where a guest cluster's sign-in for `issuer` and `client_id` is cached.
fn cache_path(issuer: &str, client_id: &str) -> Result<PathBuf, OidcError> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| {
            OidcError::Usage("neither XDG_CACHE_HOME nor HOME is set: pass --config FILE".into())
        })?;
    Ok(base
        .join("shoal/oidc")
        .join(format!("{:016x}", fnv1a(&format!("{issuer}\n{client_id}")))))
}

/// FNV-1a (64 bits): a stable, non-cryptographic hash for cache file names.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Which file holds the session `kubeconfig token` uses, and whether a missing
/// session may be created by signing in.
fn token_store(args: &KubeconfigTokenArgs) -> Result<(PathBuf, Option<IssuerArgs>), OidcError> {
    let config = config_path(args.config.as_ref())?;
    match (&args.issuer.issuer, &args.issuer.client_id) {
        (None, None) => Ok((config, None)),
        (Some(issuer), Some(client_id)) => {
            // The management sign-in serves a guest cluster with the same issuer.
            if let Ok((_, s)) = load(&config) {
                if &s.issuer == issuer && &s.client_id == client_id && s.refresh_token.is_some() {
                    return Ok((config, None));
                }
            }
            Ok((cache_path(issuer, client_id)?, Some(args.issuer.clone())))
        }
        _ => Err(OidcError::Usage(
            "give both --issuer and --client-id, or neither (to use the config's sign-in)".into(),
        )),
    }
}

/// `shoal kubeconfig token`: prints an ExecCredential with a fresh ID token.
pub async fn token(args: &KubeconfigTokenArgs) -> Result<(), CliError> {
    let (path, sign_in_as) = token_store(args)?;
    // Held until the (possibly refreshed) tokens are written back.
    let _one_run_at_a_time =
        crate::session_lock::lock(&path)
            .await
            .map_err(|e| CliError::File {
                path: e.path,
                source: e.source,
            })?;
    let loaded = match (load(&path), &sign_in_as) {
        (Ok((_, s)), _) if s.refresh_token.is_some() || s.id_token.is_some() => s,
        (_, Some(issuer_args)) => first_sign_in(&path, issuer_args).await?,
        (Ok(_), None) => {
            return Err(OidcError::NoSession {
                config: config_hint(&path),
                path,
            }
            .into())
        }
        (Err(e), None) => return Err(e.into()),
    };
    let (id_token, exp) = fresh_id_token(&path, loaded).await?;
    let info = std::env::var("KUBERNETES_EXEC_INFO").ok();
    let api_version = answer_api_version(info.as_deref());
    let json = serde_json::to_string(&exec_credential(api_version, &id_token, exp))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").map_err(CliError::Output)
}

/// Signs in for a guest cluster that has no cached sign-in yet (interactive:
/// the URL goes to stderr) and caches the session.
async fn first_sign_in(path: &Path, a: &IssuerArgs) -> Result<OidcSession, CliError> {
    let (Some(issuer), Some(client_id)) = (&a.issuer, &a.client_id) else {
        return Err(OidcError::Usage("give --issuer and --client-id".into()).into());
    };
    let (http, meta) = provider(issuer, a.oidc_ca_file.as_deref()).await?;
    let how = SignIn {
        no_browser: false,
        device: false,
        timeout: Duration::from_secs(300),
    };
    let tokens = sign_in(&http, &meta, client_id, how).await?;
    let (id_token, _) = id_token_of(&tokens, &meta)?;
    let session = OidcSession {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        ca_file: a.oidc_ca_file.clone(),
        refresh_token: tokens.refresh_token,
        id_token: Some(id_token),
    };
    store(path, &session)?;
    Ok(session)
}

/// The session's ID token when it is not yet due for refresh (more than
/// [`REFRESH_MARGIN_SECS`], or a quarter of its lifetime if shorter, left); else a refreshed one, written back to `path`.
async fn fresh_id_token(path: &Path, mut session: OidcSession) -> Result<(String, u64), CliError> {
    let now = now_secs();
    if let Some(id) = &session.id_token {
        let c = claims::decode(id).map_err(OidcError::from)?;
        if !claims::refresh_due(&c, now, REFRESH_MARGIN_SECS) {
            return Ok((id.clone(), c.exp));
        }
    }
    let config = config_hint(path);
    let Some(refresh_token) = session.refresh_token.clone() else {
        return Err(OidcError::NoSession {
            path: path.to_owned(),
            config,
        }
        .into());
    };
    let (http, meta) = provider(&session.issuer, session.ca_file.as_deref()).await?;
    let tokens = match flow::token::refresh(&http, &meta, &session.client_id, &refresh_token).await
    {
        Ok(t) => t,
        Err(e) if e.is_invalid_grant() => {
            // Another run may have refreshed (and rotated) the token meanwhile.
            if let Ok((_, again)) = load(path) {
                if again.refresh_token.as_ref() != Some(&refresh_token) {
                    if let Some(id) = &again.id_token {
                        let c = claims::decode(id).map_err(OidcError::from)?;
                        if !claims::refresh_due(&c, now_secs(), REFRESH_MARGIN_SECS) {
                            return Ok((id.clone(), c.exp));
                        }
                    }
                }
            }
            return Err(OidcError::LoggedOut {
                issuer: session.issuer,
                config,
                source: e,
            }
            .into());
        }
        Err(e) => return Err(OidcError::Flow(e).into()),
    };
    let (id_token, exp) = id_token_of(&tokens, &meta)?;
    if let Some(rotated) = tokens.refresh_token {
        session.refresh_token = Some(rotated);
    }
    session.id_token = Some(id_token.clone());
    store(path, &session)?;
    Ok((id_token, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_are_per_issuer_and_client() {
        let a = cache_path("https://a", "shoal").expect("a path");
        let b = cache_path("https://a", "other").expect("a path");
        let c = cache_path("https://a/", "shoal").expect("a path");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, cache_path("https://a", "shoal").expect("a path"));
        assert!(a.to_string_lossy().contains("shoal/oidc/"));
    }

    #[test]
    fn an_ended_sign_in_says_to_log_in_again() {
        let e = OidcError::LoggedOut {
            issuer: "https://i".into(),
            config: " --config /tmp/c".into(),
            source: FlowError::OAuth {
                url: "https://i/token".into(),
                error: "invalid_grant".into(),
                description: None,
            },
        };
        let shown = e.to_string();
        assert!(
            shown.contains("run 'shoal login --oidc --config /tmp/c' again"),
            "{shown}"
        );
        assert!(matches!(CliError::from(e), CliError::Config(_)));
    }
}
