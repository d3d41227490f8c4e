//! Checks made before anything is created: the region exists, the zones are
//! offered in it, and so are the instance types. A cluster that fails them gets a
//! condition that says what to change, and nothing is made halfway.

use aws_sdk_ec2::types::LocationType;
use shoal_api::AwsProviderSpec;

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::layout;
use crate::tagging::by;

/// Checks the spec against the region; returns the zones to use.
pub async fn check(
    c: &Clients,
    spec: &AwsProviderSpec,
    types: &[&str],
) -> Result<Vec<String>, Error> {
    let regions = c
        .home
        .describe_regions()
        .send()
        .await
        .map_err(aws("ec2:DescribeRegions"))?;
    let known: Vec<&str> = regions
        .regions()
        .iter()
        .filter_map(|r| r.region_name())
        .collect();
    if !known.contains(&spec.region.as_str()) {
        return Err(Error::Spec(format!(
            "region {} is not one of the account's regions: fix spec.provider.aws.region (e.g. {})",
            spec.region,
            known.iter().take(4).copied().collect::<Vec<_>>().join(", ")
        )));
    }
    let out = c
        .ec2
        .describe_availability_zones()
        .filters(by("state", "available"))
        .send()
        .await
        .map_err(aws("ec2:DescribeAvailabilityZones"))?;
    let offered: Vec<String> = out
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name().map(str::to_owned))
        .collect();
    let zones = layout::zones(spec, &offered).map_err(|e| Error::Spec(e.to_string()))?;
    if let Some(z) = zones.iter().find(|z| !offered.contains(z)) {
        return Err(Error::Spec(format!(
            "availability zone {z} is not offered in {} (offered: {}): fix spec.provider.aws.availabilityZones",
            spec.region,
            offered.join(", ")
        )));
    }
    let mut req = c
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone);
    let mut filter = aws_sdk_ec2::types::Filter::builder().name("instance-type");
    for t in types {
        filter = filter.values(*t);
    }
    req = req.filters(filter.build());
    let offerings = req
        .send()
        .await
        .map_err(aws("ec2:DescribeInstanceTypeOfferings"))?;
    for t in types {
        for z in &zones {
            let there = offerings.instance_type_offerings().iter().any(|o| {
                o.instance_type().map(|i| i.as_str()) == Some(*t)
                    && o.location() == Some(z.as_str())
            });
            if !there {
                return Err(Error::Spec(format!(
                    "instance type {t} is not offered in {z}: choose another (spec.provider.aws \\
                     controlPlaneInstanceType/workerInstanceType, or --instance-type)"
                )));
            }
        }
    }
    Ok(zones)
}
