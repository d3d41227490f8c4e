//! What every controller shares: the client, the settings, read caches of the
//! kinds they look across, the IPAM allocator and the event recorder.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client, Resource};
use shoal_api::{Cluster, Host, Machine, NodePool, Release};

use crate::labels::IPAM_OWNER;
use tokio::sync::Mutex;

use crate::ipam::{Ipam, IpamConfig, VpcIpam, VpcPool};
use crate::labels::CLUSTER;
use crate::scheduler::usage::HostUsage;
use shoal_kube::{Index, Observer, Shared};

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The DNS suffix of guest API endpoints: `api.<cluster>.<org>.<base_domain>`.
    pub base_domain: String,
    /// The guest clusters' DNS domain for Services.
    pub dns_domain: String,
    /// The VNI and node network pools.
    pub ipam: IpamConfig,
    /// The pool of AWS clusters' VPC networks.
    pub vpc_pool: VpcPool,
    /// How long a Host may stay NotReady before its Machines are marked Failed.
    pub host_grace_period: Duration,
    /// The longest lifetime a KeyPair's certificate may get.
    pub keypair_max_ttl: Duration,
    /// Where the test image's kernel and initrd are, for the seeded `test` Release.
    pub test_image_dir: Option<std::path::PathBuf>,
    /// The Kubernetes version the seeded `test` Release announces.
    pub test_release_version: String,
    /// The directory of Shoal's Kubernetes node image (`vmlinuz`, `initrd.img`,
    /// `disk.qcow2`, from `images/build-kubernetes-image.sh`) for the seeded
    /// `kubeadm-<version>` Release.
    pub kubernetes_image_dir: std::path::PathBuf,
    /// Certificates are renewed this long before they expire.
    pub renew_before: Duration,
    /// The gateway's TLS listener. When set, a cluster is Ready only once its API
    /// answers `/readyz` through it; without a gateway, once every Machine is Ready.
    pub gateway_address: Option<std::net::SocketAddr>,
    /// How long the controllers drain a Kubernetes node (evictions that respect its
    /// PodDisruptionBudgets) before they remove its Machine anyway.
    pub drain_timeout: Duration,
    /// Where clients reach the gateway (`HOST:PORT`), published in every
    /// Cluster's `status.gatewayAddress` for kubeconfigs.
    pub gateway_public_address: Option<String>,
    /// Where the controllers count and time their reconciles.
    pub metrics: crate::metrics::ControllerMetrics,
    /// A failed reconcile is retried after this, doubling per failure in a row.
    pub backoff_base: Duration,
    /// The longest wait before retrying a failed reconcile.
    pub backoff_cap: Duration,
    /// How many objects each controller reconciles at once. A store with a
    /// higher write latency (etcd) needs more in flight for the same throughput.
    pub concurrency: u16,
    /// Which controllers run (`--controllers`).
    pub controllers: crate::selection::Selection,
}

/// Each controller reconciles at most this many objects at once by default: a
/// burst of thousands of new clusters then makes steady progress instead of
/// thousands of reconciles competing for the API.
pub const DEFAULT_CONCURRENCY: u16 = 32;

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            base_domain: "shoal.local".into(),
            dns_domain: "cluster.local".into(),
            ipam: IpamConfig::default(),
            vpc_pool: VpcPool::default(),
            host_grace_period: Duration::from_secs(60),
            keypair_max_ttl: Duration::from_secs(30 * 24 * 3600),
            test_image_dir: None,
            test_release_version: "1.31.2".into(),
            kubernetes_image_dir: "/var/lib/shoal/images/kubernetes".into(),
            renew_before: Duration::from_secs(30 * 24 * 3600),
            gateway_address: None,
            drain_timeout: Duration::from_secs(300),
            gateway_public_address: None,
            metrics: crate::metrics::ControllerMetrics::default(),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            concurrency: DEFAULT_CONCURRENCY,
            controllers: crate::selection::Selection::all(),
        }
    }
}

/// Read caches of the kinds the controllers look across.
#[derive(Clone)]
pub struct Stores {
    /// Clusters.
    pub clusters: Store<Cluster>,
    /// Machines.
    pub machines: Store<Machine>,
    /// Node pools.
    pub pools: Store<NodePool>,
    /// Hosts.
    pub hosts: Store<Host>,
    /// Releases.
    pub releases: Store<Release>,
    /// Leases of the system namespace: host heartbeats and IPAM claims.
    pub leases: Store<Lease>,
    /// Indexes over these caches.
    pub indexes: Indexes,
}

/// Indexes over the caches, kept by their watches, so that a reconcile's cost
/// follows its own objects rather than the fleet's size.
#[derive(Clone)]
pub struct Indexes {
    /// Machines by `namespace/cluster`.
    pub machines_by_cluster: Index<Machine>,
    /// NodePools by `namespace/cluster`.
    pub pools_by_cluster: Index<NodePool>,
    /// Machines without a host, all in the group [`UNSCHEDULED`].
    pub unscheduled: Index<Machine>,
    /// What the Machines on each host take.
    pub usage: Arc<HostUsage>,
    /// IPAM claims (Leases `ipam-<slot>` and `ipam-vpc-<slot>`) by the UID of the
    /// cluster that owns them.
    pub claims_by_owner: Index<Lease>,
}

/// The one group of [`Indexes::unscheduled`].
pub const UNSCHEDULED: &str = "";

fn machine_cluster(m: &Machine) -> Option<String> {
    Some(format!(
        "{}/{}",
        m.metadata.namespace.as_deref()?,
        m.spec.cluster
    ))
}

fn pool_cluster(p: &NodePool) -> Option<String> {
    Some(format!(
        "{}/{}",
        p.metadata.namespace.as_deref()?,
        p.spec.cluster
    ))
}

fn claim_owner(l: &Lease) -> Option<String> {
    let name = l.metadata.name.as_deref()?;
    if !crate::ipam::is_claim(name) {
        return None;
    }
    l.metadata.labels.as_ref()?.get(IPAM_OWNER).cloned()
}

fn unscheduled(m: &Machine) -> Option<String> {
    m.spec.host_name.is_none().then(|| UNSCHEDULED.to_owned())
}

impl Indexes {
    /// Empty indexes, for watches to fill.
    pub fn new() -> Self {
        Self {
            machines_by_cluster: Index::new(machine_cluster),
            pools_by_cluster: Index::new(pool_cluster),
            unscheduled: Index::new(unscheduled),
            usage: Arc::default(),
            claims_by_owner: Index::new(claim_owner),
        }
    }

    /// Indexes over `machines`, `pools` and `leases` as they are (for caches
    /// filled without a watch).
    pub fn of(machines: &[Machine], pools: &[NodePool], leases: &[Lease]) -> Self {
        Self {
            machines_by_cluster: Index::of(machine_cluster, machines),
            pools_by_cluster: Index::of(pool_cluster, pools),
            unscheduled: Index::of(unscheduled, machines),
            usage: HostUsage::of(machines),
            claims_by_owner: Index::of(claim_owner, leases),
        }
    }

    fn machine_observers(&self) -> Vec<Arc<dyn Observer<Machine>>> {
        vec![
            Arc::new(self.machines_by_cluster.clone()),
            Arc::new(self.unscheduled.clone()),
            self.usage.clone(),
        ]
    }
}

impl Default for Indexes {
    fn default() -> Self {
        Self::new()
    }
}

/// One watch per kind, shared by every controller: the caches, and the change
/// streams that trigger reconciles.
pub struct Feeds {
    /// Clusters.
    pub clusters: Shared<Cluster>,
    /// Machines.
    pub machines: Shared<Machine>,
    /// Node pools.
    pub pools: Shared<NodePool>,
    /// Hosts.
    pub hosts: Shared<Host>,
    /// Releases.
    pub releases: Shared<Release>,
    /// Leases of the system namespace.
    pub leases: Shared<Lease>,
    /// Indexes kept by these watches.
    pub indexes: Indexes,
}

impl Feeds {
    /// Starts the watches and waits until each cache has listed once; their
    /// fan-out waits are counted in `metrics`.
    pub async fn start(
        client: &Client,
        metrics: &crate::metrics::ControllerMetrics,
    ) -> Result<Self, reflector::store::WriterDropped> {
        let indexes = Indexes::new();
        let feeds = Self {
            clusters: Shared::start(Api::all(client.clone()), metrics.fanout_waits("Cluster")),
            machines: Shared::start_observed(
                Api::all(client.clone()),
                metrics.fanout_waits("Machine"),
                indexes.machine_observers(),
            ),
            pools: Shared::start_observed(
                Api::all(client.clone()),
                metrics.fanout_waits("NodePool"),
                vec![Arc::new(indexes.pools_by_cluster.clone())],
            ),
            hosts: Shared::start(Api::all(client.clone()), metrics.fanout_waits("Host")),
            releases: Shared::start(Api::all(client.clone()), metrics.fanout_waits("Release")),
            leases: Shared::start_observed(
                Api::namespaced(client.clone(), crate::labels::SYSTEM_NAMESPACE),
                metrics.fanout_waits("Lease"),
                vec![Arc::new(indexes.claims_by_owner.clone())],
            ),
            indexes,
        };
        let stores = feeds.stores();
        stores.clusters.wait_until_ready().await?;
        stores.machines.wait_until_ready().await?;
        stores.pools.wait_until_ready().await?;
        stores.hosts.wait_until_ready().await?;
        stores.releases.wait_until_ready().await?;
        stores.leases.wait_until_ready().await?;
        Ok(feeds)
    }

    /// The caches.
    pub fn stores(&self) -> Stores {
        Stores {
            clusters: self.clusters.store.clone(),
            machines: self.machines.store.clone(),
            pools: self.pools.store.clone(),
            hosts: self.hosts.store.clone(),
            releases: self.releases.store.clone(),
            leases: self.leases.store.clone(),
            indexes: self.indexes.clone(),
        }
    }
}

impl Stores {
    /// The Machines of one cluster.
    pub fn cluster_machines(&self, namespace: &str, cluster: &str) -> Vec<Arc<Machine>> {
        self.indexes
            .machines_by_cluster
            .get(&format!("{namespace}/{cluster}"), &self.machines)
    }

    /// The NodePools of one cluster.
    pub fn cluster_pools(&self, namespace: &str, cluster: &str) -> Vec<Arc<NodePool>> {
        self.indexes
            .pools_by_cluster
            .get(&format!("{namespace}/{cluster}"), &self.pools)
    }

    /// The Machines without a host.
    pub fn unscheduled_machines(&self) -> Vec<ObjectRef<Machine>> {
        self.indexes.unscheduled.refs(UNSCHEDULED)
    }

    /// One Cluster.
    pub fn cluster(&self, namespace: &str, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(&ObjectRef::new(name).within(namespace))
    }
}

/// The Machine names and addresses this process handed out recently in one
/// cluster, which the caches may not show yet; kept for a minute, by which time
/// every watch has caught up.
#[derive(Default)]
pub struct Recent {
    entries: Vec<(Instant, String, Ipv4Addr)>,
}

const RECENT_TTL: Duration = Duration::from_secs(60);

impl Recent {
    /// Records that `name` got `ip`.
    pub fn remember(&mut self, name: String, ip: Ipv4Addr) {
        let now = Instant::now();
        self.entries
            .retain(|(at, _, _)| now.duration_since(*at) < RECENT_TTL);
        self.entries.push((now, name, ip));
    }

    /// Forgets the creations the cache shows now: from then on the cache speaks
    /// for them (including their deletion).
    pub fn confirm(&mut self, seen: &BTreeSet<String>) {
        self.entries.retain(|(_, name, _)| !seen.contains(name));
    }

    /// The names created recently that the cache does not show yet.
    pub fn pending(&self) -> Vec<String> {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(|(at, _, _)| now.duration_since(*at) < RECENT_TTL)
            .map(|(_, name, _)| name.clone())
            .collect()
    }

    /// The names and addresses recently handed out.
    pub fn of(&self) -> (BTreeSet<String>, BTreeSet<Ipv4Addr>) {
        let now = Instant::now();
        let mut names = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for (at, name, ip) in &self.entries {
            if now.duration_since(*at) < RECENT_TTL {
                names.insert(name.clone());
                ips.insert(*ip);
            }
        }
        (names, ips)
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub config: ControllerConfig,
    /// Read caches.
    pub stores: Stores,
    /// The VNI/node network allocator.
    pub ipam: Ipam,
    /// The AWS clusters' VPC network allocator.
    pub vpcs: VpcIpam,
    /// Writes Events.
    pub recorder: Recorder,
    /// Per-cluster locks guarding Machine creation, each with the memory of that
    /// cluster's recent creations.
    recent: std::sync::Mutex<HashMap<String, Arc<Mutex<Recent>>>>,
    /// Each cluster's PKI as last read, by cluster UID, so that reconciles do not
    /// parse it again on every Machine change.
    pki: std::sync::Mutex<HashMap<String, (Instant, Arc<crate::cluster::pki::ClusterSecrets>)>>,
    /// The scheduler's placements the cache may not show yet.
    pub assumed: Mutex<crate::scheduler::Assumed>,
    /// Per-object retry delays of failed reconciles.
    pub backoff: crate::backoff::Backoff,
}

impl Context {
    /// A context over started caches.
    pub fn new(client: Client, config: ControllerConfig, stores: Stores) -> Self {
        let ipam = Ipam::new(client.clone(), config.ipam.clone());
        let vpcs = VpcIpam::new(client.clone(), config.vpc_pool.clone());
        let recorder = Recorder::new(client.clone(), Reporter::from("shoal-controllers"));
        let backoff = crate::backoff::Backoff::new(config.backoff_base, config.backoff_cap);
        Self {
            backoff,
            client,
            config,
            stores,
            ipam,
            vpcs,
            recorder,
            recent: Default::default(),
            pki: Default::default(),
            assumed: Mutex::new(crate::scheduler::Assumed::default()),
        }
    }

    /// The creation lock (and recent creations) of cluster `key`.
    pub fn creations(&self, key: &str) -> Arc<Mutex<Recent>> {
        let mut map = self
            .recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(key.to_owned()).or_default().clone()
    }

    /// A cluster's PKI from memory, if it was read less than `max_age` ago.
    pub fn cached_pki(
        &self,
        uid: &str,
        max_age: Duration,
    ) -> Option<Arc<crate::cluster::pki::ClusterSecrets>> {
        let map = self
            .pki
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(uid)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, s)| s.clone())
    }

    /// Remembers a cluster's PKI as just read.
    pub fn remember_pki(&self, uid: &str, secrets: Arc<crate::cluster::pki::ClusterSecrets>) {
        let mut map = self
            .pki
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.insert(uid.to_owned(), (Instant::now(), secrets));
    }

    /// Forgets what this process remembers of a deleted cluster.
    pub fn forget_cluster(&self, uid: &str, key: &str) {
        self.pki
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Records an Event on `obj`; a failure to record is logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        shoal_kube::events::record(&self.recorder, obj, warning, reason, note).await;
    }
}

/// The label selector of one cluster's children.
pub fn cluster_selector(cluster: &str) -> String {
    format!("{CLUSTER}={cluster}")
}
