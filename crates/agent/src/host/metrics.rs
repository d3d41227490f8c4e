//! Prometheus metrics of the host agent, served on `/metrics` when
//! `--metrics-listen` is set. The same listener serves each guest node's metrics on
//! `/guests/<namespace>/<machine>/metrics`: the agent dials the guest's exporter
//! (port [`GUEST_EXPORTER_PORT`]) from inside its data-plane namespace, so Prometheus
//! scrapes guests (job `shoal-guest`) without guest networks being opened to it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::runtime::reflector::{ObjectRef, Store};
use shoal_api::Machine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::forward::{connect_in, ForwardError};
use super::AgentError;
use crate::net::netns::NetNs;

/// Labels of a VM operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `launch` or `stop`.
    pub op: String,
    /// `ok` or `error`.
    pub result: String,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// Passes of the host loop.
    pub syncs: Counter,
    /// Duration of one pass, in seconds.
    pub sync_seconds: Histogram,
    /// VMs this agent runs.
    pub vms: Gauge,
    /// Cluster networks on this host.
    pub networks: Gauge,
    /// VM launches and stops by result.
    pub vm_ops: Family<OpLabels, Counter>,
    /// Guests that phoned home.
    pub phone_homes: Counter,
    /// Phone-homes dropped because the agent's queue of them was full.
    pub phone_homes_shed: Counter,
    /// Machine phase changes the transition table refused.
    pub phase_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shoal_agent");
        let m = Metrics {
            syncs: Counter::default(),
            sync_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            vms: Gauge::default(),
            networks: Gauge::default(),
            vm_ops: Family::default(),
            phone_homes: Counter::default(),
            phone_homes_shed: Counter::default(),
            phase_refusals: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("syncs", "Passes of the host loop", m.syncs.clone());
        registry.register(
            "sync_duration_seconds",
            "Duration of one pass of the host loop",
            m.sync_seconds.clone(),
        );
        registry.register("vms", "VMs this agent runs", m.vms.clone());
        registry.register(
            "networks",
            "Cluster networks on this host",
            m.networks.clone(),
        );
        registry.register(
            "vm_operations",
            "VM launches and stops by result",
            m.vm_ops.clone(),
        );
        registry.register(
            "phone_homes",
            "Guests that phoned home",
            m.phone_homes.clone(),
        );
        registry.register(
            "phone_homes_shed",
            "Phone-homes dropped because the agent's queue was full (the guest retries)",
            m.phone_homes_shed.clone(),
        );
        registry.register(
            "machine_phase_refusals",
            "Machine phase changes the transition table refused",
            m.phase_refusals.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts one VM operation.
    pub fn op(&self, op: &str, ok: bool) {
        self.vm_ops
            .get_or_create(&OpLabels {
                op: op.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The address Prometheus is told to scrape (the Host's `metricsEndpoint`): the
/// listener's own address, except that a wildcard one (`0.0.0.0`, `::`), which no
/// one can dial, is published as the host's underlay address on the same port.
pub fn published_endpoint(local: SocketAddr, underlay: std::net::Ipv4Addr) -> String {
    if local.ip().is_unspecified() {
        SocketAddr::new(underlay.into(), local.port()).to_string()
    } else {
        local.to_string()
    }
}

/// Binds the metrics listener in the agent's own namespace.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AgentError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("binding the metrics listener {addr}"),
            source,
        })
}

/// The port of the guests' node exporter (shoal-guest's `exporter::EXPORTER_PORT`;
/// the agent does not depend on the guest crate).
pub const GUEST_EXPORTER_PORT: u16 = 9100;
/// How long scraping one guest may take, from dialing to the end of its answer,
/// when the request does not say (Prometheus's own default `scrape_timeout`).
pub const GUEST_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest scrape a request may ask for.
const MAX_GUEST_SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);
/// Prometheus sends its scrape timeout in this header.
const SCRAPE_TIMEOUT_HEADER: &str = "x-prometheus-scrape-timeout-seconds";

/// How long a guest scrape may take: Prometheus's own timeout from its
/// `X-Prometheus-Scrape-Timeout-Seconds` header less half a second, so the agent
/// answers (with a 502 that says why) before Prometheus gives up, within 1 to 60 s;
/// [`GUEST_SCRAPE_TIMEOUT`] without a readable header.
pub fn scrape_budget(header: Option<&str>) -> Duration {
    let asked = header
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0);
    match asked {
        Some(secs) => {
            Duration::from_secs_f64((secs - 0.5).clamp(1.0, MAX_GUEST_SCRAPE_TIMEOUT.as_secs_f64()))
        }
        None => GUEST_SCRAPE_TIMEOUT,
    }
}
/// The largest guest answer passed on.
const MAX_GUEST_ANSWER: u64 = 16 << 20;
/// The content type of Prometheus' text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// What the guest route needs: known only once the agent's caches are up, so the
/// listener starts before them and gets this later (see [`GuestsCell`]).
#[derive(Clone)]
pub struct Guests {
    /// This host's name.
    pub host: String,
    /// Every Machine (the agent's cache).
    pub machines: Store<Machine>,
    /// The data-plane namespace the VMs' bridges are in.
    pub netns: NetNs,
}

/// Where the guest route finds [`Guests`] once the agent has set them.
pub type GuestsCell = Arc<OnceLock<Guests>>;

/// Why a guest's metrics could not be scraped. [`GuestScrapeError::status`] maps each
/// to the HTTP status Prometheus gets; the message is the body.
#[derive(Debug, thiserror::Error)]
pub enum GuestScrapeError {
    /// The agent is still starting: its Machine cache is not ready.
    #[error("the agent is starting: its Machine cache is not ready yet; retry shortly")]
    NotReady,
    /// No such Machine.
    #[error("no Machine {namespace}/{machine}")]
    NoSuchMachine {
        /// The Machine's namespace.
        namespace: String,
        /// The Machine's name.
        machine: String,
    },
    /// The Machine runs on another host (or none yet).
    #[error(
        "Machine {namespace}/{machine} does not run on host {this} (it is on {}): scrape it through its own host's agent",
        on.as_deref().unwrap_or("no host yet")
    )]
    OtherHost {
        /// The Machine's namespace.
        namespace: String,
        /// The Machine's name.
        machine: String,
        /// The host it is on, if any.
        on: Option<String>,
        /// This host.
        this: String,
    },
    /// The Machine has no IP address yet.
    #[error("Machine {namespace}/{machine} has no IP address yet")]
    NoIp {
        /// The Machine's namespace.
        namespace: String,
        /// The Machine's name.
        machine: String,
    },
    /// The Machine's IP address is not an IPv4 address.
    #[error("Machine {namespace}/{machine} has an invalid IP address {ip:?}")]
    BadIp {
        /// The Machine's namespace.
        namespace: String,
        /// The Machine's name.
        machine: String,
        /// What its spec says.
        ip: String,
    },
    /// Dialing the guest's exporter failed.
    #[error("dialing the guest exporter: {0}")]
    Dial(#[source] ForwardError),
    /// Sending the request or reading the answer failed.
    #[error("scraping {target}: {source}")]
    Exchange {
        /// The exporter's address.
        target: SocketAddrV4,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The exporter's answer is not a 200 HTTP response.
    #[error("scraping {target}: {why}")]
    BadAnswer {
        /// The exporter's address.
        target: SocketAddrV4,
        /// What is wrong with it.
        why: String,
    },
    /// The scrape took longer than its budget ([`scrape_budget`]).
    #[error("scraping {target}: no complete answer within {:.1}s", budget.as_secs_f64())]
    Timeout {
        /// The exporter's address.
        target: SocketAddrV4,
        /// The time it had.
        budget: Duration,
    },
}

impl GuestScrapeError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GuestScrapeError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            GuestScrapeError::NoSuchMachine { .. }
            | GuestScrapeError::OtherHost { .. }
            | GuestScrapeError::NoIp { .. }
            | GuestScrapeError::BadIp { .. } => StatusCode::NOT_FOUND,
            GuestScrapeError::Dial(_)
            | GuestScrapeError::Exchange { .. }
            | GuestScrapeError::BadAnswer { .. }
            | GuestScrapeError::Timeout { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

impl Guests {
    /// The exporter address of Machine `namespace/machine`, if it runs on this host
    /// and has an IP address.
    pub fn target(&self, namespace: &str, machine: &str) -> Result<SocketAddrV4, GuestScrapeError> {
        let m = self
            .machines
            .get(&ObjectRef::new(machine).within(namespace))
            .ok_or_else(|| GuestScrapeError::NoSuchMachine {
                namespace: namespace.into(),
                machine: machine.into(),
            })?;
        if m.spec.host_name.as_deref() != Some(self.host.as_str()) {
            return Err(GuestScrapeError::OtherHost {
                namespace: namespace.into(),
                machine: machine.into(),
                on: m.spec.host_name.clone(),
                this: self.host.clone(),
            });
        }
        let ip = m.spec.ip.as_deref().ok_or_else(|| GuestScrapeError::NoIp {
            namespace: namespace.into(),
            machine: machine.into(),
        })?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| GuestScrapeError::BadIp {
            namespace: namespace.into(),
            machine: machine.into(),
            ip: ip.into(),
        })?;
        Ok(SocketAddrV4::new(ip, GUEST_EXPORTER_PORT))
    }

    /// Scrapes Machine `namespace/machine`'s exporter: its metrics text.
    /// It may take `budget`.
    pub async fn scrape(
        &self,
        namespace: &str,
        machine: &str,
        budget: Duration,
    ) -> Result<String, GuestScrapeError> {
        let target = self.target(namespace, machine)?;
        scrape(self.netns.clone(), target, budget).await
    }
}

/// Sends `GET /metrics HTTP/1.0` to `target` from inside `netns` and returns the
/// body of its 200 answer, all within `budget`.
pub async fn scrape(
    netns: NetNs,
    target: SocketAddrV4,
    budget: Duration,
) -> Result<String, GuestScrapeError> {
    let exchange = async {
        let mut conn = connect_in(netns, target)
            .await
            .map_err(GuestScrapeError::Dial)?;
        let io = |source| GuestScrapeError::Exchange { target, source };
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .map_err(io)?;
        let mut answer = Vec::new();
        (&mut conn)
            .take(MAX_GUEST_ANSWER + 1)
            .read_to_end(&mut answer)
            .await
            .map_err(io)?;
        if answer.len() as u64 > MAX_GUEST_ANSWER {
            return Err(GuestScrapeError::BadAnswer {
                target,
                why: format!("the answer is larger than {MAX_GUEST_ANSWER} bytes"),
            });
        }
        parse_answer(&answer).map_err(|why| GuestScrapeError::BadAnswer { target, why })
    };
    tokio::time::timeout(budget, exchange)
        .await
        .map_err(|_| GuestScrapeError::Timeout { target, budget })?
}

/// The body of an HTTP/1.x answer if its status is 200, or what is wrong with it.
pub fn parse_answer(answer: &[u8]) -> Result<String, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "the answer has no complete HTTP head".to_string())?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: {status_line:?}"));
    }
    if code != Some("200") {
        return Err(format!("the exporter answered {status_line:?}"));
    }
    String::from_utf8(answer[split + 4..].to_vec())
        .map_err(|_| "the metrics are not UTF-8".to_string())
}

/// `GET /guests/{namespace}/{machine}/metrics`.
async fn guest_metrics(
    State(guests): State<GuestsCell>,
    Path((namespace, machine)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let budget = scrape_budget(
        headers
            .get(SCRAPE_TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let result = match guests.get() {
        Some(g) => g.scrape(&namespace, &machine, budget).await,
        None => Err(GuestScrapeError::NotReady),
    };
    match result {
        Ok(text) => ([("content-type", TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            let why = super::chain(&e);
            tracing::debug!(%namespace, %machine, %why, "guest scrape failed");
            (
                e.status(),
                [("content-type", "text/plain; charset=utf-8")],
                format!("{why}\n"),
            )
                .into_response()
        }
    }
}

/// Serves `GET /metrics` and the guest route on `listener`; the guest route answers
/// 503 until `guests` is set.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    guests: GuestsCell,
) -> Result<(), AgentError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { ([("content-type", TEXT_FORMAT)], metrics.encode()) }
            }),
        )
        .route(
            "/guests/{namespace}/{machine}/metrics",
            axum::routing::get(guest_metrics),
        )
        .with_state(guests);
    tracing::info!(%addr, "metrics served");
    axum::serve(listener, app)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("serving metrics on {addr}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    fn machine(name: &str, host: Option<&str>, ip: Option<&str>) -> Machine {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-x", "uid": format!("uid-{name}")},
            "spec": {"cluster": "a", "role": "worker", "release": "test",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"},
                     "hostName": host, "mac": "52:54:00:00:00:0b", "ip": ip}
        }))
        .expect("a valid Machine")
    }

    fn guests() -> Guests {
        let (store, mut writer) = reflector::store::<Machine>();
        for m in [
            machine("here", Some("h1"), Some("10.9.0.11")),
            machine("there", Some("h2"), Some("10.9.0.12")),
            machine("unplaced", None, None),
            machine("noip", Some("h1"), None),
            machine("badip", Some("h1"), Some("not-an-ip")),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(m));
        }
        Guests {
            host: "h1".into(),
            machines: store,
            netns: NetNs::current(),
        }
    }

    #[test]
    fn a_machine_on_this_host_is_scraped_on_port_9100() {
        assert_eq!(
            guests().target("org-x", "here").expect("runs here"),
            "10.9.0.11:9100".parse().expect("an address")
        );
    }

    #[test]
    fn unknown_or_elsewhere_machines_are_404_naming_them() {
        let g = guests();
        for (ns, name, says) in [
            ("org-x", "nope", "no Machine org-x/nope"),
            ("org-y", "here", "no Machine org-y/here"),
            (
                "org-x",
                "there",
                "org-x/there does not run on host h1 (it is on h2)",
            ),
            ("org-x", "unplaced", "(it is on no host yet)"),
            ("org-x", "noip", "org-x/noip has no IP address yet"),
            ("org-x", "badip", "invalid IP address \"not-an-ip\""),
        ] {
            let e = g.target(ns, name).expect_err("not scrapeable");
            assert_eq!(e.status(), StatusCode::NOT_FOUND, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn dial_failures_and_timeouts_are_502_and_a_starting_agent_503() {
        let target: SocketAddrV4 = "10.9.0.11:9100".parse().expect("an address");
        assert_eq!(
            GuestScrapeError::Timeout {
                target,
                budget: GUEST_SCRAPE_TIMEOUT
            }
            .status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            GuestScrapeError::BadAnswer {
                target,
                why: "x".into()
            }
            .status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            GuestScrapeError::NotReady.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn answers_pass_on_their_body_only_when_200() {
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nup 1\n\n"),
            Ok("up 1\n\n".to_string())
        );
        let e = parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\nno").expect_err("404");
        assert!(e.contains("404 Not Found"), "{e}");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_answer(b"SSH-2.0-x\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn the_route_scrapes_a_real_exporter_and_refuses_unknown_machines() {
        // A stand-in exporter on loopback, in this (the test's) namespace.
        let exporter = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = exporter.local_addr().expect("addr").port();
        let served = tokio::spawn(async move {
            let (mut c, _) = exporter.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            let n = c.read(&mut buf).await.expect("read");
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nnode_load1 0.5\n")
                .await
                .expect("write");
            req
        });
        let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let text = scrape(NetNs::current(), target, GUEST_SCRAPE_TIMEOUT)
            .await
            .expect("scraped");
        assert_eq!(text, "node_load1 0.5\n");
        let req = served.await.expect("served");
        assert!(req.starts_with("GET /metrics HTTP/1.0\r\n"), "{req:?}");

        // Nothing listens on the port any more: a dial failure is 502.
        let e = scrape(NetNs::current(), target, GUEST_SCRAPE_TIMEOUT)
            .await
            .expect_err("refused");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY, "{e}");

        // Through the listener: an unknown machine is 404, and before the caches
        // are ready the route says so.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cell: GuestsCell = Arc::default();
        let task = tokio::spawn(serve(Arc::new(Metrics::default()), listener, cell.clone()));
        let get = |path: &str| {
            let path = path.to_string();
            async move {
                let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
                c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                    .await
                    .expect("write");
                let mut out = String::new();
                c.read_to_string(&mut out).await.expect("read");
                out
            }
        };
        let early = get("/guests/org-x/here/metrics").await;
        assert!(early.starts_with("HTTP/1.0 503"), "{early}");
        let _ = cell.set(guests());
        let unknown = get("/guests/org-x/nope/metrics").await;
        assert!(unknown.starts_with("HTTP/1.0 404"), "{unknown}");
        assert!(unknown.ends_with("no Machine org-x/nope\n"), "{unknown}");
        let own = get("/metrics").await;
        assert!(own.contains("shoal_agent_syncs_total"), "{own}");
        task.abort();
    }

    #[test]
    fn a_wildcard_listener_is_published_on_the_underlay_address() {
        let underlay = std::net::Ipv4Addr::new(10, 0, 0, 7);
        let at = |a: &str| published_endpoint(a.parse().expect("an address"), underlay);
        assert_eq!(at("0.0.0.0:9464"), "10.0.0.7:9464");
        assert_eq!(at("[::]:9464"), "10.0.0.7:9464");
        assert_eq!(at("127.0.0.1:9464"), "127.0.0.1:9464");
        assert_eq!(at("192.168.1.5:9100"), "192.168.1.5:9100");
    }

    #[test]
    fn the_scrape_budget_follows_prometheus_timeout_header() {
        assert_eq!(scrape_budget(None), GUEST_SCRAPE_TIMEOUT);
        assert_eq!(scrape_budget(Some("10")), Duration::from_millis(9500));
        assert_eq!(scrape_budget(Some(" 2.5 ")), Duration::from_secs(2));
        assert_eq!(
            scrape_budget(Some("1")),
            Duration::from_secs(1),
            "at least 1 s"
        );
        assert_eq!(
            scrape_budget(Some("600")),
            Duration::from_secs(60),
            "at most 60 s"
        );
        for bad in ["", "soon", "-3", "0", "NaN", "inf"] {
            assert_eq!(scrape_budget(Some(bad)), GUEST_SCRAPE_TIMEOUT, "{bad:?}");
        }
    }
}
