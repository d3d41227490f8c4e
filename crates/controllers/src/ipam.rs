//! Address management for guest clusters: each cluster gets a VNI and a node CIDR,
//! allocated together as one numbered slot of a pool.
//!
//! A slot is claimed by creating a `coordination.k8s.io/v1` Lease named
//! `ipam-<slot>` in the system namespace. Creating an object of a given name is
//! atomic in the API, so two controllers racing for the same slot cannot both win:
//! the loser gets `409 AlreadyExists` and tries the next slot. The claim carries the
//! owning cluster's UID as a label, so a controller that crashed between claiming
//! and writing the cluster's status finds its claim again instead of taking another.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use shoal_api::validate::Cidr;

use crate::labels::{CLUSTER, CLUSTER_NAMESPACE, IPAM_OWNER, SYSTEM_NAMESPACE};

/// The pools slots are cut from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// The VNI of slot 0.
    pub vni_base: u32,
    /// The pool node CIDRs are cut from, e.g. 10.128.0.0/9.
    pub node_pool: Ipv4Addr,
    /// The pool's prefix length.
    pub node_pool_prefix: u8,
    /// Each cluster's node CIDR prefix length, e.g. 24.
    pub node_prefix: u8,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            vni_base: 1000,
            node_pool: Ipv4Addr::new(10, 128, 0, 0),
            node_pool_prefix: 9,
            node_prefix: 24,
        }
    }
}

/// What one slot gives a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The slot number.
    pub slot: u32,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The guest node network, e.g. `10.128.3.0/24`.
    pub node_cidr: String,
}

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every slot is taken.
    #[error("no free VNI/node network: all {capacity} slots of {pool} are in use; delete unused clusters or widen --node-cidr-pool")]
    Exhausted {
        /// How many slots the pool has.
        capacity: u32,
        /// The pool, as CIDR text.
        pool: String,
    },
    /// The pool settings do not describe any slot.
    #[error("invalid IPAM pool: {0}")]
    Config(String),
    /// The API refused a claim.
    #[error("IPAM claim {name}: {source}")]
    Api {
        /// The claim's name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl IpamConfig {
    /// Pools from the VNI of slot 0, an IPv4 node pool and each cluster's prefix
    /// length; refused unless they describe at least one slot.
    pub fn new(vni_base: u32, node_pool: Cidr, node_prefix: u8) -> Result<Self, IpamError> {
        let IpAddr::V4(addr) = node_pool.addr() else {
            return Err(IpamError::Config(format!(
                "the node pool {node_pool} is not IPv4 (e.g. 10.128.0.0/9)"
            )));
        };
        let config = Self {
            vni_base,
            node_pool: addr,
            node_pool_prefix: node_pool.prefix(),
            node_prefix,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that describe no slot.
    pub fn validate(&self) -> Result<(), IpamError> {
        // The agents take node networks from /8 to /30 (`ClusterNet::new`).
        if self.node_pool_prefix > self.node_prefix || !(8..=30).contains(&self.node_prefix) {
            return Err(IpamError::Config(format!(
                "node prefix /{} must be between the pool's /{} and /30, and at least /8",
                self.node_prefix, self.node_pool_prefix
            )));
        }
        if self.vni_base == 0 || self.vni_base >= 1 << 24 {
            return Err(IpamError::Config(format!(
                "VNI base {} must be within 1..16777215",
                self.vni_base
            )));
        }
        Ok(())
    }

    /// How many slots the pools hold.
    pub fn capacity(&self) -> u32 {
        let by_cidr = 1u64 << (self.node_prefix - self.node_pool_prefix);
        let by_vni = u64::from((1u32 << 24) - self.vni_base);
        u32::try_from(by_cidr.min(by_vni)).unwrap_or(u32::MAX)
    }

    /// The VNI and node CIDR of `slot`.
    pub fn allocation(&self, slot: u32) -> Allocation {
        let base = u32::from(self.node_pool) & mask(self.node_pool_prefix);
        let net = base
            | slot
                .checked_shl(32 - u32::from(self.node_prefix))
                .unwrap_or(0);
        Allocation {
            slot,
            vni: self.vni_base + slot,
            node_cidr: format!("{}/{}", Ipv4Addr::from(net), self.node_prefix),
        }
    }

    /// The pool as CIDR text.
    pub fn pool_text(&self) -> String {
        format!("{}/{}", self.node_pool, self.node_pool_prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The claim object's name for `slot`.
pub fn claim_name(slot: u32) -> String {
    format!("ipam-{slot}")
}

/// The slot of a claim object's name.
pub fn slot_of_claim(name: &str) -> Option<u32> {
    name.strip_prefix("ipam-")?.parse().ok()
}

/// Claims slots through the API.
pub struct Ipam {
    api: Api<Lease>,
    config: IpamConfig,
    /// The next slot this process tries (modulo the capacity).
    cursor: AtomicU32,
}

/// The cluster a claim is for.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its UID.
    pub uid: &'a str,
}

impl Ipam {
    /// An allocator over `config`'s pools.
    pub fn new(client: Client, config: IpamConfig) -> Self {
        Self {
            api: Api::namespaced(client, SYSTEM_NAMESPACE),
            config,
            cursor: AtomicU32::new(0),
        }
    }

    /// The pools.
    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    /// Claims a free slot for `owner`. `taken` says which slots are known to be in
    /// use (from a cache); the API has the last word, so a stale cache costs only a
    /// retry, never a double allocation.
    pub async fn claim(
        &self,
        owner: Owner<'_>,
        taken: impl Fn(u32) -> bool,
    ) -> Result<Allocation, IpamError> {
        let capacity = self.config.capacity().max(1);
        for _ in 0..capacity {
            // Each attempt takes the cursor's next slot for itself, so claims that
            // run at once in this process try different slots: they no longer all
            // race for the same one, which cost a 409 per loser per slot.
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % capacity;
            if taken(slot) {
                continue;
            }
            let name = claim_name(slot);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(SYSTEM_NAMESPACE.into()),
                    labels: Some(
                        [
                            (IPAM_OWNER.to_owned(), owner.uid.to_owned()),
                            (CLUSTER.to_owned(), owner.name.to_owned()),
                            (CLUSTER_NAMESPACE.to_owned(), owner.namespace.to_owned()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(format!("{}/{}", owner.namespace, owner.name)),
                    ..Default::default()
                }),
            };
            match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => return Ok(self.config.allocation(slot)),
                Err(e) if crate::error::is_conflict(&e) => continue,
                Err(source) => return Err(IpamError::Api { name, source }),
            }
        }
        Err(IpamError::Exhausted {
            capacity,
            pool: self.config.pool_text(),
        })
    }

    /// Frees a slot; freeing a slot that is already free is not an error.
    pub async fn release(&self, slot: u32) -> Result<(), IpamError> {
        let name = claim_name(slot);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if crate::error::is_not_found(&e) => Ok(()),
            Err(source) => Err(IpamError::Api { name, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_disjoint_networks() {
        let c = IpamConfig::default();
        c.validate().expect("default pools are valid");
        assert_eq!(c.capacity(), 32768);
        assert_eq!(c.allocation(0).node_cidr, "10.128.0.0/24");
        assert_eq!(c.allocation(0).vni, 1000);
        assert_eq!(c.allocation(258).node_cidr, "10.129.2.0/24");
        assert_eq!(c.allocation(32767).node_cidr, "10.255.255.0/24");
        assert_eq!(slot_of_claim(&claim_name(42)), Some(42));
    }

    fn owner(uid: &str) -> Owner<'_> {
        Owner {
            namespace: "org-a",
            name: uid,
            uid,
        }
    }

    #[tokio::test]
    async fn concurrent_claims_take_distinct_slots_without_conflicts() {
        let (client, api) = crate::fake_api::FakeApi::client();
        let ipam = std::sync::Arc::new(Ipam::new(client, IpamConfig::default()));
        let uids: Vec<String> = (0..16).map(|i| format!("uid-{i}")).collect();
        let claims = uids.iter().map(|uid| ipam.claim(owner(uid), |_| false));
        let mut slots: Vec<u32> = futures::future::join_all(claims)
            .await
            .into_iter()
            .map(|r| r.map(|a| a.slot))
            .collect::<Result<_, _>>()
            .expect("every claim succeeds");
        slots.sort_unstable();
        assert_eq!(slots, (0..16).collect::<Vec<u32>>());
        let posts = api.calls_to(&http::Method::POST, "/apis/coordination.k8s.io");
        assert_eq!(posts.len(), 16, "one create per claim, no 409 retries");
    }

    #[tokio::test]
    async fn a_claim_skips_taken_and_conflicting_slots() {
        let (client, api) = crate::fake_api::FakeApi::client();
        // Slot 1 was claimed by another replica, unknown to this cache.
        let other = Lease {
            metadata: ObjectMeta {
                name: Some(claim_name(1)),
                namespace: Some(SYSTEM_NAMESPACE.into()),
                ..Default::default()
            },
            spec: None,
        };
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases");
        api.put(&format!("{leases}/{}", claim_name(1)), &other);
        let ipam = Ipam::new(client, IpamConfig::default());
        // The cache knows slot 0 is taken: no request for it.
        let got = ipam
            .claim(owner("uid-a"), |slot| slot == 0)
            .await
            .expect("a free slot");
        assert_eq!(got.slot, 2);
        let posts = api.calls_to(&http::Method::POST, "/apis/coordination.k8s.io");
        assert_eq!(posts.len(), 2, "slot 1 answered 409, slot 2 was created");
    }

    #[tokio::test]
    async fn an_exhausted_pool_says_so() {
        let (client, _api) = crate::fake_api::FakeApi::client();
        let config = IpamConfig {
            node_pool_prefix: 22,
            ..IpamConfig::default()
        };
        let ipam = Ipam::new(client, config);
        let err = ipam
            .claim(owner("uid-a"), |_| true)
            .await
            .expect_err("no slot is free");
        assert!(
            matches!(err, IpamError::Exhausted { capacity: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn bad_pools_are_refused() {
        let c = IpamConfig {
            node_prefix: 8,
            ..IpamConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
