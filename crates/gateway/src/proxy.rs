//! The listeners: each connection's first bytes name a host (TLS SNI, or the HTTP
//! `Host`), the route table names its backends, and the bytes are then copied both
//! ways unchanged. A route change never touches a connection already proxied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::dial::dial;
use crate::health::{Health, State};
use crate::hello::{self, Hello, MAX_HELLO};
use crate::host_header::{self, Head, MAX_HEAD};
use crate::metrics::{Metrics, ServiceLabels};
use crate::routes::{Listener, RouteTable};

/// Copy buffer per direction of a proxied connection.
const COPY_BUFFER: usize = 64 * 1024;

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How long a client may take to send its ClientHello or request head.
    pub hello_timeout: Duration,
    /// How long reaching a backend may take.
    pub connect_timeout: Duration,
    /// How long one backend health check may take (reaching it and, for an API,
    /// its `/readyz`): an API server on an emulated CPU can take seconds to answer.
    pub health_timeout: Duration,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Backends tried per connection before giving up.
    pub attempts: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            health_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            attempts: 3,
        }
    }
}

/// What every connection shares.
pub struct Shared {
    /// The current routes.
    pub table: watch::Receiver<Arc<RouteTable>>,
    /// Backend health.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub config: ProxyConfig,
    limit: Arc<Semaphore>,
    next: AtomicUsize,
}

impl Shared {
    /// Shared state over `table`.
    pub fn new(
        table: watch::Receiver<Arc<RouteTable>>,
        health: Arc<Health>,
        metrics: Metrics,
        config: ProxyConfig,
    ) -> Self {
        Self {
            limit: Arc::new(Semaphore::new(config.max_connections)),
            table,
            health,
            metrics,
            config,
            next: AtomicUsize::new(0),
        }
    }
}

/// Why a connection was not proxied; the label of its outcome metric.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Closed {
    Overloaded,
    HelloTimeout,
    ClientLeft,
    NotTls(&'static str),
    NoSni,
    NotHttp(&'static str),
    NoHost,
    UnknownHost(String),
    NoBackend(String),
    BackendsFailed(String),
    Io(String),
}

impl Closed {
    fn outcome(&self) -> &'static str {
        match self {
            Closed::Overloaded => "overloaded",
            Closed::HelloTimeout => "hello_timeout",
            Closed::ClientLeft => "closed_early",
            Closed::NotTls(_) => "not_tls",
            Closed::NoSni => "no_sni",
            Closed::NotHttp(_) => "not_http",
            Closed::NoHost => "no_host",
            Closed::UnknownHost(_) => "unknown_host",
            Closed::NoBackend(_) => "no_backend",
            Closed::BackendsFailed(_) => "backends_failed",
            Closed::Io(_) => "io_error",
        }
    }

    /// The status a plain HTTP client gets, if the request got that far.
    fn http_status(&self) -> Option<&'static str> {
        match self {
            Closed::NotHttp(_) | Closed::NoHost => Some("400 Bad Request"),
            Closed::UnknownHost(_) => Some("404 Not Found"),
            Closed::HelloTimeout => Some("408 Request Timeout"),
            Closed::NoBackend(_) | Closed::BackendsFailed(_) => Some("503 Service Unavailable"),
            Closed::Overloaded
            | Closed::ClientLeft
            | Closed::NotTls(_)
            | Closed::NoSni
            | Closed::Io(_) => None,
        }
    }

    fn why(&self) -> String {
        match self {
            Closed::Overloaded => "too many open connections".into(),
            Closed::HelloTimeout => "no complete ClientHello or request head in time".into(),
            Closed::ClientLeft => "the client closed before naming a host".into(),
            Closed::NotTls(why) | Closed::NotHttp(why) => (*why).into(),
            Closed::NoSni => "the ClientHello names no server".into(),
            Closed::NoHost => "the request has no Host header".into(),
            Closed::UnknownHost(h) => format!("{h} is not a cluster this gateway routes"),
            Closed::NoBackend(h) => format!("{h} has no ready backend"),
            Closed::BackendsFailed(why) => why.clone(),
            Closed::Io(why) => why.clone(),
        }
    }
}

/// A complete HTTP/1.1 error response whose body says why.
fn http_error(status: &str, why: &str) -> String {
    let body = format!("shoal gateway: {why}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Accepts connections on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, kind: Listener, shared: Arc<Shared>) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, listener = kind.as_str(), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut conn = conn;
            let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
                shared
                    .metrics
                    .connection(kind.as_str(), Closed::Overloaded.outcome());
                tracing::warn!(%peer, "closed: too many open connections");
                drop(conn);
                return;
            };
            shared.metrics.active.inc();
            match handle(&mut conn, kind, &shared).await {
                Ok((host, up, down)) => {
                    shared.metrics.connection(kind.as_str(), "proxied");
                    shared.metrics.bytes_in.inc_by(up);
                    shared.metrics.bytes_out.inc_by(down);
                    tracing::debug!(%peer, %host, up, down, "connection done");
                }
                Err(closed) => {
                    if let (Listener::Http, Some(status)) = (kind, closed.http_status()) {
                        // A plain HTTP client gets a status line saying why.
                        let reply = http_error(status, &closed.why());
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            conn.write_all(reply.as_bytes()),
                        )
                        .await;
                    }
                    shared.metrics.connection(kind.as_str(), closed.outcome());
                    tracing::info!(%peer, listener = kind.as_str(), outcome = closed.outcome(), why = %closed.why(), "connection closed");
                }
            }
            shared.metrics.active.dec();
            drop(permit);
        });
    }
}

/// Reads until the first bytes name a host.
async fn read_name(
    conn: &mut TcpStream,
    kind: Listener,
    buf: &mut Vec<u8>,
) -> Result<String, Closed> {
    let max = match kind {
        Listener::Tls => MAX_HELLO,
        Listener::Http => MAX_HEAD,
    };
    let mut chunk = vec![0u8; 4096];
    loop {
        if !buf.is_empty() {
            match kind {
                Listener::Tls => match hello::parse(buf) {
                    Hello::Incomplete => {}
                    Hello::Sni(name) => return Ok(name),
                    Hello::NoSni => return Err(Closed::NoSni),
                    Hello::NotTls(why) => return Err(Closed::NotTls(why)),
                },
                Listener::Http => match host_header::parse(buf) {
                    Head::Incomplete => {}
                    Head::Host(name) => return Ok(name),
                    Head::NoHost => return Err(Closed::NoHost),
                    Head::NotHttp(why) => return Err(Closed::NotHttp(why)),
                },
            }
        }
        let room = max.saturating_sub(buf.len()).min(chunk.len()).max(1);
        let n = conn
            .read(&mut chunk[..room])
            .await
            .map_err(|e| Closed::Io(format!("reading from the client: {e}")))?;
        if n == 0 {
            return Err(Closed::ClientLeft);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(
    conn: &mut TcpStream,
    kind: Listener,
    shared: &Shared,
) -> Result<(String, u64, u64), Closed> {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let name = tokio::time::timeout(shared.config.hello_timeout, read_name(conn, kind, &mut buf))
        .await
        .map_err(|_| Closed::HelloTimeout)??;
    let table = shared.table.borrow().clone();
    let (route, service) = table
        .lookup(&name, kind)
        .ok_or_else(|| Closed::UnknownHost(name.clone()))?;
    let all = route.backends(service);
    if all.is_empty() {
        return Err(Closed::NoBackend(name));
    }
    let mut backends: Vec<_> = all
        .iter()
        .filter(|b| shared.health.usable(b))
        .cloned()
        .collect();
    if backends.is_empty() {
        // Every backend failed its last check. Refusing would turn a slow service
        // (an API server on an emulated CPU whose /readyz misses the deadline) into
        // a dead one; a dead backend costs one failed dial instead.
        backends = all.to_vec();
        shared
            .metrics
            .all_down_attempts
            .get_or_create(&ServiceLabels {
                service: service.as_str().into(),
            })
            .inc();
    }
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    let mut failures = Vec::new();
    for i in 0..backends.len().min(shared.config.attempts.max(1)) {
        let b = &backends[(start + i) % backends.len()];
        let mut upstream = match dial(b, shared.config.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                // Passive health: stop sending new connections there until a check passes.
                if shared.health.set(b, State::Down) != State::Down {
                    tracing::warn!(backend = %b.machine, error = %e, "backend down");
                }
                shared
                    .metrics
                    .dial_failures
                    .get_or_create(&ServiceLabels {
                        service: service.as_str().into(),
                    })
                    .inc();
                failures.push(format!("{}: {e}", b.machine));
                continue;
            }
        };
        upstream
            .write_all(&buf)
            .await
            .map_err(|e| Closed::Io(format!("writing to {}: {e}", b.machine)))?;
        let up = buf.len() as u64;
        drop(buf);
        let (a, d) =
            tokio::io::copy_bidirectional_with_sizes(conn, &mut upstream, COPY_BUFFER, COPY_BUFFER)
                .await
                .map_err(|e| Closed::Io(format!("copying to {}: {e}", b.machine)))?;
        return Ok((name, up + a, d));
    }
    Err(Closed::BackendsFailed(format!(
        "no backend of {name} could be reached: {}",
        failures.join("; ")
    )))
}
