//! KeyPair: a client certificate for a guest cluster, signed from the user's CSR.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::Condition;
use crate::validate::{validate_dns1123_label, FieldCause, FieldErrors};

/// What users set on a KeyPair.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "KeyPair",
    namespaced,
    status = "KeyPairStatus",
    shortname = "kp",
    category = "shoal",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.notAfter"}"#,
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".spec.description"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyPairSpec {
    /// The Cluster whose CA signs it.
    pub cluster: String,
    /// The PEM certificate signing request. The private key stays with the client.
    pub csr: String,
    /// How long the certificate is valid, e.g. `8h` or `30m`.
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// Groups (certificate O fields) for the guest's RBAC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Why it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_ttl() -> String {
    "8h".into()
}

/// What Shoal reports on a KeyPair.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairStatus {
    /// The signed PEM certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Its serial number (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Its expiry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Conditions, such as `Issued`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a valid TTL looks like, for error messages.
const TTL_HINT: &str = "use a number and a unit s, m, h or d, e.g. '8h'";

/// Why a text is not a TTL; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// The part before the unit is not a whole number.
    #[error("{0:?} is not a duration: {hint}", hint = TTL_HINT)]
    NotANumber(String),
    /// The last character is not one of s, m, h or d.
    #[error("{0:?} has no known unit: {hint}", hint = TTL_HINT)]
    UnknownUnit(String),
    /// Zero, or so long that it overflows.
    #[error("{0:?} must be positive and under 100 years")]
    OutOfRange(String),
}

/// Parses a duration such as `90s`, `30m`, `8h` or `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, TtlError> {
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| TtlError::NotANumber(s.to_owned()))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(TtlError::UnknownUnit(s.to_owned())),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(TtlError::OutOfRange(s.to_owned())),
        Some(secs) => Ok(secs),
    }
}

impl KeyPair {
    /// A new KeyPair to create in `namespace`, named by the API from `name_prefix`
    /// (`generateName`), asking for `spec`.
    pub fn request(namespace: &str, name_prefix: String, spec: KeyPairSpec) -> Self {
        Self {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                generate_name: Some(name_prefix),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }
}

impl KeyPairSpec {
    /// Checks values that the types alone cannot.
    pub fn validate(&self, errs: &mut FieldErrors) {
        errs.check("spec.cluster", validate_dns1123_label(&self.cluster));
        errs.check("spec.ttl", parse_ttl(&self.ttl).map(|_| ()));
        if !self.csr.contains("BEGIN CERTIFICATE REQUEST") {
            errs.push(FieldCause::invalid(
                "spec.csr",
                "must be a PEM certificate signing request ('-----BEGIN CERTIFICATE REQUEST-----')",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_errors_keep_their_messages() {
        assert_eq!(parse_ttl("8h"), Ok(8 * 3600));
        assert_eq!(
            parse_ttl("8x").map_err(|e| e.to_string()),
            Err("\"8x\" has no known unit: use a number and a unit s, m, h or d, e.g. '8h'".into())
        );
        assert_eq!(
            parse_ttl("xh").map_err(|e| e.to_string()),
            Err("\"xh\" is not a duration: use a number and a unit s, m, h or d, e.g. '8h'".into())
        );
        assert_eq!(
            parse_ttl("0d").map_err(|e| e.to_string()),
            Err("\"0d\" must be positive and under 100 years".into())
        );
    }

    #[test]
    fn a_bad_ttl_names_the_field() {
        let mut errs = FieldErrors::default();
        errs.check("spec.ttl", parse_ttl("soon").map(|_| ()));
        errs.check("spec.cluster", validate_dns1123_label("Acme"));
        let causes = errs.into_result().expect_err("two bad fields");
        assert_eq!(causes[0].field, "spec.ttl");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert!(causes[0].message.starts_with("\"soon\" is not a duration"));
        assert_eq!(
            causes[1].message,
            "\"Acme\" is not a valid DNS-1123 label: use at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit (e.g. 'my-name')"
        );
    }
}
