//! The `shoal` binary: parses arguments and hands off to one subcommand.

mod args;
mod client;
mod commands;
mod kubeconfig;
mod oidc_session;
mod output;
mod session_lock;
mod ui_sign_in;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command, KubeconfigCommand};
use crate::client::{connect, CliError};

/// Exit code when the server fails to start or stops with an error.
const EXIT_SERVER: i32 = 10;
/// Exit code when the agent fails to start or stops with an error.
const EXIT_AGENT: i32 = 11;
/// Exit code when the gateway fails to start or stops with an error.
const EXIT_GATEWAY: i32 = 12;
/// Exit code when the network boot services fail to start or stop with an error.
const EXIT_PXE: i32 = 13;

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn client_command(cli: &Cli) -> Result<(), CliError> {
    let chosen = || connect(cli.kubeconfig.as_ref(), cli.server.as_deref());
    match &cli.command {
        Command::Get(a) => commands::objects::get(&chosen().await?, a).await,
        Command::Apply(a) => commands::objects::apply(&chosen().await?, a).await,
        Command::Delete(a) => commands::objects::delete(&chosen().await?, a).await,
        Command::Org(c) => commands::org::run(&chosen().await?, c).await,
        Command::Cluster(c) => commands::cluster::run(&chosen().await?, c).await,
        Command::Host(c) => commands::host::run(&chosen().await?, c).await,
        Command::Baremetal(c) => commands::baremetal::run(&chosen().await?, c).await,
        // The exec credential plugin must not connect: connecting runs it.
        Command::Kubeconfig(KubeconfigCommand::Token(a)) => commands::oidc::token(a).await,
        Command::Kubeconfig(c) => commands::kubeconfig::run(&chosen().await?, c).await,
        Command::Token(c) => commands::token::run(&chosen().await?, c).await,
        Command::Login(a) => {
            let path = if a.oidc {
                commands::oidc::login(a, cli.server.as_deref()).await?
            } else {
                commands::login::run(a, cli.server.as_deref())?
            };
            let client = connect(Some(&path), None).await?;
            client.apiserver_version().await?;
            output::emit_line(format_args!(
                "logged in; config written to {}",
                path.display()
            ))
        }
        Command::Logout(a) => {
            output::emit_line(format_args!("{}", commands::oidc::logout(a).await?))
        }
        Command::Audit(a) => commands::audit::run(&chosen().await?, a).await,
        Command::Monitoring(c) => {
            let url = match &cli.server {
                Some(s) => Some(s.clone()),
                None => client::load_config(cli.kubeconfig.as_ref(), None)
                    .await
                    .ok()
                    .map(|c| c.cluster_url.to_string()),
            };
            commands::monitoring::run(c, url)
        }
        Command::Crds => {
            let crds = shoal_api::crd::all().map_err(|e| CliError::Usage(e.to_string()))?;
            let mut text = String::new();
            for crd in crds {
                let yaml =
                    serde_yaml::to_string(&crd).map_err(|e| CliError::Usage(e.to_string()))?;
                text.push_str(&format!("---\n{}\n", yaml.trim_end()));
            }
            output::emit(&text)
        }
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "shoal", &mut script);
            output::emit(&String::from_utf8_lossy(&script))
        }
        Command::Server(_)
        | Command::Agent(_)
        | Command::Guest
        | Command::Gateway(_)
        | Command::Pxe(_) => Ok(()),
    }
}

/// The server's request path allocates and frees many small buffers on every
/// core (JSON, HTTP, TLS); mimalloc serves those from per-thread pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if let Command::Guest = &cli.command {
        // The guest agent runs its own small runtime inside the VM.
        if let Err(e) = shoal_guest::run() {
            eprintln!("shoal guest: {e}");
            std::process::exit(i32::from(e.exit_code()));
        }
        return;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async_main(cli));
}

async fn async_main(cli: Cli) {
    init_logging(cli.log_json);
    if let Command::Agent(args) = &cli.command {
        if let Err(e) = commands::agent::run(&cli, args).await {
            eprintln!("shoal agent: {e}");
            std::process::exit(EXIT_AGENT);
        }
        return;
    }
    if let Command::Gateway(args) = &cli.command {
        if let Err(e) = commands::gateway::run(&cli, args).await {
            eprintln!("shoal gateway: {e}");
            std::process::exit(EXIT_GATEWAY);
        }
        return;
    }
    if let Command::Pxe(args) = &cli.command {
        if let Err(e) = commands::pxe::run(&cli, args).await {
            eprintln!("shoal pxe: {e}");
            std::process::exit(EXIT_PXE);
        }
        return;
    }
    if let Command::Server(args) = &cli.command {
        if let Err(e) = commands::server::run(args).await {
            eprintln!("shoal server: {e}");
            std::process::exit(EXIT_SERVER);
        }
        return;
    }
    if let Err(e) = client_command(&cli).await {
        eprintln!("{e}");
        std::process::exit(e.exit_code());
    }
}
