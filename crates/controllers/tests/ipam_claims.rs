//! Property test of [`Ipam::claim`] and [`Ipam::release`] under concurrency: several
//! controllers, each with its own cursor and a cache that may be stale, claim and
//! release slots at once against an API that creates a claim atomically (`409` when
//! the name exists), with the order in which their requests reach it generated.
//! No slot is ever held twice, and the controllers and the API agree on who holds
//! what.
//!
//! The API here is a small in-process stand-in for the Lease endpoints (create,
//! delete), since a property needs thousands of runs; the real API server's create
//! semantics are tested in its own crate.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use proptest::prelude::*;
use shoal_controllers::ipam::{Ipam, IpamConfig, IpamError, Owner};

/// The Lease claims the stand-in API holds, by name, and how long each request
/// waits (in scheduler turns) before it is served: the generated interleaving.
#[derive(Default)]
struct Api {
    leases: Mutex<BTreeMap<String, Vec<u8>>>,
    delays: Mutex<VecDeque<u8>>,
}

impl Api {
    fn leases(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slots(&self) -> BTreeSet<u32> {
        self.leases()
            .keys()
            .filter_map(|n| shoal_controllers::ipam::slot_of_claim(n))
            .collect()
    }
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": reason, "reason": reason, "code": code.as_u16(),
    });
    let mut res = Response::new(Body::from(body.to_string().into_bytes()));
    *res.status_mut() = code;
    res
}

async fn serve(api: Arc<Api>, req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let turns = api
        .delays
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
        .unwrap_or(0);
    for _ in 0..turns {
        tokio::task::yield_now().await;
    }
    let (parts, body) = req.into_parts();
    let body = body.collect_bytes().await.unwrap_or_default().to_vec();
    let path = parts.uri.path().to_string();
    Ok(match parts.method {
        Method::POST => {
            let lease: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let name = lease["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // Check and insert under one lock: creation is atomic, as in the API.
            match api.leases().entry(name) {
                Entry::Occupied(_) => status(StatusCode::CONFLICT, "AlreadyExists"),
                Entry::Vacant(slot) => {
                    slot.insert(body.clone());
                    let mut res = Response::new(Body::from(body));
                    *res.status_mut() = StatusCode::CREATED;
                    res
                }
            }
        }
        Method::DELETE => {
            let name = path.rsplit('/').next().unwrap_or_default();
            match api.leases().remove(name) {
                Some(body) => Response::new(Body::from(body)),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            }
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
    })
}

/// One batch of requests sent at once.
#[derive(Debug, Clone)]
enum Batch {
    /// Claims by these controllers; `stale` ones decide what is taken from the
    /// API's state before the previous batch.
    Claims(Vec<(usize, bool)>),
    /// Releases of held slots (indexes into those held).
    Releases(Vec<usize>),
}

fn batch(controllers: usize) -> impl Strategy<Value = Batch> {
    prop_oneof![
        3 => prop::collection::vec((0..controllers, any::<bool>()), 1..5).prop_map(Batch::Claims),
        1 => prop::collection::vec(any::<usize>(), 1..3).prop_map(Batch::Releases),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn concurrent_claims_never_share_a_slot(
        extra_bits in 0u8..=3,
        batches in prop::collection::vec(batch(3), 1..12),
        delays in prop::collection::vec(0u8..4, 0..64),
    ) {
        let config = IpamConfig {
            vni_base: 1000,
            node_pool: Ipv4Addr::new(10, 128, 0, 0),
            node_pool_prefix: 24 - extra_bits,
            node_prefix: 24,
        };
        let capacity = config.capacity();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let api = Arc::new(Api::default());
            *api.delays.lock().unwrap_or_else(PoisonError::into_inner) = delays.into();
            let ipams: Vec<Ipam> = (0..3)
                .map(|_| {
                    let api = api.clone();
                    let svc = tower::service_fn(move |req| serve(api.clone(), req));
                    Ipam::new(kube::Client::new(svc, "default"), config.clone())
                })
                .collect();
            // Who holds each slot, as the controllers were told.
            let mut held: BTreeMap<u32, String> = BTreeMap::new();
            let mut before = BTreeSet::new();
            let mut owners = 0;
            for b in batches {
                let now = api.slots();
                match b {
                    Batch::Claims(claims) => {
                        let uids: Vec<String> = claims.iter().map(|_| { owners += 1; format!("uid-{owners}") }).collect();
                        let futures = claims.iter().zip(&uids).map(|((c, stale), uid)| {
                            let view = if *stale { before.clone() } else { now.clone() };
                            let owner = Owner { namespace: "org-p", name: uid, uid };
                            let ipam = &ipams[*c];
                            async move { ipam.claim(owner, |s| view.contains(&s)).await }
                        });
                        let results = futures::future::join_all(futures).await;
                        let after = api.slots();
                        for ((result, uid), (_, stale)) in results.into_iter().zip(&uids).zip(&claims) {
                            match result {
                                Ok(a) => {
                                    prop_assert!(a.slot < capacity);
                                    prop_assert_eq!(&a, &config.allocation(a.slot));
                                    if let Some(other) = held.insert(a.slot, uid.clone()) {
                                        return Err(TestCaseError::fail(format!("slot {} given to {} and {}", a.slot, other, uid)));
                                    }
                                }
                                Err(IpamError::Exhausted { .. }) => {
                                    // Full, or every free slot looked taken in the cache used.
                                    let view = if *stale { &before } else { &now };
                                    prop_assert!(
                                        (0..capacity).all(|s| after.contains(&s) || view.contains(&s)),
                                        "exhausted with free slots: API {:?}, cache {:?}", after, view
                                    );
                                }
                                Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                            }
                        }
                    }
                    Batch::Releases(picks) => {
                        let slots: BTreeSet<u32> = picks
                            .iter()
                            .filter_map(|i| held.keys().nth(i % held.len().max(1)).copied())
                            .collect();
                        let futures = slots.iter().map(|s| ipams[*s as usize % 3].release(*s));
                        for r in futures::future::join_all(futures).await {
                            prop_assert!(r.is_ok(), "{:?}", r.err());
                        }
                        for s in &slots {
                            held.remove(s);
                        }
                        // Releasing a free slot again is fine.
                        for s in &slots {
                            prop_assert!(ipams[0].release(*s).await.is_ok());
                        }
                    }
                }
                // The controllers and the API agree on what is held.
                prop_assert_eq!(api.slots(), held.keys().copied().collect::<BTreeSet<_>>());
                before = now;
            }
            Ok(())
        })?;
    }
}
