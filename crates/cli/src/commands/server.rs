//! `shoal server`.

use std::time::Duration;

use shoal_apiserver::http::Limits;
use shoal_apiserver::{Server, ServerConfig, ServerError};

use crate::args::ServerArgs;

/// Starts the server and serves until SIGTERM or SIGINT; a second signal exits at once.
pub async fn run(args: &ServerArgs) -> Result<(), ServerError> {
    let mut config = ServerConfig::new(args.data_dir.clone(), args.listen);
    config.tls_sans = args.tls_sans.clone();
    config.encryption_key_file = args.encryption_key_file.clone();
    config.watch_history = args.watch_history.max(1);
    config.compaction_interval = Duration::from_secs(args.compaction_interval.max(1));
    config.limits = Limits {
        bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
        ..Limits::default()
    };
    let server = Server::start(config).await?;
    tracing::info!(url = %server.url(), kubeconfig = %server.admin_kubeconfig.display(), "shoal server is ready");
    println!("shoal server listening on {}", server.url());
    println!("admin kubeconfig: {}", server.admin_kubeconfig.display());
    server.serve(shutdown_signal()).await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT, and exits the process on the second.
async fn shutdown_signal() {
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
