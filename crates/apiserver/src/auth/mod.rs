//! Who is asking, and what they may do.
//!
//! Authentication: bearer tokens, stored as Secrets in `shoal-system` (so the
//! admin token works with every replica sharing a store), or ID tokens from a
//! trusted OIDC issuer, whose user and groups are mapped to organization roles
//! through each Organization's `spec.members` on every request. Authorization:
//! cluster-admin, or an organization role (owner, member, viewer) confined to
//! the organization's namespace.

mod authorize;
mod oidc;
mod token;

pub use authorize::{authorize, Restriction, Verb};
pub use oidc::roles_from_organizations;
pub use token::{
    Authenticator, TokenRequest, ADMIN_TOKEN_NAME, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE,
};

use shoal_api::OrgRole;

/// What an authenticated caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything, everywhere.
    ClusterAdmin,
    /// A role within one organization.
    Org {
        /// The organization's name.
        org: String,
        /// The role in it.
        role: OrgRole,
    },
}

/// What an OIDC ID token said about the caller, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcClaims {
    /// The issuer that signed the token.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's groups.
    pub groups: Vec<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name recorded in the audit log.
    pub user: String,
    /// What the caller may do: cluster-admin, or one role per organization
    /// (none for a signed-in user who belongs to no organization).
    pub roles: Vec<Role>,
    /// Set when an OIDC ID token authenticated the caller.
    pub oidc: Option<OidcClaims>,
}

impl Identity {
    /// A caller with one role, authenticated by a Shoal token.
    pub fn with_role(user: impl Into<String>, role: Role) -> Self {
        Self {
            user: user.into(),
            roles: vec![role],
            oidc: None,
        }
    }

    /// True for cluster admins.
    pub fn is_cluster_admin(&self) -> bool {
        self.roles.contains(&Role::ClusterAdmin)
    }

    /// The organizations the caller has a role in, with the role.
    pub fn org_roles(&self) -> impl Iterator<Item = (&str, OrgRole)> {
        self.roles.iter().filter_map(|r| match r {
            Role::Org { org, role } => Some((org.as_str(), *role)),
            Role::ClusterAdmin => None,
        })
    }
}
