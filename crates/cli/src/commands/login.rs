//! `shoal login`: writes Shoal's own kubeconfig-format file, never ~/.kube/config.

use std::path::{Path, PathBuf};

use shoal_apiserver::kubeconfig::render_token_kubeconfig;

use crate::args::LoginArgs;
use crate::client::{shoal_config_path, CliError};

/// Writes the config and returns its path.
pub fn run(args: &LoginArgs, server: Option<&str>) -> Result<PathBuf, CliError> {
    let server = server.ok_or_else(|| {
        CliError::Usage(
            "give the API server: shoal login --server https://HOST:PORT --token T".into(),
        )
    })?;
    if !server.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--server {server:?} must be an https:// URL"
        )));
    }
    let ca = match &args.certificate_authority {
        Some(p) => std::fs::read_to_string(p).map_err(|source| CliError::File { path: p.clone(), source })?,
        None => return Err(CliError::Usage("give --certificate-authority FILE: the management CA (tls/ca.crt in the server's data dir)".into())),
    };
    let path = match &args.config {
        Some(p) => p.clone(),
        None => shoal_config_path()
            .ok_or_else(|| CliError::Config("HOME is not set: pass --config".into()))?,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CliError::File {
            path: dir.to_owned(),
            source,
        })?;
    }
    let token = args
        .token
        .as_deref()
        .ok_or_else(|| CliError::Usage("give --token T, or sign in with --oidc".into()))?;
    let text = render_token_kubeconfig("shoal", server, &ca, "shoal-user", token);
    write_private(&path, &text).map_err(|source| CliError::File {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes a file only its owner can read: it holds a bearer token. An existing
/// file is narrowed to 0600 too.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}
