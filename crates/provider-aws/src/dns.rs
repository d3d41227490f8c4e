//! Route 53: `api.<cluster>.<org>.<domain>` names the API's load balancer and
//! `*.<cluster>.<org>.<domain>` the ingress's, so that users CNAME their own names
//! to the cluster. Records cannot be tagged: they are found by name.

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use crate::balancers::built;
use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::tagging::Scope;

/// The record TTL.
const TTL: i64 = 60;

/// The hosted zone's ID, from the spec's ID or name.
pub async fn zone_id(c: &Clients, zone: &str) -> Result<String, Error> {
    if let Some(id) = zone.strip_prefix("/hostedzone/") {
        return Ok(id.to_owned());
    }
    if !zone.contains('.') {
        return Ok(zone.to_owned());
    }
    let want = format!("{}.", zone.trim_end_matches('.'));
    let out = c
        .dns
        .list_hosted_zones_by_name()
        .dns_name(&want)
        .send()
        .await
        .map_err(aws("route53:ListHostedZonesByName"))?;
    out.hosted_zones()
        .iter()
        .find(|z| z.name() == want)
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
        .ok_or_else(|| {
            Error::Spec(format!(
                "Route 53 has no hosted zone {want}: create it, or fix spec.provider.aws.hostedZone"
            ))
        })
}

/// The two records, name and target.
pub fn records(s: &Scope, domain: &str, api: &str, ingress: &str) -> [(String, String); 2] {
    [
        (format!("{}.", s.id.api_name(domain)), api.to_owned()),
        (
            format!("{}.", s.id.ingress_name(domain)),
            ingress.to_owned(),
        ),
    ]
}

fn change(action: ChangeAction, name: &str, target: &str) -> Result<Change, Error> {
    let set = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::Cname)
        .ttl(TTL)
        .resource_records(
            ResourceRecord::builder()
                .value(target)
                .build()
                .map_err(built("a record"))?,
        )
        .build()
        .map_err(built("a record set"))?;
    Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .map_err(built("a record change"))
}

/// Makes sure both records point at the load balancers; writes only a change.
pub async fn ensure(
    c: &Clients,
    s: &mut Scope,
    zone: &str,
    records: &[(String, String)],
) -> Result<(), Error> {
    let sets = cnames(c, zone).await?;
    let current = |name: &str| {
        sets.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, set)| set.resource_records().first().map(|r| r.value().to_owned()))
    };
    let changes = records
        .iter()
        .filter(|(name, target)| current(name).as_deref() != Some(target.as_str()))
        .map(|(name, target)| change(ChangeAction::Upsert, name, target))
        .collect::<Result<Vec<_>, _>>()?;
    if !changes.is_empty() {
        c.dns
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .comment(format!("Shoal cluster {}", s.id.tag()))
                    .build()
                    .map_err(built("a change batch"))?,
            )
            .send()
            .await
            .map_err(aws("route53:ChangeResourceRecordSets"))?;
    }
    for (name, target) in records {
        s.record("dns-record", name, format!("CNAME {target}"));
    }
    Ok(())
}

/// The zone's CNAME records with their names as written (Route 53 answers a
/// wildcard's `*` as `\052`).
async fn cnames(c: &Clients, zone: &str) -> Result<Vec<(String, ResourceRecordSet)>, Error> {
    let out = c
        .dns
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .map_err(aws("route53:ListResourceRecordSets"))?;
    Ok(out
        .resource_record_sets()
        .iter()
        .filter(|set| set.r#type() == &RrType::Cname)
        .map(|set| (set.name().replace("\\052", "*"), set.clone()))
        .collect())
}

/// Deletes the cluster's records that exist; returns their names.
pub async fn delete(
    c: &Clients,
    s: &Scope,
    zone: &str,
    domain: &str,
) -> Result<Vec<String>, Error> {
    let names = [
        format!("{}.", s.id.api_name(domain)),
        format!("{}.", s.id.ingress_name(domain)),
    ];
    let mut changes = Vec::new();
    let mut deleted = Vec::new();
    for (name, set) in cnames(c, zone).await? {
        if names.contains(&name) {
            changes.push(
                Change::builder()
                    .action(ChangeAction::Delete)
                    .resource_record_set(set.clone())
                    .build()
                    .map_err(built("a record change"))?,
            );
            deleted.push(name);
        }
    }
    if !changes.is_empty() {
        c.dns
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .build()
                    .map_err(built("a change batch"))?,
            )
            .send()
            .await
            .map_err(aws("route53:ChangeResourceRecordSets"))?;
    }
    Ok(deleted)
}
