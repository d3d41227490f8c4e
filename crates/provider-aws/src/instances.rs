//! EC2 instances Shoal launches one by one: a bastion per zone in its public
//! subnet, and the control-plane nodes spread over the zones' private subnets, each
//! at a fixed private address (the API server advertises it, and kubeadm's
//! configuration must know it before the instance exists).

use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{
    IamInstanceProfileSpecification, Instance, InstanceNetworkInterfaceSpecification, InstanceType,
    ResourceType,
};
use base64::Engine;

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::names::{ROLE_TAG, SLOT_TAG, ZONE_TAG};
use crate::tagging::{tag_value, Scope};

/// One instance to launch.
pub struct Launch<'a> {
    /// `bastion` or `control-plane`.
    pub role: &'a str,
    /// The tag that tells this instance from its siblings: the zone or the slot.
    pub key: (&'a str, &'a str),
    /// The AMI.
    pub image: &'a str,
    /// The instance type.
    pub instance_type: &'a str,
    /// The subnet.
    pub subnet: &'a str,
    /// The security group.
    pub group: &'a str,
    /// The instance profile.
    pub profile: &'a str,
    /// The private address, if fixed.
    pub address: Option<Ipv4Addr>,
    /// Whether it gets a public address.
    pub public: bool,
    /// Its cloud-init user-data.
    pub user_data: Option<String>,
}

/// The fixed private address of control-plane slot `slot` in `subnet_cidr`: the
/// subnet's 10th address on (AWS keeps the first four).
pub fn control_plane_address(subnet_cidr: &str, slot: u32) -> Option<Ipv4Addr> {
    let base: Ipv4Addr = subnet_cidr.split_once('/')?.0.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(base) + 10 + slot))
}

/// The cluster's pending and running instances: one describe for every
/// [`ensure`] of a pass.
pub async fn live(c: &Clients, s: &Scope) -> Result<Vec<Instance>, Error> {
    let out = c
        .ec2
        .describe_instances()
        .filters(s.owned())
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .map_err(aws("ec2:DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect())
}

/// The instance of `role` with tag `key` among `live`.
fn find<'a>(live: &'a [Instance], role: &str, key: (&str, &str)) -> Option<&'a str> {
    live.iter()
        .find(|i| {
            tag_value(i.tags(), ROLE_TAG) == Some(role) && tag_value(i.tags(), key.0) == Some(key.1)
        })
        .and_then(|i| i.instance_id())
}

/// Makes sure the instance runs; returns its ID.
pub async fn ensure(
    c: &Clients,
    s: &mut Scope,
    live: &[Instance],
    l: Launch<'_>,
) -> Result<String, Error> {
    let purpose = format!("{} {}", l.role, l.key.1);
    if let Some(id) = find(live, l.role, l.key) {
        s.record("instance", id, purpose);
        return Ok(id.to_owned());
    }
    let mut nic = InstanceNetworkInterfaceSpecification::builder()
        .device_index(0)
        .subnet_id(l.subnet)
        .groups(l.group)
        .associate_public_ip_address(l.public);
    if let Some(a) = l.address {
        nic = nic.private_ip_address(a.to_string());
    }
    let mut req = c
        .ec2
        .run_instances()
        .image_id(l.image)
        .instance_type(InstanceType::from(l.instance_type))
        .min_count(1)
        .max_count(1)
        .network_interfaces(nic.build())
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(l.profile)
                .build(),
        )
        // After a crash between launch and tagging's effect, the same token returns
        // the same instance instead of a second one.
        .client_token(format!("{}-{}-{}", s.id.short(), l.role, l.key.1))
        .tag_specifications(s.spec(
            ResourceType::Instance,
            &format!("{}-{}", l.role, l.key.1),
            &[(ROLE_TAG, l.role), l.key],
        ));
    if let Some(data) = &l.user_data {
        req = req.user_data(base64::engine::general_purpose::STANDARD.encode(data));
    }
    let out = req.send().await.map_err(aws("ec2:RunInstances"))?;
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or_else(|| Error::Waiting("ec2:RunInstances returned no instance".into()))?
        .to_owned();
    s.record("instance", &id, purpose);
    Ok(id)
}

/// The tags that tell bastions and control planes apart.
pub fn zone_key(zone: &str) -> (&'static str, &str) {
    (ZONE_TAG, zone)
}

/// The tag of control-plane slot `slot`.
pub fn slot_key(slot: &str) -> (&'static str, &str) {
    (SLOT_TAG, slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_planes_get_fixed_addresses_past_the_reserved_ones() {
        assert_eq!(
            control_plane_address("10.0.32.0/19", 2),
            Some(Ipv4Addr::new(10, 0, 32, 12))
        );
        assert_eq!(control_plane_address("nonsense", 0), None);
    }
}
