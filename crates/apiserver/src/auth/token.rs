//! Bearer tokens: `shoal.<id>.<secret>`, kept as a SHA-256 hash in the Secret
//! `shoal-system/token-<id>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shoal_api::registry::kinds;
use shoal_api::{wellknown, OrgRole};
use shoal_oidc::verify::Verifier;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::resource::Resources;

/// The namespace holding tokens and other system state.
pub const TOKEN_NAMESPACE: &str = wellknown::SYSTEM_NAMESPACE;
/// The Secret type of tokens.
pub const TOKEN_SECRET_TYPE: &str = wellknown::secret_type::TOKEN;
/// The id of the bootstrap admin token.
pub const ADMIN_TOKEN_NAME: &str = "admin";

use wellknown::annotation::{
    TOKEN_DESCRIPTION as ANN_DESCRIPTION, TOKEN_EXPIRES as ANN_EXPIRES, TOKEN_USER as ANN_USER,
};
use wellknown::label::{ORG as LABEL_ORG, ROLE as LABEL_ROLE};

/// What a new token is for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `None` for a cluster-admin token; otherwise the organization and role.
    pub org: Option<(String, OrgRole)>,
    /// The user name it authenticates as.
    pub user: String,
    /// Its lifetime; `None` never expires.
    pub ttl: Option<Duration>,
    /// Why it exists.
    pub description: Option<String>,
}

fn hash_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn role_name(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Owner => "owner",
        OrgRole::Member => "member",
        OrgRole::Viewer => "viewer",
    }
}

/// Parses a role name as the CLI and the token labels spell it.
pub fn parse_role(s: &str) -> Option<OrgRole> {
    match s {
        "owner" => Some(OrgRole::Owner),
        "member" => Some(OrgRole::Member),
        "viewer" => Some(OrgRole::Viewer),
        _ => None,
    }
}

impl TokenRequest {
    /// Makes the token string and the Secret that stores its hash. The token is
    /// shown once; only the hash is kept.
    pub fn mint(&self, id: Option<&str>) -> (String, Value) {
        let id = id.map(str::to_owned).unwrap_or_else(|| random_hex(6));
        let secret = random_hex(24);
        let token = format!("shoal.{id}.{secret}");
        let mut labels = BTreeMap::new();
        labels.insert(wellknown::label::TOKEN.to_owned(), "true".to_owned());
        let mut annotations = BTreeMap::new();
        annotations.insert(ANN_USER.to_owned(), self.user.clone());
        match &self.org {
            Some((org, role)) => {
                labels.insert(LABEL_ORG.to_owned(), org.clone());
                labels.insert(LABEL_ROLE.to_owned(), role_name(*role).to_owned());
            }
            None => {
                labels.insert(LABEL_ROLE.to_owned(), "cluster-admin".to_owned());
            }
        }
        if let Some(ttl) = self.ttl {
            let expires = Utc::now()
                + chrono::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
            annotations.insert(
                ANN_EXPIRES.to_owned(),
                expires.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
        }
        if let Some(d) = &self.description {
            annotations.insert(ANN_DESCRIPTION.to_owned(), d.clone());
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(hash_hex(&secret));
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": TOKEN_SECRET_TYPE,
            "metadata": {
                "name": format!("token-{id}"), "namespace": TOKEN_NAMESPACE,
                "labels": labels, "annotations": annotations,
            },
            "data": { "sha256": b64 },
        });
        (token, obj)
    }
}

/// Checks bearer tokens: Shoal tokens against the stored hashes, anything else
/// shaped like a JWT as an OIDC ID token when issuers are configured.
#[derive(Clone)]
pub struct Authenticator {
    resources: Resources,
    oidc: Option<Arc<Verifier>>,
    admin_groups: Arc<[String]>,
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized(
        "the token is unknown, revoked or expired: log in again (shoal login) or ask an admin for a new token".into(),
    )
}

impl Authenticator {
    /// An authenticator reading tokens through `resources`.
    pub fn new(resources: Resources) -> Self {
        Self {
            resources,
            oidc: None,
            admin_groups: Arc::from(Vec::new()),
        }
    }

    /// Also accepts ID tokens that `verifier` accepts; members of `admin_groups`
    /// are cluster admins.
    pub fn with_oidc(mut self, verifier: Arc<Verifier>, admin_groups: Vec<String>) -> Self {
        self.oidc = Some(verifier);
        self.admin_groups = Arc::from(admin_groups);
        self
    }

    /// Resolves a bearer token to an identity.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, ApiError> {
        if !token.starts_with("shoal.") && Verifier::looks_like_jwt(token) {
            return match &self.oidc {
                Some(verifier) => {
                    super::oidc::authenticate(verifier, &self.resources, &self.admin_groups, token)
                        .await
                }
                None => Err(ApiError::Unauthorized(
                    "this server trusts no OIDC issuer (start it with --oidc-issuer-url), so ID tokens are not accepted: use a Shoal token".into(),
                )),
            };
        }
        self.shoal_token(token).await
    }

    async fn shoal_token(&self, token: &str) -> Result<Identity, ApiError> {
        let mut parts = token.splitn(3, '.');
        let (Some("shoal"), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthorized());
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(unauthorized());
        }
        let kind = kinds::SECRET.info();
        let obj = match self
            .resources
            .get(kind, Some(TOKEN_NAMESPACE), &format!("token-{id}"))
            .await
        {
            Ok(obj) => obj,
            Err(ApiError::NotFound { .. }) => return Err(unauthorized()),
            Err(e) => return Err(e),
        };
        let stored = obj
            .pointer("/data/sha256")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(unauthorized)?;
        let given = hash_hex(secret);
        if !constant_time_eq(&stored, given.as_bytes()) {
            return Err(unauthorized());
        }
        let ann = |k: &str| {
            obj.pointer("/metadata/annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
        };
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
        };
        if let Some(exp) = ann(ANN_EXPIRES) {
            let exp = DateTime::parse_from_rfc3339(exp).map_err(|_| unauthorized())?;
            if exp < Utc::now() {
                return Err(unauthorized());
            }
        }
        let user = ann(ANN_USER).unwrap_or(id).to_owned();
        let role = match (label(LABEL_ROLE), label(LABEL_ORG)) {
            (Some("cluster-admin"), _) => Role::ClusterAdmin,
            (Some(r), Some(org)) => Role::Org {
                org: org.to_owned(),
                role: parse_role(r).ok_or_else(unauthorized)?,
            },
            _ => return Err(unauthorized()),
        };
        Ok(Identity::with_role(user, role))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
