//! The configuration files of Prometheus and Alertmanager for a Shoal install.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{sd, JOBS};

/// Shoal's alert rules (`deploy/prometheus/alerts.yaml`), built into the binary so
/// an install needs no checkout.
pub const ALERT_RULES: &str = include_str!("../../../deploy/prometheus/alerts.yaml");

/// What a `prometheus.yml` needs to know about the install.
#[derive(Clone, Debug)]
pub struct PrometheusInputs {
    /// The API server's URL, e.g. `https://shoal.example:6443`.
    pub server_url: String,
    /// The CA that signed the API server's certificate.
    pub ca_file: PathBuf,
    /// A file holding a Shoal token that may list Hosts (an administrator's).
    pub token_file: PathBuf,
    /// Rule files to load.
    pub rule_files: Vec<PathBuf>,
    /// `host:port` of Alertmanager, if alerts are to be sent.
    pub alertmanager: Option<String>,
    /// Seconds between scrapes (and rule evaluations).
    pub scrape_interval_secs: u64,
}

fn path_text(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// The scrape configuration of every job, discovered from the API server.
fn scrape_config(i: &PrometheusInputs, job: crate::Job) -> Value {
    let sd_url = format!(
        "{}{}?job={}",
        i.server_url.trim_end_matches('/'),
        sd::PATH,
        job.key()
    );
    let tls = json!({"ca_file": path_text(&i.ca_file)});
    json!({
        "job_name": job.name(),
        "tls_config": tls,
        "http_sd_configs": [{
            "url": sd_url,
            "refresh_interval": format!("{}s", i.scrape_interval_secs.max(1) * 2),
            "authorization": {"type": "Bearer", "credentials_file": path_text(&i.token_file)},
            "tls_config": tls,
        }],
    })
}

/// A complete `prometheus.yml`.
pub fn prometheus_yml(i: &PrometheusInputs) -> String {
    let interval = format!("{}s", i.scrape_interval_secs.max(1));
    let mut doc = json!({
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
        },
        "rule_files": i.rule_files.iter().map(|p| path_text(p)).collect::<Vec<_>>(),
        "scrape_configs": JOBS.iter().map(|j| scrape_config(i, *j)).collect::<Vec<_>>(),
    });
    if let Some(am) = &i.alertmanager {
        doc["alerting"] = json!({
            "alertmanagers": [{"static_configs": [{"targets": [am]}]}],
        });
    }
    to_yaml(&doc)
}

/// An `alertmanager.yml` that groups Shoal's alerts by alert name, organization
/// and cluster, and sends them to `webhook` when one is given (otherwise they are
/// only shown in Alertmanager's UI and API).
pub fn alertmanager_yml(webhook: Option<&str>) -> String {
    let mut receiver = json!({"name": "shoal"});
    if let Some(url) = webhook {
        receiver["webhook_configs"] = json!([{"url": url, "send_resolved": true}]);
    }
    to_yaml(&json!({
        "route": {
            "receiver": "shoal",
            "group_by": ["alertname", "org", "cluster", "host"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    }))
}

/// YAML is a superset of JSON: a document rendered as pretty JSON is valid YAML,
/// and both Prometheus and Alertmanager read it.
fn to_yaml(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> PrometheusInputs {
        PrometheusInputs {
            server_url: "https://127.0.0.1:6443/".into(),
            ca_file: "/var/lib/shoal/tls/ca.crt".into(),
            token_file: "/etc/prometheus/shoal-token".into(),
            rule_files: vec!["/etc/prometheus/shoal-alerts.yaml".into()],
            alertmanager: Some("127.0.0.1:9093".into()),
            scrape_interval_secs: 5,
        }
    }

    #[test]
    fn every_job_is_discovered_from_the_server_with_the_token() {
        let doc: Value =
            serde_json::from_str(&prometheus_yml(&inputs())).expect("JSON-shaped YAML");
        let jobs = doc["scrape_configs"].as_array().expect("scrape configs");
        assert_eq!(jobs.len(), 3);
        let guest = &jobs[2];
        assert_eq!(guest["job_name"], "shoal-guest");
        let sd = &guest["http_sd_configs"][0];
        assert_eq!(sd["url"], "https://127.0.0.1:6443/sd/prometheus?job=guest");
        assert_eq!(
            sd["authorization"]["credentials_file"],
            "/etc/prometheus/shoal-token"
        );
        assert_eq!(
            doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:9093"
        );
        assert_eq!(doc["global"]["scrape_interval"], "5s");
    }

    #[test]
    fn the_alert_rules_are_built_in() {
        assert!(ALERT_RULES.contains("ShoalHostNotReady"));
    }
}
