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

/// A member of an organization: one user, or every user of one group, as the
/// identity provider names them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgMember {
    /// A user's name or e-mail, as the identity provider's username claim gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A group, as the identity provider's groups claim gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// What the member may do.
    pub role: OrgRole,
}

impl OrgMember {
    /// True when this entry names `user` or one of `groups`.
    pub fn matches(&self, user: &str, groups: &[String]) -> bool {
        self.name.as_deref() == Some(user)
            || self
                .group
                .as_deref()
                .is_some_and(|g| groups.iter().any(|mine| mine == g))
    }
}

impl OrgRole {
    /// The role that may do the most of `self` and `other`.
    pub fn max(self, other: OrgRole) -> OrgRole {
        let rank = |r: OrgRole| match r {
            OrgRole::Viewer => 0,
            OrgRole::Member => 1,
            OrgRole::Owner => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
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
    /// How the organization's AWS clusters reach AWS, unless a cluster says
    /// otherwise: its own account's credentials, a role to assume, or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<OrgAwsAccess>,
}

/// An organization's AWS access, the default of its AWS clusters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgAwsAccess {
    /// An IAM role to assume for every AWS call of the organization's clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// A Secret in the organization's namespace with `accessKeyId` and
    /// `secretAccessKey` (and optional `sessionToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
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
        if let Some(aws) = &self.aws {
            if let Some(arn) = &aws.role_arn {
                crate::resources::cluster::validate_role_arn("spec.aws.roleArn", arn, errs);
            }
            if let Some(name) = &aws.credentials_secret {
                crate::resources::cluster::validate_secret_name(
                    "spec.aws.credentialsSecret",
                    name,
                    errs,
                );
            }
        }
        for (i, m) in self.members.iter().enumerate() {
            let blank = |v: &Option<String>| v.as_deref().is_some_and(|s| s.trim().is_empty());
            match (&m.name, &m.group) {
                (None, None) => errs.push(FieldCause::required(
                    format!("spec.members[{i}]"),
                    "give a user (name: alice@example.com) or a group (group: platform-team)",
                )),
                (Some(_), Some(_)) => errs.push(FieldCause::invalid(
                    format!("spec.members[{i}]"),
                    "give either name or group, not both: list the user and the group as two members",
                )),
                _ => {}
            }
            if blank(&m.name) {
                errs.push(FieldCause::invalid(
                    format!("spec.members[{i}].name"),
                    "must not be empty: give the user's name or e-mail",
                ));
            }
            if blank(&m.group) {
                errs.push(FieldCause::invalid(
                    format!("spec.members[{i}].group"),
                    "must not be empty: give the group's name as the identity provider spells it",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(members: serde_json::Value) -> Vec<String> {
        let spec: OrganizationSpec =
            serde_json::from_value(serde_json::json!({ "members": members })).expect("a spec");
        let mut errs = FieldErrors::default();
        spec.validate(&mut errs);
        errs.0.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn a_member_is_a_user_or_a_group() {
        assert!(causes(serde_json::json!([
            {"name": "alice@example.com", "role": "owner"},
            {"group": "platform-team", "role": "viewer"},
        ]))
        .is_empty());
        assert_eq!(
            causes(serde_json::json!([{"role": "owner"}])),
            ["spec.members[0]"]
        );
        assert_eq!(
            causes(serde_json::json!([{"name": "a", "group": "g", "role": "owner"}])),
            ["spec.members[0]"]
        );
        assert_eq!(
            causes(
                serde_json::json!([{"name": "a", "role": "owner"}, {"group": " ", "role": "member"}])
            ),
            ["spec.members[1].group"]
        );
    }

    #[test]
    fn matching_and_the_highest_role() {
        let m: OrgMember =
            serde_json::from_value(serde_json::json!({"group": "ops", "role": "member"}))
                .expect("a member");
        assert!(m.matches("anyone", &["dev".into(), "ops".into()]));
        assert!(!m.matches("ops", &[]));
        assert_eq!(OrgRole::Viewer.max(OrgRole::Owner), OrgRole::Owner);
        assert_eq!(OrgRole::Member.max(OrgRole::Viewer), OrgRole::Member);
    }
}
