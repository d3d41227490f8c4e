//! Who is asking, and what they may do.
//!
//! Authentication: bearer tokens, stored as Secrets in `shoal-system` (so the
//! admin token works with every replica sharing a store). Authorization:
//! cluster-admin, or an organization role (owner, member, viewer) confined to
//! the organization's namespace.

mod authorize;
mod token;

pub use authorize::{authorize, Restriction, Verb};
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

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name recorded in the audit log.
    pub user: String,
    /// What the caller may do.
    pub role: Role,
}
