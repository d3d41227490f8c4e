//! `shoal login`: writes Shoal's own kubeconfig-format file, never ~/.kube/config.

use std::path::PathBuf;

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
    let text = render_token_kubeconfig("shoal", server, &ca, "shoal-user", &args.token);
    std::fs::write(&path, text).map_err(|source| CliError::File {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
