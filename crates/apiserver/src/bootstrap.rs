//! First start: the data dir, its keys and certificates, the system namespaces
//! and the admin credential, written to `<data-dir>/admin.kubeconfig`.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use shoal_api::KINDS;
use shoal_pki::CertificateAuthority;

use crate::auth::{TokenRequest, ADMIN_TOKEN_NAME, TOKEN_NAMESPACE};
use crate::error::ApiError;
use crate::kubeconfig::render_token_kubeconfig;
use crate::resource::Resources;
use crate::ServerError;

/// The namespaces every install has.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", TOKEN_NAMESPACE];

/// The files of a data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data dir at `root`, created if missing.
    pub fn create(root: &Path) -> Result<Self, ServerError> {
        fs::create_dir_all(root.join("tls"))
            .map_err(|e| ServerError::DataDir(root.to_owned(), e))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// A path inside the data dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.path("admin.kubeconfig")
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ServerError::DataDir(path.to_owned(), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ServerError::DataDir(path.to_owned(), e))
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, ServerError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ServerError::DataDir(path.to_owned(), e)),
    }
}

/// The encryption key for Secrets at rest, made on first start.
pub fn encryption_key(dir: &DataDir) -> Result<Vec<u8>, ServerError> {
    let path = dir.path("encryption.key");
    if let Some(key) = read(&path)? {
        return Ok(key);
    }
    let key = crate::crypto::Sealer::generate_key();
    write_private(&path, &key)?;
    Ok(key.to_vec())
}

/// The management CA and the serving certificate and key (PEM).
pub struct TlsMaterial {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server key.
    pub key_pem: String,
}

/// Loads the CA and serving certificate, making them on first start.
pub fn tls_material(
    dir: &DataDir,
    listen: SocketAddr,
    extra_sans: &[String],
) -> Result<TlsMaterial, ServerError> {
    let pki = |e: shoal_pki::PkiError| ServerError::Pki(e.to_string());
    let (ca_crt, ca_key) = (dir.path("tls/ca.crt"), dir.path("tls/ca.key"));
    let ca = match (read(&ca_crt)?, read(&ca_key)?) {
        (Some(c), Some(k)) => CertificateAuthority::from_pem(
            &String::from_utf8_lossy(&c),
            &String::from_utf8_lossy(&k),
        )
        .map_err(pki)?,
        _ => {
            let ca = CertificateAuthority::generate("shoal-management-ca").map_err(pki)?;
            write_private(&ca_key, ca.key_pem().as_bytes())?;
            write_private(&ca_crt, ca.cert_pem().as_bytes())?;
            ca
        }
    };
    let (crt, key) = (dir.path("tls/server.crt"), dir.path("tls/server.key"));
    if let (Some(c), Some(k)) = (read(&crt)?, read(&key)?) {
        return Ok(TlsMaterial {
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: String::from_utf8_lossy(&c).into_owned(),
            key_pem: String::from_utf8_lossy(&k).into_owned(),
        });
    }
    let mut dns = vec!["localhost".to_owned(), "shoal".to_owned()];
    let mut ips: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if !listen.ip().is_unspecified() && !ips.contains(&listen.ip()) {
        ips.push(listen.ip());
    }
    for san in extra_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(san.clone()),
        }
    }
    let issued = ca
        .issue_server(
            "shoal-apiserver",
            &dns,
            &ips,
            Duration::from_secs(3 * 365 * 86400),
        )
        .map_err(pki)?;
    write_private(&key, issued.key_pem.as_bytes())?;
    write_private(&crt, issued.cert_pem.as_bytes())?;
    Ok(TlsMaterial {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    })
}

/// Creates the system namespaces and, when missing, the admin token and its kubeconfig.
pub async fn ensure_system(
    res: &Resources,
    dir: &DataDir,
    server_url: &str,
    ca_pem: &str,
) -> Result<(), ServerError> {
    let ns_kind = KINDS
        .iter()
        .find(|k| k.group.is_empty() && k.kind == "Namespace")
        .expect("Namespaces are served");
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match res.create(ns_kind, None, obj).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(ServerError::Bootstrap(e.to_string())),
        }
    }
    let secret_kind = KINDS
        .iter()
        .find(|k| k.group.is_empty() && k.kind == "Secret")
        .expect("Secrets are served");
    let token_name = format!("token-{ADMIN_TOKEN_NAME}");
    let have_secret = match res
        .get(secret_kind, Some(TOKEN_NAMESPACE), &token_name)
        .await
    {
        Ok(_) => true,
        Err(ApiError::NotFound { .. }) => false,
        Err(e) => return Err(ServerError::Bootstrap(e.to_string())),
    };
    if have_secret {
        if let Some(text) = read(&dir.admin_kubeconfig())? {
            return point_kubeconfig_at(&dir.admin_kubeconfig(), &text, server_url);
        }
    }
    if have_secret {
        res.delete(secret_kind, Some(TOKEN_NAMESPACE), &token_name, None)
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    }
    let (token, secret) = TokenRequest {
        org: None,
        user: "admin".into(),
        ttl: None,
        description: Some("bootstrap admin credential".into()),
    }
    .mint(Some(ADMIN_TOKEN_NAME));
    res.create(secret_kind, Some(TOKEN_NAMESPACE), secret)
        .await
        .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    let text = render_token_kubeconfig("shoal", server_url, ca_pem, "admin", &token);
    write_private(&dir.admin_kubeconfig(), text.as_bytes())?;
    tracing::info!(path = %dir.admin_kubeconfig().display(), "wrote the admin kubeconfig");
    Ok(())
}

/// Keeps an existing admin kubeconfig's server URL current (the port may change).
fn point_kubeconfig_at(path: &Path, text: &[u8], server_url: &str) -> Result<(), ServerError> {
    let mut doc: serde_json::Value = serde_yaml::from_slice(text).map_err(|e| {
        ServerError::Bootstrap(format!(
            "{} is not a kubeconfig: {e}; delete it to get a new one",
            path.display()
        ))
    })?;
    if doc
        .pointer("/clusters/0/cluster/server")
        .and_then(serde_json::Value::as_str)
        == Some(server_url)
    {
        return Ok(());
    }
    if let Some(server) = doc.pointer_mut("/clusters/0/cluster/server") {
        *server = json!(server_url);
    }
    let text = serde_yaml::to_string(&doc).map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    write_private(path, text.as_bytes())
}
