//! The authorization rules, as one function over (identity, verb, kind, namespace, name).

use shoal_api::registry::TenantAccess;
use shoal_api::resources::organization::{namespace_org, org_namespace};
use shoal_api::{KindInfo, OrgRole};

use crate::auth::Identity;
use crate::error::ApiError;

/// System Secrets that even cluster admins may not change or delete: losing
/// them would lock every replica out.
const PROTECTED_SECRETS: &[&str] = &["token-admin", "admin-credential", "management-ca"];

/// A request verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Read one.
    Get,
    /// Read many.
    List,
    /// Stream changes.
    Watch,
    /// Create.
    Create,
    /// Replace.
    Update,
    /// Patch.
    Patch,
    /// Delete.
    Delete,
}

impl Verb {
    /// The Kubernetes name of the verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// True for verbs that change state.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
        )
    }
}

/// A narrowing the caller's request must get, so a list or watch returns only
/// what the caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// Nothing to narrow.
    None,
    /// Only this namespace.
    Namespace(String),
    /// Only the object of this name (cluster-scoped kinds).
    Name(String),
}

fn forbidden(id: &Identity, verb: Verb, kind: &KindInfo, ns: Option<&str>, why: &str) -> ApiError {
    let resource = if kind.group.is_empty() {
        kind.plural.to_owned()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    };
    ApiError::Forbidden {
        user: id.user.clone(),
        verb: verb.as_str().to_owned(),
        resource,
        scope: match ns {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_owned(),
        },
        why: why.to_owned(),
    }
}

/// Decides a request. `ns` is the request's namespace (`None` for cluster-scoped
/// kinds and for lists across all namespaces); `name` is the object's.
pub fn authorize(
    id: &Identity,
    verb: Verb,
    kind: &KindInfo,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<Restriction, ApiError> {
    if id.is_cluster_admin() {
        let system_secret = kind.behavior.bootstrap_credentials
            && ns == Some(shoal_api::wellknown::SYSTEM_NAMESPACE)
            && name.is_some_and(|n| PROTECTED_SECRETS.contains(&n));
        if system_secret && matches!(verb, Verb::Delete | Verb::Update | Verb::Patch) {
            return Err(forbidden(
                id,
                verb,
                kind,
                ns,
                "this is a bootstrap credential every replica depends on; create another admin token instead",
            ));
        }
        return Ok(Restriction::None);
    }
    let orgs: Vec<(&str, OrgRole)> = id.org_roles().collect();
    let (org, role) = match orgs.as_slice() {
        [] => {
            let groups = id
                .oidc
                .as_ref()
                .map(|o| o.groups.join(", "))
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| "none".to_owned());
            return Err(forbidden(
                id,
                verb,
                kind,
                ns,
                &format!("you belong to no organization: ask an organization's owner to add you or one of your groups ({groups}) to its spec.members"),
            ));
        }
        [one] => *one,
        several => match pick_org(several, kind, ns, name) {
            Some(chosen) => chosen,
            None => {
                let names: Vec<String> = several.iter().map(|(o, _)| org_namespace(o)).collect();
                return Err(forbidden(
                    id,
                    verb,
                    kind,
                    ns,
                    &format!(
                        "you belong to several organizations: name one, by namespace ({}) or by name",
                        names.join(", ")
                    ),
                ));
            }
        },
    };
    authorize_in_org(id, verb, kind, ns, name, org, role)
}

/// The organization a request of a caller with several concerns: the one owning
/// the namespace, or named by the request; kinds that do not depend on the
/// organization take any.
fn pick_org<'a>(
    orgs: &[(&'a str, OrgRole)],
    kind: &KindInfo,
    ns: Option<&str>,
    name: Option<&str>,
) -> Option<(&'a str, OrgRole)> {
    if let Some(n) = ns {
        return orgs
            .iter()
            .find(|(o, _)| Some(*o) == namespace_org(n))
            .copied()
            .or_else(|| orgs.first().copied());
    }
    match kind.behavior.tenant {
        TenantAccess::AdminOnly | TenantAccess::ReadAll => orgs.first().copied(),
        TenantAccess::OwnOrganization => {
            name.and_then(|n| orgs.iter().find(|(o, _)| *o == n).copied())
        }
        TenantAccess::OwnNamespace => name.and_then(|n| {
            orgs.iter()
                .find(|(o, _)| namespace_org(n) == Some(*o))
                .copied()
        }),
        TenantAccess::NamespaceRead | TenantAccess::NamespaceWrite => None,
    }
}

/// Decides a request of a caller with `role` in `org`.
fn authorize_in_org(
    id: &Identity,
    verb: Verb,
    kind: &KindInfo,
    ns: Option<&str>,
    name: Option<&str>,
    org: &str,
    role: OrgRole,
) -> Result<Restriction, ApiError> {
    let deny = |why: &str| Err(forbidden(id, verb, kind, ns, why));
    let own_ns = org_namespace(org);
    let reading = !verb.is_write();
    let writer = matches!(role, OrgRole::Owner | OrgRole::Member);
    let collection = matches!(verb, Verb::List | Verb::Watch | Verb::Create);

    match kind.behavior.tenant {
        TenantAccess::AdminOnly => deny("only cluster admins may use this resource"),
        TenantAccess::ReadAll => {
            if reading {
                Ok(Restriction::None)
            } else {
                deny("releases are managed by cluster admins")
            }
        }
        TenantAccess::OwnOrganization | TenantAccess::OwnNamespace => {
            let own_name = if kind.behavior.tenant == TenantAccess::OwnNamespace {
                own_ns.clone()
            } else {
                org.to_owned()
            };
            match (verb, name) {
                (Verb::List | Verb::Watch, _) => Ok(Restriction::Name(own_name)),
                (_, Some(n)) if n != own_name => deny(&format!("tokens of organization {org:?} may only see {own_name:?}")),
                (Verb::Get, Some(_)) => Ok(Restriction::None),
                (Verb::Update | Verb::Patch, Some(_)) if kind.behavior.owner_may_update && role == OrgRole::Owner => Ok(Restriction::None),
                _ => deny("only owners may change their organization, and only cluster admins create or delete organizations"),
            }
        }
        TenantAccess::NamespaceRead | TenantAccess::NamespaceWrite if kind.namespaced => {
            match ns {
                Some(n) if n != own_ns => {
                    let whose = namespace_org(n)
                        .map(|o| format!("organization {o:?}"))
                        .unwrap_or_else(|| "no organization of yours".into());
                    let mine: Vec<String> = id
                        .org_roles()
                        .map(|(o, _)| format!("{o:?} ({})", org_namespace(o)))
                        .collect();
                    return deny(&format!(
                        "the namespace belongs to {whose}; you are in organization {}",
                        mine.join(", ")
                    ));
                }
                None if !collection || verb == Verb::Create => {
                    return deny("give a namespace");
                }
                _ => {}
            }
            let restriction = if ns.is_none() {
                Restriction::Namespace(own_ns)
            } else {
                Restriction::None
            };
            if reading {
                return Ok(restriction);
            }
            if kind.behavior.tenant != TenantAccess::NamespaceWrite {
                return deny("this resource is written by Shoal's controllers only");
            }
            if writer {
                Ok(restriction)
            } else {
                deny("viewers may only read; ask an owner for the member role")
            }
        }
        TenantAccess::NamespaceRead | TenantAccess::NamespaceWrite => {
            deny("only cluster admins may use this resource")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use shoal_api::KINDS;

    fn kind(name: &str) -> &'static KindInfo {
        KINDS
            .iter()
            .find(|k| k.kind == name && k.group != "events.k8s.io")
            .expect("kind")
    }

    fn org(role: OrgRole) -> Identity {
        Identity::with_role(
            "u",
            Role::Org {
                org: "acme".into(),
                role,
            },
        )
    }

    #[test]
    fn org_roles() {
        let cl = kind("Cluster");
        let own = Some("org-acme");
        let other = Some("org-beta");
        for role in [OrgRole::Owner, OrgRole::Member, OrgRole::Viewer] {
            let id = org(role);
            assert!(authorize(&id, Verb::Get, cl, own, Some("x")).is_ok());
            assert!(authorize(&id, Verb::Get, cl, other, Some("x")).is_err());
            assert_eq!(
                authorize(&id, Verb::List, cl, None, None).ok(),
                Some(Restriction::Namespace("org-acme".into()))
            );
            let can_write = role != OrgRole::Viewer;
            assert_eq!(
                authorize(&id, Verb::Create, cl, own, None).is_ok(),
                can_write
            );
            assert!(authorize(&id, Verb::Delete, cl, other, Some("x")).is_err());
            assert!(authorize(&id, Verb::Get, kind("Secret"), own, Some("s")).is_err());
        }
    }

    #[test]
    fn tenant_access_by_kind() {
        let member = org(OrgRole::Member);
        let owner = org(OrgRole::Owner);
        let own = Some("org-acme");
        let ok = |id: &Identity, verb, kind: &KindInfo, ns, name| {
            authorize(id, verb, kind, ns, name).is_ok()
        };
        // Admin-only kinds, namespaced or not.
        for k in ["Secret", "Host", "BareMetalMachine", "Lease"] {
            assert!(!ok(&member, Verb::Get, kind(k), own, Some("x")), "{k}");
            assert!(!ok(&member, Verb::List, kind(k), None, None), "{k}");
        }
        // Releases: read, never write.
        let rel = kind("Release");
        assert!(ok(&member, Verb::List, rel, None, None));
        assert!(!ok(&owner, Verb::Create, rel, None, None));
        // Machines: read in the own namespace, written by controllers only.
        let ma = kind("Machine");
        assert!(ok(&member, Verb::Get, ma, own, Some("m")));
        assert!(!ok(&owner, Verb::Delete, ma, own, Some("m")));
        // Both Event kinds, NodePools and KeyPairs are writable by members.
        let v1_event = KINDS
            .iter()
            .find(|k| k.group == "events.k8s.io")
            .expect("events.k8s.io Events");
        for k in [kind("Event"), v1_event, kind("NodePool"), kind("KeyPair")] {
            assert!(ok(&member, Verb::Create, k, own, None), "{}", k.kind);
        }
        // The own Organization and Namespace, by their own names.
        let organization = kind("Organization");
        let namespace = kind("Namespace");
        assert_eq!(
            authorize(&member, Verb::List, organization, None, None).ok(),
            Some(Restriction::Name("acme".into()))
        );
        assert_eq!(
            authorize(&member, Verb::List, namespace, None, None).ok(),
            Some(Restriction::Name("org-acme".into()))
        );
        assert!(ok(&member, Verb::Get, namespace, None, Some("org-acme")));
        assert!(!ok(&member, Verb::Get, namespace, None, Some("org-beta")));
        assert!(ok(&owner, Verb::Patch, organization, None, Some("acme")));
        assert!(!ok(&member, Verb::Patch, organization, None, Some("acme")));
        assert!(!ok(&owner, Verb::Patch, namespace, None, Some("org-acme")));
        assert!(!ok(&owner, Verb::Delete, organization, None, Some("acme")));
    }

    #[test]
    fn several_organizations_and_none() {
        let id = Identity {
            user: "alice@example.com".into(),
            roles: vec![
                Role::Org {
                    org: "acme".into(),
                    role: OrgRole::Owner,
                },
                Role::Org {
                    org: "beta".into(),
                    role: OrgRole::Viewer,
                },
            ],
            oidc: None,
        };
        let cl = kind("Cluster");
        // Each namespace gets the role of its own organization.
        assert!(authorize(&id, Verb::Create, cl, Some("org-acme"), None).is_ok());
        assert!(authorize(&id, Verb::Get, cl, Some("org-beta"), Some("c")).is_ok());
        assert!(authorize(&id, Verb::Create, cl, Some("org-beta"), None).is_err());
        assert!(authorize(&id, Verb::Get, cl, Some("org-gamma"), Some("c")).is_err());
        // A list across namespaces must name one of them.
        let err = authorize(&id, Verb::List, cl, None, None).expect_err("ambiguous");
        assert!(err.to_string().contains("org-acme, org-beta"), "{err}");
        // Organizations by name; Releases for anyone signed in to one.
        let organization = kind("Organization");
        assert!(authorize(&id, Verb::Patch, organization, None, Some("acme")).is_ok());
        assert!(authorize(&id, Verb::Patch, organization, None, Some("beta")).is_err());
        assert!(authorize(&id, Verb::List, kind("Release"), None, None).is_ok());
        // Signed in, but in no organization: refused everywhere, with the way out.
        let nobody = Identity {
            user: "carol@example.com".into(),
            roles: Vec::new(),
            oidc: Some(crate::auth::OidcClaims {
                issuer: "https://issuer.example".into(),
                subject: "carol".into(),
                groups: vec!["contractors".into()],
            }),
        };
        let err =
            authorize(&nobody, Verb::Get, cl, Some("org-acme"), Some("c")).expect_err("no org");
        assert!(err.to_string().contains("contractors"), "{err}");
        assert!(authorize(&nobody, Verb::List, kind("Release"), None, None).is_err());
    }

    #[test]
    fn admins_may_not_change_bootstrap_credentials() {
        let admin = Identity::with_role("root", Role::ClusterAdmin);
        let system = Some(shoal_api::wellknown::SYSTEM_NAMESPACE);
        let secret = kind("Secret");
        for name in PROTECTED_SECRETS {
            assert!(authorize(&admin, Verb::Get, secret, system, Some(name)).is_ok());
            assert!(authorize(&admin, Verb::Delete, secret, system, Some(name)).is_err());
        }
        assert!(authorize(&admin, Verb::Delete, secret, system, Some("token-x")).is_ok());
        assert!(authorize(
            &admin,
            Verb::Delete,
            kind("Cluster"),
            system,
            Some("token-admin")
        )
        .is_ok());
    }
}
