//! IAM: a role and an instance profile of the same name per node role
//! (bastion, control plane, worker), under the path `/shoal/`, tagged with the
//! cluster. Control planes may read EC2 and manage load balancers (the guest's
//! cloud provider); workers may read EC2.

use aws_sdk_iam::types::Tag;

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::names::{CLUSTER_TAG, IAM_PATH, MANAGED_TAG};
use crate::tagging::Scope;

/// Who may assume the roles: EC2 instances.
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// The inline policy of each node role.
fn policy(role: &str) -> &'static str {
    match role {
        "control-plane" => {
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:Describe*","elasticloadbalancing:*","autoscaling:Describe*"],"Resource":"*"}]}"#
        }
        "worker" => {
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:DescribeInstances","ec2:DescribeRegions"],"Resource":"*"}]}"#
        }
        _ => {
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:DescribeInstances"],"Resource":"*"}]}"#
        }
    }
}

/// The node roles.
pub const ROLES: [&str; 3] = ["bastion", "control-plane", "worker"];

fn tags(s: &Scope) -> Result<Vec<Tag>, Error> {
    [(CLUSTER_TAG, s.id.tag()), (MANAGED_TAG, "true".to_owned())]
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| Error::Spec(format!("an IAM tag: {e}")))
        })
        .collect()
}

/// Makes sure every role and instance profile exists: one list of each per pass,
/// and writes only for what is missing.
pub async fn ensure(c: &Clients, s: &mut Scope) -> Result<(), Error> {
    let roles = c
        .iam
        .list_roles()
        .path_prefix(IAM_PATH)
        .send()
        .await
        .map_err(aws("iam:ListRoles"))?;
    let profiles = c
        .iam
        .list_instance_profiles()
        .path_prefix(IAM_PATH)
        .send()
        .await
        .map_err(aws("iam:ListInstanceProfiles"))?;
    for role in ROLES {
        let name = s.id.iam(role);
        if !roles.roles().iter().any(|r| r.role_name() == name) {
            match c
                .iam
                .create_role()
                .role_name(&name)
                .path(IAM_PATH)
                .assume_role_policy_document(TRUST)
                .description(format!("shoal.io/cluster={},role={role}", s.id.tag()))
                .set_tags(Some(tags(s)?))
                .send()
                .await
                .map_err(aws("iam:CreateRole"))
            {
                Err(e) if !e.is_duplicate() => return Err(e.into()),
                _ => {}
            }
            c.iam
                .put_role_policy()
                .role_name(&name)
                .policy_name("shoal-node")
                .policy_document(policy(role))
                .send()
                .await
                .map_err(aws("iam:PutRolePolicy"))?;
        }
        s.record("iam-role", &name, role);
        let profile = profiles
            .instance_profiles()
            .iter()
            .find(|p| p.instance_profile_name() == name);
        let has_role = match profile {
            Some(p) => p.roles().iter().any(|r| r.role_name() == name),
            None => {
                match c
                    .iam
                    .create_instance_profile()
                    .instance_profile_name(&name)
                    .path(IAM_PATH)
                    .set_tags(Some(tags(s)?))
                    .send()
                    .await
                    .map_err(aws("iam:CreateInstanceProfile"))
                {
                    Err(e) if !e.is_duplicate() => return Err(e.into()),
                    _ => false,
                }
            }
        };
        if !has_role {
            match c
                .iam
                .add_role_to_instance_profile()
                .instance_profile_name(&name)
                .role_name(&name)
                .send()
                .await
                .map_err(aws("iam:AddRoleToInstanceProfile"))
            {
                Err(e) if !e.is_duplicate() && e.code.as_deref() != Some("LimitExceeded") => {
                    return Err(e.into())
                }
                _ => {}
            }
        }
        s.record("instance-profile", &name, role);
    }
    Ok(())
}
