//! `shoal server`: the API, and the controllers behind leader election.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_apiserver::http::Limits;
use shoal_apiserver::{Server, ServerConfig, ServerError, Storage};
use shoal_controllers::leader::{LeaderElector, LeaseConfig};
use shoal_store::etcd::{EtcdConfig, EtcdTls};
use tokio::sync::{oneshot, watch};

use shoal_oidc::verify::IssuerConfig;

use crate::args::{OidcFlags, ServerArgs};
use crate::client::CliError;

/// Why `shoal server` could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API server itself failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// etcd TLS flags without etcd endpoints.
    #[error("--etcd-ca/--etcd-cert/--etcd-key need --etcd-endpoints")]
    EtcdTlsWithoutEndpoints,
    /// The guest network pool flags do not make a pool.
    #[error("--node-cidr-pool/--node-prefix/--vni-base: {0}")]
    NodePool(#[source] shoal_controllers::ipam::IpamError),
    /// The VPC pool flags do not make a pool.
    #[error("--aws-vpc-pool/--aws-vpc-prefix: {0}")]
    VpcPool(#[source] shoal_controllers::ipam::IpamError),
    /// `--keypair-max-ttl` is not a duration.
    #[error("--keypair-max-ttl: {0}")]
    KeypairMaxTtl(String),
    /// A component of this process could not reach the API it serves.
    #[error("{component} cannot reach the API: {source}")]
    Connect {
        /// The gateway, the controllers or the local agent.
        component: &'static str,
        /// Why.
        #[source]
        source: CliError,
    },
    /// `--monitoring` could not start Prometheus or Alertmanager.
    #[error("--monitoring: {0}")]
    Monitoring(String),
    /// The embedded gateway could not start.
    #[error("the gateway: {0}")]
    Gateway(#[source] CliError),
    /// The OIDC issuers file could not be read.
    #[error("--oidc-issuers-file {path}: {source}")]
    OidcIssuersRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The OIDC issuers file is not a list of issuers.
    #[error("--oidc-issuers-file {path}: {source} (expected `issuers: [{{issuerURL, clientID, usernameClaim, groupsClaim, caFile}}]`)")]
    OidcIssuersParse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// The web UI's OIDC sign-in could not be set up.
    #[error("the web UI's sign-in with {issuer}: {source}")]
    UiSignIn {
        /// The issuer.
        issuer: String,
        /// Why its HTTP client could not be built.
        #[source]
        source: shoal_oidc::http::HttpClientError,
    },
    /// `--oidc-issuer-url` without `--oidc-client-id`.
    #[error("--oidc-issuer-url needs --oidc-client-id: the client id ID tokens are issued to")]
    OidcClientIdMissing,
}

/// The `--oidc-issuers-file` format.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuersFile {
    issuers: Vec<IssuerConfig>,
}

/// The OIDC issuers the flags name: the one of `--oidc-issuer-url`, then those
/// of `--oidc-issuers-file`.
fn oidc_issuers(flags: &OidcFlags) -> Result<Vec<IssuerConfig>, ServeError> {
    let mut issuers = Vec::new();
    if let Some(url) = &flags.oidc_issuer_url {
        issuers.push(IssuerConfig {
            issuer_url: url.clone(),
            client_id: flags
                .oidc_client_id
                .clone()
                .ok_or(ServeError::OidcClientIdMissing)?,
            username_claim: flags.oidc_username_claim.clone(),
            groups_claim: flags.oidc_groups_claim.clone(),
            ca_file: flags.oidc_ca_file.clone(),
        });
    }
    if let Some(path) = &flags.oidc_issuers_file {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::OidcIssuersRead {
            path: path.clone(),
            source,
        })?;
        let file: IssuersFile =
            serde_yaml::from_str(&text).map_err(|source| ServeError::OidcIssuersParse {
                path: path.clone(),
                source,
            })?;
        issuers.extend(file.issuers);
    }
    Ok(issuers)
}

/// The Lease the controllers of all replicas compete for.
const LEADER_LEASE: &str = "shoal-controllers";

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::DataDir(path.to_owned(), e))
}

fn storage(args: &ServerArgs) -> Result<Storage, ServeError> {
    if args.etcd_endpoints.is_empty() {
        if args.etcd_ca.is_some() || args.etcd_cert.is_some() {
            return Err(ServeError::EtcdTlsWithoutEndpoints);
        }
        return Ok(Storage::Embedded);
    }
    let mut etcd = EtcdConfig::new(args.etcd_endpoints.clone());
    etcd.prefix = args.etcd_prefix.clone();
    etcd.tls = match &args.etcd_ca {
        Some(ca) => Some(EtcdTls {
            ca_pem: read_pem(ca)?,
            cert_pem: args.etcd_cert.as_deref().map(read_pem).transpose()?,
            key_pem: args.etcd_key.as_deref().map(read_pem).transpose()?,
        }),
        None => None,
    };
    Ok(Storage::Etcd(etcd))
}

fn config(args: &ServerArgs) -> Result<ServerConfig, ServeError> {
    let mut config = ServerConfig::new(args.data_dir.clone(), args.listen);
    config.tls_sans = args.tls_sans.clone();
    config.encryption_key_file = args.encryption_key_file.clone();
    config.watch_history = args.watch_history.max(1);
    config.compaction_interval = Duration::from_secs(args.compaction_interval.max(1));
    config.limits = Limits {
        bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        max_in_flight: args.max_requests_inflight.max(1),
        ..Limits::default()
    };
    config.audit_rotation = shoal_apiserver::audit::Rotation {
        max_bytes: args.audit_log_maxsize.max(1) << 20,
        keep: args.audit_log_maxbackup,
    };
    config.storage = storage(args)?;
    config.store_cache_bytes = args.store_cache_mib.max(1) << 20;
    config.recent_objects_bytes = args.recent_objects_mib << 20;
    config.oidc_issuers = oidc_issuers(&args.oidc)?;
    config.oidc_admin_groups = args.oidc.oidc_admin_groups.clone();
    Ok(config)
}

/// The controllers' settings from the server's flags.
fn controller_config(args: &ServerArgs) -> Result<shoal_controllers::ControllerConfig, ServeError> {
    let ipam = shoal_controllers::ipam::IpamConfig::new(
        args.vni_base,
        args.node_cidr_pool,
        args.node_prefix,
    )
    .map_err(ServeError::NodePool)?;
    let vpc_pool = shoal_controllers::ipam::VpcPool::new(args.aws_vpc_pool, args.aws_vpc_prefix)
        .map_err(ServeError::VpcPool)?;
    let test_image_dir = args.test_image_dir.clone().or_else(|| {
        let dir = std::env::current_dir().ok()?.join("images/out");
        dir.join("vmlinuz").exists().then_some(dir)
    });
    let kubernetes_image_dir = args.kubernetes_image_dir.clone().unwrap_or_else(|| {
        let built = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/shoal/kubernetes/current"));
        match built {
            Some(dir) if dir.join("disk.qcow2").exists() => dir,
            _ => PathBuf::from("/var/lib/shoal/images/kubernetes"),
        }
    });
    let keypair_max_ttl = shoal_api::resources::keypair::parse_ttl(&args.keypair_max_ttl)
        .map_err(|e| ServeError::KeypairMaxTtl(e.to_string()))?;
    // A wildcard listener is reached on loopback from this machine.
    let gateway_listener = {
        let mut addr = args.gateway_flags.gateway_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        addr
    };
    let gateway_public_address = match &args.gateway_public_address {
        Some(a) => Some(a.to_string()),
        None => args.gateway.then(|| gateway_listener.to_string()),
    };
    Ok(shoal_controllers::ControllerConfig {
        keypair_max_ttl: Duration::from_secs(keypair_max_ttl),
        base_domain: args.base_domain.clone(),
        ipam,
        vpc_pool,
        host_grace_period: Duration::from_secs(args.host_grace_period),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        concurrency: args.controller_concurrency,
        controllers: args.controllers.clone(),
        test_image_dir,
        kubernetes_image_dir,
        gateway_address: args.gateway.then_some(gateway_listener),
        gateway_public_address,
        ..Default::default()
    })
}

/// Starts the server and serves until SIGTERM or SIGINT; a second signal exits at once.
/// On shutdown the leader Lease is released first, then the API drains.
pub async fn run(args: &ServerArgs) -> Result<(), ServeError> {
    let mut server = Server::start(config(args)?).await?;
    let gateway = if args.gateway {
        let client = crate::client::connect(Some(&server.admin_kubeconfig), None)
            .await
            .map_err(|source| ServeError::Connect {
                component: "the gateway",
                source,
            })?;
        let source = super::gateway::Source::Api {
            client,
            base_domain: &args.base_domain,
        };
        let running = super::gateway::start(&args.gateway_flags, source)
            .await
            .map_err(ServeError::Gateway)?;
        server.set_endpoints_source(Arc::new(super::gateway::Endpoints(running.gateway.clone())));
        server.metrics().add_registry(running.registry);
        println!(
            "gateway listening on {} (TLS, by SNI) and {} (HTTP, by Host)",
            args.gateway_flags.gateway_listen, args.gateway_flags.gateway_http_listen
        );
        Some(running.gateway)
    } else {
        None
    };
    let ui_api = crate::client::load_config(Some(&server.admin_kubeconfig), None)
        .await
        .map_err(|source| ServeError::Connect {
            component: "the web UI",
            source,
        })?;
    use secrecy::ExposeSecret as _;
    let admin_token = ui_api
        .auth_info
        .token
        .as_ref()
        .map(|t| t.expose_secret().to_owned());
    let internal = kube::Client::try_from(ui_api.clone()).map_err(|e| ServeError::Connect {
        component: "service discovery",
        source: CliError::Config(e.to_string()),
    })?;
    let server_target = server
        .url()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    server.add_routes(shoal_monitoring::sd::router(
        shoal_monitoring::sd::SdConfig::new(ui_api.clone(), internal, server_target),
    ));
    let ui_api_for_proxy = ui_api.clone();
    // The UI signs browsers in with the first issuer, as a public client with
    // PKCE under that issuer's client id (its callback is /ui/oidc/callback).
    let mut ui = shoal_ui::UiConfig::new(ui_api);
    if let Some(issuer) = oidc_issuers(&args.oidc)?.first() {
        let sign_in =
            crate::ui_sign_in::UiSignIn::new(issuer).map_err(|source| ServeError::UiSignIn {
                issuer: issuer.issuer_url.clone(),
                source,
            })?;
        ui = ui.with_oidc(std::sync::Arc::new(sign_in));
    }
    server.add_routes(shoal_ui::router(ui));
    let monitoring = if args.monitoring {
        server.add_routes(shoal_monitoring::proxy::router(
            shoal_monitoring::proxy::ProxyConfig::new(
                ui_api_for_proxy,
                args.prometheus_listen,
                args.alertmanager_listen,
            ),
        ));
        Some(start_monitoring(args, &server, admin_token)?)
    } else {
        None
    };
    tracing::info!(url = %server.url(), kubeconfig = %server.admin_kubeconfig.display(), "shoal server is ready");
    println!("shoal server listening on {}", server.url());
    println!("admin kubeconfig: {}", server.admin_kubeconfig.display());
    println!("web UI: {}/ui", server.url());

    let (stop_controllers, controllers_stopped) = watch::channel(false);
    let elector = if args.controllers.any() {
        let identity = format!("{}-{}", server.local_addr, std::process::id());
        let mut lease = LeaseConfig::new(
            shoal_api::wellknown::SYSTEM_NAMESPACE,
            LEADER_LEASE,
            &identity,
        );
        lease.lease_duration = Duration::from_secs(args.lease_duration.max(2));
        lease.renew_deadline = lease.lease_duration * 2 / 3;
        lease.retry_period = (lease.lease_duration / 4).max(Duration::from_millis(500));
        let client = crate::client::connect(Some(&server.admin_kubeconfig), None)
            .await
            .map_err(|source| ServeError::Connect {
                component: "controllers",
                source,
            })?;
        let (leading_tx, mut leading) = watch::channel(false);
        let controllers = controller_config(args)?;
        for (name, pem) in server.certificates() {
            if let Err(e) = controllers.metrics.fleet.add_own_certificate(name, pem) {
                tracing::warn!(certificate = name, error = %e, "its expiry is not monitored");
            }
        }
        let mut registry = prometheus_client::registry::Registry::default();
        controllers.metrics.register(&mut registry);
        server.metrics().add_registry(registry);
        tokio::spawn(shoal_controllers::run_when_leading(
            client.clone(),
            controllers,
            leading.clone(),
        ));
        if args.controllers.has("aws") {
            let settings = shoal_provider_aws::AwsSettings {
                endpoint_url: args.aws_endpoint_url.clone(),
                base_domain: args.base_domain.clone(),
            };
            tokio::spawn(run_aws_when_leading(
                client.clone(),
                settings,
                leading.clone(),
            ));
        }
        let gauge = server.metrics().leader.clone();
        tokio::spawn(async move {
            while leading.changed().await.is_ok() {
                gauge.set(i64::from(*leading.borrow()));
            }
        });
        let mut stop = controllers_stopped.clone();
        let elector = LeaderElector::new(client, lease);
        Some(tokio::spawn(elector.run(leading_tx, async move {
            let _ = stop.wait_for(|s| *s).await;
        })))
    } else {
        None
    };

    let local_agent = if args.local_agent {
        Some(start_local_agent(args, &server.admin_kubeconfig, controllers_stopped.clone()).await?)
    } else {
        None
    };

    let (stop_api, api_stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_controllers.send(true);
        if let Some(agent) = local_agent {
            let _ = tokio::time::timeout(Duration::from_secs(3), agent).await;
        }
        if let Some(elector) = elector {
            if tokio::time::timeout(Duration::from_secs(3), elector)
                .await
                .is_err()
            {
                tracing::warn!("the leader elector did not stop in 3 s");
            }
        }
        let _ = stop_api.send(());
    });
    server
        .serve(async move {
            let _ = api_stopped.await;
        })
        .await;
    drop(gateway);
    if let Some(m) = monitoring {
        m.stop(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Starts Prometheus and Alertmanager as children scraping this server, its
/// agents and its guests with Shoal's alert rules (`--monitoring`).
fn start_monitoring(
    args: &ServerArgs,
    server: &Server,
    admin_token: Option<String>,
) -> Result<shoal_monitoring::children::Monitoring, ServeError> {
    let token = admin_token.ok_or_else(|| {
        ServeError::Monitoring(
            "the admin kubeconfig has no token for Prometheus's discovery".into(),
        )
    })?;
    let cfg = shoal_monitoring::children::MonitoringConfig {
        dir: args.data_dir.join("monitoring"),
        prometheus_listen: args.prometheus_listen,
        alertmanager_listen: args.alertmanager_listen,
        prometheus_bin: "prometheus".into(),
        alertmanager_bin: "prometheus-alertmanager".into(),
        server_url: server.url(),
        ca_file: args.data_dir.join("tls/ca.crt"),
        token,
        scrape_interval_secs: args.scrape_interval,
    };
    let running = shoal_monitoring::children::Monitoring::start(&cfg)
        .map_err(|e| ServeError::Monitoring(e.to_string()))?;
    use shoal_monitoring::proxy::FrontEnd;
    println!(
        "monitoring: Prometheus {} and Alertmanager {} for administrators (children on {} and {}; configuration in {})",
        FrontEnd::Prometheus.external_url(&cfg.server_url),
        FrontEnd::Alertmanager.external_url(&cfg.server_url),
        running.prometheus_url,
        running.alertmanager_url,
        cfg.dir.display()
    );
    Ok(running)
}

/// Starts the all-in-one install's host agent as a task of this process, its data
/// plane confined to its own network namespace. It stops when `stop` turns true;
/// its VMs keep running. A failing agent is logged and does not stop the API.
async fn start_local_agent(
    args: &ServerArgs,
    kubeconfig: &std::path::Path,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let client = crate::client::connect(Some(&kubeconfig.to_path_buf()), None)
        .await
        .map_err(|source| ServeError::Connect {
            component: "the local agent",
            source,
        })?;
    // A single host has no VXLAN peers: the underlay address only has to exist.
    // Its metrics listener serves its own metrics (job `shoal-agent`) and its
    // guests' (job `shoal-guest`), on a free loopback port published in
    // Host.status.metricsEndpoint; the server's /metrics does not include them.
    let mut cfg = shoal_agent::host::AgentConfig::new(
        args.local_agent_name.clone(),
        std::net::Ipv4Addr::LOCALHOST,
        args.data_dir.join("agent"),
    );
    cfg.netns = Some(args.local_agent_netns.clone());
    cfg.accel = args.local_agent_accel;
    // The embedded gateway runs in this process's namespace.
    cfg.forward_listen = Some(std::net::SocketAddr::from((
        std::net::Ipv4Addr::LOCALHOST,
        0,
    )));
    cfg.metrics_listen = Some(std::net::SocketAddr::from((
        std::net::Ipv4Addr::LOCALHOST,
        0,
    )));
    tracing::info!(host = %cfg.name, netns = %args.local_agent_netns, "starting the local agent");
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = shoal_agent::host::run(client, cfg, stopped).await {
            tracing::error!(error = %shoal_agent::host::chain(&e), "the local agent stopped; this machine hosts no VMs");
        }
    }))
}

/// Resolves on the first SIGTERM or SIGINT, and exits the process on the second.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        futures::future::pending::<()>().await;
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down; a second signal exits at once");
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
}

/// Runs the AWS provider's controller while this replica leads.
async fn run_aws_when_leading(
    client: kube::Client,
    settings: shoal_provider_aws::AwsSettings,
    mut leading: watch::Receiver<bool>,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        let mut lost = leading.clone();
        shoal_provider_aws::run(client.clone(), settings.clone(), async move {
            let _ = lost.wait_for(|l| !*l).await;
        })
        .await;
    }
}
