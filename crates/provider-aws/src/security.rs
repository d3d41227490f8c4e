//! Security groups: the bastion takes SSH from anywhere and is the only SSH path
//! to the nodes; control planes take the API from anywhere (the network load
//! balancer keeps the client's address); workers take the ingress ports from
//! anywhere; nodes talk to each other freely (etcd, kubelet, the CNI).

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, SecurityGroup, UserIdGroupPair};

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::names::ROLE_TAG;
use crate::tagging::{by, Scope};

/// The cluster's security groups.
#[derive(Clone, Debug)]
pub struct Groups {
    /// The bastions'.
    pub bastion: String,
    /// The control-plane nodes'.
    pub control_plane: String,
    /// The workers'.
    pub worker: String,
}

/// The ports rules open.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The guest API server's port on control-plane nodes.
    pub api: u16,
    /// The ingress controller's HTTP NodePort on workers.
    pub ingress_http: u16,
    /// Its HTTPS NodePort.
    pub ingress_https: u16,
}

/// One rule: into a group, TCP on a port range (every protocol when `None`), from
/// a source.
type Rule<'a> = (&'a str, Option<(u16, u16)>, From<'a>);

/// Where a rule lets traffic come from.
enum From<'a> {
    Anywhere,
    Group(&'a str),
}

/// Makes sure the groups and their rules exist.
pub async fn ensure(c: &Clients, s: &mut Scope, vpc: &str, ports: Ports) -> Result<Groups, Error> {
    let found = c
        .ec2
        .describe_security_groups()
        .filters(by("vpc-id", vpc))
        .send()
        .await
        .map_err(aws("ec2:DescribeSecurityGroups"))?;
    let found = found.security_groups();
    let bastion = ensure_group(c, s, vpc, found, "bastion").await?;
    let control_plane = ensure_group(c, s, vpc, found, "control-plane").await?;
    let worker = ensure_group(c, s, vpc, found, "worker").await?;
    let rules: [Rule<'_>; 10] = [
        (&bastion, Some((22, 22)), From::Anywhere),
        (&control_plane, Some((22, 22)), From::Group(&bastion)),
        (&worker, Some((22, 22)), From::Group(&bastion)),
        (&control_plane, Some((ports.api, ports.api)), From::Anywhere),
        (
            &worker,
            Some((ports.ingress_http, ports.ingress_http)),
            From::Anywhere,
        ),
        (
            &worker,
            Some((ports.ingress_https, ports.ingress_https)),
            From::Anywhere,
        ),
        (&control_plane, None, From::Group(&control_plane)),
        (&control_plane, None, From::Group(&worker)),
        (&worker, None, From::Group(&control_plane)),
        (&worker, None, From::Group(&worker)),
    ];
    for (group, range, from) in rules {
        let present = found
            .iter()
            .filter(|g| g.group_id() == Some(group))
            .flat_map(|g| g.ip_permissions())
            .any(|p| covers(p, range, &from));
        if !present {
            allow(c, group, range, from).await?;
        }
    }
    Ok(Groups {
        bastion,
        control_plane,
        worker,
    })
}

/// Whether an existing rule is the one wanted.
fn covers(p: &IpPermission, range: Option<(u16, u16)>, from: &From<'_>) -> bool {
    let ports_match = match range {
        Some((lo, hi)) => {
            p.ip_protocol() == Some("tcp")
                && p.from_port() == Some(i32::from(lo))
                && p.to_port() == Some(i32::from(hi))
        }
        None => p.ip_protocol() == Some("-1"),
    };
    ports_match
        && match from {
            From::Anywhere => p
                .ip_ranges()
                .iter()
                .any(|r| r.cidr_ip() == Some("0.0.0.0/0")),
            From::Group(g) => p
                .user_id_group_pairs()
                .iter()
                .any(|u| u.group_id() == Some(g)),
        }
}

async fn ensure_group(
    c: &Clients,
    s: &mut Scope,
    vpc: &str,
    found: &[SecurityGroup],
    role: &str,
) -> Result<String, Error> {
    let name = s.id.display(role);
    let existing = found
        .iter()
        .find(|g| g.group_name() == Some(name.as_str()))
        .and_then(|g| g.group_id());
    let id = match existing {
        Some(id) => id.to_owned(),
        None => c
            .ec2
            .create_security_group()
            .group_name(&name)
            .description(format!("shoal.io/cluster={},role={role}", s.id.tag()))
            .vpc_id(vpc)
            .tag_specifications(s.spec(ResourceType::SecurityGroup, role, &[(ROLE_TAG, role)]))
            .send()
            .await
            .map_err(aws("ec2:CreateSecurityGroup"))?
            .group_id()
            .ok_or_else(|| Error::Waiting("ec2:CreateSecurityGroup returned no ID".into()))?
            .to_owned(),
    };
    s.record("security-group", &id, role);
    Ok(id)
}

/// Allows TCP on `range` (or everything when `None`) into `group`; a rule that
/// is already there is fine.
async fn allow(
    c: &Clients,
    group: &str,
    range: Option<(u16, u16)>,
    from: From<'_>,
) -> Result<(), Error> {
    let mut p = IpPermission::builder();
    p = match range {
        Some((lo, hi)) => p
            .ip_protocol("tcp")
            .from_port(i32::from(lo))
            .to_port(i32::from(hi)),
        None => p.ip_protocol("-1"),
    };
    p = match from {
        From::Anywhere => p.ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()),
        From::Group(g) => p.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
    };
    match c
        .ec2
        .authorize_security_group_ingress()
        .group_id(group)
        .ip_permissions(p.build())
        .send()
        .await
        .map_err(aws("ec2:AuthorizeSecurityGroupIngress"))
    {
        Err(e) if !e.is_duplicate() => Err(e.into()),
        _ => Ok(()),
    }
}
