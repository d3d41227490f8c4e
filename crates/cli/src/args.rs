//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shoal: Kubernetes clusters as a service, on your machines or on AWS.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
pub struct Cli {
    /// The kubeconfig to use (default: $KUBECONFIG, then ~/.config/shoal/config, then ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Override the API server URL of the kubeconfig.
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Columns, as kubectl prints them.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the management API server.
    Server(Box<ServerArgs>),
    /// Run the host agent: register this machine and run its guest VMs.
    Agent(AgentArgs),
    /// The agent inside the test guest image (DHCP, NoCloud, phone home).
    Guest,
    /// Run the gateway on its own (`shoal server` embeds one): guest API and ingress
    /// traffic routed by SNI and Host.
    Gateway(GatewayArgs),
    /// Run the network boot services on a provisioning network: proxy DHCP (PXE
    /// clients only; the network's DHCP keeps the addresses), TFTP for iPXE, and
    /// HTTP for the boot script, kernel, initrd and each machine's seed.
    Pxe(PxeArgs),
    /// Show objects: `shoal get clusters [NAME] [-n NS | -A]`.
    Get(GetArgs),
    /// Create or update the objects in a YAML or JSON file.
    Apply(FileArgs),
    /// Delete objects, from a file (-f) or by type and name.
    Delete(DeleteArgs),
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Guest clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Hosts: the machines guest VMs run on.
    #[command(subcommand)]
    Host(HostCommand),
    /// Bare-metal machines found on the provisioning network (`shoal pxe --inventory`).
    #[command(subcommand)]
    Baremetal(BaremetalCommand),
    /// Kubeconfigs for guest clusters, with client certificates their CA signs.
    #[command(subcommand)]
    Kubeconfig(KubeconfigCommand),
    /// API tokens (cluster admins only).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Save a server URL and token, or an OIDC sign-in (--oidc), to Shoal's own
    /// config file (never ~/.kube/config).
    Login(LoginArgs),
    /// End the OIDC sign-in: revoke the refresh token at the issuer and remove
    /// the tokens from Shoal's config file.
    Logout(LogoutArgs),
    /// Search the audit log of the server answering (cluster admins; an
    /// organization's owners with --org).
    Audit(AuditArgs),
    /// Monitoring: the Prometheus configuration and alert rules for an install.
    #[command(subcommand)]
    Monitoring(MonitoringCommand),
    /// Print CustomResourceDefinitions for Shoal's kinds, for a real Kubernetes.
    Crds,
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `shoal monitoring`.
#[derive(Debug, Subcommand)]
pub enum MonitoringCommand {
    /// Print a complete prometheus.yml: every Shoal process and guest node,
    /// discovered from the server (`/sd/prometheus`), the alert rules and
    /// Alertmanager.
    Config(MonitoringConfigArgs),
    /// Print Shoal's alert rules (deploy/prometheus/alerts.yaml).
    Rules,
    /// Print an alertmanager.yml that groups Shoal's alerts by organization and
    /// cluster.
    AlertmanagerConfig {
        /// Send alerts to this webhook URL.
        #[arg(long)]
        webhook: Option<String>,
    },
}

/// `shoal monitoring config`.
#[derive(Debug, Args)]
pub struct MonitoringConfigArgs {
    /// The CA of the server's certificate (the server's `<data-dir>/tls/ca.crt`).
    #[arg(long, default_value = "/var/lib/shoal/tls/ca.crt")]
    pub ca_file: PathBuf,
    /// A file with a cluster admin's Shoal token (`shoal token create`), for discovery.
    #[arg(long, default_value = "/etc/prometheus/shoal-token")]
    pub token_file: PathBuf,
    /// Where the alert rules are (`shoal monitoring rules > FILE`).
    #[arg(long, default_value = "/etc/prometheus/shoal-alerts.yaml")]
    pub rules_file: PathBuf,
    /// Alertmanager's HOST:PORT; none to send no alerts.
    #[arg(long)]
    pub alertmanager: Option<String>,
    /// Seconds between scrapes.
    #[arg(long, default_value_t = 15)]
    pub scrape_interval: u64,
}

/// `shoal audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records of the last DURATION (e.g. 30m, 1h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this user's records.
    #[arg(long)]
    pub user: Option<String>,
    /// Only records in this organization.
    #[arg(long)]
    pub org: Option<String>,
    /// At most this many records, the newest (up to 10000).
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// The issuers whose ID tokens the management API accepts.
#[derive(Debug, Args)]
pub struct OidcFlags {
    /// An issuer whose ID tokens are accepted (its discovery document is read from
    /// <URL>/.well-known/openid-configuration). More issuers: --oidc-issuers-file.
    #[arg(long)]
    pub oidc_issuer_url: Option<String>,
    /// The client id ID tokens must be issued to (their `aud`).
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_client_id: Option<String>,
    /// The claim that names the user (`sub`, `email`, ...).
    #[arg(long, default_value = "sub", requires = "oidc_issuer_url")]
    pub oidc_username_claim: String,
    /// The claim that lists the user's groups.
    #[arg(long, default_value = "groups", requires = "oidc_issuer_url")]
    pub oidc_groups_claim: String,
    /// A CA (PEM) to trust for the issuer's TLS certificate, besides the system's.
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_ca_file: Option<PathBuf>,
    /// A YAML file listing more issuers: `issuers: [{issuerURL, clientID,
    /// usernameClaim, groupsClaim, caFile}]`.
    #[arg(long)]
    pub oidc_issuers_file: Option<PathBuf>,
    /// Members of this group (as an issuer's groups claim names it) are cluster
    /// admins; repeat for more groups.
    #[arg(long = "oidc-admin-group")]
    pub oidc_admin_groups: Vec<String>,
}

/// `shoal server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where the store, keys and admin.kubeconfig live.
    #[arg(long, default_value = "/var/lib/shoal")]
    pub data_dir: PathBuf,
    /// The HTTPS listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Extra DNS names or IPs for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// The embedded store's page cache in MiB (the rest is read through the
    /// kernel's page cache).
    #[arg(long, default_value_t = 64)]
    pub store_cache_mib: usize,
    /// The last known stored form of recently written and watched objects, in
    /// MiB, which lets a patch skip its read before the compare-and-swap
    /// (0 turns it off).
    #[arg(long, default_value_t = 64)]
    pub recent_objects_mib: usize,
    /// Revisions of change history kept for watches to resume from.
    #[arg(long, default_value_t = 100_000)]
    pub watch_history: i64,
    /// Seconds between history compactions.
    #[arg(long, default_value_t = 60)]
    pub compaction_interval: u64,
    /// A 32-byte key file encrypting Secrets at rest; replicas sharing a store need the same one.
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
    /// Store objects in this etcd cluster (comma-separated client URLs) instead of
    /// the embedded store; several replicas may share it.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The etcd key prefix: objects live at `<prefix>registry/...`.
    #[arg(long, default_value = "/shoal/")]
    pub etcd_prefix: String,
    /// The CA (PEM) of the etcd members' certificates.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// Which controllers run (behind leader election): true (all), false (the API
    /// only), or a comma-separated list of cluster, nodepool, scheduler, hostlife,
    /// hostdrain, keypair and aws, where `*` is all and `-name` leaves one out.
    #[arg(long, default_value = "true")]
    pub controllers: shoal_controllers::Selection,
    /// Send every AWS call of the AWS provider here instead of AWS's own endpoints
    /// (for example moto's, `http://127.0.0.1:5000`). Credentials come from the
    /// SDK's usual chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the
    /// instance's role.
    #[arg(long, env = "SHOAL_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Seconds a leader Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds between BOOKMARK events on idle watches.
    #[arg(long, default_value_t = 10)]
    pub bookmark_interval: u64,
    /// Seconds a request other than a watch may take before it gets 504.
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Requests other than watches served at once; more get 429 with Retry-After.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// MiB at which <data-dir>/audit.log is rotated.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (audit.log.1 is the newest).
    #[arg(long, default_value_t = 5)]
    pub audit_log_maxbackup: usize,
    /// OpenID Connect single sign-on for the management API.
    #[command(flatten)]
    pub oidc: OidcFlags,
    /// Run a local host agent in this process, so this machine hosts VMs too (the
    /// all-in-one install). Its data plane lives in --local-agent-netns.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub local_agent: bool,
    /// The network namespace of the local agent's data plane (created if needed).
    #[arg(long, default_value = "shoal-local")]
    pub local_agent_netns: String,
    /// The local agent's accelerator: `auto` (probe KVM, else TCG), `kvm` or `tcg`.
    #[arg(long, env = "SHOAL_ACCEL", default_value = "auto", value_parser = accel_arg)]
    pub local_agent_accel: AccelChoice,
    /// The local agent's Host name.
    #[arg(long, default_value = "local")]
    pub local_agent_name: String,
    /// Guest APIs are published as api.<cluster>.<org>.<base-domain>.
    #[arg(long, default_value = "shoal.local")]
    pub base_domain: String,
    /// Seconds a Host may go without a heartbeat, after its Lease expired, before
    /// its Machines are marked Failed (HostLost) and replaced.
    #[arg(long, default_value_t = 60)]
    pub host_grace_period: u64,
    /// Seconds the controllers drain a Kubernetes node (evictions respecting its
    /// PodDisruptionBudgets) before removing its Machine anyway.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
    /// How many objects each controller reconciles at once. Raise it on a store
    /// with a higher write latency (etcd across machines) so that a burst of new
    /// clusters keeps the same pace.
    #[arg(long, default_value_t = shoal_controllers::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub controller_concurrency: u16,
    /// The directory with the test image (vmlinuz, initrd.img) for the seeded
    /// `test` Release; by default ./images/out when it exists.
    #[arg(long, env = "SHOAL_TEST_IMAGE_DIR")]
    pub test_image_dir: Option<PathBuf>,
    /// The directory of Shoal's Kubernetes node image (vmlinuz, initrd.img,
    /// disk.qcow2; `images/build-kubernetes-image.sh`) for the seeded
    /// `kubeadm-<version>` Release; by default ~/.cache/shoal/kubernetes/current when
    /// it exists, else /var/lib/shoal/images/kubernetes.
    #[arg(long, env = "SHOAL_KUBERNETES_IMAGE_DIR")]
    pub kubernetes_image_dir: Option<PathBuf>,
    /// The pool guest node networks are cut from.
    #[arg(long, default_value = "10.128.0.0/9")]
    pub node_cidr_pool: shoal_api::validate::Cidr,
    /// The prefix length of each guest cluster's node network.
    #[arg(long, default_value_t = 24)]
    pub node_prefix: u8,
    /// The VNI of the first guest network.
    #[arg(long, default_value_t = 1000)]
    pub vni_base: u32,
    /// The pool AWS clusters' VPC networks are cut from, for clusters whose spec
    /// names no `vpcCidr`.
    #[arg(long, default_value = "10.0.0.0/10")]
    pub aws_vpc_pool: shoal_api::validate::Cidr,
    /// The prefix length of each AWS cluster's VPC network, /16 to /20.
    #[arg(long, default_value_t = 16)]
    pub aws_vpc_prefix: u8,
    /// The longest lifetime a KeyPair's certificate gets, e.g. 30d or 8h.
    #[arg(long, default_value = "30d")]
    pub keypair_max_ttl: String,
    /// Run the gateway in this process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub gateway: bool,
    /// Start Debian's Prometheus and Alertmanager as children of this server,
    /// scraping it, its agents and every guest node, with Shoal's alert rules.
    #[arg(long)]
    pub monitoring: bool,
    /// Prometheus's listen address with --monitoring.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub prometheus_listen: SocketAddr,
    /// Alertmanager's listen address with --monitoring.
    #[arg(long, default_value = "127.0.0.1:9093")]
    pub alertmanager_listen: SocketAddr,
    /// Seconds between Prometheus's scrapes with --monitoring.
    #[arg(long, default_value_t = 15)]
    pub scrape_interval: u64,
    /// Where clients reach the gateway, HOST:PORT, published in each Cluster's
    /// status.gatewayAddress so that `shoal kubeconfig create` needs no flag.
    /// Default: the embedded gateway's --gateway-listen (127.0.0.1 for a wildcard).
    #[arg(long)]
    pub gateway_public_address: Option<crate::kubeconfig::GatewayAddress>,
    /// The embedded gateway's settings.
    #[command(flatten)]
    pub gateway_flags: GatewayFlags,
}

/// The gateway's listeners and behaviour, shared by `shoal server` and `shoal gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayFlags {
    /// TLS listener: guest APIs (api.<cluster>.<org>.<base-domain>) and ingress TLS, by SNI.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub gateway_listen: SocketAddr,
    /// Plain HTTP listener: ingress (*.<cluster>.<org>.<base-domain>), by Host.
    #[arg(long, default_value = "127.0.0.1:9080")]
    pub gateway_http_listen: SocketAddr,
    /// Seconds a client may take to send its ClientHello or request head.
    #[arg(long, default_value_t = 5)]
    pub gateway_hello_timeout: u64,
    /// Connections open at once; more are closed at once.
    #[arg(long, default_value_t = 10_000)]
    pub gateway_max_connections: usize,
    /// Milliseconds between backend health checks.
    #[arg(long, default_value_t = 1000)]
    pub gateway_health_interval_ms: u64,
    /// Milliseconds one backend health check may take (an API's /readyz included).
    #[arg(long, default_value_t = 10_000)]
    pub gateway_health_timeout_ms: u64,
    /// Write every backend to this file (Prometheus file-sd JSON) on each change.
    #[arg(long)]
    pub gateway_file_sd: Option<PathBuf>,
}

/// `shoal gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Guest APIs are published as api.<cluster>.<org>.<base-domain>.
    #[arg(long, default_value = "shoal.local")]
    pub base_domain: String,
    /// Listeners and behaviour.
    #[command(flatten)]
    pub flags: GatewayFlags,
    /// Serve /metrics and /endpoints/<namespace>/<cluster> on this address.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Route from this file (YAML: clusters with domain, api, ingressHttp,
    /// ingressHttps, caFile) instead of watching the API.
    #[arg(long)]
    pub routes: Option<PathBuf>,
}

/// `shoal pxe`.
#[derive(Debug, Args)]
pub struct PxeArgs {
    /// The provisioning network's interface; every socket is bound to it.
    #[arg(long)]
    pub interface: String,
    /// This server's IPv4 address on that interface (the TFTP server and the
    /// boot script's URLs name it).
    #[arg(long)]
    pub address: std::net::Ipv4Addr,
    /// The HTTP port for the boot script, kernel, initrd and seeds.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Where iPXE's undionly.kpxe and ipxe.efi are (Debian's ipxe package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    pub firmware_dir: PathBuf,
    /// The kernel machines boot.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Its initrd; given more than once, the machines load them all, in order
    /// (the kernel unpacks each cpio archive over the previous ones), e.g. the
    /// test image and the host agent's layer.
    #[arg(long, required = true)]
    pub initrd: Vec<PathBuf>,
    /// The kernel command line; the NoCloud seed address is appended.
    #[arg(long, default_value = "console=ttyS0")]
    pub cmdline: String,
    /// Per-machine seed files: <dir>/<mac, 52-54-00-…>/{meta-data,user-data,vendor-data},
    /// then <dir>/default/. Without it each machine is named after its MAC.
    #[arg(long)]
    pub seed_dir: Option<PathBuf>,
    /// Keep the machine inventory in Shoal's API (the kubeconfig's server): a
    /// BareMetalMachine per MAC, Discovered, Provisioning, Provisioned, with each
    /// change's time.
    #[arg(long)]
    pub inventory: bool,
    /// With --inventory: the kubeconfig the machines' `shoal agent` uses to join
    /// the host cluster (the API's address as the machines reach it, and a
    /// token). Each BareMetalMachine then gets user-data that names it, writes this
    /// kubeconfig and its production NIC; its installed system runs the agent.
    /// Anything on the provisioning network can read it, as with any bootstrap
    /// credential served there: give it a token for agents only, and revoke it when
    /// the rack is in.
    #[arg(long, requires = "inventory")]
    pub join_kubeconfig: Option<PathBuf>,
    /// Answer IPv6 router solicitations on the interface with an advertisement of
    /// no router (lifetime 0, no prefix). iPXE waits about 13 s for a router on
    /// every boot otherwise; use it where nothing else advertises IPv6 routers.
    #[arg(long)]
    pub answer_router_solicitations: bool,
    /// The role of machines the inventory discovers (when no --profile applies).
    #[arg(long, value_enum, default_value_t = BareMetalRole::Worker)]
    pub role: BareMetalRole,
    /// Roles by quantity, tried in order: NAME=ROLE[:COUNT]. With
    /// `--profile control=control-plane:3 --profile worker=worker` the first three
    /// machines discovered are control planes, the rest workers.
    #[arg(long = "profile")]
    pub profiles: Vec<shoal_pxe::profile::Profile>,
    /// Seconds a machine has, from its power-on (or first PXE contact) to phone
    /// home, before the inventory marks it ProvisioningTimeout.
    #[arg(long, default_value_t = 900)]
    pub provision_timeout: u64,
}

/// The role `shoal pxe --inventory` gives a machine it discovers.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BareMetalRole {
    /// A control-plane machine.
    ControlPlane,
    /// A worker.
    Worker,
}

/// `shoal baremetal`.
#[derive(Debug, Subcommand)]
pub enum BaremetalCommand {
    /// List the bare-metal machines with their state.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one machine and every change of its state, by name or MAC.
    Show {
        /// The BareMetalMachine's name, or its MAC.
        machine: String,
    },
    /// Boot a machine from PXE again through its BMC (`shoal pxe --inventory`
    /// sets the next boot to PXE and power-cycles it).
    Reprovision {
        /// The BareMetalMachine's name, or its MAC.
        machine: String,
    },
    /// Power a machine off through its BMC; `reprovision` brings it back.
    Deprovision {
        /// The BareMetalMachine's name, or its MAC.
        machine: String,
    },
}

/// `shoal agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The Host's name.
    #[arg(long)]
    pub name: String,
    /// A bearer token, instead of the kubeconfig's credentials.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The address other hosts reach this one on (the VXLAN source).
    #[arg(long, required_unless_present = "simulate")]
    pub underlay_ip: Option<std::net::Ipv4Addr>,
    /// Where VM state (pidfiles, QMP sockets, consoles, overlays) lives.
    #[arg(long, default_value = "/var/lib/shoal/agent")]
    pub state_dir: PathBuf,
    /// Confine the data plane (bridges, taps, VXLANs, nft, DHCP, metadata) to this
    /// network namespace, created if needed.
    #[arg(long)]
    pub netns: Option<String>,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// The qemu-img binary (disk overlays).
    #[arg(long, default_value = "qemu-img")]
    pub qemu_img: PathBuf,
    /// The nft binary.
    #[arg(long, default_value = "nft")]
    pub nft: PathBuf,
    /// CPUs offered to guests (default: detected).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory offered to guests, e.g. 16Gi (default: detected).
    #[arg(long)]
    pub memory: Option<String>,
    /// vCPUs the scheduler may place per host CPU: allocatable CPU = CPUs × ratio.
    #[arg(long, default_value_t = 4)]
    pub cpu_allocation_ratio: u32,
    /// FOR SCALE TESTS ONLY: register this many fake Hosts (`<name>-<i>`) and mark
    /// the Machines assigned to them Running and Ready without starting any VM.
    #[arg(long)]
    pub simulate: Option<u32>,
    /// Seconds a guest gets to power down before QEMU quits.
    #[arg(long, default_value_t = 10)]
    pub stop_grace: u64,
    /// The most MiB per second a live migration from this host may send over the
    /// underlay (disk and memory each); 0 means no limit.
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub migration_max_mib_per_sec: u64,
    /// Milliseconds the KVM probe may take before TCG is used.
    #[arg(long, default_value_t = 3000)]
    pub kvm_probe_timeout_ms: u64,
    /// The accelerator: `auto` probes KVM and falls back to TCG; `kvm` or `tcg`
    /// skip the probe (a nested KVM may pass it and still hang real kernels).
    #[arg(long, env = "SHOAL_ACCEL", default_value = "auto", value_parser = accel_arg)]
    pub accel: AccelChoice,
    /// Let VMs reach the outside through this interface (NAT); off by default.
    #[arg(long)]
    pub egress_interface: Option<String>,
    /// Seconds between full re-checks.
    #[arg(long, default_value_t = 5)]
    pub resync: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464); the Host
    /// publishes it as metricsEndpoint, a wildcard address as --underlay-ip.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the gateway reaches this host's VMs (the forward endpoint). Default:
    /// 127.0.0.1 on a free port with --netns (the gateway runs on this machine),
    /// else <underlay-ip>:7445.
    #[arg(long)]
    pub forward_listen: Option<std::net::SocketAddr>,
}

/// `shoal get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The resource type: plural, singular, kind or short name.
    pub resource: String,
    /// One object's name.
    pub name: Option<String>,
    /// The namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// A file of objects.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The YAML or JSON file ('-' for stdin).
    #[arg(short, long)]
    pub filename: PathBuf,
    /// The namespace for objects that name none.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// `shoal delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete the objects in this file.
    #[arg(short, long)]
    pub filename: Option<PathBuf>,
    /// The resource type.
    pub resource: Option<String>,
    /// The name.
    pub name: Option<String>,
    /// The namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// `shoal org`.
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization (and its namespace org-NAME).
    Create {
        /// The name.
        name: String,
        /// A display name.
        #[arg(long)]
        display_name: Option<String>,
        /// The default IAM role the organization's AWS clusters assume.
        #[arg(long)]
        aws_role_arn: Option<String>,
        /// The default Secret (in org-NAME) with the AWS credentials of the
        /// organization's clusters: keys accessKeyId and secretAccessKey.
        #[arg(long)]
        aws_credentials_secret: Option<String>,
    },
    /// List organizations.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `shoal cluster create`.
#[derive(Debug, Args)]
pub struct ClusterCreateArgs {
    /// The cluster's name.
    #[arg(long)]
    pub name: String,
    /// The organization.
    #[arg(long)]
    pub org: String,
    /// The release; by default the newest active one (by Kubernetes version).
    #[arg(long)]
    pub release: Option<String>,
    /// Control-plane machines: 1 or 3.
    #[arg(long, default_value_t = 1)]
    pub control_plane: u8,
    /// Workers in the default node pool.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// vCPUs per machine.
    #[arg(long, default_value = "2")]
    pub cpu: String,
    /// Memory per machine.
    #[arg(long, default_value = "2Gi")]
    pub memory: String,
    /// Disk per machine.
    #[arg(long, default_value = "10Gi")]
    pub disk: String,
    /// OIDC sign-in to the guest's API server.
    #[command(flatten)]
    pub oidc: GuestOidcArgs,
    /// Where the machines run (`--provider aws` and its settings).
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// Wait for the cluster to be Ready, showing its machines' progress.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Where a new cluster's machines run (the Cluster's `spec.provider`).
#[derive(Debug, Clone, Default, Args)]
pub struct ProviderArgs {
    /// `kvm`: QEMU VMs on the host cluster's hosts; `aws`: EC2 in a VPC of the
    /// cluster's own.
    #[arg(long, default_value = "kvm", value_parser = ["kvm", "aws"])]
    pub provider: String,
    /// With --provider aws: the region, e.g. eu-west-1.
    #[arg(long, required_if_eq("provider", "aws"))]
    pub region: Option<String>,
    /// With --provider aws: availability zones, comma-separated (default: the
    /// region's first two).
    #[arg(long, value_delimiter = ',', requires = "region")]
    pub azs: Vec<String>,
    /// With --provider aws: the EC2 instance type of every node (default m6i.large).
    #[arg(long, requires = "region")]
    pub instance_type: Option<String>,
    /// With --provider aws: the VPC CIDR, a /16 to /20 (default: one of the
    /// server's VPC pool).
    #[arg(long, requires = "region")]
    pub vpc_cidr: Option<String>,
    /// With --provider aws: the Route 53 hosted zone (ID or name) for the
    /// cluster's records.
    #[arg(long, requires = "region")]
    pub hosted_zone: Option<String>,
    /// With --provider aws: the domain of api.<cluster>.<org>.<domain> (default:
    /// the hosted zone's name).
    #[arg(long, requires = "region")]
    pub dns_domain: Option<String>,
    /// With --provider aws: an IAM role to assume for every AWS call of this cluster.
    #[arg(long, requires = "region")]
    pub role_arn: Option<String>,
    /// With --provider aws: a Secret in the organization's namespace with the AWS
    /// credentials (keys accessKeyId, secretAccessKey) of this cluster.
    #[arg(long, requires = "region")]
    pub credentials_secret: Option<String>,
}

/// The guest API server's OIDC settings (the Cluster's `spec.oidc`).
#[derive(Debug, Clone, Default, Args)]
pub struct GuestOidcArgs {
    /// The issuer (https) whose ID tokens the guest's API server accepts.
    #[arg(long, requires = "oidc_client_id")]
    pub oidc_issuer_url: Option<String>,
    /// The client ID the tokens are issued for (their `aud`).
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_client_id: Option<String>,
    /// The claim that names the user (the API server's default: `sub`).
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_username_claim: Option<String>,
    /// The claim that lists the user's groups.
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_groups_claim: Option<String>,
    /// Prepended to user names (`-` for none).
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_username_prefix: Option<String>,
    /// Prepended to group names, e.g. `oidc:`, for RBAC bindings.
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_groups_prefix: Option<String>,
    /// The CA (PEM) of the issuer's TLS certificate, when the guests' system roots
    /// do not trust it; stored in the Cluster as `spec.oidc.certificateAuthority`.
    #[arg(long, requires = "oidc_issuer_url")]
    pub oidc_ca_file: Option<PathBuf>,
}

/// `--wait` and `--timeout`, shared by the commands that can wait.
#[derive(Clone, Copy, Debug, Args)]
pub struct WaitArgs {
    /// Wait until the change is done.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 900, value_name = "SECS", requires = "wait")]
    pub timeout: u64,
}

/// `shoal cluster`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster and its default node pool.
    Create(Box<ClusterCreateArgs>),
    /// List clusters.
    List {
        /// Only this organization's.
        #[arg(long)]
        org: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Describe one cluster: status, conditions, machines and recent events.
    Get {
        /// The name.
        name: String,
        /// The organization.
        #[arg(long)]
        org: String,
        /// Print the object in this format instead of describing it.
        #[arg(short, long, value_enum)]
        output: Option<Output>,
    },
    /// Set the number of workers of one of the cluster's node pools.
    Scale {
        /// The cluster's name.
        name: String,
        /// The organization.
        #[arg(long)]
        org: String,
        /// The number of workers wanted.
        #[arg(long)]
        workers: u32,
        /// The node pool (default: NAME-default).
        #[arg(long)]
        pool: Option<String>,
        /// Wait for the pool to have exactly that many Ready workers.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move the cluster to another release; its machines are replaced one at a time.
    Upgrade {
        /// The cluster's name.
        name: String,
        /// The organization.
        #[arg(long)]
        org: String,
        /// The release to run.
        #[arg(long)]
        release: String,
        /// Wait until every machine runs the release and the cluster is Ready.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a cluster and its node pools.
    Delete {
        /// The name.
        name: String,
        /// The organization.
        #[arg(long)]
        org: String,
        /// Wait until the cluster is gone, then print what was removed.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `shoal kubeconfig`.
#[derive(Debug, Subcommand)]
pub enum KubeconfigCommand {
    /// Make a key pair here, have the cluster's CA sign it (a KeyPair), and write
    /// a kubeconfig for the cluster. The private key never leaves this machine.
    Create(KubeconfigCreateArgs),
    /// Print an ExecCredential with a fresh OIDC ID token (the exec credential
    /// plugin of the configs `shoal login --oidc` and `kubeconfig create --oidc` write).
    Token(KubeconfigTokenArgs),
    /// List the KeyPairs issued for a cluster.
    List {
        /// The cluster's name.
        #[arg(long)]
        cluster: String,
        /// The organization.
        #[arg(long)]
        org: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `shoal kubeconfig create`.
#[derive(Debug, Args)]
pub struct KubeconfigCreateArgs {
    /// The cluster's name.
    #[arg(long)]
    pub cluster: String,
    /// The organization.
    #[arg(long)]
    pub org: String,
    /// How long the certificate is valid, e.g. 8h or 30d (the server caps it).
    #[arg(long, default_value = "8h", value_parser = ttl_arg)]
    pub ttl: String,
    /// Groups (the certificate's O entries) for the cluster's RBAC, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = group_arg)]
    pub groups: Vec<String>,
    /// The CSR's CN; the certificate's CN is `<your user>:<this>` (default: $USER, else shoal).
    #[arg(long, value_parser = cn_arg)]
    pub cn_prefix: Option<String>,
    /// Sign in to the cluster with OIDC (its spec.oidc issuer and client) instead
    /// of a client certificate: the user runs `shoal kubeconfig token`.
    #[arg(long, conflicts_with_all = ["ttl", "groups", "cn_prefix", "description"])]
    pub oidc: bool,
    /// With --oidc: a CA (PEM) the plugin trusts for the issuer's TLS certificate.
    #[arg(long, requires = "oidc")]
    pub oidc_ca_file: Option<PathBuf>,
    /// Why it is issued (shown by 'kubeconfig list').
    #[arg(long)]
    pub description: Option<String>,
    /// Write a new, self-contained kubeconfig (mode 0600) to this file instead of
    /// merging into $KUBECONFIG's first file or ~/.kube/config.
    #[arg(long, conflicts_with = "switch_context")]
    pub output: Option<PathBuf>,
    /// When merging, also make the new context the current one.
    #[arg(long)]
    pub switch_context: bool,
    /// Connect through the gateway at HOST:PORT, sending the API's host name as
    /// tls-server-name (SNI), so no DNS record is needed.
    #[arg(long, env = "SHOAL_GATEWAY_ADDRESS")]
    pub gateway_address: Option<crate::kubeconfig::GatewayAddress>,
    /// Give up waiting for the signed certificate after this long, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = timeout_arg)]
    pub timeout: std::time::Duration,
}

fn ttl_arg(s: &str) -> Result<String, String> {
    shoal_api::resources::keypair::parse_ttl(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn timeout_arg(s: &str) -> Result<std::time::Duration, String> {
    let secs = match s.parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => shoal_api::resources::keypair::parse_ttl(s).map_err(|e| e.to_string())?,
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn group_arg(s: &str) -> Result<String, String> {
    let g = s.trim();
    if g.is_empty() || g.chars().any(char::is_control) {
        return Err(format!("{s:?} is not a group name"));
    }
    Ok(g.to_owned())
}

fn cn_arg(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.chars().any(char::is_control) || s.len() > 64 {
        return Err(format!(
            "{s:?} cannot be a certificate's CN: use 1 to 64 printable characters"
        ));
    }
    Ok(s.to_owned())
}

/// `shoal host`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts with their capacity and machines.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Stop placing new machines on a host.
    Cordon {
        /// The host's name.
        name: String,
    },
    /// Let the scheduler place machines on a host again.
    Uncordon {
        /// The host's name.
        name: String,
    },
    /// Cordon a host and move its machines elsewhere: by live migration (the guests
    /// keep running, with their name, IP and MAC), or with --replace by deleting
    /// them so that their node pools replace them.
    Drain {
        /// The host's name.
        name: String,
        /// Delete the machines instead of migrating them (workers only, unless
        /// --include-control-plane); also what happens to a machine no host fits.
        #[arg(long)]
        replace: bool,
        /// When replacing (with --replace, or a machine no other host has room for):
        /// delete control-plane machines too (the cluster controller recreates them
        /// elsewhere; a single control-plane cluster is unavailable meanwhile).
        #[arg(long)]
        include_control_plane: bool,
        /// Wait until the host is drained (its `Drained` condition), or until the
        /// drain says what blocks it.
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `shoal token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for an organization role; prints it once.
    Create {
        /// The organization.
        #[arg(long)]
        org: String,
        /// owner, member or viewer.
        #[arg(long)]
        role: String,
        /// The user name it authenticates as (default: ROLE@ORG).
        #[arg(long)]
        user: Option<String>,
        /// Lifetime, e.g. 8h or 30d (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
        /// Why it exists.
        #[arg(long)]
        description: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke {
        /// The id (the part after 'shoal.' in the token).
        id: String,
    },
}

/// `shoal login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The bearer token.
    #[arg(long, required_unless_present = "oidc", conflicts_with = "oidc")]
    pub token: Option<String>,
    /// Sign in with OpenID Connect (in a browser, or --device) instead of a token.
    #[arg(long)]
    pub oidc: bool,
    /// How to reach the OIDC issuer.
    #[command(flatten)]
    pub issuer: IssuerArgs,
    /// Do not open a browser; only print the sign-in URL.
    #[arg(long, requires = "oidc")]
    pub no_browser: bool,
    /// Use the device code flow: approve a code on any device with a browser.
    #[arg(long, requires = "oidc")]
    pub device: bool,
    /// Give up waiting for the sign-in after this long, e.g. 90s or 5m.
    #[arg(long, default_value = "5m", value_parser = timeout_arg, requires = "oidc")]
    pub login_timeout: std::time::Duration,
    /// The CA certificate (PEM) that signs the server's certificate.
    #[arg(long)]
    pub certificate_authority: Option<PathBuf>,
    /// Where to write the config (default ~/.config/shoal/config).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The OIDC issuer and client (`shoal login --oidc`, `shoal kubeconfig token`).
#[derive(Debug, Clone, Args)]
pub struct IssuerArgs {
    /// The OIDC issuer URL (the server's --oidc-issuer-url).
    #[arg(long)]
    pub issuer: Option<String>,
    /// The OIDC client id (the server's --oidc-client-id).
    #[arg(long)]
    pub client_id: Option<String>,
    /// A CA (PEM) to trust for the issuer's TLS certificate, besides the system's.
    #[arg(long)]
    pub oidc_ca_file: Option<PathBuf>,
}

/// `shoal logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The config holding the sign-in (default ~/.config/shoal/config).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `shoal kubeconfig token`.
#[derive(Debug, Args)]
pub struct KubeconfigTokenArgs {
    /// The config holding the sign-in (default ~/.config/shoal/config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With --issuer and --client-id: the sign-in for this issuer and client, from
    /// the config when it matches, else from ~/.cache/shoal/oidc (signing in
    /// in a browser when there is none yet).
    #[command(flatten)]
    pub issuer: IssuerArgs,
}

/// `--accel`: `None` for `auto` (probe), else the accelerator named.
pub type AccelChoice = Option<shoal_agent::vm::Accel>;

fn accel_arg(s: &str) -> Result<AccelChoice, String> {
    match s {
        "auto" => Ok(None),
        "kvm" => Ok(Some(shoal_agent::vm::Accel::Kvm)),
        "tcg" => Ok(Some(shoal_agent::vm::Accel::Tcg)),
        other => Err(format!(
            "{other:?} is not an accelerator: use auto, kvm or tcg"
        )),
    }
}
