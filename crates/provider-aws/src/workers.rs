//! Workers: one Auto Scaling Group per NodePool over the private subnets, from a
//! launch template with the pool's user-data, joined to the ingress target groups.
//! The group's minimum and maximum are the pool's `minReplicas`/`maxReplicas`
//! (its `replicas` when unset), its desired size the pool's `replicas`.
//!
//! When what a pool's nodes launch with changes (the Release's AMI, the instance
//! type, the user-data), the template gets a new version, its default, and the
//! group launches new nodes from it; the group's [`TEMPLATE_TAG`] holds the
//! fingerprint of the version it launches, so a pass compares without describing
//! versions.
//! The nodes launched from older versions are then replaced one at a time
//! ([`crate::roll`]).

use aws_sdk_autoscaling::types::{AutoScalingGroup, LaunchTemplateSpecification, Tag as AsgTag};
use aws_sdk_ec2::types::{
    Instance, LaunchTemplate, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType,
};
use base64::Engine;
use shoal_api::NodePool;

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::names::{fingerprint, CLUSTER_TAG, MANAGED_TAG, POOL_TAG, ROLE_TAG, TEMPLATE_TAG};
use crate::tagging::Scope;

/// What every worker group of the cluster shares.
pub struct Shared<'a> {
    /// The AMI.
    pub image: &'a str,
    /// The instance type.
    pub instance_type: &'a str,
    /// The workers' security group.
    pub group: &'a str,
    /// The workers' instance profile.
    pub profile: &'a str,
    /// The private subnets.
    pub subnets: &'a [String],
    /// The ingress target groups.
    pub target_groups: &'a [String],
}

/// A pool's group bounds: (min, max, desired).
pub fn bounds(pool: &NodePool) -> (i32, i32, i32) {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let desired = n(pool.spec.replicas);
    let min = pool.spec.min_replicas.map(n).unwrap_or(desired);
    let max = pool.spec.max_replicas.map(n).unwrap_or(desired).max(min);
    (min, max, desired.clamp(min, max))
}

/// The cluster's groups and launch templates, described once per pass, and its
/// pending and running instances.
pub struct Existing<'a> {
    groups: Vec<AutoScalingGroup>,
    templates: Vec<LaunchTemplate>,
    live: &'a [Instance],
}

/// Describes the cluster's groups and launch templates.
pub async fn existing<'a>(
    c: &Clients,
    s: &Scope,
    live: &'a [Instance],
) -> Result<Existing<'a>, Error> {
    Ok(Existing {
        groups: owned_groups(c, s).await?,
        templates: templates(c, s).await?,
        live,
    })
}

/// The cluster's launch templates, by tag.
pub async fn templates(c: &Clients, s: &Scope) -> Result<Vec<LaunchTemplate>, Error> {
    let out = c
        .ec2
        .describe_launch_templates()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeLaunchTemplates"))?;
    Ok(out.launch_templates().to_vec())
}

/// Makes sure pool `name`'s launch template and group exist with the pool's sizes,
/// and replaces a node launched from an older template version once the group is
/// whole; returns what the roll is doing while older nodes remain.
pub async fn ensure(
    c: &Clients,
    s: &mut Scope,
    existing: &Existing<'_>,
    pool: &NodePool,
    pool_name: &str,
    user_data: &str,
    shared: &Shared<'_>,
) -> Result<Option<String>, Error> {
    let name = s.id.pool(pool_name);
    let wanted = template_fingerprint(user_data, shared);
    let found = existing
        .groups
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(name.as_str()));
    // The group's tag says what the version it launches was made from.
    let (template, version) = match found.and_then(|g| launching(g, &wanted)) {
        Some(launches) => launches,
        None => {
            ensure_template(c, s, existing, &name, pool_name, user_data, &wanted, shared).await?
        }
    };
    s.record(
        "launch-template",
        &template,
        format!("{pool_name} version {version}"),
    );
    let launch = LaunchTemplateSpecification::builder()
        .launch_template_id(&template)
        .version(version.to_string())
        .build();
    let (min, max, desired) = bounds(pool);
    let mut rolling = None;
    match found {
        None => {
            let tag = |k: &str, v: &str| {
                AsgTag::builder()
                    .key(k)
                    .value(v)
                    .propagate_at_launch(true)
                    .resource_id(&name)
                    .resource_type("auto-scaling-group")
                    .build()
            };
            c.asg
                .create_auto_scaling_group()
                .auto_scaling_group_name(&name)
                .launch_template(launch)
                .min_size(min)
                .max_size(max)
                .desired_capacity(desired)
                .vpc_zone_identifier(shared.subnets.join(","))
                .set_target_group_arns(Some(shared.target_groups.to_vec()))
                .tags(tag(CLUSTER_TAG, &s.id.tag()))
                .tags(tag(MANAGED_TAG, "true"))
                .tags(tag(ROLE_TAG, "worker"))
                .tags(tag(POOL_TAG, pool_name))
                .tags(tag("Name", &s.id.display(pool_name)))
                .tags(group_tag(&name, TEMPLATE_TAG, &wanted))
                .send()
                .await
                .map_err(aws("autoscaling:CreateAutoScalingGroup"))?;
        }
        Some(g) => {
            let same = g.min_size() == Some(min)
                && g.max_size() == Some(max)
                && g.desired_capacity() == Some(desired);
            let launches = g.launch_template().and_then(|t| t.version());
            let current = launches == Some(version.to_string().as_str());
            if !same || !current {
                c.asg
                    .update_auto_scaling_group()
                    .auto_scaling_group_name(&name)
                    .min_size(min)
                    .max_size(max)
                    .desired_capacity(desired)
                    .set_launch_template((!current).then_some(launch))
                    .send()
                    .await
                    .map_err(aws("autoscaling:UpdateAutoScalingGroup"))?;
            }
            if launching(g, &wanted).is_none() {
                c.asg
                    .create_or_update_tags()
                    .tags(group_tag(&name, TEMPLATE_TAG, &wanted))
                    .send()
                    .await
                    .map_err(aws("autoscaling:CreateOrUpdateTags"))?;
            }
            // Roll once the group launches the current version at its size.
            if same && current {
                let plan = crate::roll::plan(g, &name, version, existing.live);
                rolling = crate::roll::step(c, plan).await?;
            } else if !current {
                rolling = Some(format!(
                    "{name} now launches template version {version}; its older nodes are replaced one at a time"
                ));
            }
        }
    }
    s.record(
        "auto-scaling-group",
        &name,
        format!("{pool_name} {min}..{max}, {desired} wanted, template version {version}"),
    );
    Ok(rolling)
}

/// The fingerprint of what a pool's nodes launch with.
fn template_fingerprint(user_data: &str, shared: &Shared<'_>) -> String {
    fingerprint(&format!(
        "{}\n{}\n{}\n{}\n{user_data}",
        shared.image, shared.instance_type, shared.group, shared.profile
    ))
}

/// The template and version group `g` launches, when its tag says they were made
/// from `wanted`.
fn launching(g: &AutoScalingGroup, wanted: &str) -> Option<(String, i64)> {
    let tagged = g
        .tags()
        .iter()
        .any(|t| t.key() == Some(TEMPLATE_TAG) && t.value() == Some(wanted));
    let t = g.launch_template()?;
    let version = t.version()?.parse().ok()?;
    tagged.then(|| {
        (
            t.launch_template_id().unwrap_or_default().to_owned(),
            version,
        )
    })
}

/// A tag on group `name` that its instances do not get.
fn group_tag(name: &str, key: &str, value: &str) -> AsgTag {
    AsgTag::builder()
        .key(key)
        .value(value)
        .propagate_at_launch(false)
        .resource_id(name)
        .resource_type("auto-scaling-group")
        .build()
}

/// Makes sure pool `name`'s launch template has a version that launches what
/// `shared` and `user_data` say (fingerprint `wanted`); returns the template's ID
/// and that version.
#[allow(clippy::too_many_arguments)]
async fn ensure_template(
    c: &Clients,
    s: &mut Scope,
    existing: &Existing<'_>,
    name: &str,
    pool_name: &str,
    user_data: &str,
    wanted: &str,
    shared: &Shared<'_>,
) -> Result<(String, i64), Error> {
    let instance_tags = LaunchTemplateTagSpecificationRequest::builder()
        .resource_type(ResourceType::Instance)
        .set_tags(Some(
            s.tags(pool_name, &[(ROLE_TAG, "worker"), (POOL_TAG, pool_name)]),
        ))
        .build();
    let data = RequestLaunchTemplateData::builder()
        .image_id(shared.image)
        .instance_type(aws_sdk_ec2::types::InstanceType::from(shared.instance_type))
        .security_group_ids(shared.group)
        .iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(shared.profile)
                .build(),
        )
        .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
        .tag_specifications(instance_tags)
        .build();
    let found = existing
        .templates
        .iter()
        .find(|t| t.launch_template_name() == Some(name));
    let (id, version) = match found {
        None => {
            let created = c
                .ec2
                .create_launch_template()
                .launch_template_name(name)
                .client_token(format!("{name}-lt"))
                .launch_template_data(data)
                .tag_specifications(s.spec(
                    ResourceType::LaunchTemplate,
                    pool_name,
                    &[(POOL_TAG, pool_name), (TEMPLATE_TAG, wanted)],
                ))
                .send()
                .await
                .map_err(aws("ec2:CreateLaunchTemplate"))?;
            let t = created.launch_template().ok_or_else(|| {
                Error::Waiting("ec2:CreateLaunchTemplate returned no template".into())
            })?;
            (
                t.launch_template_id().unwrap_or_default().to_owned(),
                t.latest_version_number().unwrap_or(1),
            )
        }
        Some(t) => {
            let id = t.launch_template_id().unwrap_or_default().to_owned();
            let has = t
                .tags()
                .iter()
                .find(|tag| tag.key() == Some(TEMPLATE_TAG))
                .and_then(|tag| tag.value());
            // The template's own tag is the version it was created with: a group
            // that crashed before it was made can start from it.
            if has == Some(wanted) && t.latest_version_number() == Some(1) {
                (id, 1)
            } else {
                let version = new_version(c, &id, name, wanted, data).await?;
                tracing::info!(template = %name, version, "launch template has a new version");
                (id, version)
            }
        }
    };
    Ok((id, version))
}

/// Adds a version launching `data` to template `id` and makes it the default (the
/// group's tag then records its fingerprint). A pass that crashed half-way repeats
/// this with the same client token, which gives back the same version.
async fn new_version(
    c: &Clients,
    id: &str,
    name: &str,
    wanted: &str,
    data: RequestLaunchTemplateData,
) -> Result<i64, Error> {
    let out = c
        .ec2
        .create_launch_template_version()
        .launch_template_id(id)
        .client_token(format!("{name}-{wanted}"))
        .launch_template_data(data)
        .send()
        .await
        .map_err(aws("ec2:CreateLaunchTemplateVersion"))?;
    let version = out
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| {
            Error::Waiting("ec2:CreateLaunchTemplateVersion returned no version".into())
        })?;
    c.ec2
        .modify_launch_template()
        .launch_template_id(id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(aws("ec2:ModifyLaunchTemplate"))?;
    Ok(version)
}

/// Deletes the groups and templates of pools that are gone; returns what went.
pub async fn prune(
    c: &Clients,
    s: &Scope,
    existing: &Existing<'_>,
    keep: &[String],
) -> Result<Vec<String>, Error> {
    let keep: Vec<String> = keep.iter().map(|p| s.id.pool(p)).collect();
    let mut gone = Vec::new();
    for g in &existing.groups {
        let name = g.auto_scaling_group_name().unwrap_or_default();
        if !keep.iter().any(|k| k == name) {
            delete_group(c, name).await?;
            delete_template(c, name).await?;
            gone.push(name.to_owned());
        }
    }
    Ok(gone)
}

/// The cluster's groups, by name.
pub async fn groups(c: &Clients, s: &Scope) -> Result<Vec<String>, Error> {
    Ok(owned_groups(c, s)
        .await?
        .iter()
        .filter_map(|g| g.auto_scaling_group_name().map(str::to_owned))
        .collect())
}

async fn owned_groups(c: &Clients, s: &Scope) -> Result<Vec<AutoScalingGroup>, Error> {
    let mut ours = Vec::new();
    let mut pages = c.asg.describe_auto_scaling_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws("autoscaling:DescribeAutoScalingGroups"))?;
        for g in page.auto_scaling_groups() {
            let mine = g
                .tags()
                .iter()
                .any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(s.id.tag().as_str()));
            if mine {
                ours.push(g.clone());
            }
        }
    }
    Ok(ours)
}

/// Deletes a group and its instances.
pub async fn delete_group(c: &Clients, name: &str) -> Result<(), Error> {
    match c
        .asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name(name)
        .force_delete(true)
        .send()
        .await
        .map_err(aws("autoscaling:DeleteAutoScalingGroup"))
    {
        Err(e) if !e.is_not_found() && !e.message.contains("not found") => Err(e.into()),
        _ => Ok(()),
    }
}

/// Deletes a launch template by name.
pub async fn delete_template(c: &Clients, name: &str) -> Result<(), Error> {
    match c
        .ec2
        .delete_launch_template()
        .launch_template_name(name)
        .send()
        .await
        .map_err(aws("ec2:DeleteLaunchTemplate"))
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}
