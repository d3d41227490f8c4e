//! Connecting to the management API: kubeconfig resolution and errors.

use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use shoal_api::KindInfo;

/// Why a client command failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No usable kubeconfig.
    #[error("{0}")]
    Config(String),
    /// The server refused the request.
    #[error("Error from server ({reason}): {message}")]
    Server {
        /// The Status reason.
        reason: String,
        /// The Status message.
        message: String,
        /// The HTTP code.
        code: u16,
    },
    /// The server could not be reached.
    #[error("cannot reach the API server: {0}")]
    Connect(String),
    /// The user's input is wrong.
    #[error("{0}")]
    Usage(String),
    /// Standard output could not be written (other than a closed pipe).
    #[error("cannot write to standard output: {0}")]
    Output(#[source] std::io::Error),
    /// `--wait` gave up before the change was done.
    #[error("timed out after {seconds}s waiting for {what}: {detail}")]
    Timeout {
        /// What was awaited, e.g. `cluster acme/demo to be Ready`.
        what: String,
        /// How long the command waited.
        seconds: u64,
        /// Where things stand, from the objects' conditions.
        detail: String,
    },
    /// The server refused to sign a KeyPair; its condition says why.
    #[error("keypair {keypair} was refused ({reason}): {message}")]
    Refused {
        /// The KeyPair, `namespace/name`.
        keypair: String,
        /// The condition's reason, e.g. `InvalidCSR`.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// An existing kubeconfig cannot be merged into; it is left as it was.
    #[error("{path}: {source}; the file was left untouched: fix it, or write a separate file with --output")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: crate::kubeconfig::KubeconfigError,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Config(_) => 3,
            CliError::Connect(_) => 4,
            CliError::Server { .. } => 5,
            CliError::File { .. } => 6,
            CliError::Output(_) => 7,
            CliError::Timeout { .. } => 8,
            CliError::Refused { .. } => 9,
            CliError::Kubeconfig { .. } => 13,
        }
    }
}

impl From<kube::Error> for CliError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => CliError::Server {
                reason: status.reason.clone(),
                message: status.message.clone(),
                code: status.code,
            },
            other => CliError::Connect(other.to_string()),
        }
    }
}

/// Where Shoal's own client config lives.
pub fn shoal_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/shoal/config"))
}

fn resolve_kubeconfig(explicit: Option<&PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    let own = shoal_config_path().filter(|p| p.exists());
    let kube = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .filter(|p| p.exists());
    own.or(kube).ok_or_else(|| {
        CliError::Config(
            "no kubeconfig: pass --kubeconfig <data-dir>/admin.kubeconfig, set KUBECONFIG, or run 'shoal login'".into(),
        )
    })
}

/// The client config of the kubeconfig (and server override) the user chose.
pub(crate) async fn load_config(
    kubeconfig: Option<&PathBuf>,
    server: Option<&str>,
) -> Result<Config, CliError> {
    let path = resolve_kubeconfig(kubeconfig)?;
    let kc = Kubeconfig::read_from(&path)
        .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?;
    if let Some(url) = server {
        config.cluster_url = url
            .parse()
            .map_err(|e| CliError::Usage(format!("--server {url:?} is not a URL: {e}")))?;
    }
    Ok(config)
}

/// A client for the kubeconfig (and server override) the user chose.
pub async fn connect(
    kubeconfig: Option<&PathBuf>,
    server: Option<&str>,
) -> Result<Client, CliError> {
    let config = load_config(kubeconfig, server).await?;
    Client::try_from(config).map_err(|e| CliError::Config(e.to_string()))
}

/// A client for the kubeconfig's server (and CA) that authenticates with `token`
/// instead of the kubeconfig's own credentials.
pub async fn connect_with_token(
    kubeconfig: Option<&PathBuf>,
    server: Option<&str>,
    token: &str,
) -> Result<Client, CliError> {
    let mut config = load_config(kubeconfig, server).await?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).map_err(|e| CliError::Config(e.to_string()))
}

/// The kube-rs resource description of a Shoal kind.
pub fn api_resource(kind: &KindInfo) -> ApiResource {
    ApiResource {
        group: kind.group.to_owned(),
        version: kind.version.to_owned(),
        api_version: kind.api_version(),
        kind: kind.kind.to_owned(),
        plural: kind.plural.to_owned(),
    }
}

/// A dynamic API for a kind, in a namespace or across all.
pub fn dynamic_api(client: &Client, kind: &KindInfo, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource(kind);
    match (kind.namespaced, ns) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Finds a kind by what a user types: plural, singular, kind or short name.
pub fn find_kind(name: &str) -> Result<&'static KindInfo, CliError> {
    let lower = name.to_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_owned(), Some(g.to_owned())),
        None => (lower.clone(), None),
    };
    shoal_api::KINDS
        .iter()
        .filter(|k| group.as_deref().is_none_or(|g| k.group == g))
        .find(|k| {
            k.plural == base
                || k.singular == base
                || k.kind.to_lowercase() == base
                || k.short_names.contains(&base.as_str())
        })
        .ok_or_else(|| {
            let known: Vec<&str> = shoal_api::KINDS.iter().map(|k| k.plural).collect();
            CliError::Usage(format!(
                "unknown resource type {name:?}; known types: {}",
                known.join(", ")
            ))
        })
}
