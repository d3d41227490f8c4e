//! Tags and tag filters on EC2 resources, and the record of what a reconcile found
//! or made.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use shoal_api::AwsResource;

use crate::names::{ClusterId, CLUSTER_TAG, MANAGED_TAG};

/// The cluster a reconcile works for, and what it has found or made so far.
#[derive(Debug)]
pub struct Scope {
    /// The cluster.
    pub id: ClusterId,
    /// Every resource seen, in order.
    pub resources: Vec<AwsResource>,
}

impl Scope {
    /// A scope for `id` with nothing recorded.
    pub fn new(id: ClusterId) -> Self {
        Self {
            id,
            resources: Vec::new(),
        }
    }

    /// Records a resource.
    pub fn record(&mut self, kind: &str, id: &str, purpose: impl Into<String>) {
        self.resources.push(AwsResource {
            kind: kind.to_owned(),
            id: id.to_owned(),
            purpose: purpose.into(),
        });
    }

    /// The cluster's tags plus `extra`, and a `Name` for the console.
    pub fn tags(&self, purpose: &str, extra: &[(&str, &str)]) -> Vec<Tag> {
        let mut tags = vec![
            tag(CLUSTER_TAG, &self.id.tag()),
            tag(MANAGED_TAG, "true"),
            tag("Name", &self.id.display(purpose)),
        ];
        tags.extend(extra.iter().map(|(k, v)| tag(k, v)));
        tags
    }

    /// A tag specification for a new resource of type `kind`.
    pub fn spec(
        &self,
        kind: ResourceType,
        purpose: &str,
        extra: &[(&str, &str)],
    ) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(self.tags(purpose, extra)))
            .build()
    }

    /// Whether `tags` mark a resource as the cluster's. Filters do that on the
    /// server, but not every implementation honours tag filters on every call
    /// (moto ignores them on NAT gateways): lists are checked here too.
    pub fn owns(&self, tags: &[Tag]) -> bool {
        tag_value(tags, CLUSTER_TAG) == Some(self.id.tag().as_str())
    }

    /// The filter matching the cluster's resources.
    pub fn owned(&self) -> Filter {
        by(&format!("tag:{CLUSTER_TAG}"), &self.id.tag())
    }
}

/// One EC2 tag.
pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// A filter `name` = `value`.
pub fn by(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// The value of tag `key` among `tags`.
pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}
