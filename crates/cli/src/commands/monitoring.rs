//! `shoal monitoring`: the Prometheus and Alertmanager configuration of an install.

use shoal_monitoring::config::{alertmanager_yml, prometheus_yml, PrometheusInputs, ALERT_RULES};

use crate::args::{MonitoringCommand, MonitoringConfigArgs};
use crate::client::CliError;
use crate::output::emit;

/// Runs a monitoring subcommand; `server_url` is the server the CLI would talk to.
pub fn run(cmd: &MonitoringCommand, server_url: Option<String>) -> Result<(), CliError> {
    match cmd {
        MonitoringCommand::Config(a) => emit(&prometheus_config(a, server_url)?),
        MonitoringCommand::Rules => emit(ALERT_RULES),
        MonitoringCommand::AlertmanagerConfig { webhook } => {
            emit(&alertmanager_yml(webhook.as_deref()))
        }
    }
}

fn prometheus_config(
    a: &MonitoringConfigArgs,
    server_url: Option<String>,
) -> Result<String, CliError> {
    let Some(server_url) = server_url else {
        return Err(CliError::Usage(
            "no server: give --server https://HOST:PORT or a kubeconfig that names one".into(),
        ));
    };
    if a.scrape_interval == 0 {
        return Err(CliError::Usage(
            "--scrape-interval must be at least 1 second".into(),
        ));
    }
    Ok(prometheus_yml(&PrometheusInputs {
        server_url,
        ca_file: a.ca_file.clone(),
        token_file: a.token_file.clone(),
        rule_files: vec![a.rules_file.clone()],
        alertmanager: a.alertmanager.clone(),
        scrape_interval_secs: a.scrape_interval,
    }))
}
