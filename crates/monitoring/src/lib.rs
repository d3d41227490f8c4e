//! Monitoring of a Shoal install with Prometheus and Alertmanager.
//!
//! - [`sd`]: `GET /sd/prometheus?job=…`, Prometheus HTTP service discovery of the
//!   API server, every host's agent and every guest node's exporter (scraped
//!   through its host's agent, so guest networks stay closed). It answers with
//!   what the caller's token may see: an administrator gets everything, a tenant
//!   only the guest nodes of its own organizations.
//! - [`config`]: the `prometheus.yml` and `alertmanager.yml` for an install.
//! - [`children`]: Debian's Prometheus and Alertmanager run as child processes of
//!   the all-in-one server (`shoal server --monitoring`).
//! - [`proxy`]: their front ends at `/monitoring/prometheus/` and
//!   `/monitoring/alertmanager/` on the API's TLS listener, for administrators.

mod access;
pub mod children;
pub mod config;
pub mod proxy;
pub mod sd;

/// The scrape jobs, as named in `deploy/README.md` and the alert rules.
pub const JOBS: [Job; 3] = [Job::Server, Job::Agent, Job::Guest];

/// One kind of scrape target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// The API server with its controllers and gateway.
    Server,
    /// A host's agent.
    Agent,
    /// A guest node's exporter, through its host's agent.
    Guest,
}

impl Job {
    /// The job's name in Prometheus (`shoal-server`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Job::Server => "shoal-server",
            Job::Agent => "shoal-agent",
            Job::Guest => "shoal-guest",
        }
    }

    /// The value of the discovery endpoint's `job` query parameter.
    pub const fn key(self) -> &'static str {
        match self {
            Job::Server => "server",
            Job::Agent => "agent",
            Job::Guest => "guest",
        }
    }

    /// The job whose key is `key`.
    pub fn from_key(key: &str) -> Option<Job> {
        JOBS.into_iter().find(|j| j.key() == key)
    }
}
