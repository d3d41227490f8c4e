//! The cluster's network layout, computed from its spec alone: the VPC CIDR, the
//! zones, and each zone's private and public subnet.

use std::net::Ipv4Addr;

use shoal_api::AwsProviderSpec;

/// The VPC CIDR when the spec names none.
pub const DEFAULT_VPC_CIDR: &str = "10.0.0.0/16";
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
    #[error("spec.provider.aws.vpcCidr {0:?} is not an IPv4 /16 to /20")]
    Cidr(String),
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

/// The VPC CIDR and each zone's subnets: the VPC split in eighths, private subnets
/// in the first four, public ones in the last four.
pub fn subnets(
    spec: &AwsProviderSpec,
    zones: &[String],
) -> Result<(String, Vec<ZoneLayout>), LayoutError> {
    let cidr = spec
        .vpc_cidr
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_else(|| DEFAULT_VPC_CIDR.to_owned());
    let (addr, len) = cidr
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<Ipv4Addr>().ok()?, l.parse::<u32>().ok()?)))
        .filter(|(_, l)| (16..=20).contains(l))
        .ok_or_else(|| LayoutError::Cidr(cidr.clone()))?;
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

    #[test]
    fn two_zones_get_disjoint_private_and_public_subnets() {
        let s = spec(None, &["eu-west-1a", "eu-west-1b"]);
        let (vpc, l) = subnets(&s, &s.availability_zones).expect("a layout");
        assert_eq!(vpc, "10.0.0.0/16");
        assert_eq!(l[0].private_cidr, "10.0.0.0/19");
        assert_eq!(l[1].private_cidr, "10.0.32.0/19");
        assert_eq!(l[0].public_cidr, "10.0.128.0/19");
        assert_eq!(l[1].public_cidr, "10.0.160.0/19");
    }

    #[test]
    fn a_small_vpc_is_split_the_same_way() {
        let s = spec(Some("172.20.16.0/20"), &["eu-west-1a"]);
        let (vpc, l) = subnets(&s, &s.availability_zones).expect("a layout");
        assert_eq!(vpc, "172.20.16.0/20");
        assert_eq!(l[0].private_cidr, "172.20.16.0/23");
        assert_eq!(l[0].public_cidr, "172.20.24.0/23");
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
