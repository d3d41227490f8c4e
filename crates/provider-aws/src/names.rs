//! The names and tags of a cluster's AWS resources.
//!
//! Every resource carries [`CLUSTER_TAG`] = `<org>/<cluster>` and
//! [`MANAGED_TAG`] = `true`; that is how the provider finds what exists (after a
//! crash, too) and what to delete. Names AWS limits in length (load balancers and
//! target groups: 32 characters) use a short stable ID of the cluster instead.

/// The tag naming the cluster a resource belongs to, `<org>/<cluster>`.
pub const CLUSTER_TAG: &str = "shoal.io/cluster";
/// The tag marking a resource as Shoal's.
pub const MANAGED_TAG: &str = "shoal.io/managed";
/// The tag saying what a resource is for: `public`, `private`, `bastion`,
/// `control-plane`, `worker`, `ingress`, `api`.
pub const ROLE_TAG: &str = "shoal.io/role";
/// The tag naming a resource's availability zone, on per-zone resources.
pub const ZONE_TAG: &str = "shoal.io/zone";
/// The tag naming a control-plane instance's slot, `0`, `1`, `2`.
pub const SLOT_TAG: &str = "shoal.io/slot";
/// The tag naming a worker resource's NodePool.
pub const POOL_TAG: &str = "shoal.io/nodepool";
/// The IAM path of every role and instance profile Shoal makes.
pub const IAM_PATH: &str = "/shoal/";

/// 10 hex digits of FNV-1a over `text`: short, stable, not a secret.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// On worker groups: the fingerprint of what the template version they launch was
/// made from (and on a launch template, of its first version).
pub const TEMPLATE_TAG: &str = "shoal.io/template";

/// One cluster's identity on AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterId {
    /// The organization.
    pub org: String,
    /// The cluster.
    pub cluster: String,
}

impl ClusterId {
    /// The value of [`CLUSTER_TAG`].
    pub fn tag(&self) -> String {
        format!("{}/{}", self.org, self.cluster)
    }

    /// A short stable ID (10 hex digits of FNV-1a over the tag), for names with
    /// length limits.
    pub fn short(&self) -> String {
        fingerprint(&self.tag())
    }

    /// The `Name` tag of a resource for `purpose`.
    pub fn display(&self, purpose: &str) -> String {
        format!("shoal-{}-{}-{purpose}", self.org, self.cluster)
    }

    /// The name of a load balancer or target group (at most 32 characters).
    pub fn lb(&self, purpose: &str) -> String {
        let name = format!("shoal-{}-{purpose}", self.short());
        name.chars().take(32).collect()
    }

    /// The name of an IAM role and its instance profile for `role`.
    pub fn iam(&self, role: &str) -> String {
        format!("shoal-{}-{role}", self.short())
    }

    /// The name of a NodePool's Auto Scaling Group and launch template.
    pub fn pool(&self, pool: &str) -> String {
        format!("shoal-{}-{pool}", self.short())
    }

    /// The DNS name of the cluster's API.
    pub fn api_name(&self, base_domain: &str) -> String {
        format!("api.{}.{}.{base_domain}", self.cluster, self.org)
    }

    /// The wildcard DNS name of the cluster's ingress.
    pub fn ingress_name(&self, base_domain: &str) -> String {
        format!("*.{}.{}.{base_domain}", self.cluster, self.org)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_aws_limits_and_stay_stable() {
        let id = ClusterId {
            org: "a-very-long-organization-name-that-goes-on".into(),
            cluster: "and-a-cluster-name-that-is-long-too".into(),
        };
        assert!(id.lb("ingress-https").len() <= 32);
        assert_eq!(id.short(), id.short());
        assert_eq!(id.short().len(), 10);
        let other = ClusterId {
            org: "acme".into(),
            cluster: "demo".into(),
        };
        assert_ne!(id.short(), other.short());
        assert_eq!(other.tag(), "acme/demo");
        assert_eq!(other.api_name("example.com"), "api.demo.acme.example.com");
        assert_eq!(other.ingress_name("example.com"), "*.demo.acme.example.com");
    }
}
