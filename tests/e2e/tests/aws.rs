//! The AWS provider against moto (AWS's stand-in here; real AWS cannot be reached
//! from this machine), through `shoal server --aws-endpoint-url`: a 3 + 3 cluster
//! over two zones, checked with the SDK's own describe calls; scaling; deletion
//! with the leak test; bad input; refused credentials; crashes (kill -9) during
//! create and delete; and the waiting paths, with a proxy that delays every call
//! and shows NAT gateways pending.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_credential_types::Credentials;
use base64::Engine;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use shoal_api::Cluster;
use shoal_e2e::awslab::{aws, aws_as, lab, Aws, Moto, Proxy, CREDENTIALS, ORG, REGION, TAG};
use shoal_e2e::ServerProc;

fn owned(cluster: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{TAG}"))
        .values(format!("{ORG}/{cluster}"))
        .build()
}

fn by(name: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(name)
        .values(value)
        .build()
}

/// `cluster create` of a 3 + 3 cluster; `extra` adds flags or replaces the
/// defaults of `--azs`, `--region` and `--hosted-zone` (`""` drops one).
fn create_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "cluster",
        "create",
        "--name",
        name,
        "--org",
        ORG,
        "--release",
        "aws-1-35",
        "--control-plane",
        "3",
        "--workers",
        "3",
        "--provider",
        "aws",
    ];
    let mut rest: Vec<&str> = extra.to_vec();
    for (flag, default) in [
        ("--region", REGION),
        ("--azs", "eu-west-1a,eu-west-1b"),
        ("--hosted-zone", "example.com"),
    ] {
        match rest.iter().position(|a| *a == flag) {
            Some(i) if rest.get(i + 1) == Some(&"") => {
                rest.drain(i..i + 2);
            }
            Some(_) => {}
            None => args.extend([flag, default]),
        }
    }
    args.extend(rest);
    args
}

async fn cluster(server: &ServerProc, name: &str) -> Result<Option<Cluster>> {
    let api: Api<Cluster> = Api::namespaced(server.client().await?, &format!("org-{ORG}"));
    Ok(api.get_opt(name).await?)
}

/// Waits until `check` holds of the cluster (or of its absence).
async fn wait_cluster(
    server: &ServerProc,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(Option<&Cluster>) -> bool,
) -> Result<Option<Cluster>> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = cluster(server, name).await.ok().flatten();
        if check(c.as_ref()) {
            return Ok(c);
        }
        if Instant::now() > deadline {
            let log = server.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!(
                "cluster {name}: {what} not within {timeout:?}; last status: {}\nthe server's last log lines:\n{}",
                serde_json::to_string_pretty(&c.map(|c| c.status)).unwrap_or_default(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition<'a>(c: Option<&'a Cluster>, type_: &str) -> Option<&'a shoal_api::Condition> {
    c?.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
}

/// Whether `layer` is False for a reason other than waiting (for another layer,
/// for the IPAM network, for AWS to finish something): the error the test expects.
fn failed(c: Option<&Cluster>, layer: &str) -> bool {
    condition(c, layer).is_some_and(|x| {
        x.status == "False" && x.reason != "WaitingForLayer" && x.reason != "Waiting"
    })
}

fn ready(c: Option<&Cluster>) -> bool {
    c.and_then(|c| c.status.as_ref()?.phase) == Some(shoal_api::ClusterPhase::Ready)
}

/// Everything of cluster `name` that moto still has, by tag and by each describe.
async fn leftovers(aws: &Aws, name: &str) -> Result<Vec<String>> {
    leftovers_of(aws, name, true).await
}

/// [`leftovers`]; `records` says whether to look for Route 53 records too (a
/// cluster without a hosted zone has none, and moto refuses the SDK's Route 53
/// signatures when it checks credentials).
async fn leftovers_of(aws: &Aws, name: &str, records: bool) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let tagged = aws
        .tagging
        .get_resources()
        .tag_filters(
            aws_sdk_resourcegroupstagging::types::TagFilter::builder()
                .key(TAG)
                .values(format!("{ORG}/{name}"))
                .build(),
        )
        .send()
        .await?;
    for r in tagged.resource_tag_mapping_list() {
        let arn = r.resource_arn().unwrap_or_default();
        // Terminated instances and deleted NAT gateways stay listed for a while (on
        // AWS as on moto): they are gone, and their state is checked below.
        let id = arn.rsplit('/').next().unwrap_or_default();
        let gone = if arn.contains(":instance/") {
            let d = aws.ec2.describe_instances().instance_ids(id).send().await?;
            d.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .all(|i| {
                    i.state().and_then(|s| s.name())
                        == Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
                })
        } else if arn.contains(":natgateway/") {
            let d = aws
                .ec2
                .describe_nat_gateways()
                .nat_gateway_ids(id)
                .send()
                .await?;
            d.nat_gateways()
                .iter()
                .all(|n| n.state() == Some(&aws_sdk_ec2::types::NatGatewayState::Deleted))
        } else {
            false
        };
        if !gone {
            left.push(format!("tagged {arn}"));
        }
    }
    let f = || owned(name);
    left.extend(
        aws.ec2
            .describe_vpcs()
            .filters(f())
            .send()
            .await?
            .vpcs()
            .iter()
            .map(|v| format!("vpc {:?}", v.vpc_id())),
    );
    left.extend(
        aws.ec2
            .describe_subnets()
            .filters(f())
            .send()
            .await?
            .subnets()
            .iter()
            .map(|v| format!("subnet {:?}", v.subnet_id())),
    );
    left.extend(
        aws.ec2
            .describe_internet_gateways()
            .filters(f())
            .send()
            .await?
            .internet_gateways()
            .iter()
            .map(|v| format!("igw {:?}", v.internet_gateway_id())),
    );
    left.extend(
        aws.ec2
            .describe_addresses()
            .filters(f())
            .send()
            .await?
            .addresses()
            .iter()
            .map(|v| format!("eip {:?}", v.allocation_id())),
    );
    left.extend(
        aws.ec2
            .describe_route_tables()
            .filters(f())
            .send()
            .await?
            .route_tables()
            .iter()
            .map(|v| format!("rtb {:?}", v.route_table_id())),
    );
    left.extend(
        aws.ec2
            .describe_security_groups()
            .filters(f())
            .send()
            .await?
            .security_groups()
            .iter()
            .map(|v| format!("sg {:?}", v.group_id())),
    );
    left.extend(
        aws.ec2
            .describe_launch_templates()
            .filters(f())
            .send()
            .await?
            .launch_templates()
            .iter()
            .map(|v| format!("lt {:?}", v.launch_template_id())),
    );
    let tag_value = format!("{ORG}/{name}");
    for n in aws.ec2.describe_nat_gateways().send().await?.nat_gateways() {
        let ours = n
            .tags()
            .iter()
            .any(|t| t.key() == Some(TAG) && t.value() == Some(tag_value.as_str()));
        if ours && n.state() != Some(&aws_sdk_ec2::types::NatGatewayState::Deleted) {
            left.push(format!("nat {:?}", n.nat_gateway_id()));
        }
    }
    for r in aws
        .ec2
        .describe_instances()
        .filters(f())
        .send()
        .await?
        .reservations()
    {
        for i in r.instances() {
            if i.state().and_then(|s| s.name())
                != Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
            {
                left.push(format!("instance {:?}", i.instance_id()));
            }
        }
    }
    for g in aws
        .asg
        .describe_auto_scaling_groups()
        .send()
        .await?
        .auto_scaling_groups()
    {
        if g.tags()
            .iter()
            .any(|t| t.key() == Some(TAG) && t.value() == Some(tag_value.as_str()))
        {
            left.push(format!("asg {:?}", g.auto_scaling_group_name()));
        }
    }
    let lbs = aws.elb.describe_load_balancers().send().await?;
    let tgs = aws.elb.describe_target_groups().send().await?;
    let arns: Vec<String> = lbs
        .load_balancers()
        .iter()
        .filter_map(|l| l.load_balancer_arn().map(str::to_owned))
        .chain(
            tgs.target_groups()
                .iter()
                .filter_map(|g| g.target_group_arn().map(str::to_owned)),
        )
        .collect();
    if !arns.is_empty() {
        let tags = aws
            .elb
            .describe_tags()
            .set_resource_arns(Some(arns))
            .send()
            .await?;
        for d in tags.tag_descriptions() {
            if d.tags()
                .iter()
                .any(|t| t.key() == Some(TAG) && t.value() == Some(tag_value.as_str()))
            {
                left.push(format!("elb {:?}", d.resource_arn()));
            }
        }
    }
    for r in aws
        .iam
        .list_roles()
        .path_prefix("/shoal/")
        .send()
        .await?
        .roles()
    {
        let tags = aws
            .iam
            .list_role_tags()
            .role_name(r.role_name())
            .send()
            .await?;
        if tags
            .tags()
            .iter()
            .any(|t| t.key() == TAG && t.value() == tag_value)
        {
            left.push(format!("role {}", r.role_name()));
        }
    }
    if !records {
        return Ok(left);
    }
    let zone = aws
        .dns
        .list_hosted_zones_by_name()
        .dns_name("example.com.")
        .send()
        .await?;
    if let Some(z) = zone.hosted_zones().first() {
        let sets = aws
            .dns
            .list_resource_record_sets()
            .hosted_zone_id(z.id())
            .send()
            .await?;
        for set in sets.resource_record_sets() {
            if set.name().contains(&format!("{name}.{ORG}.example.com")) {
                left.push(format!("record {}", set.name()));
            }
        }
    }
    Ok(left)
}

/// `cluster delete --wait`, then checks the cluster is gone and left nothing in
/// AWS ([`leftovers_of`] with `records`).
async fn delete_leaving_nothing(
    server: &ServerProc,
    aws: &Aws,
    name: &str,
    records: bool,
) -> Result<()> {
    server.shoal_ok(&[
        "cluster",
        "delete",
        name,
        "--org",
        ORG,
        "--wait",
        "--timeout",
        "120",
    ])?;
    wait_cluster(server, name, Duration::from_secs(120), "gone", |c| {
        c.is_none()
    })
    .await?;
    let left = leftovers_of(aws, name, records).await?;
    ensure!(left.is_empty(), "{name} left {left:?}");
    Ok(())
}

/// The IPAM claims (Leases `ipam-vpc-<slot>`) held for cluster `name`.
async fn vpc_claims(server: &ServerProc, name: &str) -> Result<Vec<String>> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(server.client().await?, "shoal-system");
    Ok(leases
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|l| l.labels().get("shoal.io/cluster").map(String::as_str) == Some(name))
        .filter_map(|l| l.metadata.name)
        .filter(|n| n.starts_with("ipam-vpc-"))
        .collect())
}

/// Decodes base64 user-data, checks it with `cloud-init schema` (written to `file`)
/// and returns its text.
fn passes_cloud_init_schema(base64_data: &str, file: &std::path::Path) -> Result<String> {
    let user_data = base64::engine::general_purpose::STANDARD.decode(base64_data)?;
    std::fs::write(file, &user_data)?;
    let schema = std::process::Command::new("cloud-init")
        .args(["schema", "--config-file", &file.display().to_string()])
        .output()
        .context("cloud-init schema (Debian's cloud-init, installed by scripts/setup.sh)")?;
    ensure!(
        schema.status.success(),
        "cloud-init schema of {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&schema.stdout),
        String::from_utf8_lossy(&schema.stderr)
    );
    Ok(String::from_utf8_lossy(&user_data).into_owned())
}

async fn running(aws: &Aws, name: &str, role: &str) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
    let out = aws
        .ec2
        .describe_instances()
        .filters(owned(name))
        .filters(by("tag:shoal.io/role", role))
        .filters(by("instance-state-name", "running"))
        .send()
        .await?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_gets_its_own_vpc_scales_and_leaves_nothing_behind() -> Result<()> {
    let moto = Moto::start(false)?;
    let aws = aws(&moto).await;
    let proxy = Proxy::start(moto.port)?;
    let server = lab(&proxy.url(), &aws).await?;
    let started = Instant::now();
    let out = server.shoal_ok(&create_args("web", &["--wait", "--timeout", "180"]))?;
    // `--wait` shows the layers come up, each once ready, in build order, then
    // the endpoint.
    ensure!(
        out.contains("is Ready on AWS: https://api.web.acme.example.com"),
        "{out}"
    );
    let ready_at = |layer: &str| out.find(&format!("{layer}: ready\n"));
    let mut last = 0;
    for layer in [
        "Network",
        "Iam",
        "Bastion",
        "ControlPlane",
        "LoadBalancers",
        "Workers",
        "DNS",
    ] {
        let at = ready_at(layer).with_context(|| format!("no `{layer}: ready` in {out}"))?;
        ensure!(at >= last, "{layer} ready out of order: {out}");
        last = at;
    }
    ensure!(
        !out.contains("scheduled 0/"),
        "machine bars for an AWS cluster: {out}"
    );
    eprintln!(
        "create converged in {:?} with {} AWS calls",
        started.elapsed(),
        proxy.counts().values().sum::<u64>()
    );

    // 1 VPC, with 2 private and 2 public subnets.
    let vpcs = aws.ec2.describe_vpcs().filters(owned("web")).send().await?;
    ensure!(vpcs.vpcs().len() == 1, "VPCs: {:?}", vpcs.vpcs());
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap_or_default().to_owned();
    // Its network came from the server's VPC pool (IPAM), claimed by a Lease.
    let vpc_cidr = vpcs.vpcs()[0].cidr_block().unwrap_or_default().to_owned();
    let c = cluster(&server, "web").await?.context("cluster gone")?;
    let allocated = c.status.as_ref().and_then(|s| s.node_cidr.clone());
    ensure!(
        allocated.as_deref() == Some(vpc_cidr.as_str()) && vpc_cidr.ends_with("/16"),
        "VPC {vpc_cidr}, status.nodeCidr {allocated:?}"
    );
    let pool: shoal_api::validate::Cidr = "10.0.0.0/10".parse()?;
    ensure!(
        pool.overlaps(&vpc_cidr.parse()?),
        "{vpc_cidr} is not from the pool"
    );
    let claims = vpc_claims(&server, "web").await?;
    ensure!(claims.len() == 1, "VPC claims of web: {claims:?}");
    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(by("vpc-id", &vpc))
        .send()
        .await?;
    let role_of = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter()
            .find(|t| t.key() == Some("shoal.io/role"))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_owned()
    };
    let private: Vec<_> = subnets
        .subnets()
        .iter()
        .filter(|n| role_of(n.tags()) == "private")
        .collect();
    let public: Vec<_> = subnets
        .subnets()
        .iter()
        .filter(|n| role_of(n.tags()) == "public")
        .collect();
    ensure!(
        private.len() == 2 && public.len() == 2,
        "subnets: {:?}",
        subnets.subnets()
    );
    let zones_of = |list: &[&aws_sdk_ec2::types::Subnet]| -> BTreeSet<String> {
        list.iter()
            .filter_map(|n| n.availability_zone().map(str::to_owned))
            .collect()
    };
    ensure!(zones_of(&private).len() == 2 && zones_of(&public).len() == 2);
    let private_ids: BTreeSet<&str> = private.iter().filter_map(|n| n.subnet_id()).collect();
    let public_ids: BTreeSet<&str> = public.iter().filter_map(|n| n.subnet_id()).collect();

    // 2 NAT gateways (one per zone, in the public subnets) and 2 bastions.
    let nats = aws
        .ec2
        .describe_nat_gateways()
        .filter(by("vpc-id", &vpc))
        .send()
        .await?;
    let nat_subnets: BTreeSet<&str> = nats
        .nat_gateways()
        .iter()
        .filter_map(|n| n.subnet_id())
        .collect();
    ensure!(
        nats.nat_gateways().len() == 2 && nat_subnets == public_ids,
        "NATs: {:?}",
        nats.nat_gateways()
    );
    let bastions = running(&aws, "web", "bastion").await?;
    ensure!(bastions.len() == 2, "bastions: {bastions:?}");
    ensure!(bastions
        .iter()
        .all(|b| b.subnet_id().is_some_and(|s| public_ids.contains(s))));

    // Control planes in the private subnets, spread over both zones.
    let cps = running(&aws, "web", "control-plane").await?;
    ensure!(cps.len() == 3, "control planes: {cps:?}");
    ensure!(cps
        .iter()
        .all(|i| i.subnet_id().is_some_and(|s| private_ids.contains(s))));
    let cp_zones: BTreeSet<&str> = cps
        .iter()
        .filter_map(|i| i.placement()?.availability_zone())
        .collect();
    ensure!(cp_zones.len() == 2, "control planes in {cp_zones:?}");

    // An ASG with the pool's bounds, from a launch template whose user-data passes
    // `cloud-init schema`.
    let groups = aws.asg.describe_auto_scaling_groups().send().await?;
    let group = groups
        .auto_scaling_groups()
        .first()
        .context("no ASG")?
        .clone();
    ensure!(
        (group.min_size(), group.max_size(), group.desired_capacity())
            == (Some(3), Some(3), Some(3)),
        "ASG: {group:?}"
    );
    let lt = group
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .context("ASG without launch template")?;
    let version = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(lt)
        .send()
        .await?;
    let data = version
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data()?.user_data())
        .context("launch template without user-data")?;
    let text = passes_cloud_init_schema(data, &server.data_dir.with_extension("worker.yaml"))?;
    ensure!(
        text.contains("api.web.acme.example.com:443") && !text.contains("hostname:"),
        "{text}"
    );
    // Calico: every node links the operator's CNI directory.
    ensure!(text.contains("/opt/cni/bin"), "{text}");

    // The first control plane initialises the cluster and installs Calico for the
    // cluster's pod network.
    let first = cps
        .iter()
        .find(|i| {
            i.tags()
                .iter()
                .any(|t| t.key() == Some("shoal.io/slot") && t.value() == Some("0"))
        })
        .and_then(|i| i.instance_id())
        .context("no control plane in slot 0")?;
    let attr = aws
        .ec2
        .describe_instance_attribute()
        .instance_id(first)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await?;
    let data = attr
        .user_data()
        .and_then(|v| v.value())
        .context("the first control plane has no user-data")?;
    let text = passes_cloud_init_schema(data, &server.data_dir.with_extension("cp-0.yaml"))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let files = doc["write_files"].as_sequence().context("write_files")?;
    let content = |path: &str| {
        files
            .iter()
            .find(|f| f["path"].as_str() == Some(path))
            .and_then(|f| f["content"].as_str())
    };
    let installation: serde_yaml::Value = serde_yaml::from_str(
        content(shoal_bootstrap::CALICO_INSTALLATION_PATH).context("no Calico Installation")?,
    )?;
    ensure!(
        installation["spec"]["calicoNetwork"]["ipPools"][0]["cidr"] == "10.244.0.0/16",
        "{installation:?}"
    );
    ensure!(
        content(shoal_bootstrap::CALICO_INSTALL_PATH)
            .is_some_and(|s| s.contains(&shoal_bootstrap::operator_manifest_url())),
        "{text}"
    );
    ensure!(!text.contains("flannel"), "{text}");

    // The NLBs with their listeners and target groups.
    let lbs = aws.elb.describe_load_balancers().send().await?;
    ensure!(
        lbs.load_balancers().len() == 2,
        "load balancers: {:?}",
        lbs.load_balancers()
    );
    for lb in lbs.load_balancers() {
        let listeners = aws
            .elb
            .describe_listeners()
            .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
            .send()
            .await?;
        ensure!(!listeners.listeners().is_empty(), "{lb:?} has no listener");
    }
    let api_tg = aws.elb.describe_target_groups().send().await?;
    let api_tg = api_tg
        .target_groups()
        .iter()
        .find(|g| g.port() == Some(6443))
        .context("no target group on 6443")?
        .clone();
    let health = aws
        .elb
        .describe_target_health()
        .target_group_arn(api_tg.target_group_arn().unwrap_or_default())
        .send()
        .await?;
    ensure!(
        health.target_health_descriptions().len() == 3,
        "API targets: {:?}",
        health.target_health_descriptions()
    );

    // The Route 53 records.
    let zone = aws
        .dns
        .list_hosted_zones_by_name()
        .dns_name("example.com.")
        .send()
        .await?;
    let zone = zone
        .hosted_zones()
        .first()
        .context("no zone")?
        .id()
        .to_owned();
    let sets = aws
        .dns
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .send()
        .await?;
    let names: BTreeSet<String> = sets
        .resource_record_sets()
        .iter()
        .map(|s| s.name().replace("\\052", "*"))
        .collect();
    ensure!(
        names.contains("api.web.acme.example.com.") && names.contains("*.web.acme.example.com."),
        "{names:?}"
    );

    // Every resource the status lists is tagged with the cluster and as Shoal's.
    let c = cluster(&server, "web").await?.context("cluster gone")?;
    let listed = c
        .status
        .as_ref()
        .and_then(|s| s.aws.as_ref())
        .map(|a| a.resources.clone())
        .unwrap_or_default();
    ensure!(
        listed.len() >= 30,
        "status lists {} resources",
        listed.len()
    );
    for r in &listed {
        let tagged = match r.kind.as_str() {
            "vpc" | "subnet" | "internet-gateway" | "nat-gateway" | "elastic-ip"
            | "route-table" | "security-group" | "instance" | "launch-template" => {
                let tags = aws
                    .ec2
                    .describe_tags()
                    .filters(by("resource-id", &r.id))
                    .send()
                    .await?;
                let keys: BTreeSet<(String, String)> = tags
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                keys.contains(&(TAG.into(), "acme/web".into()))
                    && keys.contains(&("shoal.io/managed".into(), "true".into()))
            }
            "load-balancer" | "target-group" => {
                let tags = aws.elb.describe_tags().resource_arns(&r.id).send().await?;
                tags.tag_descriptions()
                    .iter()
                    .flat_map(|d| d.tags())
                    .any(|t| t.key() == Some(TAG) && t.value() == Some("acme/web"))
            }
            "iam-role" => {
                let tags = aws.iam.list_role_tags().role_name(&r.id).send().await?;
                tags.tags()
                    .iter()
                    .any(|t| t.key() == TAG && t.value() == "acme/web")
            }
            "auto-scaling-group" => group
                .tags()
                .iter()
                .any(|t| t.key() == Some(TAG) && t.value() == Some("acme/web")),
            // Records and instance profiles carry the name; profiles are deleted with their role.
            _ => true,
        };
        ensure!(tagged, "{} {} is not tagged with the cluster", r.kind, r.id);
    }

    // Scale the pool, then change its bounds: the ASG follows.
    server.shoal_ok(&["cluster", "scale", "web", "--org", ORG, "--workers", "5"])?;
    let asg_sizes = |aws: &Aws| {
        let asg = aws.asg.clone();
        async move {
            let g = asg.describe_auto_scaling_groups().send().await?;
            let g = g.auto_scaling_groups().first().context("no ASG")?.clone();
            Ok::<_, anyhow::Error>((g.min_size(), g.max_size(), g.desired_capacity()))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while asg_sizes(&aws).await? != (Some(5), Some(5), Some(5)) {
        ensure!(
            Instant::now() < deadline,
            "the ASG did not follow the scale: {:?}",
            asg_sizes(&aws).await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pools: Api<shoal_api::NodePool> =
        Api::namespaced(server.client().await?, &format!("org-{ORG}"));
    pools
        .patch(
            "web-default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReplicas": 2, "maxReplicas": 8}})),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while asg_sizes(&aws).await? != (Some(2), Some(8), Some(5)) {
        ensure!(
            Instant::now() < deadline,
            "the ASG did not follow min/max: {:?}",
            asg_sizes(&aws).await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A new AMI in the Release: the pool's launch template gets a new version that
    // launches it, its default, and the group launches from it.
    let images = aws.ec2.describe_images().owners("amazon").send().await?;
    let (old_ami, new_ami) = {
        let first = version
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data()?.image_id())
            .context("no AMI in the template")?
            .to_owned();
        let other = images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .find(|id| *id != first)
            .context("moto lists one AMI only")?
            .to_owned();
        (first, other)
    };
    let releases: Api<shoal_api::Release> = Api::all(server.client().await?);
    releases
        .patch(
            "aws-1-35",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": {"amis": {REGION: new_ami}}}})),
        )
        .await?;
    let launches = |aws: &Aws| {
        let (asg, ec2) = (aws.asg.clone(), aws.ec2.clone());
        async move {
            let g = asg.describe_auto_scaling_groups().send().await?;
            let g = g.auto_scaling_groups().first().context("no ASG")?.clone();
            let spec = g.launch_template().context("ASG without template")?;
            let number = spec.version().unwrap_or_default().to_owned();
            let v = ec2
                .describe_launch_template_versions()
                .launch_template_id(spec.launch_template_id().unwrap_or_default())
                .versions(&number)
                .send()
                .await?;
            let v = v
                .launch_template_versions()
                .first()
                .context("no version")?
                .clone();
            let image = v
                .launch_template_data()
                .and_then(|d| d.image_id())
                .unwrap_or_default()
                .to_owned();
            Ok::<_, anyhow::Error>((number, image, v.default_version()))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (number, image, default) = launches(&aws).await?;
        if image == new_ami {
            ensure!(
                number == "2" && default == Some(true),
                "the group launches version {number} (default: {default:?})"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline && image == old_ami,
            "the group launches {image} (version {number}), not the Release's new {new_ami}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The nodes launched from version 1 are replaced one at a time. moto cannot
    // launch a group's instance from a template version made by
    // CreateLaunchTemplateVersion when it has user-data (an AssertionError in moto
    // 5.2's `LaunchTemplateVersion.user_data`, answered as a 500), so the first
    // replacement is never launched here: the roll must start (one node goes,
    // the Workers layer says Rolling) and then hold, taking no second node while the
    // group is short. The whole roll is unit-tested (`roll::tests`).
    let group_nodes = |aws: &Aws| {
        let ec2 = aws.ec2.clone();
        async move {
            let out = ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag-key")
                        .values("aws:autoscaling:groupName")
                        .build(),
                )
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("instance-state-name")
                        .values("pending")
                        .values("running")
                        .build(),
                )
                .send()
                .await?;
            Ok::<_, anyhow::Error>(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(|i| i.image_id().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>(),
            )
        }
    };
    let workers_condition = || async {
        let c = cluster(&server, "web")
            .await?
            .context("cluster web is gone")?;
        c.status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Workers")
            .context("no Workers condition")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let holding = loop {
        let workers = workers_condition().await?;
        if workers.reason == "Rolling" && workers.message.contains("waiting for the group") {
            break workers;
        }
        ensure!(
            Instant::now() < deadline,
            "the roll did not start and hold: Workers {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ensure!(
        holding.status == "False"
            && holding
                .message
                .contains("launched from a template version older than 2")
            && holding.message.contains("(4 of 5 in service)"),
        "{holding:?}"
    );
    // Two more roll passes (the controller's `ROLL_PASS` is 10 s): still one node
    // short, never two.
    let hold_until = Instant::now() + Duration::from_secs(22);
    while Instant::now() < hold_until {
        let nodes = group_nodes(&aws).await?;
        ensure!(
            nodes.len() == 4,
            "the roll took more than one node at a time: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still = workers_condition().await?;
    ensure!(still.reason == "Rolling", "{still:?}");
    eprintln!("the roll holds: {}", still.message);

    // Delete: nothing is left, by tag or by any describe, and the final Event lists
    // what went.
    proxy.reset_counts();
    let started = Instant::now();
    server.shoal_ok(&[
        "cluster",
        "delete",
        "web",
        "--org",
        ORG,
        "--wait",
        "--timeout",
        "120",
    ])?;
    wait_cluster(&server, "web", Duration::from_secs(120), "gone", |c| {
        c.is_none()
    })
    .await?;
    eprintln!(
        "delete converged in {:?} with {} AWS calls",
        started.elapsed(),
        proxy.counts().values().sum::<u64>()
    );
    let left = leftovers(&aws, "web").await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    let events = server.kubectl_ok(&["get", "events", "-n", "org-acme", "-o", "json"])?;
    ensure!(
        events.contains("AwsResourcesDeleted") && events.contains("nat-gateway"),
        "no final Event listing the deletions"
    );
    // The network went back to the pool once the VPC was gone.
    let claims = vpc_claims(&server, "web").await?;
    ensure!(claims.is_empty(), "VPC claims left: {claims:?}");
    ensure!(
        events.contains(&format!("vpc {vpc_cidr}")),
        "no Event says the VPC network {vpc_cidr} was freed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_condition_and_nothing_is_left_halfway() -> Result<()> {
    let moto = Moto::start(false)?;
    let aws = aws(&moto).await;
    let server = lab(&moto.url(), &aws).await?;
    // (name, extra flags, condition that must fail, words its message must hold)
    let cases: [(&str, Vec<&str>, &str, &[&str]); 4] = [
        (
            "zone",
            vec!["--azs", "eu-west-1a,eu-west-1q"],
            "Network",
            &["eu-west-1q", "not offered", "availabilityZones"],
        ),
        (
            "itype",
            vec!["--instance-type", "m9.gigantic"],
            "Network",
            &["m9.gigantic", "not offered", "--instance-type"],
        ),
        (
            "nozone",
            vec!["--hosted-zone", "nowhere.example"],
            "DNS",
            &["nowhere.example", "hosted zone"],
        ),
        (
            "overlap",
            vec!["--vpc-cidr", "10.244.0.0/16"],
            "Network",
            &["podCidr", "10.244.0.0/16", "overlaps"],
        ),
    ];
    for (name, extra, layer, words) in &cases {
        server.shoal_ok(&create_args(name, extra))?;
        let c = wait_cluster(
            &server,
            name,
            Duration::from_secs(60),
            &format!("{layer} False"),
            |c| failed(c, layer),
        )
        .await?;
        let cond = condition(c.as_ref(), layer).context("no condition")?;
        for w in *words {
            ensure!(
                cond.message.contains(w),
                "{name}: {layer} says {:?}, which lacks {w:?}",
                cond.message
            );
        }
        let out = server.shoal_ok(&["cluster", "get", name, "--org", ORG])?;
        ensure!(
            out.contains(&cond.message[..cond.message.len().min(40)]),
            "`cluster get` does not show why: {out}"
        );
        delete_leaving_nothing(&server, &aws, name, true).await?;
    }
    // A region AWS does not have is refused at the API (not a region code) or by
    // the preflight (a well-formed code no one serves).
    let out = server.shoal(&create_args("region", &["--region", "Mars"]))?;
    ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("spec.provider.aws.region")
    );
    server.shoal_ok(&create_args(
        "region2",
        &["--region", "xx-nowhere-1", "--azs", ""],
    ))?;
    let c = wait_cluster(
        &server,
        "region2",
        Duration::from_secs(60),
        "Network False",
        |c| failed(c, "Network"),
    )
    .await?;
    let msg = &condition(c.as_ref(), "Network")
        .context("no condition")?
        .message;
    ensure!(
        msg.contains("xx-nowhere-1") && msg.contains("region"),
        "{msg}"
    );
    // The region and the VPC network keep the values the cluster was created with:
    // a change is a 422 naming the field and what to do instead, and changes nothing.
    let out = server.kubectl(&[
        "patch",
        "cluster",
        "region2",
        "-n",
        "org-acme",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"provider":{"aws":{"vpcCidr":"10.9.0.0/16"}}}}"#,
    ])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains("spec.provider.aws.vpcCidr")
            && said.contains("immutable")
            && said.contains("create a new cluster"),
        "{said}"
    );
    let c = cluster(&server, "region2")
        .await?
        .context("region2 is gone")?;
    ensure!(
        c.spec
            .provider
            .aws
            .as_ref()
            .and_then(|a| a.vpc_cidr.as_ref())
            .is_none(),
        "the refused patch changed the cluster"
    );
    Ok(())
}

/// An IAM policy that allows everything.
const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_named_and_an_organization_secret_fixes_them() -> Result<()> {
    // moto checks every call's credentials after the three that make the
    // organization's own IAM user and its key.
    let moto = Moto::start_auth_after(3)?;
    let setup = aws(&moto).await;
    setup
        .iam
        .create_user()
        .user_name("acme-shoal")
        .send()
        .await?;
    setup
        .iam
        .put_user_policy()
        .user_name("acme-shoal")
        .policy_name("everything")
        .policy_document(ALLOW_ALL)
        .send()
        .await?;
    let key = setup
        .iam
        .create_access_key()
        .user_name("acme-shoal")
        .send()
        .await?;
    let key = key.access_key().context("no access key")?;
    let (key_id, secret_key) = (
        key.access_key_id().to_owned(),
        key.secret_access_key().to_owned(),
    );
    let acme = aws_as(
        &moto.url(),
        Credentials::new(&key_id, &secret_key, None, None, "acme"),
    )
    .await;
    let images = acme.ec2.describe_images().owners("amazon").send().await?;
    let ami = images
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .context("moto lists no AMI")?
        .to_owned();

    // The server's own credentials are refused.
    let server = ServerProc::start_with_env(&["--aws-endpoint-url", &moto.url()], &CREDENTIALS)?;
    server.shoal_ok(&["org", "create", ORG])?;
    let release = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "aws-1-35"},
        "spec": {"kubernetesVersion": "1.35.4", "bootstrap": "kubeadm", "image": {"amis": {REGION: ami}}},
    });
    let file = server.data_dir.with_extension("release.json");
    std::fs::write(&file, release.to_string())?;
    server.kubectl_ok(&["apply", "-f", &file.display().to_string()])?;
    server.shoal_ok(&create_args("denied", &["--hosted-zone", ""]))?;
    let c = wait_cluster(
        &server,
        "denied",
        Duration::from_secs(60),
        "Network False",
        |c| failed(c, "Network"),
    )
    .await?;
    let cond = condition(c.as_ref(), "Network").context("no condition")?;
    ensure!(
        cond.message.contains("ec2:Describe") && cond.message.contains("credentials"),
        "{cond:?}"
    );
    ensure!(
        cond.reason == "InvalidClientTokenId" || cond.reason == "AuthFailure",
        "{cond:?}"
    );

    // A cluster naming a Secret that does not exist says which and what it needs.
    server.shoal_ok(&create_args(
        "keyed",
        &["--hosted-zone", "", "--credentials-secret", "acme-aws"],
    ))?;
    let c = wait_cluster(
        &server,
        "keyed",
        Duration::from_secs(60),
        "Network False",
        |c| failed(c, "Network"),
    )
    .await?;
    let cond = condition(c.as_ref(), "Network").context("no condition")?;
    ensure!(
        cond.message.contains("org-acme/acme-aws")
            && cond.message.contains("accessKeyId")
            && cond.reason == "InvalidSpec",
        "{cond:?}"
    );

    // The organization's Secret, named once on the Organization: both clusters
    // converge with its keys, the refused one too.
    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "acme-aws",
        "-n",
        "org-acme",
        &format!("--from-literal=accessKeyId={key_id}"),
        &format!("--from-literal=secretAccessKey={secret_key}"),
    ])?;
    server.kubectl_ok(&[
        "patch",
        "organization",
        ORG,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"aws":{"credentialsSecret":"acme-aws"}}}"#,
    ])?;
    for name in ["denied", "keyed"] {
        wait_cluster(&server, name, Duration::from_secs(120), "Ready", ready).await?;
        let vpcs = acme.ec2.describe_vpcs().filters(owned(name)).send().await?;
        ensure!(vpcs.vpcs().len() == 1, "{name}: {:?}", vpcs.vpcs());
    }
    for name in ["denied", "keyed"] {
        delete_leaving_nothing(&server, &acme, name, false).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_create_and_delete_leave_no_duplicates_and_no_leaks() -> Result<()> {
    let moto = Moto::start(false)?;
    let aws = aws(&moto).await;
    let proxy = Proxy::start(moto.port)?;
    let mut server = lab(&proxy.url(), &aws).await?;
    // Slow AWS, and NAT gateways that stay pending for a while: the waiting paths run.
    proxy.set_delay(40);
    proxy.nat_pending_for(6);
    server.shoal_ok(&create_args("crash", &[]))?;
    let mut saw_waiting = false;
    for i in 0..5u64 {
        let deadline = Instant::now() + Duration::from_millis(700 + 500 * i);
        while Instant::now() < deadline {
            let c = cluster(&server, "crash").await.ok().flatten();
            saw_waiting |= condition(c.as_ref(), "Network")
                .is_some_and(|x| x.reason == "Waiting" && x.message.contains("pending"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.kill9()?;
        server.restart()?;
    }
    let waited = std::sync::atomic::AtomicBool::new(saw_waiting);
    wait_cluster(&server, "crash", Duration::from_secs(240), "Ready", |c| {
        if condition(c, "Network")
            .is_some_and(|x| x.reason == "Waiting" && x.message.contains("pending"))
        {
            waited.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        ready(c)
    })
    .await?;
    ensure!(
        waited.load(std::sync::atomic::Ordering::Relaxed),
        "the Network layer never reported the pending NAT gateway (NAT describes: {:?})",
        proxy.counts().get("ec2:DescribeNatGateways")
    );
    let vpcs = aws
        .ec2
        .describe_vpcs()
        .filters(owned("crash"))
        .send()
        .await?;
    ensure!(vpcs.vpcs().len() == 1, "{} VPCs", vpcs.vpcs().len());
    let instances = aws
        .ec2
        .describe_instances()
        .filters(owned("crash"))
        .filters(by("instance-state-name", "running"))
        .send()
        .await?;
    let ids: Vec<_> = instances
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            i.tags().iter().any(|t| {
                t.key() == Some("shoal.io/role")
                    && matches!(t.value(), Some("bastion" | "control-plane"))
            })
        })
        .collect();
    ensure!(
        ids.len() == 5,
        "{} bastion and control-plane instances, want 5",
        ids.len()
    );
    let lbs = aws.elb.describe_load_balancers().send().await?;
    ensure!(
        lbs.load_balancers().len() == 2,
        "{} load balancers",
        lbs.load_balancers().len()
    );
    let nats = aws.ec2.describe_nat_gateways().send().await?;
    ensure!(
        nats.nat_gateways().len() == 2,
        "{} NAT gateways",
        nats.nat_gateways().len()
    );
    let eips = aws.ec2.describe_addresses().send().await?;
    ensure!(
        eips.addresses().len() == 2,
        "{} Elastic IPs",
        eips.addresses().len()
    );

    server.shoal_ok(&["cluster", "delete", "crash", "--org", ORG])?;
    for i in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(400 + 300 * i)).await;
        server.kill9()?;
        server.restart()?;
    }
    wait_cluster(&server, "crash", Duration::from_secs(240), "gone", |c| {
        c.is_none()
    })
    .await?;
    let left = leftovers(&aws, "crash").await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    moto.reset()?;
    Ok(())
}
