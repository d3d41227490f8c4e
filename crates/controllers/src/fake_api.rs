//! An in-memory API server for the reconcile unit tests: a `kube::Client` whose
//! requests are served from a map of objects by path and recorded in order, so a
//! test sets up a state, runs one reconcile and checks what it wrote.
//!
//! It keeps only what the reconciles need: create (with `generateName`), read,
//! list (every object under a collection; selectors are not applied), merge patch,
//! replace and delete, with `404` for a missing object and `409` for a name taken.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

use crate::context::{Context, ControllerConfig, Stores};

/// One request the controllers sent.
#[derive(Clone, Debug)]
pub struct Call {
    /// GET, POST, PATCH, PUT or DELETE.
    pub method: Method,
    /// The URL path, e.g. `/apis/shoal.io/v1alpha1/namespaces/org-x/machines`.
    pub path: String,
    /// The request body as JSON (`Null` when empty).
    pub body: Value,
}

/// The objects, by path, and the requests served so far.
#[derive(Default)]
pub struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    calls: Mutex<Vec<Call>>,
    next_uid: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `path` names a collection rather than one object.
fn is_collection(path: &str) -> bool {
    let rest: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match rest.first() {
        Some(&"api") => &rest[rest.len().min(2)..],
        _ => &rest[rest.len().min(3)..],
    };
    match rest.first() {
        Some(&"namespaces") => rest.len() == 3,
        _ => rest.len() == 1,
    }
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    let mut res = Response::new(Body::from(body.to_string().into_bytes()));
    *res.status_mut() = code;
    res
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": reason, "reason": reason, "code": code.as_u16(),
    });
    reply(code, &body)
}

/// RFC 7386 merge patch.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(target), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    target.remove(k);
                } else {
                    merge(target.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (target, p) => *target = p.clone(),
    }
}

impl FakeApi {
    /// A client served by this API, and the API to inspect.
    pub fn client() -> (Client, Arc<FakeApi>) {
        let api = Arc::new(FakeApi::default());
        let served = api.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = served.clone();
            async move { Ok::<_, Infallible>(api.serve(req).await) }
        });
        (Client::new(service, "default"), api)
    }

    /// Stores `obj` at `path` (the object's own URL path).
    pub fn put(&self, path: &str, obj: &impl k8s_openapi::serde::Serialize) {
        let value = serde_json::to_value(obj).expect("test objects serialise");
        lock(&self.objects).insert(path.to_owned(), value);
    }

    /// Whether an object is stored at `path`.
    pub fn has(&self, path: &str) -> bool {
        lock(&self.objects).contains_key(path)
    }

    /// The object stored at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        lock(&self.objects).get(path).cloned()
    }

    /// Every request served so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The requests with `method` whose path starts with `prefix`.
    pub fn calls_to(&self, method: &Method, prefix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path.starts_with(prefix))
            .collect()
    }

    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let path = parts.uri.path().to_owned();
        lock(&self.calls).push(Call {
            method: parts.method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        // A subresource (`/status`) is written to the object itself.
        let key = path.strip_suffix("/status").unwrap_or(&path).to_owned();
        let mut objects = lock(&self.objects);
        match parts.method {
            Method::GET => match objects.get(&key) {
                Some(obj) => reply(StatusCode::OK, obj),
                None if !is_collection(&key) => status(StatusCode::NOT_FOUND, "NotFound"),
                None => {
                    let prefix = format!("{key}/");
                    let items: Vec<&Value> = objects
                        .iter()
                        .filter(|(k, _)| {
                            k.strip_prefix(&prefix)
                                .is_some_and(|rest| !rest.contains('/'))
                        })
                        .map(|(_, v)| v)
                        .collect();
                    reply(
                        StatusCode::OK,
                        &json!({"kind": "List", "apiVersion": "v1",
                                "metadata": {"resourceVersion": "1"}, "items": items}),
                    )
                }
            },
            Method::POST => {
                let mut obj = body;
                let meta = &mut obj["metadata"];
                if meta["name"].is_null() {
                    let generated = format!(
                        "{}{}",
                        meta["generateName"].as_str().unwrap_or("obj-"),
                        objects.len()
                    );
                    meta["name"] = json!(generated);
                }
                let mut uid = lock(&self.next_uid);
                *uid += 1;
                meta["uid"] = json!(format!("uid-{uid}"));
                meta["resourceVersion"] = json!("1");
                let name = meta["name"].as_str().unwrap_or_default().to_owned();
                let at = format!("{key}/{name}");
                if objects.contains_key(&at) {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                objects.insert(at, obj.clone());
                reply(StatusCode::CREATED, &obj)
            }
            Method::PATCH => match objects.get_mut(&key) {
                Some(obj) => {
                    merge(obj, &body);
                    reply(StatusCode::OK, obj)
                }
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::PUT => {
                objects.insert(key, body.clone());
                reply(StatusCode::OK, &body)
            }
            Method::DELETE => match objects.remove(&key) {
                Some(obj) => reply(StatusCode::OK, &obj),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }
}

/// A read cache holding `objs`.
pub fn store<K>(objs: impl IntoIterator<Item = K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    let (store, mut writer) = reflector::store();
    for obj in objs {
        writer.apply_watcher_event(&watcher::Event::Apply(obj));
    }
    store
}

/// The caches a test starts from; empty unless set.
#[derive(Default)]
pub struct State {
    /// Clusters.
    pub clusters: Vec<shoal_api::Cluster>,
    /// Machines.
    pub machines: Vec<shoal_api::Machine>,
    /// Node pools.
    pub pools: Vec<shoal_api::NodePool>,
    /// Hosts.
    pub hosts: Vec<shoal_api::Host>,
    /// Releases.
    pub releases: Vec<shoal_api::Release>,
    /// Leases of the system namespace (IPAM claims).
    pub leases: Vec<k8s_openapi::api::coordination::v1::Lease>,
}

/// A controller context over a fake API and caches holding `state`.
pub fn context(state: State) -> (Arc<Context>, Arc<FakeApi>) {
    let (client, api) = FakeApi::client();
    let indexes = crate::context::Indexes::of(&state.machines, &state.pools, &state.leases);
    let stores = Stores {
        clusters: store(state.clusters),
        machines: store(state.machines),
        pools: store(state.pools),
        hosts: store(state.hosts),
        releases: store(state.releases),
        leases: store(state.leases),
        indexes,
    };
    let ctx = Context::new(client, ControllerConfig::default(), stores);
    (Arc::new(ctx), api)
}

/// A Cluster `org-x/a` on release `test` with one control-plane replica; with a
/// network when `allocated`.
pub fn cluster(allocated: bool) -> shoal_api::Cluster {
    let mut c: shoal_api::Cluster = serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "a", "namespace": "org-x", "uid": "cluster-uid",
                     "resourceVersion": "5"},
        "spec": {"release": "test", "provider": {"type": "kvm"},
                 "controlPlane": {"replicas": 1, "cpu": "1", "memory": "512Mi", "disk": "1Gi"},
                 "network": {"podCidr": "10.244.0.0/16", "serviceCidr": "10.96.0.0/12"}}
    }))
    .expect("a valid Cluster");
    if allocated {
        c.status = Some(shoal_api::ClusterStatus {
            vni: Some(1000),
            node_cidr: Some("10.128.0.0/24".into()),
            ..Default::default()
        });
    }
    c
}

/// The URL path of a shoal.io object in `ns`.
pub fn path(plural: &str, ns: &str, name: &str) -> String {
    format!("/apis/shoal.io/v1alpha1/namespaces/{ns}/{plural}/{name}")
}
