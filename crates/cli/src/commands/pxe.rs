//! `shoal pxe`: the network boot services on a provisioning network.

use shoal_api::MachineRole;
use shoal_pxe::inventory::Inventory;
use shoal_pxe::seeds::JoinSettings;
use shoal_pxe::PxeConfig;

use crate::args::{BareMetalRole, Cli, PxeArgs};
use crate::client::{connect, CliError};

/// Binds every service (failing before any serves), connects the inventory to the
/// API if asked, then runs them.
pub async fn run(cli: &Cli, args: &PxeArgs) -> Result<(), CliError> {
    let cfg = PxeConfig {
        interface: args.interface.clone(),
        address: args.address,
        http_port: args.http_port,
        firmware_dir: args.firmware_dir.clone(),
        kernel: args.kernel.clone(),
        initrds: args.initrd.clone(),
        cmdline: args.cmdline.clone(),
        seed_dir: args.seed_dir.clone(),
        answer_router_solicitations: args.answer_router_solicitations,
    };
    let bound = shoal_pxe::bind(&cfg)
        .await
        .map_err(|e| CliError::Config(e.to_string()))?;
    let follower = if args.inventory {
        let client = connect(cli.kubeconfig.as_ref(), cli.server.as_deref()).await?;
        client.apiserver_version().await?;
        let role = match args.role {
            BareMetalRole::ControlPlane => MachineRole::ControlPlane,
            BareMetalRole::Worker => MachineRole::Worker,
        };
        let timeout = std::time::Duration::from_secs(args.provision_timeout);
        let mut inventory = Inventory::new(client, role, args.profiles.clone(), timeout);
        if let Some(path) = &args.join_kubeconfig {
            let kubeconfig = std::fs::read_to_string(path).map_err(|e| {
                CliError::Config(format!(
                    "--join-kubeconfig {}: {e}: give the kubeconfig the machines' agents use",
                    path.display()
                ))
            })?;
            inventory = inventory.with_join(
                bound.seeds.clone(),
                JoinSettings {
                    kubeconfig,
                    base_url: bound.base_url().to_owned(),
                },
            );
        }
        Some(tokio::spawn(inventory.follow(bound.journal.clone())))
    } else {
        None
    };
    tracing::info!(
        interface = %cfg.interface,
        address = %cfg.address,
        http_port = cfg.http_port,
        inventory = args.inventory,
        "network boot services up: proxy DHCP on 67 and 4011, TFTP on 69, HTTP"
    );
    let served = bound.run().await;
    if let Some(task) = follower {
        task.abort();
    }
    served.map_err(|e| CliError::Config(e.to_string()))
}
