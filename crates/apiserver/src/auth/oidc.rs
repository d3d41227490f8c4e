//! Callers with an OIDC ID token: the token is verified by `shoal-oidc`, then the
//! user and groups it names are mapped to organization roles through every
//! Organization's `spec.members`, afresh on each request, so a membership change
//! applies to the next request and no role outlives the token.

use serde_json::Value;
use shoal_api::registry::kinds;
use shoal_api::resources::organization::OrgMember;
use shoal_api::OrgRole;
use shoal_oidc::verify::{Verifier, VerifyError};

use crate::auth::{Identity, OidcClaims, Role};
use crate::error::ApiError;
use crate::resource::{ListOptions, Resources};

/// The roles `user` (with `groups`) has in the Organizations `orgs` (JSON
/// objects): per organization, the most a member entry naming the user or one
/// of the groups grants.
pub fn roles_from_organizations(orgs: &[Value], user: &str, groups: &[String]) -> Vec<Role> {
    let mut roles = Vec::new();
    for org in orgs {
        let Some(name) = org.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let members = org
            .pointer("/spec/members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| serde_json::from_value::<OrgMember>(m.clone()).ok());
        let best = members
            .filter(|m| m.matches(user, groups))
            .map(|m| m.role)
            .reduce(OrgRole::max);
        if let Some(role) = best {
            roles.push(Role::Org {
                org: name.to_owned(),
                role,
            });
        }
    }
    roles
}

fn refused(e: &VerifyError) -> ApiError {
    if e.is_unavailable() {
        ApiError::Unavailable(e.to_string())
    } else {
        ApiError::Unauthorized(e.to_string())
    }
}

/// Verifies an ID token and resolves the caller's roles.
pub(crate) async fn authenticate(
    verifier: &Verifier,
    resources: &Resources,
    admin_groups: &[String],
    token: &str,
) -> Result<Identity, ApiError> {
    let verified = verifier.verify(token).await.map_err(|e| {
        tracing::info!(reason = %e, "refused an OIDC ID token");
        refused(&e)
    })?;
    let orgs = resources
        .list(kinds::ORGANIZATION.info(), None, &ListOptions::default())
        .await?
        .items;
    let mut roles = roles_from_organizations(&orgs, &verified.username, &verified.groups);
    if verified.groups.iter().any(|g| admin_groups.contains(g)) {
        roles.insert(0, Role::ClusterAdmin);
    }
    Ok(Identity {
        user: verified.username,
        roles,
        oidc: Some(OidcClaims {
            issuer: verified.issuer,
            subject: verified.subject,
            groups: verified.groups,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn org(name: &str, members: Value) -> Value {
        json!({"metadata": {"name": name}, "spec": {"members": members}})
    }

    #[test]
    fn members_by_name_or_group_and_the_highest_role_wins() {
        let orgs = [
            org(
                "acme",
                json!([
                    {"group": "platform-team", "role": "viewer"},
                    {"name": "alice@example.com", "role": "owner"},
                ]),
            ),
            org("beta", json!([{"group": "app-team", "role": "member"}])),
            org(
                "gamma",
                json!([{"name": "bob@example.com", "role": "owner"}]),
            ),
            org("empty", json!([])),
        ];
        let groups = vec!["platform-team".to_owned(), "app-team".to_owned()];
        let roles = roles_from_organizations(&orgs, "alice@example.com", &groups);
        assert_eq!(
            roles,
            vec![
                Role::Org {
                    org: "acme".into(),
                    role: OrgRole::Owner
                },
                Role::Org {
                    org: "beta".into(),
                    role: OrgRole::Member
                },
            ]
        );
        let none = roles_from_organizations(&orgs, "carol@example.com", &[]);
        assert!(none.is_empty(), "{none:?}");
        let by_group = roles_from_organizations(&orgs, "dave", &["platform-team".to_owned()]);
        assert_eq!(
            by_group,
            vec![Role::Org {
                org: "acme".into(),
                role: OrgRole::Viewer
            }]
        );
    }
}
