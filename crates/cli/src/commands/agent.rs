//! `shoal agent`: validates its flags, connects, and hands off to the agent library.

use std::time::Duration;

use shoal_agent::host::AgentConfig;
use shoal_api::validate::Quantity;

use crate::args::{AgentArgs, Cli};
use crate::client::{connect, CliError};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentRunError {
    /// The flags or the kubeconfig are wrong.
    #[error(transparent)]
    Setup(#[from] CliError),
    /// The agent failed.
    #[error("{}", shoal_agent::host::chain(.0))]
    Agent(#[from] shoal_agent::host::AgentError),
}

/// Parses the flags into a config before touching anything, then runs the agent
/// until SIGTERM or SIGINT.
pub async fn run(cli: &Cli, args: &AgentArgs) -> Result<(), AgentRunError> {
    let memory_mib = match &args.memory {
        Some(text) => Some(
            Quantity::parse(text)
                .map_err(|e| CliError::Usage(format!("--memory {text:?}: {e}")))?
                .as_bytes()
                / (1 << 20),
        ),
        None => None,
    };
    if shoal_api::validate::validate_dns1123_subdomain(&args.name).is_err() {
        return Err(CliError::Usage(format!(
            "--name {:?} must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.')",
            args.name
        ))
        .into());
    }
    let client = match &args.token {
        Some(token) => {
            crate::client::connect_with_token(cli.kubeconfig.as_ref(), cli.server.as_deref(), token)
                .await?
        }
        None => connect(cli.kubeconfig.as_ref(), cli.server.as_deref()).await?,
    };
    if let Some(hosts) = args.simulate {
        let sim = shoal_agent::simulate::SimConfig {
            prefix: args.name.clone(),
            hosts,
            cpus: args.cpus.unwrap_or(64),
            memory_mib: memory_mib.unwrap_or(256 << 10),
            disk: 4 << 40,
            cpu_allocation_ratio: args.cpu_allocation_ratio.max(1),
            concurrency: 32,
        };
        shoal_agent::simulate::run(client, sim, super::server::shutdown_signal()).await?;
        return Ok(());
    }
    let underlay = args
        .underlay_ip
        .ok_or_else(|| CliError::Usage("--underlay-ip is required".into()))?;
    let state_dir = std::path::absolute(&args.state_dir).map_err(|source| CliError::File {
        path: args.state_dir.clone(),
        source,
    })?;
    let cfg = AgentConfig {
        name: args.name.clone(),
        underlay,
        state_dir,
        netns: args.netns.clone(),
        qemu: args.qemu.clone(),
        qemu_img: args.qemu_img.clone(),
        nft: args.nft.clone(),
        cpus: args.cpus,
        memory_mib,
        stop_grace: Duration::from_secs(args.stop_grace),
        migration_max_bandwidth: (args.migration_max_mib_per_sec > 0)
            .then(|| args.migration_max_mib_per_sec.saturating_mul(1 << 20)),
        kvm_probe_timeout: Duration::from_millis(args.kvm_probe_timeout_ms),
        accel: args.accel,
        egress: args.egress_interface.clone(),
        resync: Duration::from_secs(args.resync.max(1)),
        metrics_listen: args.metrics_listen,
        cpu_allocation_ratio: args.cpu_allocation_ratio.max(1),
        forward_listen: Some(args.forward_listen.unwrap_or_else(|| {
            if args.netns.is_some() {
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
            } else {
                std::net::SocketAddr::from((underlay, 7445))
            }
        })),
    };
    shoal_agent::host::run(client, cfg, super::server::shutdown_signal()).await?;
    Ok(())
}
