//! KeyPair: a client certificate for a guest cluster, signed from the user's CSR.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::Condition;
use crate::validate::{validate_dns1123_label, FieldErrors};

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

/// Parses a duration such as `90s`, `30m`, `8h` or `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let hint = "use a number and a unit s, m, h or d, e.g. '8h'";
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: {hint}"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} has no known unit: {hint}")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?} must be positive and under 100 years")),
        Some(secs) => Ok(secs),
    }
}

impl KeyPairSpec {
    /// Checks values that the types alone cannot.
    pub fn validate(&self, errs: &mut FieldErrors) {
        errs.check("spec.cluster", validate_dns1123_label(&self.cluster));
        errs.check("spec.ttl", parse_ttl(&self.ttl).map(|_| ()));
        if !self.csr.contains("BEGIN CERTIFICATE REQUEST") {
            errs.check(
                "spec.csr",
                Err("must be a PEM certificate signing request ('-----BEGIN CERTIFICATE REQUEST-----')".into()),
            );
        }
    }
}
