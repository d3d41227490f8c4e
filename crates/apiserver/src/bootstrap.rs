//! First start: the data dir, its keys and certificates, the system namespaces
//! and the admin credential, written to `<data-dir>/admin.kubeconfig`.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use shoal_api::registry::kinds;
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

/// Writes a file readable by its owner only, atomically: a reader (a client
/// loading the admin kubeconfig while the server restarts) sees the old content or
/// the new, never a half-written file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ServerError::DataDir(tmp.clone(), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
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
///
/// Replicas sharing one store must share the key: give each the same file.
pub fn encryption_key(dir: &DataDir, file: Option<&Path>) -> Result<Vec<u8>, ServerError> {
    if let Some(file) = file {
        return read(file)?.ok_or_else(|| {
            ServerError::DataDir(
                file.to_owned(),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the encryption key file does not exist",
                ),
            )
        });
    }
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

const CA_SECRET: &str = "management-ca";
const ADMIN_SECRET: &str = "admin-credential";

/// Why first-start setup through the store failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A system Secret could not be read.
    #[error("cannot read the system secret {TOKEN_NAMESPACE}/{name}: {source}")]
    ReadSecret {
        /// The Secret's name.
        name: String,
        /// Why.
        #[source]
        source: ApiError,
    },
    /// A system Secret lacks a field every replica writes.
    #[error("the system secret {name} has no field {field}")]
    MissingField {
        /// The Secret's name.
        name: String,
        /// The `data` field.
        field: String,
    },
    /// A system Secret could not be stored.
    #[error("cannot store the system secret {TOKEN_NAMESPACE}/{name}: {source}")]
    StoreSecret {
        /// The Secret's name.
        name: String,
        /// Why.
        #[source]
        source: ApiError,
    },
    /// Another replica's system Secret was there, then was not.
    #[error("the system secret {name} vanished during start-up")]
    Vanished {
        /// The Secret's name.
        name: String,
    },
    /// The admin token's hash could not be registered.
    #[error("cannot register the admin token: {0}")]
    AdminToken(#[source] ApiError),
    /// A system namespace could not be created.
    #[error("cannot create the system namespace {namespace}: {source}")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: ApiError,
    },
}

/// Reads a system Secret's decoded `data` fields, if the Secret exists.
async fn read_system_secret(
    res: &Resources,
    name: &str,
    fields: &[&str],
) -> Result<Option<Vec<String>>, ServerError> {
    let obj = match res
        .get(kinds::SECRET.info(), Some(TOKEN_NAMESPACE), name)
        .await
    {
        Ok(obj) => obj,
        Err(ApiError::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(BootstrapError::ReadSecret {
                name: name.to_owned(),
                source,
            }
            .into())
        }
    };
    fields
        .iter()
        .map(|f| {
            obj.pointer(&format!("/data/{}", f.replace('/', "~1")))
                .and_then(serde_json::Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| {
                    BootstrapError::MissingField {
                        name: name.to_owned(),
                        field: (*f).to_owned(),
                    }
                    .into()
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Stores a system Secret unless another replica stored one first; returns the
/// fields that won.
async fn create_system_secret(
    res: &Resources,
    name: &str,
    fields: &[(&str, String)],
) -> Result<Vec<String>, ServerError> {
    let data: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let obj = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": TOKEN_NAMESPACE},
        "data": data,
    });
    match res
        .create(kinds::SECRET.info(), Some(TOKEN_NAMESPACE), obj)
        .await
    {
        Ok(_) => Ok(fields.iter().map(|(_, v)| v.clone()).collect()),
        Err(ApiError::AlreadyExists { .. }) => {
            let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            read_system_secret(res, name, &names).await?.ok_or_else(|| {
                BootstrapError::Vanished {
                    name: name.to_owned(),
                }
                .into()
            })
        }
        Err(source) => Err(BootstrapError::StoreSecret {
            name: name.to_owned(),
            source,
        }
        .into()),
    }
}

/// The management CA, shared through the store so that every replica serves
/// certificates clients of any replica trust.
async fn shared_ca(res: &Resources) -> Result<CertificateAuthority, ServerError> {
    let fields = match read_system_secret(res, CA_SECRET, &["tls.crt", "tls.key"]).await? {
        Some(f) => f,
        None => {
            let ca = CertificateAuthority::generate("shoal-management-ca")?;
            let fields = [
                ("tls.crt", ca.cert_pem().to_owned()),
                ("tls.key", ca.key_pem().to_owned()),
            ];
            create_system_secret(res, CA_SECRET, &fields).await?
        }
    };
    Ok(CertificateAuthority::from_pem(&fields[0], &fields[1])?)
}

/// The serving certificate of this replica, issued from the shared CA at every
/// start (so names and addresses are always current), and the CA written to
/// `tls/ca.crt` for clients.
async fn serving_material(
    res: &Resources,
    dir: &DataDir,
    listen: SocketAddr,
    extra_sans: &[String],
) -> Result<TlsMaterial, ServerError> {
    let ca = shared_ca(res).await?;
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
    let issued = ca.issue_server(
        "shoal-apiserver",
        &dns,
        &ips,
        Duration::from_secs(365 * 86400),
    )?;
    write_private(&dir.path("tls/ca.crt"), ca.cert_pem().as_bytes())?;
    write_private(&dir.path("tls/server.crt"), issued.cert_pem.as_bytes())?;
    write_private(&dir.path("tls/server.key"), issued.key_pem.as_bytes())?;
    Ok(TlsMaterial {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    })
}

/// The admin token, shared through the store: minted by the first replica to
/// start, read by the others, so one admin.kubeconfig works with all of them.
async fn shared_admin_token(res: &Resources) -> Result<String, ServerError> {
    if let Some(f) = read_system_secret(res, ADMIN_SECRET, &["token"]).await? {
        return Ok(f[0].clone());
    }
    let (token, secret) = TokenRequest {
        org: None,
        user: "admin".into(),
        ttl: None,
        description: Some("bootstrap admin credential".into()),
    }
    .mint(Some(ADMIN_TOKEN_NAME));
    let stored = create_system_secret(res, ADMIN_SECRET, &[("token", token)]).await?;
    // Only the replica whose credential won registers its hash.
    if let Err(e) = res
        .create(kinds::SECRET.info(), Some(TOKEN_NAMESPACE), secret)
        .await
    {
        match e {
            ApiError::AlreadyExists { .. } => {}
            other => return Err(BootstrapError::AdminToken(other).into()),
        }
    }
    Ok(stored[0].clone())
}

/// Everything a start needs from the store: system namespaces, the shared CA
/// and this replica's serving certificate, and the admin kubeconfig.
pub async fn bootstrap(
    res: &Resources,
    dir: &DataDir,
    listen: SocketAddr,
    extra_sans: &[String],
) -> Result<TlsMaterial, ServerError> {
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match res.create(kinds::NAMESPACE.info(), None, obj).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(source) => {
                return Err(BootstrapError::Namespace {
                    namespace: (*ns).to_owned(),
                    source,
                }
                .into())
            }
        }
    }
    let material = serving_material(res, dir, listen, extra_sans).await?;
    let token = shared_admin_token(res).await?;
    let text = render_token_kubeconfig(
        "shoal",
        &server_url(listen),
        &material.ca_pem,
        "admin",
        &token,
    );
    write_private(&dir.admin_kubeconfig(), text.as_bytes())?;
    tracing::info!(path = %dir.admin_kubeconfig().display(), "wrote the admin kubeconfig");
    Ok(material)
}

/// The HTTPS URL of a listen address (loopback for a wildcard address).
pub fn server_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::resource::fixture::fixture;

    #[tokio::test]
    async fn a_system_secret_without_its_fields_is_a_typed_setup_error() -> anyhow::Result<()> {
        let f = fixture().await?;
        f.res
            .create(
                kinds::NAMESPACE.info(),
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TOKEN_NAMESPACE}}),
            )
            .await?;
        create_system_secret(&f.res, CA_SECRET, &[("tls.crt", "pem".to_owned())]).await?;
        let err = match shared_ca(&f.res).await {
            Ok(_) => anyhow::bail!("a CA without its key was accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(&err, ServerError::Setup(e) if matches!(**e, BootstrapError::MissingField { ref name, ref field } if name == CA_SECRET && field == "tls.key")),
            "{err:?}"
        );
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("the system secret management-ca has no field tls.key")
        );
        Ok(())
    }

    #[tokio::test]
    async fn bootstrap_is_idempotent_over_one_store() -> anyhow::Result<()> {
        let f = fixture().await?;
        let dir = tempfile::tempdir()?;
        let data = DataDir::create(dir.path())?;
        let listen: SocketAddr = "127.0.0.1:6443".parse()?;
        let first = bootstrap(&f.res, &data, listen, &[]).await?;
        let second = bootstrap(&f.res, &data, listen, &["shoal.example".to_owned()]).await?;
        assert_eq!(
            first.ca_pem, second.ca_pem,
            "the CA is shared, not regenerated"
        );
        Ok(())
    }
}
