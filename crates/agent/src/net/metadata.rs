//! The NoCloud metadata service of the anycast gateway: HTTP on the gateway's IP,
//! port 80, one listener per cluster. A guest finds it through its SMBIOS serial
//! (`ds=nocloud-net;s=http://<gateway>/<machine>/`, see [`ClusterNet::seed_url`]) and
//! fetches `meta-data`, `user-data` and `vendor-data`; cloud-init's `phone_home`
//! module posts to `phone-home` once the guest is up.
//!
//! A machine's documents are served only to that machine's IP, so one guest cannot
//! read another's user-data (which carries its bootstrap secrets). Deciding what to
//! answer is plain functions ([`MetaTable::authorize`], [`MachineMeta::meta_data`]);
//! the handlers only map their results onto HTTP.
//!
//! [`ClusterNet::seed_url`]: super::plan::ClusterNet::seed_url

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, PoisonError, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::netns::{NetNs, NetnsError};

/// The largest phone-home body accepted; cloud-init's is a few kilobytes of keys.
pub const MAX_PHONE_HOME_BYTES: usize = 64 * 1024;

/// A metadata listener failure, naming the address.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The socket could not be created inside the agent's namespace.
    #[error("metadata listener on {addr}: {source}")]
    Netns {
        /// The address.
        addr: SocketAddrV4,
        /// The cause.
        #[source]
        source: NetnsError,
    },
    /// A socket operation failed (e.g. the gateway address is not on any bridge yet,
    /// or the port is taken).
    #[error("metadata listener on {addr}: {op}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddrV4,
        /// The operation, e.g. `bind`.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving stopped with an error.
    #[error("metadata service on {addr}: {source}")]
    Serve {
        /// The listener's address, if it could be read.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What the metadata service knows about one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineMeta {
    /// The only address this machine's documents are served to.
    pub ip: Ipv4Addr,
    /// NoCloud's `instance-id`; a new one makes cloud-init run again.
    pub instance_id: String,
    /// NoCloud's `local-hostname`.
    pub hostname: String,
    /// The `user-data` document, verbatim.
    pub user_data: String,
    /// The `vendor-data` document, verbatim.
    pub vendor_data: String,
}

/// cloud-init's attempts at phoning home.
const PHONE_HOME_TRIES: u32 = 10;

/// The `vendor-data` every guest gets: cloud-init's `phone_home` aimed at this
/// service (`<seed_url>phone-home`), so that any cloud-init image reports when it is
/// done without its user-data having to know where the agent listens. A user-data
/// `phone_home` replaces it. JSON is YAML, so the document is serialized, never
/// pasted together.
pub fn vendor_data_for(seed_url: &str) -> String {
    let doc = serde_json::json!({
        "phone_home": {
            "url": format!("{seed_url}phone-home"),
            "post": ["instance_id", "hostname"],
            "tries": PHONE_HOME_TRIES,
        }
    });
    format!("#cloud-config\n{doc}\n")
}

impl MachineMeta {
    /// The `meta-data` document (YAML).
    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            yaml_scalar(&self.instance_id),
            yaml_scalar(&self.hostname)
        )
    }
}

/// `s` as a YAML scalar that reads back as the same string: plain when it is a
/// harmless name, double-quoted (JSON is valid YAML) otherwise.
fn yaml_scalar(s: &str) -> String {
    let harmless = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if harmless {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// The machines of one cluster on this host, by Machine name; shared between the
/// agent, which updates it, and the cluster's metadata service.
#[derive(Debug, Clone, Default)]
pub struct MetaTable {
    inner: Arc<RwLock<HashMap<String, MachineMeta>>>,
}

impl MetaTable {
    /// Adds or replaces the metadata of `machine`.
    pub fn set(&self, machine: impl Into<String>, meta: MachineMeta) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(machine.into(), meta);
    }

    /// Removes the metadata of `machine`, returning it.
    pub fn remove(&self, machine: &str) -> Option<MachineMeta> {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(machine)
    }

    /// The metadata of `machine`.
    pub fn get(&self, machine: &str) -> Option<MachineMeta> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(machine)
            .cloned()
    }

    /// The metadata of `machine` if `peer` may have it: it must be the machine's IP.
    pub fn authorize(&self, machine: &str, peer: IpAddr) -> Result<MachineMeta, Refusal> {
        let meta = self
            .get(machine)
            .ok_or_else(|| Refusal::UnknownMachine(machine.to_string()))?;
        if peer.to_canonical() != IpAddr::V4(meta.ip) {
            return Err(Refusal::WrongPeer {
                machine: machine.to_string(),
                ip: meta.ip,
                peer,
            });
        }
        Ok(meta)
    }
}

/// Why a metadata request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No machine of that name in this cluster on this host.
    #[error("no machine {0} in this cluster on this host")]
    UnknownMachine(String),
    /// The request does not come from the machine's address.
    #[error("metadata of {machine} is served only to {ip}")]
    WrongPeer {
        /// The machine asked about.
        machine: String,
        /// Its address.
        ip: Ipv4Addr,
        /// Who asked.
        peer: IpAddr,
    },
    /// The phone-home could not be handed to the agent.
    #[error("the agent is not receiving phone-home calls right now; retry")]
    NotListening,
    /// The agent's queue of phone-homes is full; this one was shed (counted).
    #[error("the agent has too many phone-home calls queued; retry shortly")]
    Busy,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match &self {
            Refusal::UnknownMachine(_) => StatusCode::NOT_FOUND,
            Refusal::WrongPeer { .. } => StatusCode::FORBIDDEN,
            Refusal::NotListening | Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// A guest's phone-home call: cloud-init is done on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneHome {
    /// The cluster, `<namespace>/<cluster>`.
    pub cluster: String,
    /// The Machine.
    pub machine: String,
    /// When the call arrived.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The posted fields (`instance_id`, `hostname`, `fqdn`, `pub_key_*`). A body
    /// that is not a form is kept whole under `body`.
    pub fields: BTreeMap<String, String>,
}

/// Where the metadata services hand phone-homes to the agent: a bounded queue.
/// When it is full a phone-home is shed, counted, and answered 503, and the
/// guest retries (cloud-init and `shoal guest` both do), so a burst of guests
/// cannot grow the agent's memory without bound.
#[derive(Clone, Debug)]
pub struct PhoneHomeSender {
    tx: mpsc::Sender<PhoneHome>,
    shed: Counter,
}

impl PhoneHomeSender {
    /// A queue of `capacity` phone-homes; `shed` counts those dropped when it is full.
    pub fn channel(capacity: usize, shed: Counter) -> (Self, mpsc::Receiver<PhoneHome>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx, shed }, rx)
    }

    /// Queues `call` without waiting.
    pub fn send(&self, call: PhoneHome) -> Result<(), Refusal> {
        match self.tx.try_send(call) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(call)) => {
                self.shed.inc();
                tracing::warn!(cluster = %call.cluster, machine = %call.machine,
                    "phone-home queue full; shed (the guest retries)");
                Err(Refusal::Busy)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refusal::NotListening),
        }
    }
}

#[derive(Clone)]
struct Shared {
    cluster: Arc<str>,
    table: MetaTable,
    phone_home: PhoneHomeSender,
}

/// The NoCloud service of one cluster. It needs the peer address, so serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` (as [`serve`] does).
pub fn router(cluster: String, table: MetaTable, phone_home: PhoneHomeSender) -> Router {
    let shared = Shared {
        cluster: cluster.into(),
        table,
        phone_home,
    };
    Router::new()
        .route("/{machine}/meta-data", get(meta_data))
        .route("/{machine}/user-data", get(user_data))
        .route("/{machine}/vendor-data", get(vendor_data))
        .route(
            "/{machine}/phone-home",
            post(receive_phone_home).layer(DefaultBodyLimit::max(MAX_PHONE_HOME_BYTES)),
        )
        .fallback(not_found)
        .with_state(shared)
}

fn document(
    shared: &Shared,
    machine: &str,
    peer: SocketAddr,
    name: &str,
    render: impl FnOnce(MachineMeta) -> String,
) -> Result<String, Refusal> {
    match shared.table.authorize(machine, peer.ip()) {
        Ok(meta) => {
            tracing::debug!(cluster = %shared.cluster, machine, %peer, document = name,
                "serving metadata");
            Ok(render(meta))
        }
        Err(refusal) => {
            tracing::info!(cluster = %shared.cluster, machine, %peer, document = name,
                reason = %refusal, "metadata refused");
            Err(refusal)
        }
    }
}

async fn meta_data(
    State(shared): State<Shared>,
    Path(machine): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<String, Refusal> {
    document(&shared, &machine, peer, "meta-data", |m| m.meta_data())
}

async fn user_data(
    State(shared): State<Shared>,
    Path(machine): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<String, Refusal> {
    document(&shared, &machine, peer, "user-data", |m| m.user_data)
}

async fn vendor_data(
    State(shared): State<Shared>,
    Path(machine): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<String, Refusal> {
    document(&shared, &machine, peer, "vendor-data", |m| m.vendor_data)
}

async fn receive_phone_home(
    State(shared): State<Shared>,
    Path(machine): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<&'static str, Refusal> {
    document(&shared, &machine, peer, "phone-home", |_| String::new())?;
    let fields = fields(headers.get(header::CONTENT_TYPE), body).await;
    tracing::info!(cluster = %shared.cluster, machine, %peer,
        instance_id = fields.get("instance_id").map(String::as_str), "phone-home");
    let call = PhoneHome {
        cluster: shared.cluster.to_string(),
        machine,
        at: chrono::Utc::now(),
        fields,
    };
    shared.phone_home.send(call)?;
    Ok("ok\n")
}

/// The fields of a phone-home body: form-urlencoded (cloud-init's), parsed by axum's
/// form parser, when it says so or says nothing; any other body whole, under `body`.
async fn fields(content_type: Option<&HeaderValue>, body: Bytes) -> BTreeMap<String, String> {
    const FORM: &str = "application/x-www-form-urlencoded";
    let whole = |body: &Bytes| {
        BTreeMap::from([(
            "body".to_string(),
            String::from_utf8_lossy(body).into_owned(),
        )])
    };
    let is_form = content_type.is_none_or(|v| {
        v.to_str()
            .is_ok_and(|v| v.trim_start().to_ascii_lowercase().starts_with(FORM))
    });
    if !is_form {
        return whole(&body);
    }
    let mut req = Request::new(Body::from(body.clone()));
    *req.method_mut() = Method::POST;
    req.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FORM));
    match Form::<BTreeMap<String, String>>::from_request(req, &()).await {
        Ok(Form(fields)) => fields,
        Err(_) => whole(&body),
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "no such metadata path; use /<machine>/meta-data, user-data, vendor-data or phone-home\n",
    )
}

/// A TCP listener on `addr` (the cluster's gateway, port 80), created inside
/// `netns`, nonblocking. The address must already be on the cluster's bridge.
pub fn bind(netns: &NetNs, addr: SocketAddrV4) -> Result<std::net::TcpListener, MetadataError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |op: &'static str| move |source| MetadataError::Socket { addr, op, source };
    netns
        .run(|| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
                .map_err(fail("socket"))?;
            // An agent restarting must not wait out TIME_WAIT.
            socket
                .set_reuse_address(true)
                .map_err(fail("SO_REUSEADDR"))?;
            socket
                .bind(&addr.into())
                .map_err(fail("bind (is the gateway address on the bridge?)"))?;
            socket.listen(1024).map_err(fail("listen"))?;
            socket.set_nonblocking(true).map_err(fail("O_NONBLOCK"))?;
            Ok(socket.into())
        })
        .map_err(|source| MetadataError::Netns { addr, source })?
}

/// Serves `router` (from [`router`]) on `listener` until `shutdown` completes, then
/// lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetadataError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(%addr, "metadata service started");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(|source| MetadataError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    const M1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

    #[test]
    fn vendor_data_phones_home_to_this_service() {
        let doc = vendor_data_for("http://10.77.0.1/m1/");
        let body = doc.strip_prefix("#cloud-config\n").expect("a cloud-config");
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON, which is YAML");
        assert_eq!(v["phone_home"]["url"], "http://10.77.0.1/m1/phone-home");
        assert_eq!(
            v["phone_home"]["post"],
            serde_json::json!(["instance_id", "hostname"])
        );
        assert_eq!(v["phone_home"]["tries"], 10);
    }

    fn table() -> MetaTable {
        let t = MetaTable::default();
        t.set(
            "m1",
            MachineMeta {
                ip: M1,
                instance_id: "i-m1-1".into(),
                hostname: "m1".into(),
                user_data: "#cloud-config\nhostname: m1\n".into(),
                vendor_data: "#cloud-config\n{}\n".into(),
            },
        );
        t
    }

    async fn call(
        app: &Router,
        method: Method,
        uri: &str,
        from: Ipv4Addr,
        body: &'static [u8],
    ) -> (StatusCode, String) {
        call_typed(app, method, uri, from, None, body).await
    }

    async fn call_typed(
        app: &Router,
        method: Method,
        uri: &str,
        from: Ipv4Addr,
        content_type: Option<&'static str>,
        body: &'static [u8],
    ) -> (StatusCode, String) {
        let mut req = Request::new(Body::from(body));
        if let Some(t) = content_type {
            req.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
        }
        *req.method_mut() = method;
        *req.uri_mut() = uri.parse().expect("valid uri");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((from, 40000))));
        let res = app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn serves_documents_to_their_machine_only() {
        let (tx, _rx) = PhoneHomeSender::channel(8, Counter::default());
        let app = router("org-t/c".into(), table(), tx);
        let (s, body) = call(&app, Method::GET, "/m1/meta-data", M1, b"").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, "instance-id: i-m1-1\nlocal-hostname: m1\n");
        let (s, body) = call(&app, Method::GET, "/m1/user-data", M1, b"").await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::OK, "#cloud-config\nhostname: m1\n")
        );
        let (s, body) = call(&app, Method::GET, "/m1/vendor-data", M1, b"").await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "#cloud-config\n{}\n"));

        let other = Ipv4Addr::new(10, 77, 0, 11);
        for doc in ["meta-data", "user-data", "vendor-data"] {
            let (s, body) = call(&app, Method::GET, &format!("/m1/{doc}"), other, b"").await;
            assert_eq!(s, StatusCode::FORBIDDEN);
            assert_eq!(body, "metadata of m1 is served only to 10.77.0.10\n");
        }
        let (s, body) = call(&app, Method::GET, "/nope/meta-data", M1, b"").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(body.contains("no machine nope"), "{body}");
        for path in ["/", "/m1", "/m1/", "/m1/network-config", "/m1/meta-data/x"] {
            let (s, _) = call(&app, Method::GET, path, M1, b"").await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn a_full_phone_home_queue_sheds_counts_and_asks_to_retry() {
        let shed = Counter::default();
        let (tx, mut rx) = PhoneHomeSender::channel(1, shed.clone());
        let app = router("org-t/c".into(), table(), tx);
        let body = b"instance_id=i-m1-1";
        let (s, _) = call(&app, Method::POST, "/m1/phone-home", M1, body).await;
        assert_eq!(s, StatusCode::OK);
        let (s, text) = call(&app, Method::POST, "/m1/phone-home", M1, body).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("retry"), "{text}");
        assert_eq!(shed.get(), 1);
        // Drained, it takes the guest's retry.
        assert!(rx.try_recv().is_ok());
        let (s, _) = call(&app, Method::POST, "/m1/phone-home", M1, body).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(shed.get(), 1);
        drop(rx);
        let (s, _) = call(&app, Method::POST, "/m1/phone-home", M1, body).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "nobody listens");
    }

    #[tokio::test]
    async fn phone_home_reaches_the_agent() {
        let (tx, mut rx) = PhoneHomeSender::channel(8, Counter::default());
        let app = router("org-t/c".into(), table(), tx);
        let (s, _) = call(
            &app,
            Method::POST,
            "/m1/phone-home",
            M1,
            b"instance_id=i-m1-1&hostname=m1&pub_key_ed25519=ssh-ed25519+AAAA%2Bx",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let got = rx.try_recv().expect("a phone-home");
        assert_eq!(
            (got.cluster.as_str(), got.machine.as_str()),
            ("org-t/c", "m1")
        );
        assert_eq!(got.fields["instance_id"], "i-m1-1");
        assert_eq!(got.fields["pub_key_ed25519"], "ssh-ed25519 AAAA+x");

        // Not a form: kept whole.
        let (s, _) = call_typed(
            &app,
            Method::POST,
            "/m1/phone-home",
            M1,
            Some("application/json"),
            b"{\"up\": true}",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            rx.try_recv().expect("a phone-home").fields,
            BTreeMap::from([("body".to_string(), "{\"up\": true}".to_string())])
        );
        // A form that says so, with a charset.
        let (s, _) = call_typed(
            &app,
            Method::POST,
            "/m1/phone-home",
            M1,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"hostname=m1",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            rx.try_recv().expect("a phone-home").fields["hostname"],
            "m1"
        );

        // From the wrong address, or for an unknown machine: refused, not delivered.
        let other = Ipv4Addr::new(10, 77, 0, 11);
        let (s, _) = call(&app, Method::POST, "/m1/phone-home", other, b"a=b").await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call(&app, Method::POST, "/nope/phone-home", M1, b"a=b").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(rx.try_recv().is_err());

        // Too large.
        static BIG: [u8; MAX_PHONE_HOME_BYTES + 1] = [b'a'; MAX_PHONE_HOME_BYTES + 1];
        let (s, _) = call(&app, Method::POST, "/m1/phone-home", M1, &BIG).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

        // Nobody listening: the guest is told to retry.
        drop(rx);
        let (s, _) = call(&app, Method::POST, "/m1/phone-home", M1, b"a=b").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn meta_data_quotes_what_yaml_would_misread() {
        let mut m = table().get("m1").expect("m1");
        m.instance_id = "123".into();
        m.hostname = "yes".into();
        assert_eq!(
            m.meta_data(),
            "instance-id: \"123\"\nlocal-hostname: \"yes\"\n"
        );
        m.instance_id = "a: b\n".into();
        m.hostname = "node-1.example".into();
        assert_eq!(
            m.meta_data(),
            "instance-id: \"a: b\\n\"\nlocal-hostname: node-1.example\n"
        );
    }

    #[test]
    fn table_updates_take_effect() {
        let t = table();
        let peer = IpAddr::V4(M1);
        assert!(t.authorize("m1", peer).is_ok());
        assert!(t.remove("m1").is_some());
        assert_eq!(
            t.authorize("m1", peer),
            Err(Refusal::UnknownMachine("m1".into()))
        );
    }
}
