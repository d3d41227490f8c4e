//! The cluster's network layout, computed from its spec and its VPC network alone:
//! the VPC CIDR (the spec's, else the one IPAM gave the cluster), the zones, and
//! each zone's private and public subnet.

use std::net::Ipv4Addr;

use shoal_api::AwsProviderSpec;

/// How many zones a cluster spreads over when the spec names none.
pub const DEFAULT_ZONES: usize = 2;
/// The most zones a layout has room for (eight subnets of the VPC).
pub const MAX_ZONES: usize = 4;

/// One zone's pair of subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneLayout {
    /// The availability zone.
    pub zone: String,
    /// The private subnet: control planes and workers.
    pub private_cidr: String,
    /// The public subnet: the bastion, the NAT gateway and the load balancers.
    pub public_cidr: String,
}

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The VPC CIDR does not parse or is of the wrong size.
    #[error("the VPC network {0:?} is not an IPv4 /16 to /20: fix spec.provider.aws.vpcCidr, or the server's --aws-vpc-prefix")]
    Cidr(String),
    /// The guest's pod or service network overlaps the VPC's.
    #[error("spec.network.{field} {guest} overlaps the VPC network {vpc}: pick a {field} outside it, or another spec.provider.aws.vpcCidr")]
    Overlap {
        /// `podCidr` or `serviceCidr`.
        field: &'static str,
        /// The guest network.
        guest: String,
        /// The VPC network.
        vpc: String,
    },
    /// Neither the spec nor IPAM gave the VPC a network yet.
    #[error("waiting for the cluster controller to allocate the VPC network from IPAM (or set spec.provider.aws.vpcCidr)")]
    Unallocated,
    /// More zones than the layout has room for.
    #[error("{0} availability zones: a cluster spreads over at most {MAX_ZONES}")]
    TooManyZones(usize),
    /// No zone to put subnets in.
    #[error("the region offers no available zone")]
    NoZone,
}

/// The zones to use: the spec's, else the first [`DEFAULT_ZONES`] the region offers.
pub fn zones(spec: &AwsProviderSpec, offered: &[String]) -> Result<Vec<String>, LayoutError> {
    let zones: Vec<String> = if spec.availability_zones.is_empty() {
        let mut offered = offered.to_vec();
        offered.sort();
        offered.into_iter().take(DEFAULT_ZONES).collect()
    } else {
        spec.availability_zones.clone()
    };
    match zones.len() {
        0 => Err(LayoutError::NoZone),
        n if n > MAX_ZONES => Err(LayoutError::TooManyZones(n)),
        _ => Ok(zones),
    }
}

/// The VPC's network: the spec's `vpcCidr`, else the one IPAM allocated to the
/// cluster (`status.nodeCidr`).
pub fn vpc_cidr(spec: &AwsProviderSpec, allocated: Option<&str>) -> Result<String, LayoutError> {
    spec.vpc_cidr
        .as_ref()
        .map(|c| c.to_string())
        .or_else(|| allocated.map(str::to_owned))
        .ok_or(LayoutError::Unallocated)
}

/// Refuses a VPC network that overlaps the guest's pod or service network: packets
/// to those addresses would not leave the nodes.
pub fn check_overlap(
    vpc: &str,
    guest: &shoal_api::resources::cluster::ClusterNetwork,
) -> Result<(), LayoutError> {
    let Ok(net) = vpc.parse::<shoal_api::validate::Cidr>() else {
        return Err(LayoutError::Cidr(vpc.to_owned()));
    };
    for (field, cidr) in [
        ("podCidr", &guest.pod_cidr),
        ("serviceCidr", &guest.service_cidr),
    ] {
        if net.overlaps(cidr) {
            return Err(LayoutError::Overlap {
                field,
                guest: cidr.to_string(),
                vpc: vpc.to_owned(),
            });
        }
    }
    Ok(())
}

/// The VPC CIDR and each zone's subnets: the VPC `cidr` split in eighths, private
/// subnets in the first four, public ones in the last four.
pub fn subnets(cidr: &str, zones: &[String]) -> Result<(String, Vec<ZoneLayout>), LayoutError> {
    let (addr, len) = cidr
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<Ipv4Addr>().ok()?, l.parse::<u32>().ok()?)))
        .filter(|(_, l)| (16..=20).contains(l))
        .ok_or_else(|| LayoutError::Cidr(cidr.to_owned()))?;
    if zones.len() > MAX_ZONES {
        return Err(LayoutError::TooManyZones(zones.len()));
    }
    let base = u32::from(addr) & (u32::MAX << (32 - len));
    let sub_len = len + 3;
    let size = 1u32 << (32 - sub_len);
    let nth = |i: u32| format!("{}/{sub_len}", Ipv4Addr::from(base + i * size));
    let layout = zones
        .iter()
        .zip(0u32..)
        .map(|(zone, i)| ZoneLayout {
            zone: zone.clone(),
            private_cidr: nth(i),
            public_cidr: nth(i + 4),
        })
        .collect();
    Ok((format!("{}/{len}", Ipv4Addr::from(base)), layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cidr: Option<&str>, zones: &[&str]) -> AwsProviderSpec {
        AwsProviderSpec {
            region: "eu-west-1".into(),
            availability_zones: zones.iter().map(|z| z.to_string()).collect(),
            vpc_cidr: cidr.map(|c| c.parse().expect("a CIDR")),
            ..Default::default()
        }
    }

    fn zone_names(names: &[&str]) -> Vec<String> {
        names.iter().map(|z| z.to_string()).collect()
    }

    #[test]
    fn two_zones_get_disjoint_private_and_public_subnets() {
        let (vpc, l) =
            subnets("10.3.0.0/16", &zone_names(&["eu-west-1a", "eu-west-1b"])).expect("a layout");
        assert_eq!(vpc, "10.3.0.0/16");
        assert_eq!(l[0].private_cidr, "10.3.0.0/19");
        assert_eq!(l[1].private_cidr, "10.3.32.0/19");
        assert_eq!(l[0].public_cidr, "10.3.128.0/19");
        assert_eq!(l[1].public_cidr, "10.3.160.0/19");
    }

    #[test]
    fn a_small_vpc_is_split_the_same_way() {
        let (vpc, l) = subnets("172.20.16.0/20", &zone_names(&["eu-west-1a"])).expect("a layout");
        assert_eq!(vpc, "172.20.16.0/20");
        assert_eq!(l[0].private_cidr, "172.20.16.0/23");
        assert_eq!(l[0].public_cidr, "172.20.24.0/23");
        assert_eq!(
            subnets("10.0.0.0/24", &zone_names(&["eu-west-1a"])),
            Err(LayoutError::Cidr("10.0.0.0/24".into()))
        );
    }

    #[test]
    fn the_spec_s_network_wins_over_the_allocated_one() {
        let named = spec(Some("172.20.16.0/20"), &[]);
        assert_eq!(
            vpc_cidr(&named, Some("10.1.0.0/16")).as_deref(),
            Ok("172.20.16.0/20")
        );
        let unnamed = spec(None, &[]);
        assert_eq!(
            vpc_cidr(&unnamed, Some("10.1.0.0/16")).as_deref(),
            Ok("10.1.0.0/16")
        );
        assert_eq!(vpc_cidr(&unnamed, None), Err(LayoutError::Unallocated));
    }

    #[test]
    fn a_vpc_over_the_pod_or_service_network_is_refused() {
        let guest = shoal_api::resources::cluster::ClusterNetwork::default();
        assert_eq!(check_overlap("10.1.0.0/16", &guest), Ok(()));
        assert!(matches!(
            check_overlap("10.244.0.0/16", &guest),
            Err(LayoutError::Overlap {
                field: "podCidr",
                ..
            })
        ));
        assert!(matches!(
            check_overlap("10.96.0.0/16", &guest),
            Err(LayoutError::Overlap {
                field: "serviceCidr",
                ..
            })
        ));
    }

    #[test]
    fn zones_default_to_the_first_two_offered_and_are_bounded() {
        let offered: Vec<String> = ["eu-west-1c", "eu-west-1a", "eu-west-1b"]
            .iter()
            .map(|z| z.to_string())
            .collect();
        assert_eq!(
            zones(&spec(None, &[]), &offered).expect("zones"),
            ["eu-west-1a", "eu-west-1b"]
        );
        assert_eq!(zones(&spec(None, &[]), &[]), Err(LayoutError::NoZone));
        let five = spec(None, &["a", "b", "c", "d", "e"]);
        assert_eq!(zones(&five, &offered), Err(LayoutError::TooManyZones(5)));
    }
}
