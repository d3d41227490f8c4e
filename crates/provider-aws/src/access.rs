//! Which identity a cluster's AWS calls use. The cluster's own settings win, then
//! its organization's (`spec.aws` of the Organization), then the server's own
//! credential chain: so each organization can work in an AWS account of its own,
//! with a Secret holding its keys, a role to assume, or both.

use aws_credential_types::Credentials;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use shoal_api::resources::organization::namespace_org;
use shoal_api::{AwsProviderSpec, Cluster, Organization};

use crate::error::{kube_err, Error};

/// The keys a credentials Secret holds.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
/// The secret key's key.
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
/// The optional session token's key.
pub const SESSION_TOKEN: &str = "sessionToken";

/// The identity of one cluster's AWS calls.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// A role to assume.
    pub role_arn: Option<String>,
    /// Credentials from a Secret, instead of the server's chain.
    pub secret: Option<SecretCredentials>,
}

/// Credentials read from a Secret.
#[derive(Clone, Debug)]
pub struct SecretCredentials {
    /// `namespace/name@resourceVersion`: a new version of the Secret makes new clients.
    pub version: String,
    /// The keys.
    pub credentials: Credentials,
}

impl Access {
    /// What tells these clients from others of the same region.
    pub fn cache_key(&self) -> (Option<String>, Option<String>) {
        (
            self.role_arn.clone(),
            self.secret.as_ref().map(|s| s.version.clone()),
        )
    }
}

/// The access of `cluster`: its spec's role and Secret, else its organization's.
pub async fn resolve(
    client: &Client,
    cluster: &Cluster,
    spec: &AwsProviderSpec,
) -> Result<Access, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let org = match namespace_org(&ns) {
        Some(org) if spec.role_arn.is_none() || spec.credentials_secret.is_none() => {
            Api::<Organization>::all(client.clone())
                .get_opt(org)
                .await
                .map_err(kube_err(format!("read organization {org}")))?
                .and_then(|o| o.spec.aws)
        }
        _ => None,
    }
    .unwrap_or_default();
    let (secret_name, field) = match (&spec.credentials_secret, &org.credentials_secret) {
        (Some(name), _) => (Some(name), "spec.provider.aws.credentialsSecret"),
        (None, Some(name)) => (Some(name), "the organization's spec.aws.credentialsSecret"),
        (None, None) => (None, ""),
    };
    let secret = match secret_name {
        Some(name) => Some(read_secret(client, &ns, name, field).await?),
        None => None,
    };
    Ok(Access {
        role_arn: spec.role_arn.clone().or(org.role_arn),
        secret,
    })
}

async fn read_secret(
    client: &Client,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<SecretCredentials, Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(kube_err(format!("read Secret {ns}/{name}")))?
        .ok_or_else(|| {
            Error::Spec(format!(
                "Secret {ns}/{name}, named by {field}, does not exist: create it with the keys \
                 {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY}"
            ))
        })?;
    let credentials = credentials_of(&secret).map_err(|missing| {
        Error::Spec(format!(
            "Secret {ns}/{name}, named by {field}, has no {missing}: it needs the keys \
                 {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY} (and {SESSION_TOKEN} for temporary keys)"
        ))
    })?;
    Ok(SecretCredentials {
        version: format!(
            "{ns}/{name}@{}",
            secret.resource_version().unwrap_or_default()
        ),
        credentials,
    })
}

/// The credentials a Secret holds, or the first key it lacks.
pub fn credentials_of(secret: &Secret) -> Result<Credentials, &'static str> {
    let value = |key: &str| -> Option<String> {
        let text = match secret.data.as_ref().and_then(|d| d.get(key)) {
            Some(bytes) => String::from_utf8(bytes.0.clone()).ok()?,
            None => secret.string_data.as_ref()?.get(key)?.clone(),
        };
        let text = text.trim().to_owned();
        (!text.is_empty()).then_some(text)
    };
    let id = value(ACCESS_KEY_ID).ok_or(ACCESS_KEY_ID)?;
    let key = value(SECRET_ACCESS_KEY).ok_or(SECRET_ACCESS_KEY)?;
    Ok(Credentials::new(
        id,
        key,
        value(SESSION_TOKEN),
        None,
        "shoal-credentials-secret",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_gives_its_keys_and_names_the_one_it_lacks() {
        let full = secret(&[
            (ACCESS_KEY_ID, "AKIDEXAMPLE\n"),
            (SECRET_ACCESS_KEY, "s3cr3t"),
        ]);
        let c = credentials_of(&full).expect("credentials");
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key(), "s3cr3t");
        assert_eq!(c.session_token(), None);
        let half = secret(&[(ACCESS_KEY_ID, "AKIDEXAMPLE")]);
        assert_eq!(credentials_of(&half).err(), Some(SECRET_ACCESS_KEY));
        let blank = secret(&[(ACCESS_KEY_ID, " "), (SECRET_ACCESS_KEY, "x")]);
        assert_eq!(credentials_of(&blank).err(), Some(ACCESS_KEY_ID));
    }
}
