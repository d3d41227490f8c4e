//! Backend health: active checks on every backend, and passive marks from failed
//! connection attempts. API backends pass when `GET /readyz` over TLS, verified with
//! the cluster CA, answers 200; ingress backends when a connection opens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_kube::readyz::{client_config, readyz, ProbeError};
use tokio::sync::watch;

use crate::dial::{dial, DialError};
use crate::metrics::{Metrics, ServiceLabels};
use crate::routes::{Backend, ClusterRoute, RouteTable, Service};

/// How many checks run at once.
const PARALLEL_CHECKS: usize = 32;

/// Failed checks in a row that take a healthy backend out. One is not enough: a
/// kube-apiserver on an emulated CPU answers `/readyz` 500 now and then while an
/// internal check (etcd, informers) is slow, and recovers by the next round.
pub const FALL: u32 = 3;

/// The last word on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not checked yet: usable.
    Unknown,
    /// The last check passed.
    Up,
    /// The last check or connection attempt failed.
    Down,
}

/// What the gateway knows about every backend's health.
#[derive(Default)]
pub struct Health {
    states: Mutex<HashMap<Backend, State>>,
    failures: Mutex<HashMap<Backend, u32>>,
}

impl Health {
    /// The backend's state.
    pub fn state(&self, b: &Backend) -> State {
        self.lock().get(b).copied().unwrap_or(State::Unknown)
    }

    /// True unless the backend's last check failed.
    pub fn usable(&self, b: &Backend) -> bool {
        self.state(b) != State::Down
    }

    /// Records a result; returns the previous state.
    pub fn set(&self, b: &Backend, state: State) -> State {
        self.lock()
            .insert(b.clone(), state)
            .unwrap_or(State::Unknown)
    }

    /// Records an active check's result; returns the previous state and the new
    /// one. A pass makes the backend Up; a failure makes a new backend Down at once
    /// and a healthy one only at the [`FALL`]th failure in a row.
    pub fn record(&self, b: &Backend, passed: bool) -> (State, State) {
        let was = self.state(b);
        let failures = {
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = f.entry(b.clone()).or_insert(0);
            *n = if passed { 0 } else { n.saturating_add(1) };
            *n
        };
        let now = match (passed, was) {
            (true, _) => State::Up,
            (false, State::Up) if failures < FALL => State::Up,
            (false, _) => State::Down,
        };
        self.set(b, now);
        (was, now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Backend, State>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets backends that left the table.
    fn retain(&self, keep: &std::collections::HashSet<&Backend>) {
        self.lock().retain(|b, _| keep.contains(b));
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b, _| keep.contains(b));
    }

    fn down_count(&self) -> usize {
        self.lock().values().filter(|s| **s == State::Down).count()
    }
}

/// Checks every backend every `interval`, and at once when the table changes.
pub async fn run(
    health: Arc<Health>,
    mut table: watch::Receiver<Arc<RouteTable>>,
    interval: Duration,
    timeout: Duration,
    metrics: Metrics,
) {
    loop {
        let current = table.borrow_and_update().clone();
        let mut work: Vec<(Arc<ClusterRoute>, Service, Backend)> = Vec::new();
        for route in current.routes() {
            for service in [Service::Api, Service::IngressHttp, Service::IngressHttps] {
                for b in route.backends(service) {
                    work.push((route.clone(), service, b.clone()));
                }
            }
        }
        {
            let keep = work.iter().map(|(_, _, b)| b).collect();
            health.retain(&keep);
        }
        metrics
            .backends
            .set(i64::try_from(work.len()).unwrap_or(i64::MAX));
        let configs = TlsConfigs::default();
        futures::stream::iter(work)
            .map(|(route, service, b)| {
                let health = health.clone();
                let metrics = metrics.clone();
                let configs = &configs;
                async move {
                    let result = check(&route, service, &b, timeout, configs).await;
                    let (was, now) = health.record(&b, result.is_ok());
                    if let Err(why) = result {
                        metrics
                            .health_failures
                            .get_or_create(&ServiceLabels {
                                service: service.as_str().into(),
                            })
                            .inc();
                        if was != State::Down && now == State::Down {
                            tracing::warn!(backend = %b.machine, service = service.as_str(), why = %shoal_kube::chain(&why), "backend down");
                        }
                    } else if was == State::Down {
                        tracing::info!(backend = %b.machine, service = service.as_str(), "backend up again");
                    }
                }
            })
            .buffer_unordered(PARALLEL_CHECKS)
            .collect::<()>()
            .await;
        metrics
            .backends_down
            .set(i64::try_from(health.down_count()).unwrap_or(i64::MAX));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = table.changed() => if changed.is_err() { return },
        }
    }
}

/// TLS client configurations by CA, built once per round.
#[derive(Default)]
struct TlsConfigs {
    by_ca: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
}

impl TlsConfigs {
    fn get(&self, ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, ProbeError> {
        let mut map = self.by_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(ca_pem) {
            return Ok(c.clone());
        }
        let config = Arc::new(client_config(ca_pem)?);
        map.insert(ca_pem.to_owned(), config.clone());
        Ok(config)
    }
}

/// Why a backend failed its check.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    /// No connection.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The API's `/readyz` did not pass.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// `/readyz` did not answer in time.
    #[error("/readyz took longer than {0:?}")]
    Timeout(Duration),
}

async fn check(
    route: &ClusterRoute,
    service: Service,
    b: &Backend,
    timeout: Duration,
    configs: &TlsConfigs,
) -> Result<(), CheckError> {
    let stream = dial(b, timeout).await?;
    let (Service::Api, Some(ca)) = (service, route.ca_pem.as_deref()) else {
        return Ok(());
    };
    let config = configs.get(ca)?;
    tokio::time::timeout(timeout, readyz(stream, &route.api_name(), config))
        .await
        .map_err(|_| CheckError::Timeout(timeout))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Via;

    fn backend() -> Backend {
        Backend {
            machine: "org-a/demo-cp-0".into(),
            host: "h1".into(),
            target: "10.128.0.10:6443".parse().expect("addr"),
            via: Via::Direct,
        }
    }

    #[test]
    fn a_healthy_backend_survives_a_failure_but_not_three_in_a_row() {
        let h = Health::default();
        let b = backend();
        assert_eq!(h.record(&b, true), (State::Unknown, State::Up));
        assert_eq!(h.record(&b, false), (State::Up, State::Up));
        assert_eq!(
            h.record(&b, true),
            (State::Up, State::Up),
            "a pass resets the count"
        );
        assert_eq!(h.record(&b, false), (State::Up, State::Up));
        assert_eq!(h.record(&b, false), (State::Up, State::Up));
        assert_eq!(h.record(&b, false), (State::Up, State::Down));
        assert!(!h.usable(&b));
        assert_eq!(h.record(&b, true), (State::Down, State::Up));
    }

    #[test]
    fn a_new_backend_that_fails_is_down_at_once() {
        let h = Health::default();
        let b = backend();
        assert_eq!(h.record(&b, false), (State::Unknown, State::Down));
        assert!(!h.usable(&b));
    }
}
