//! Network load balancers in the public subnets: one for the guest API (443 to
//! the control planes' API port) and one for ingress (80 and 443 to the workers'
//! ingress NodePorts, whose target groups the Auto Scaling Groups join).

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancer, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
    ProtocolEnum, Tag, TargetDescription, TargetGroup, TargetTypeEnum,
};

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::names::{CLUSTER_TAG, MANAGED_TAG, ROLE_TAG};
use crate::tagging::Scope;

/// The cluster's load balancers.
#[derive(Clone, Debug, Default)]
pub struct Balancers {
    /// The API's DNS name.
    pub api_dns: String,
    /// The ingress's DNS name.
    pub ingress_dns: String,
    /// The ingress target groups' ARNs, which worker groups join.
    pub ingress_groups: Vec<String>,
}

/// Turns a builder's missing-field error into ours.
pub fn built<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Spec(format!("build {what}: {e}"))
}

fn tags(s: &Scope, role: &str) -> Vec<Tag> {
    [
        (CLUSTER_TAG, s.id.tag()),
        (MANAGED_TAG, "true".to_owned()),
        (ROLE_TAG, role.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| Tag::builder().key(k).value(v).build())
    .collect()
}

/// Makes sure both load balancers, their target groups and listeners exist, and
/// that the control planes are the API's targets.
pub async fn ensure(
    c: &Clients,
    s: &mut Scope,
    vpc: &str,
    public_subnets: &[String],
    control_planes: &[String],
    ports: crate::security::Ports,
) -> Result<Balancers, Error> {
    // One describe of each type; an account's balancers are few.
    let lbs = c
        .elb
        .describe_load_balancers()
        .send()
        .await
        .map_err(aws("elasticloadbalancing:DescribeLoadBalancers"))?;
    let lbs = lbs.load_balancers();
    let tgs = c
        .elb
        .describe_target_groups()
        .send()
        .await
        .map_err(aws("elasticloadbalancing:DescribeTargetGroups"))?;
    let tgs = tgs.target_groups();
    let (api_arn, api_dns) = ensure_lb(c, s, lbs, "api", public_subnets).await?;
    let api_tg = ensure_group(c, s, tgs, vpc, "api", ports.api).await?;
    ensure_listener(c, &api_arn, &[(443, &api_tg)]).await?;
    if !control_planes.is_empty() {
        let health = c
            .elb
            .describe_target_health()
            .target_group_arn(&api_tg)
            .send()
            .await
            .map_err(aws("elasticloadbalancing:DescribeTargetHealth"))?;
        let registered: Vec<&str> = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target()?.id())
            .collect();
        let targets: Vec<TargetDescription> = control_planes
            .iter()
            .filter(|id| !registered.contains(&id.as_str()))
            .map(|id| {
                TargetDescription::builder()
                    .id(id)
                    .port(i32::from(ports.api))
                    .build()
            })
            .collect();
        if !targets.is_empty() {
            c.elb
                .register_targets()
                .target_group_arn(&api_tg)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(aws("elasticloadbalancing:RegisterTargets"))?;
        }
    }
    let (ing_arn, ingress_dns) = ensure_lb(c, s, lbs, "ingress", public_subnets).await?;
    let http = ensure_group(c, s, tgs, vpc, "http", ports.ingress_http).await?;
    let https = ensure_group(c, s, tgs, vpc, "https", ports.ingress_https).await?;
    ensure_listener(c, &ing_arn, &[(80, &http), (443, &https)]).await?;
    Ok(Balancers {
        api_dns,
        ingress_dns,
        ingress_groups: vec![http, https],
    })
}

async fn ensure_lb(
    c: &Clients,
    s: &mut Scope,
    found: &[LoadBalancer],
    role: &str,
    subnets: &[String],
) -> Result<(String, String), Error> {
    let name = s.id.lb(role);
    let found = found
        .iter()
        .find(|l| l.load_balancer_name() == Some(name.as_str()))
        .cloned();
    let lb = match found {
        Some(lb) => lb,
        None => c
            .elb
            .create_load_balancer()
            .name(&name)
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .set_subnets(Some(subnets.to_vec()))
            .set_tags(Some(tags(s, role)))
            .send()
            .await
            .map_err(aws("elasticloadbalancing:CreateLoadBalancer"))?
            .load_balancers()
            .first()
            .cloned()
            .ok_or_else(|| Error::Waiting("CreateLoadBalancer returned no load balancer".into()))?,
    };
    let arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
    let dns = lb.dns_name().unwrap_or_default().to_owned();
    s.record("load-balancer", &arn, format!("{role} {dns}"));
    Ok((arn, dns))
}

async fn ensure_group(
    c: &Clients,
    s: &mut Scope,
    found: &[TargetGroup],
    vpc: &str,
    role: &str,
    port: u16,
) -> Result<String, Error> {
    let name = s.id.lb(role);
    let found = found
        .iter()
        .find(|g| g.target_group_name() == Some(name.as_str()))
        .and_then(|g| g.target_group_arn().map(str::to_owned));
    let arn = match found {
        Some(arn) => arn,
        None => c
            .elb
            .create_target_group()
            .name(&name)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(port))
            .vpc_id(vpc)
            .target_type(TargetTypeEnum::Instance)
            .set_tags(Some(tags(s, role)))
            .send()
            .await
            .map_err(aws("elasticloadbalancing:CreateTargetGroup"))?
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn().map(str::to_owned))
            .ok_or_else(|| Error::Waiting("CreateTargetGroup returned no ARN".into()))?,
    };
    s.record("target-group", &arn, format!("{role} port {port}"));
    Ok(arn)
}

/// Makes sure `lb` forwards each port to its target group (one describe per load
/// balancer).
async fn ensure_listener(c: &Clients, lb: &str, wanted: &[(u16, &str)]) -> Result<(), Error> {
    let found = c
        .elb
        .describe_listeners()
        .load_balancer_arn(lb)
        .send()
        .await
        .map_err(aws("elasticloadbalancing:DescribeListeners"))?;
    for (port, group) in wanted {
        if found
            .listeners()
            .iter()
            .any(|l| l.port() == Some(i32::from(*port)))
        {
            continue;
        }
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(*group)
            .build();
        c.elb
            .create_listener()
            .load_balancer_arn(lb)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(*port))
            .default_actions(forward)
            .send()
            .await
            .map_err(aws("elasticloadbalancing:CreateListener"))?;
    }
    Ok(())
}
