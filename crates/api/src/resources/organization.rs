//! Organization: a tenant, owning the namespace `org-<name>`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::Condition;
use crate::validate::{FieldCause, FieldErrors};

/// The prefix of every organization's namespace.
pub const ORG_NAMESPACE_PREFIX: &str = "org-";

/// An organization's role for one of its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrgRole {
    /// Everything in the organization, including its membership.
    Owner,
    /// Create, change and delete clusters and their parts.
    Member,
    /// Read only.
    Viewer,
}

/// A member of an organization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgMember {
    /// The user's name or e-mail, as the identity provider reports it.
    pub name: String,
    /// What the member may do.
    pub role: OrgRole,
}

/// What users set on an Organization.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Organization",
    status = "OrganizationStatus",
    shortname = "org",
    category = "shoal",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationSpec {
    /// A human-friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Members and their roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<OrgMember>,
}

/// What Shoal reports on an Organization.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// The namespace that holds the organization's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Conditions, such as `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl OrganizationSpec {
    /// Checks the spec's values.
    pub fn validate(&self, errs: &mut FieldErrors) {
        for (i, m) in self.members.iter().enumerate() {
            if m.name.trim().is_empty() {
                errs.push(FieldCause::invalid(
                    format!("spec.members[{i}].name"),
                    "must not be empty: give the user's name or e-mail",
                ));
            }
        }
    }
}

/// The namespace owned by organization `org`.
pub fn org_namespace(org: &str) -> String {
    format!("{ORG_NAMESPACE_PREFIX}{org}")
}

/// The organization owning `namespace`, if it is an organization namespace.
pub fn namespace_org(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix(ORG_NAMESPACE_PREFIX)
        .filter(|o| !o.is_empty())
}
