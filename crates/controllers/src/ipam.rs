//! Address management for guest clusters: each on-premises cluster gets a VNI and
//! a node CIDR, allocated together as one numbered slot of a pool; each AWS cluster
//! gets its VPC's CIDR as a slot of a second pool, so that no two VPCs overlap and
//! any of them can be peered or routed to the company's network.
//!
//! A slot is claimed by creating a `coordination.k8s.io/v1` Lease named
//! `ipam-<slot>` (`ipam-vpc-<slot>` for VPCs) in the system namespace. Creating an object of a given name is
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

/// The pool AWS clusters' VPC networks are cut from, one slot per cluster whose
/// spec names no `vpcCidr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpcPool {
    /// The pool, e.g. 10.0.0.0/10.
    pub pool: Ipv4Addr,
    /// The pool's prefix length.
    pub pool_prefix: u8,
    /// Each VPC's prefix length, /16 to /20 (the AWS provider splits a VPC in eighths).
    pub prefix: u8,
}

/// 64 /16s from 10.0.0.0/10: clear of the guests' default pod (10.244.0.0/16) and
/// service (10.96.0.0/12) networks and of the on-premises node pool (10.128.0.0/9).
impl Default for VpcPool {
    fn default() -> Self {
        Self {
            pool: Ipv4Addr::new(10, 0, 0, 0),
            pool_prefix: 10,
            prefix: 16,
        }
    }
}

impl VpcPool {
    /// A pool from its CIDR and each VPC's prefix length; refused unless it holds
    /// at least one VPC of /16 to /20.
    pub fn new(pool: Cidr, prefix: u8) -> Result<Self, IpamError> {
        let IpAddr::V4(addr) = pool.addr() else {
            return Err(IpamError::Config(format!(
                "the VPC pool {pool} is not IPv4 (e.g. 10.0.0.0/8)"
            )));
        };
        let config = Self {
            pool: addr,
            pool_prefix: pool.prefix(),
            prefix,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that describe no VPC.
    pub fn validate(&self) -> Result<(), IpamError> {
        if !(16..=20).contains(&self.prefix) || self.pool_prefix > self.prefix {
            return Err(IpamError::Config(format!(
                "VPC prefix /{} must be between /16 and /20 and within the pool's /{}",
                self.prefix, self.pool_prefix
            )));
        }
        Ok(())
    }

    /// How many VPCs the pool holds.
    pub fn capacity(&self) -> u32 {
        1u32.checked_shl(u32::from(self.prefix - self.pool_prefix))
            .unwrap_or(u32::MAX)
    }

    /// The VPC CIDR of `slot`.
    pub fn cidr(&self, slot: u32) -> String {
        let base = u32::from(self.pool) & mask(self.pool_prefix);
        let net = base | slot.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
        format!("{}/{}", Ipv4Addr::from(net), self.prefix)
    }

    /// The pool as CIDR text.
    pub fn pool_text(&self) -> String {
        format!("{}/{}", self.pool, self.pool_prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Which pool a claim takes a slot of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// VNIs and node networks of on-premises clusters: claims `ipam-<slot>`.
    Nodes,
    /// VPC networks of AWS clusters: claims `ipam-vpc-<slot>`.
    Vpcs,
}

impl PoolKind {
    fn prefix(self) -> &'static str {
        match self {
            PoolKind::Nodes => "ipam-",
            PoolKind::Vpcs => "ipam-vpc-",
        }
    }

    /// The claim object's name for `slot`.
    pub fn claim_name(self, slot: u32) -> String {
        format!("{}{slot}", self.prefix())
    }

    /// The slot of a claim object's name, when it is a claim of this pool.
    pub fn slot_of(self, name: &str) -> Option<u32> {
        name.strip_prefix(self.prefix())?.parse().ok()
    }
}

/// The claim object's name for `slot` of the node pool.
pub fn claim_name(slot: u32) -> String {
    PoolKind::Nodes.claim_name(slot)
}

/// The slot of a node-pool claim object's name.
pub fn slot_of_claim(name: &str) -> Option<u32> {
    PoolKind::Nodes.slot_of(name)
}

/// The slot of a claim of either pool.
pub fn is_claim(name: &str) -> bool {
    PoolKind::Nodes.slot_of(name).is_some() || PoolKind::Vpcs.slot_of(name).is_some()
}

/// Creates and deletes the claims of one pool through the API.
struct Claims {
    api: Api<Lease>,
    kind: PoolKind,
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

impl Claims {
    fn new(client: Client, kind: PoolKind) -> Self {
        Self {
            api: Api::namespaced(client, SYSTEM_NAMESPACE),
            kind,
            cursor: AtomicU32::new(0),
        }
    }

    /// Claims a free slot of `capacity` for `owner`; `pool` names the pool in the
    /// error when none is free.
    async fn claim(
        &self,
        owner: Owner<'_>,
        capacity: u32,
        pool: impl FnOnce() -> String,
        taken: impl Fn(u32) -> bool,
    ) -> Result<u32, IpamError> {
        let capacity = capacity.max(1);
        for _ in 0..capacity {
            // Each attempt takes the cursor's next slot for itself, so claims that
            // run at once in this process try different slots: they no longer all
            // race for the same one, which cost a 409 per loser per slot.
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % capacity;
            if taken(slot) {
                continue;
            }
            let name = self.kind.claim_name(slot);
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
                Ok(_) => return Ok(slot),
                Err(e) if crate::error::is_conflict(&e) => continue,
                Err(source) => return Err(IpamError::Api { name, source }),
            }
        }
        Err(IpamError::Exhausted {
            capacity,
            pool: pool(),
        })
    }

    /// Frees a slot; freeing a slot that is already free is not an error.
    async fn release(&self, slot: u32) -> Result<(), IpamError> {
        let name = self.kind.claim_name(slot);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if crate::error::is_not_found(&e) => Ok(()),
            Err(source) => Err(IpamError::Api { name, source }),
        }
    }
}

/// Claims VNIs and node networks through the API.
pub struct Ipam {
    claims: Claims,
    config: IpamConfig,
}

impl Ipam {
    /// An allocator over `config`'s pools.
    pub fn new(client: Client, config: IpamConfig) -> Self {
        Self {
            claims: Claims::new(client, PoolKind::Nodes),
            config,
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
        let slot = self
            .claims
            .claim(
                owner,
                self.config.capacity(),
                || self.config.pool_text(),
                taken,
            )
            .await?;
        Ok(self.config.allocation(slot))
    }

    /// Frees a slot; freeing a slot that is already free is not an error.
    pub async fn release(&self, slot: u32) -> Result<(), IpamError> {
        self.claims.release(slot).await
    }
}

/// Claims AWS clusters' VPC networks through the API.
pub struct VpcIpam {
    claims: Claims,
    pool: VpcPool,
}

impl VpcIpam {
    /// An allocator over `pool`.
    pub fn new(client: Client, pool: VpcPool) -> Self {
        Self {
            claims: Claims::new(client, PoolKind::Vpcs),
            pool,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &VpcPool {
        &self.pool
    }

    /// Claims a free VPC network for `owner`; returns its slot. `taken` as for
    /// [`Ipam::claim`].
    pub async fn claim(
        &self,
        owner: Owner<'_>,
        taken: impl Fn(u32) -> bool,
    ) -> Result<u32, IpamError> {
        self.claims
            .claim(owner, self.pool.capacity(), || self.pool.pool_text(), taken)
            .await
    }

    /// Frees a slot; freeing a slot that is already free is not an error.
    pub async fn release(&self, slot: u32) -> Result<(), IpamError> {
        self.claims.release(slot).await
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
    fn vpc_slots_map_to_disjoint_vpcs() {
        let p = VpcPool::default();
        p.validate().expect("the default VPC pool is valid");
        assert_eq!(p.capacity(), 64);
        assert_eq!(p.cidr(0), "10.0.0.0/16");
        assert_eq!(p.cidr(63), "10.63.0.0/16");
        let small = VpcPool::new("172.16.0.0/12".parse().expect("a CIDR"), 20).expect("valid");
        assert_eq!(small.capacity(), 256);
        assert_eq!(small.cidr(1), "172.16.16.0/20");
        assert!(VpcPool::new("10.0.0.0/8".parse().expect("a CIDR"), 24).is_err());
        assert!(VpcPool::new("10.0.0.0/20".parse().expect("a CIDR"), 16).is_err());
        let vpc = PoolKind::Vpcs.claim_name(7);
        assert_eq!(vpc, "ipam-vpc-7");
        assert_eq!(PoolKind::Vpcs.slot_of(&vpc), Some(7));
        assert_eq!(slot_of_claim(&vpc), None, "a VPC claim is not a node claim");
        assert!(is_claim(&vpc) && is_claim(&claim_name(7)));
    }

    #[tokio::test]
    async fn vpc_claims_are_their_own_leases() {
        let (client, api) = crate::fake_api::FakeApi::client();
        let vpcs = VpcIpam::new(client, VpcPool::default());
        let slot = vpcs
            .claim(owner("uid-a"), |slot| slot == 0)
            .await
            .expect("a free VPC");
        assert_eq!(slot, 1);
        let posts = api.calls_to(&http::Method::POST, "/apis/coordination.k8s.io");
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].body["metadata"]["name"], "ipam-vpc-1");
        vpcs.release(slot).await.expect("released");
        vpcs.release(slot).await.expect("released twice is fine");
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
