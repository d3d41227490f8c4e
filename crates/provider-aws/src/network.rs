//! The Network layer: the VPC, a private and a public subnet per zone, the
//! internet gateway, a NAT gateway with its Elastic IP per zone, and the route
//! tables (public: to the internet gateway; each zone's private one: to its NAT).
//!
//! Each step looks for the cluster's resource by tag first and makes it only when
//! it is missing, so a reconcile interrupted anywhere resumes without duplicates.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, NatGateway, NatGatewayState, ResourceType, RouteTable,
    Subnet,
};

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::layout::{self, ZoneLayout};
use crate::names::{ROLE_TAG, ZONE_TAG};
use crate::tagging::{by, tag_value, Scope};

/// One zone's network.
#[derive(Clone, Debug)]
pub struct ZoneNet {
    /// The availability zone.
    pub zone: String,
    /// The private subnet's ID.
    pub private_subnet: String,
    /// The public subnet's ID.
    pub public_subnet: String,
    /// The private subnet's CIDR.
    pub private_cidr: String,
}

/// The cluster's network.
#[derive(Clone, Debug)]
pub struct Network {
    /// The VPC's ID.
    pub vpc: String,
    /// The VPC's CIDR.
    pub cidr: String,
    /// Each zone's subnets, in the spec's order.
    pub zones: Vec<ZoneNet>,
}

/// Makes sure the whole network exists in `zones` and returns it.
pub async fn ensure(
    c: &Clients,
    s: &mut Scope,
    vpc_cidr: &str,
    zones: &[String],
) -> Result<Network, Error> {
    let (cidr, layout) =
        layout::subnets(vpc_cidr, zones).map_err(|e| Error::Spec(e.to_string()))?;
    let vpc = ensure_vpc(c, s, &cidr).await?;
    // One describe per resource type; each step works from these lists.
    let subnets = c
        .ec2
        .describe_subnets()
        .filters(by("vpc-id", &vpc))
        .send()
        .await
        .map_err(aws("ec2:DescribeSubnets"))?;
    let mut nets = Vec::new();
    for z in &layout {
        nets.push(ensure_subnets(c, s, &vpc, z, subnets.subnets()).await?);
    }
    let igw = ensure_internet_gateway(c, s, &vpc).await?;
    let tables = c
        .ec2
        .describe_route_tables()
        .filters(by("vpc-id", &vpc))
        .send()
        .await
        .map_err(aws("ec2:DescribeRouteTables"))?;
    let tables = tables.route_tables();
    let public_rt = ensure_route_table(c, s, &vpc, tables, "public", None).await?;
    ensure_default_route(c, &public_rt, Route::Gateway(&igw)).await?;
    for z in &nets {
        associate(c, &public_rt, &z.public_subnet).await?;
    }
    let nats = c
        .ec2
        .describe_nat_gateways()
        .filter(by("vpc-id", &vpc))
        .send()
        .await
        .map_err(aws("ec2:DescribeNatGateways"))?;
    for z in &nets {
        let nat = ensure_nat(c, s, z, nats.nat_gateways()).await?;
        let rt = ensure_route_table(c, s, &vpc, tables, "private", Some(&z.zone)).await?;
        ensure_default_route(c, &rt, Route::Nat(&nat)).await?;
        associate(c, &rt, &z.private_subnet).await?;
    }
    Ok(Network {
        vpc,
        cidr,
        zones: nets,
    })
}

async fn ensure_vpc(c: &Clients, s: &mut Scope, cidr: &str) -> Result<String, Error> {
    let found = c
        .ec2
        .describe_vpcs()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeVpcs"))?;
    let id = match found.vpcs().iter().find_map(|v| v.vpc_id()) {
        Some(id) => id.to_owned(),
        None => {
            let made = c
                .ec2
                .create_vpc()
                .cidr_block(cidr)
                .tag_specifications(s.spec(ResourceType::Vpc, "vpc", &[]))
                .send()
                .await
                .map_err(aws("ec2:CreateVpc"))?;
            let id = made
                .vpc()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| Error::Waiting("ec2:CreateVpc returned no VPC ID".into()))?
                .to_owned();
            // Instances get DNS names, which kubeadm's node names and the NLB use.
            c.ec2
                .modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(aws("ec2:ModifyVpcAttribute"))?;
            id
        }
    };
    s.record("vpc", &id, cidr);
    Ok(id)
}

async fn ensure_subnets(
    c: &Clients,
    s: &mut Scope,
    vpc: &str,
    z: &ZoneLayout,
    found: &[Subnet],
) -> Result<ZoneNet, Error> {
    let mut ids = Vec::new();
    for (role, cidr) in [("private", &z.private_cidr), ("public", &z.public_cidr)] {
        let existing = found
            .iter()
            .find(|n| n.cidr_block() == Some(cidr.as_str()))
            .and_then(|n| n.subnet_id().map(str::to_owned));
        let id = match existing {
            Some(id) => id,
            None => c
                .ec2
                .create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(&z.zone)
                .tag_specifications(s.spec(
                    ResourceType::Subnet,
                    &format!("{role}-{}", z.zone),
                    &[(ROLE_TAG, role), (ZONE_TAG, &z.zone)],
                ))
                .send()
                .await
                .map_err(aws("ec2:CreateSubnet"))?
                .subnet()
                .and_then(|n| n.subnet_id())
                .ok_or_else(|| Error::Waiting("ec2:CreateSubnet returned no subnet ID".into()))?
                .to_owned(),
        };
        s.record("subnet", &id, format!("{role} {} {cidr}", z.zone));
        ids.push(id);
    }
    let public_subnet = ids.pop().unwrap_or_default();
    let private_subnet = ids.pop().unwrap_or_default();
    Ok(ZoneNet {
        zone: z.zone.clone(),
        private_subnet,
        public_subnet,
        private_cidr: z.private_cidr.clone(),
    })
}

async fn ensure_internet_gateway(c: &Clients, s: &mut Scope, vpc: &str) -> Result<String, Error> {
    let found = c
        .ec2
        .describe_internet_gateways()
        .filters(s.owned())
        .send()
        .await
        .map_err(aws("ec2:DescribeInternetGateways"))?;
    let existing = found.internet_gateways().first().cloned();
    let (id, attached) = match existing {
        Some(g) => (
            g.internet_gateway_id().unwrap_or_default().to_owned(),
            g.attachments().iter().any(|a| a.vpc_id() == Some(vpc)),
        ),
        None => {
            let made = c
                .ec2
                .create_internet_gateway()
                .tag_specifications(s.spec(ResourceType::InternetGateway, "igw", &[]))
                .send()
                .await
                .map_err(aws("ec2:CreateInternetGateway"))?;
            let id = made
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .ok_or_else(|| Error::Waiting("ec2:CreateInternetGateway returned no ID".into()))?
                .to_owned();
            (id, false)
        }
    };
    if !attached {
        c.ec2
            .attach_internet_gateway()
            .internet_gateway_id(&id)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(aws("ec2:AttachInternetGateway"))?;
    }
    s.record("internet-gateway", &id, "");
    Ok(id)
}

async fn ensure_nat(
    c: &Clients,
    s: &mut Scope,
    z: &ZoneNet,
    found: &[NatGateway],
) -> Result<String, Error> {
    let live = found.iter().find(|g| {
        s.owns(g.tags())
            && tag_value(g.tags(), ZONE_TAG) == Some(z.zone.as_str())
            && matches!(
                g.state(),
                Some(NatGatewayState::Available | NatGatewayState::Pending)
            )
    });
    if let Some(g) = live {
        let id = g.nat_gateway_id().unwrap_or_default().to_owned();
        for a in g.nat_gateway_addresses() {
            if let Some(alloc) = a.allocation_id() {
                s.record("elastic-ip", alloc, format!("nat {}", z.zone));
            }
        }
        s.record("nat-gateway", &id, &z.zone);
        if g.state() == Some(&NatGatewayState::Pending) {
            return Err(Error::Waiting(format!(
                "NAT gateway {id} in {} is pending",
                z.zone
            )));
        }
        return Ok(id);
    }
    let eip = ensure_eip(c, s, &z.zone).await?;
    let made = c
        .ec2
        .create_nat_gateway()
        .subnet_id(&z.public_subnet)
        .allocation_id(&eip)
        // The same token after a crash returns the same gateway, never a second one.
        .client_token(format!("{}-nat-{}", s.id.short(), z.zone))
        .tag_specifications(s.spec(
            ResourceType::Natgateway,
            &format!("nat-{}", z.zone),
            &[(ZONE_TAG, &z.zone)],
        ))
        .send()
        .await
        .map_err(aws("ec2:CreateNatGateway"))?;
    let id = made
        .nat_gateway()
        .and_then(|g| g.nat_gateway_id())
        .ok_or_else(|| Error::Waiting("ec2:CreateNatGateway returned no ID".into()))?
        .to_owned();
    s.record("nat-gateway", &id, &z.zone);
    // A new gateway is pending for a minute or two on AWS: the private routes wait.
    if made.nat_gateway().and_then(|g| g.state()) != Some(&NatGatewayState::Available) {
        return Err(Error::Waiting(format!(
            "NAT gateway {id} in {} is pending",
            z.zone
        )));
    }
    Ok(id)
}

async fn ensure_eip(c: &Clients, s: &mut Scope, zone: &str) -> Result<String, Error> {
    let found = c
        .ec2
        .describe_addresses()
        .filters(s.owned())
        .filters(by(&format!("tag:{ZONE_TAG}"), zone))
        .send()
        .await
        .map_err(aws("ec2:DescribeAddresses"))?;
    let id = match found.addresses().iter().find_map(|a| a.allocation_id()) {
        Some(id) => id.to_owned(),
        None => c
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(s.spec(
                ResourceType::ElasticIp,
                &format!("nat-{zone}"),
                &[(ZONE_TAG, zone)],
            ))
            .send()
            .await
            .map_err(aws("ec2:AllocateAddress"))?
            .allocation_id()
            .ok_or_else(|| Error::Waiting("ec2:AllocateAddress returned no allocation ID".into()))?
            .to_owned(),
    };
    s.record("elastic-ip", &id, format!("nat {zone}"));
    Ok(id)
}

/// A route table with what this pass knows of its routes and subnets.
struct Table {
    id: String,
    routes: Vec<aws_sdk_ec2::types::Route>,
    subnets: Vec<String>,
}

async fn ensure_route_table(
    c: &Clients,
    s: &mut Scope,
    vpc: &str,
    found: &[RouteTable],
    role: &str,
    zone: Option<&str>,
) -> Result<Table, Error> {
    let existing = found.iter().find(|t| {
        s.owns(t.tags())
            && tag_value(t.tags(), ROLE_TAG) == Some(role)
            && (zone.is_none() || tag_value(t.tags(), ZONE_TAG) == zone)
    });
    let purpose = match zone {
        Some(z) => format!("{role}-{z}"),
        None => role.to_owned(),
    };
    let table = match existing {
        Some(t) => Table {
            id: t.route_table_id().unwrap_or_default().to_owned(),
            routes: t.routes().to_vec(),
            subnets: t
                .associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_owned))
                .collect(),
        },
        None => {
            let mut extra = vec![(ROLE_TAG, role)];
            if let Some(z) = zone {
                extra.push((ZONE_TAG, z));
            }
            let id = c
                .ec2
                .create_route_table()
                .vpc_id(vpc)
                .tag_specifications(s.spec(ResourceType::RouteTable, &purpose, &extra))
                .send()
                .await
                .map_err(aws("ec2:CreateRouteTable"))?
                .route_table()
                .and_then(|t| t.route_table_id())
                .ok_or_else(|| Error::Waiting("ec2:CreateRouteTable returned no ID".into()))?
                .to_owned();
            Table {
                id,
                routes: Vec::new(),
                subnets: Vec::new(),
            }
        }
    };
    s.record("route-table", &table.id, purpose);
    Ok(table)
}

enum Route<'a> {
    Gateway(&'a str),
    Nat(&'a str),
}

async fn ensure_default_route(c: &Clients, table: &Table, to: Route<'_>) -> Result<(), Error> {
    let has = table.routes.iter().any(|r| {
        r.destination_cidr_block() == Some("0.0.0.0/0")
            && match to {
                Route::Gateway(g) => r.gateway_id() == Some(g),
                Route::Nat(n) => r.nat_gateway_id() == Some(n),
            }
    });
    if has {
        return Ok(());
    }
    let req = c
        .ec2
        .create_route()
        .route_table_id(&table.id)
        .destination_cidr_block("0.0.0.0/0");
    let req = match to {
        Route::Gateway(g) => req.gateway_id(g),
        Route::Nat(n) => req.nat_gateway_id(n),
    };
    match req.send().await.map_err(aws("ec2:CreateRoute")) {
        Err(e) if !e.is_duplicate() => Err(e.into()),
        _ => Ok(()),
    }
}

async fn associate(c: &Clients, table: &Table, subnet: &str) -> Result<(), Error> {
    if table.subnets.iter().any(|s| s == subnet) {
        return Ok(());
    }
    c.ec2
        .associate_route_table()
        .route_table_id(&table.id)
        .subnet_id(subnet)
        .send()
        .await
        .map_err(aws("ec2:AssociateRouteTable"))?;
    Ok(())
}
