//! Deleting a cluster's AWS resources in dependency order, and the sweep that
//! lists what is left by tag (and, inside the cluster's VPCs, what the guest made:
//! load balancers, network interfaces, security groups).
//!
//! Each pass deletes what it can and says what it waits for; the controller
//! repeats passes until the sweep finds nothing.

use aws_sdk_ec2::types::{InstanceStateName, NatGatewayState};
use shoal_api::AwsResource;

use crate::clients::Clients;
use crate::error::{aws, AwsError, Error};
use crate::names::{CLUSTER_TAG, IAM_PATH};
use crate::tagging::{by, Scope};
use crate::{iam, workers};

fn gone(r: Result<(), AwsError>) -> Result<(), Error> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// One deletion pass. Records what it deleted in `s`; `Err(Waiting)` when
/// something must finish first.
pub async fn pass(c: &Clients, s: &mut Scope) -> Result<(), Error> {
    // Worker groups and their templates first: nothing makes new instances.
    for name in workers::groups(c, s).await? {
        workers::delete_group(c, &name).await?;
        s.record("auto-scaling-group", &name, "deleted");
    }
    for t in workers::templates(c, s).await? {
        if let Some(id) = t.launch_template_id() {
            gone(
                c.ec2
                    .delete_launch_template()
                    .launch_template_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("ec2:DeleteLaunchTemplate")),
            )?;
            s.record("launch-template", id, "deleted");
        }
    }
    let vpcs = vpcs(c, s).await?;
    // Load balancers: ours by tag, and any the guest made in our VPCs.
    for (arn, _) in balancers(c, s, &vpcs).await? {
        gone(
            c.elb
                .delete_load_balancer()
                .load_balancer_arn(&arn)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("elasticloadbalancing:DeleteLoadBalancer")),
        )?;
        s.record("load-balancer", &arn, "deleted");
    }
    for arn in target_groups(c, s, &vpcs).await? {
        gone(
            c.elb
                .delete_target_group()
                .target_group_arn(&arn)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("elasticloadbalancing:DeleteTargetGroup")),
        )?;
        s.record("target-group", &arn, "deleted");
    }
    // Instances: bastions, control planes and whatever the groups left.
    let running = instances(c, s).await?;
    if !running.is_empty() {
        let ids: Vec<String> = running.iter().map(|(id, _)| id.clone()).collect();
        c.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(aws("ec2:TerminateInstances"))?;
        for id in &ids {
            s.record("instance", id, "terminated");
        }
        let still = instances(c, s).await?;
        if !still.is_empty() {
            return Err(Error::Waiting(format!(
                "waiting for {} instance(s) to terminate",
                still.len()
            )));
        }
    }
    // NAT gateways, then their addresses.
    let nats = c
        .ec2
        .describe_nat_gateways()
        .filter(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeNatGateways"))?;
    let mut deleting = 0;
    let ours: Vec<_> = nats
        .nat_gateways()
        .iter()
        .filter(|g| s.owns(g.tags()))
        .collect();
    for g in ours {
        let id = g.nat_gateway_id().unwrap_or_default();
        match g.state() {
            Some(NatGatewayState::Deleted) => {}
            Some(NatGatewayState::Deleting) => deleting += 1,
            _ => {
                gone(
                    c.ec2
                        .delete_nat_gateway()
                        .nat_gateway_id(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(aws("ec2:DeleteNatGateway")),
                )?;
                s.record("nat-gateway", id, "deleted");
            }
        }
    }
    if deleting > 0 {
        return Err(Error::Waiting(format!(
            "waiting for {deleting} NAT gateway(s) to be deleted"
        )));
    }
    let addresses = c
        .ec2
        .describe_addresses()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeAddresses"))?;
    for a in addresses.addresses() {
        if let Some(id) = a.allocation_id() {
            // Every NAT gateway is gone by now; an association left over is stale.
            if let Some(assoc) = a.association_id() {
                gone(
                    c.ec2
                        .disassociate_address()
                        .association_id(assoc)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(aws("ec2:DisassociateAddress")),
                )?;
            }
            gone(
                c.ec2
                    .release_address()
                    .allocation_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("ec2:ReleaseAddress")),
            )?;
            s.record("elastic-ip", id, "released");
        }
    }
    let igws = c
        .ec2
        .describe_internet_gateways()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeInternetGateways"))?;
    for g in igws.internet_gateways() {
        let id = g.internet_gateway_id().unwrap_or_default();
        for a in g.attachments() {
            if let Some(vpc) = a.vpc_id() {
                gone(
                    c.ec2
                        .detach_internet_gateway()
                        .internet_gateway_id(id)
                        .vpc_id(vpc)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(aws("ec2:DetachInternetGateway")),
                )?;
            }
        }
        gone(
            c.ec2
                .delete_internet_gateway()
                .internet_gateway_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("ec2:DeleteInternetGateway")),
        )?;
        s.record("internet-gateway", id, "deleted");
    }
    let terminated = terminated_instances(c, s).await?;
    for vpc in &vpcs {
        // Interfaces the guest or a load balancer left behind.
        let enis = c
            .ec2
            .describe_network_interfaces()
            .filters(by("vpc-id", vpc))
            .send()
            .await
            .map_err(aws("ec2:DescribeNetworkInterfaces"))?;
        for n in enis.network_interfaces() {
            let id = n.network_interface_id().unwrap_or_default();
            if let Some(a) = n.attachment().filter(|a| a.attachment_id().is_some()) {
                // An instance's primary interface goes with the instance: one still
                // attached to a terminated instance is left to AWS (some
                // implementations keep it listed); any other attachment is waited on.
                let primary_of_terminated = a.device_index() == Some(0)
                    && a.instance_id()
                        .is_some_and(|i| terminated.iter().any(|t| t == i));
                if primary_of_terminated {
                    continue;
                }
                return Err(Error::Waiting(format!(
                    "waiting for network interface {id} to be detached from {}",
                    a.instance_id().unwrap_or("its instance")
                )));
            }
            gone(
                c.ec2
                    .delete_network_interface()
                    .network_interface_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("ec2:DeleteNetworkInterface")),
            )?;
            s.record("network-interface", id, "deleted");
        }
    }
    let subnets = c
        .ec2
        .describe_subnets()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeSubnets"))?;
    for n in subnets.subnets() {
        let id = n.subnet_id().unwrap_or_default();
        dependent(
            c.ec2
                .delete_subnet()
                .subnet_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("ec2:DeleteSubnet")),
        )?;
        s.record("subnet", id, "deleted");
    }
    let tables = c
        .ec2
        .describe_route_tables()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeRouteTables"))?;
    for t in tables.route_tables() {
        let id = t.route_table_id().unwrap_or_default();
        for a in t.associations() {
            if let (Some(assoc), false) =
                (a.route_table_association_id(), a.main().unwrap_or(false))
            {
                gone(
                    c.ec2
                        .disassociate_route_table()
                        .association_id(assoc)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(aws("ec2:DisassociateRouteTable")),
                )?;
            }
        }
        gone(
            c.ec2
                .delete_route_table()
                .route_table_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("ec2:DeleteRouteTable")),
        )?;
        s.record("route-table", id, "deleted");
    }
    for vpc in &vpcs {
        let groups = c
            .ec2
            .describe_security_groups()
            .filters(by("vpc-id", vpc))
            .send()
            .await
            .map_err(aws("ec2:DescribeSecurityGroups"))?;
        let groups: Vec<_> = groups
            .security_groups()
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .collect();
        // Rules that name other groups would keep those groups alive: drop them first.
        for g in &groups {
            if !g.ip_permissions().is_empty() {
                gone(
                    c.ec2
                        .revoke_security_group_ingress()
                        .group_id(g.group_id().unwrap_or_default())
                        .set_ip_permissions(Some(g.ip_permissions().to_vec()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(aws("ec2:RevokeSecurityGroupIngress")),
                )?;
            }
        }
        for g in &groups {
            let id = g.group_id().unwrap_or_default();
            dependent(
                c.ec2
                    .delete_security_group()
                    .group_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("ec2:DeleteSecurityGroup")),
            )?;
            s.record("security-group", id, "deleted");
        }
        dependent(
            c.ec2
                .delete_vpc()
                .vpc_id(vpc)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("ec2:DeleteVpc")),
        )?;
        s.record("vpc", vpc, "deleted");
    }
    for role in iam_roles(c, s).await? {
        delete_role(c, &role).await?;
        s.record("iam-role", &role, "deleted");
    }
    for role in iam::ROLES {
        let name = s.id.iam(role);
        gone(
            c.iam
                .delete_instance_profile()
                .instance_profile_name(&name)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("iam:DeleteInstanceProfile")),
        )?;
    }
    Ok(())
}

/// A deletion refused because something still uses the resource is a wait.
fn dependent(r: Result<(), AwsError>) -> Result<(), Error> {
    match r {
        Err(e) if e.is_dependency() => Err(Error::Waiting(e.to_string())),
        other => gone(other),
    }
}

async fn vpcs(c: &Clients, s: &Scope) -> Result<Vec<String>, Error> {
    let out = c
        .ec2
        .describe_vpcs()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeVpcs"))?;
    Ok(out
        .vpcs()
        .iter()
        .filter_map(|v| v.vpc_id().map(str::to_owned))
        .collect())
}

async fn instances(c: &Clients, s: &Scope) -> Result<Vec<(String, String)>, Error> {
    let out = c
        .ec2
        .describe_instances()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()),
                Some(InstanceStateName::Terminated)
            )
        })
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_owned(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
            ))
        })
        .collect())
}

async fn terminated_instances(c: &Clients, s: &Scope) -> Result<Vec<String>, Error> {
    let out = c
        .ec2
        .describe_instances()
        .filters(s.owned())
        .filters(by("instance-state-name", "terminated"))
        .send()
        .await
        .map_err(aws("ec2:DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect())
}

/// ARNs whose tags name the cluster, among `arns`.
async fn tagged(c: &Clients, s: &Scope, arns: Vec<String>) -> Result<Vec<String>, Error> {
    let mut ours = Vec::new();
    for chunk in arns.chunks(20) {
        let out = c
            .elb
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws("elasticloadbalancing:DescribeTags"))?;
        for d in out.tag_descriptions() {
            let mine = d
                .tags()
                .iter()
                .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(s.id.tag().as_str()));
            if mine {
                ours.extend(d.resource_arn().map(str::to_owned));
            }
        }
    }
    Ok(ours)
}

/// The cluster's load balancers (ARN, DNS name): tagged, or in its VPCs.
async fn balancers(
    c: &Clients,
    s: &Scope,
    vpcs: &[String],
) -> Result<Vec<(String, String)>, Error> {
    let out = c
        .elb
        .describe_load_balancers()
        .send()
        .await
        .map_err(aws("elasticloadbalancing:DescribeLoadBalancers"))?;
    let all: Vec<_> = out.load_balancers().to_vec();
    let arns = all
        .iter()
        .filter_map(|l| l.load_balancer_arn().map(str::to_owned))
        .collect();
    let tagged = tagged(c, s, arns).await?;
    Ok(all
        .iter()
        .filter(|l| {
            l.load_balancer_arn()
                .is_some_and(|a| tagged.iter().any(|t| t == a))
                || l.vpc_id().is_some_and(|v| vpcs.iter().any(|x| x == v))
        })
        .filter_map(|l| {
            Some((
                l.load_balancer_arn()?.to_owned(),
                l.dns_name().unwrap_or_default().to_owned(),
            ))
        })
        .collect())
}

async fn target_groups(c: &Clients, s: &Scope, vpcs: &[String]) -> Result<Vec<String>, Error> {
    let out = c
        .elb
        .describe_target_groups()
        .send()
        .await
        .map_err(aws("elasticloadbalancing:DescribeTargetGroups"))?;
    let all: Vec<_> = out.target_groups().to_vec();
    let arns = all
        .iter()
        .filter_map(|g| g.target_group_arn().map(str::to_owned))
        .collect();
    let tagged = tagged(c, s, arns).await?;
    Ok(all
        .iter()
        .filter(|g| {
            g.target_group_arn()
                .is_some_and(|a| tagged.iter().any(|t| t == a))
                || g.vpc_id().is_some_and(|v| vpcs.iter().any(|x| x == v))
        })
        .filter_map(|g| g.target_group_arn().map(str::to_owned))
        .collect())
}

async fn iam_roles(c: &Clients, s: &Scope) -> Result<Vec<String>, Error> {
    let out = c
        .iam
        .list_roles()
        .path_prefix(IAM_PATH)
        .send()
        .await
        .map_err(aws("iam:ListRoles"))?;
    let mut ours = Vec::new();
    for r in out.roles() {
        let tags = c
            .iam
            .list_role_tags()
            .role_name(r.role_name())
            .send()
            .await
            .map_err(aws("iam:ListRoleTags"))?;
        if tags
            .tags()
            .iter()
            .any(|t| t.key() == CLUSTER_TAG && t.value() == s.id.tag())
        {
            ours.push(r.role_name().to_owned());
        }
    }
    Ok(ours)
}

async fn delete_role(c: &Clients, role: &str) -> Result<(), Error> {
    let profiles = c
        .iam
        .list_instance_profiles_for_role()
        .role_name(role)
        .send()
        .await
        .map_err(aws("iam:ListInstanceProfilesForRole"))?;
    for p in profiles.instance_profiles() {
        let name = p.instance_profile_name();
        gone(
            c.iam
                .remove_role_from_instance_profile()
                .instance_profile_name(name)
                .role_name(role)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("iam:RemoveRoleFromInstanceProfile")),
        )?;
        gone(
            c.iam
                .delete_instance_profile()
                .instance_profile_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("iam:DeleteInstanceProfile")),
        )?;
    }
    let policies = c
        .iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(aws("iam:ListRolePolicies"))?;
    for p in policies.policy_names() {
        gone(
            c.iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(p)
                .send()
                .await
                .map(|_| ())
                .map_err(aws("iam:DeleteRolePolicy")),
        )?;
    }
    gone(
        c.iam
            .delete_role()
            .role_name(role)
            .send()
            .await
            .map(|_| ())
            .map_err(aws("iam:DeleteRole")),
    )
}

/// Everything of the cluster's that still exists, by tag (and in its VPCs).
pub async fn leftovers(c: &Clients, s: &Scope) -> Result<Vec<AwsResource>, Error> {
    let mut left = Vec::new();
    let mut add = |kind: &str, id: &str| {
        left.push(AwsResource {
            kind: kind.to_owned(),
            id: id.to_owned(),
            purpose: String::new(),
        })
    };
    let vpcs = vpcs(c, s).await?;
    for v in &vpcs {
        add("vpc", v);
    }
    let ec2 = &c.ec2;
    for n in ec2
        .describe_subnets()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeSubnets"))?
        .subnets()
    {
        add("subnet", n.subnet_id().unwrap_or_default());
    }
    for g in ec2
        .describe_internet_gateways()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeInternetGateways"))?
        .internet_gateways()
    {
        add(
            "internet-gateway",
            g.internet_gateway_id().unwrap_or_default(),
        );
    }
    for g in ec2
        .describe_nat_gateways()
        .filter(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeNatGateways"))?
        .nat_gateways()
    {
        if s.owns(g.tags()) && g.state() != Some(&NatGatewayState::Deleted) {
            add("nat-gateway", g.nat_gateway_id().unwrap_or_default());
        }
    }
    for a in ec2
        .describe_addresses()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeAddresses"))?
        .addresses()
    {
        add("elastic-ip", a.allocation_id().unwrap_or_default());
    }
    for t in ec2
        .describe_route_tables()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeRouteTables"))?
        .route_tables()
    {
        add("route-table", t.route_table_id().unwrap_or_default());
    }
    for g in ec2
        .describe_security_groups()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeSecurityGroups"))?
        .security_groups()
    {
        add("security-group", g.group_id().unwrap_or_default());
    }
    for t in workers::templates(c, s).await? {
        add(
            "launch-template",
            t.launch_template_id().unwrap_or_default(),
        );
    }
    for (id, _) in instances(c, s).await? {
        add("instance", &id);
    }
    for (arn, _) in balancers(c, s, &vpcs).await? {
        add("load-balancer", &arn);
    }
    for arn in target_groups(c, s, &vpcs).await? {
        add("target-group", &arn);
    }
    for g in workers::groups(c, s).await? {
        add("auto-scaling-group", &g);
    }
    for r in iam_roles(c, s).await? {
        add("iam-role", &r);
    }
    Ok(left)
}
