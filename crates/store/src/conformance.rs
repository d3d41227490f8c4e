//! Checks every [`Store`] backend must pass, written once against the trait.
//!
//! Each check takes a fresh, empty store and panics with a message naming what
//! went wrong, so a backend's integration test runs them all with one call:
//!
//! ```text
//! shoal_store::conformance::run_all(|| async { MyStore::connect_fresh().await }).await;
//! ```
//!
//! Checks only assume what the trait promises: revisions are compared with the
//! revisions the store reported, never with fixed numbers, so a backend whose
//! counter does not start at zero passes too. Concurrent checks spawn tokio tasks
//! and are best run on a multi-threaded runtime.

use std::collections::BTreeSet;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    EventKind, KeyValue, RangeRequest, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// How long a check waits for one watch event before it declares the watch stuck.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check, each on a store freshly built by `make`.
pub async fn run_all<F, Fut, S>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Store,
{
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            tracing::info!(check = stringify!($check), "store conformance");
            $check(Arc::new(make().await)).await;
        )*};
    }
    run!(
        get_and_create,
        update_compare_and_swap,
        delete_with_and_without_expected,
        revisions_increase,
        range_prefix_isolation,
        range_paging,
        watch_history_then_live,
        watch_from_a_revision,
        watch_concurrent_writers,
        watch_many_watchers,
        watch_compacted,
        compaction_keeps_values,
        concurrent_compare_and_swap_race,
    );
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn page(prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> RangeRequest {
    RangeRequest {
        prefix: prefix.to_owned(),
        start_after: start_after.map(str::to_owned),
        limit: limit.map(|l| NonZeroUsize::new(l).expect("checks use non-zero limits")),
    }
}

async fn keys<S: Store + ?Sized>(store: &S, prefix: &str) -> Vec<String> {
    let resp = store
        .range(page(prefix, None, None))
        .await
        .expect("range succeeds");
    assert!(!resp.more, "an unlimited range of {prefix:?} reported more");
    resp.items.into_iter().map(|kv| kv.key).collect()
}

/// Waits for the next event of a watch; panics on an error, the end or a timeout.
async fn next_event(stream: &mut WatchStream, what: &str) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("{what}: watch failed: {err}"),
        Ok(None) => panic!("{what}: watch ended early"),
        Err(_) => panic!("{what}: no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts that nothing else is pending on a watch by writing `marker` (which must
/// match the watch's prefix) and expecting it as the very next event.
async fn expect_only_marker<S: Store + ?Sized>(store: &S, stream: &mut WatchStream, marker: &str) {
    let kv = store
        .create(marker, val("marker"))
        .await
        .expect("marker create succeeds");
    let event = next_event(stream, "marker").await;
    assert_eq!(
        (event.kv.key.as_str(), event.revision),
        (marker, kv.mod_revision),
        "the watch delivered an unexpected event before the marker write"
    );
}

/// A key is created once; `get` returns it; a second create is `AlreadyExists`.
pub async fn get_and_create<S: Store + ?Sized>(store: Arc<S>) {
    assert_eq!(store.get("missing").await.expect("get succeeds"), None);
    let before = store.current_revision().await.expect("revision");
    let kv = store.create("a", val("1")).await.expect("create succeeds");
    assert_eq!(kv.key, "a");
    assert_eq!(kv.value, val("1"));
    assert!(
        kv.mod_revision > before,
        "create did not take a new revision"
    );
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert_eq!(
        store.get("a").await.expect("get succeeds"),
        Some(kv.clone())
    );

    match store.create("a", val("2")).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "a"),
        other => panic!("second create of a key: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.get("a").await.expect("get succeeds"),
        Some(kv.clone())
    );
    assert_eq!(
        store.current_revision().await.expect("revision"),
        kv.mod_revision,
        "a refused create must not take a revision"
    );
    // Keys are exact: neither a prefix nor an extension of a key finds it.
    assert_eq!(store.get("").await.expect("get succeeds"), None);
    assert_eq!(store.get("ab").await.expect("get succeeds"), None);
}

/// Update succeeds with the current `mod_revision` and is a `Conflict` otherwise.
pub async fn update_compare_and_swap<S: Store + ?Sized>(store: Arc<S>) {
    let created = store.create("k", val("1")).await.expect("create succeeds");
    let updated = store
        .update("k", val("2"), created.mod_revision)
        .await
        .expect("update with the current revision succeeds");
    assert_eq!(updated.value, val("2"));
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(store.get("k").await.expect("get"), Some(updated.clone()));

    match store.update("k", val("3"), created.mod_revision).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "k");
            assert_eq!(expected, created.mod_revision);
            assert_eq!(actual, updated.mod_revision);
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("k").await.expect("get"), Some(updated.clone()));
    assert_eq!(
        store.current_revision().await.expect("revision"),
        updated.mod_revision,
        "a refused update must not take a revision"
    );

    match store.update("nope", val("x"), updated.mod_revision).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "nope"),
        other => panic!("update of a missing key: expected NotFound, got {other:?}"),
    }
    assert_eq!(store.get("nope").await.expect("get"), None);
}

/// Delete returns the last value and its own revision, checks `expected` when
/// given, and is `NotFound` for missing keys.
pub async fn delete_with_and_without_expected<S: Store + ?Sized>(store: Arc<S>) {
    let one = store.create("d/1", val("one")).await.expect("create");
    let (prev, rev) = store.delete("d/1", None).await.expect("delete succeeds");
    assert_eq!(prev, one, "delete returns the value the key held");
    assert!(rev > one.mod_revision);
    assert_eq!(store.current_revision().await.expect("revision"), rev);
    assert_eq!(store.get("d/1").await.expect("get"), None);
    match store.delete("d/1", None).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "d/1"),
        other => panic!("second delete: expected NotFound, got {other:?}"),
    }

    let two = store.create("d/2", val("a")).await.expect("create");
    let two = store
        .update("d/2", val("b"), two.mod_revision)
        .await
        .expect("update");
    match store.delete("d/2", Some(two.create_revision)).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "d/2");
            assert_eq!(expected, two.create_revision);
            assert_eq!(actual, two.mod_revision);
        }
        other => panic!("delete with a stale revision: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("d/2").await.expect("get"), Some(two.clone()));
    let (prev, rev) = store
        .delete("d/2", Some(two.mod_revision))
        .await
        .expect("delete with the current revision succeeds");
    assert_eq!(prev, two);
    assert!(rev > two.mod_revision);
    match store.delete("d/2", Some(two.mod_revision)).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "d/2"),
        other => panic!("delete of a deleted key: expected NotFound, got {other:?}"),
    }

    // A key created again after a delete starts a new life.
    let again = store.create("d/1", val("again")).await.expect("re-create");
    assert!(again.create_revision > rev);
    assert_eq!(again.create_revision, again.mod_revision);
}

/// Every successful write takes a new, higher revision; reads agree.
pub async fn revisions_increase<S: Store + ?Sized>(store: Arc<S>) {
    let mut last = store.current_revision().await.expect("revision");
    let mut step = |rev: Revision, what: &str| {
        assert!(rev > last, "{what}: revision {rev} is not above {last}");
        last = rev;
    };
    let a = store.create("r/a", val("1")).await.expect("create");
    step(a.mod_revision, "create r/a");
    let b = store.create("r/b", val("1")).await.expect("create");
    step(b.mod_revision, "create r/b");
    let mut a_now = a.clone();
    for i in 2..12 {
        a_now = store
            .update("r/a", val(&i.to_string()), a_now.mod_revision)
            .await
            .expect("update");
        step(a_now.mod_revision, "update r/a");
        assert_eq!(a_now.create_revision, a.create_revision);
        assert_eq!(
            store.current_revision().await.expect("revision"),
            a_now.mod_revision
        );
    }
    let (_, deleted) = store.delete("r/b", None).await.expect("delete");
    step(deleted, "delete r/b");
    let c = store.create("r/c", val("1")).await.expect("create");
    step(c.mod_revision, "create r/c");

    let resp = store.range(page("r/", None, None)).await.expect("range");
    assert_eq!(resp.items, vec![a_now, c.clone()]);
    assert!(resp.revision >= c.mod_revision);
    assert_eq!(
        store.current_revision().await.expect("revision"),
        c.mod_revision
    );
}

/// A prefix matches keys that start with it and nothing else.
pub async fn range_prefix_isolation<S: Store + ?Sized>(store: Arc<S>) {
    for key in ["a", "a/1", "a/2", "a/sub/3", "ab/1", "a0", "b/1", "a."] {
        store.create(key, val(key)).await.expect("create");
    }
    assert_eq!(keys(&*store, "a/").await, ["a/1", "a/2", "a/sub/3"]);
    assert_eq!(keys(&*store, "ab/").await, ["ab/1"]);
    assert_eq!(keys(&*store, "a/sub/").await, ["a/sub/3"]);
    assert_eq!(
        keys(&*store, "").await,
        ["a", "a.", "a/1", "a/2", "a/sub/3", "a0", "ab/1", "b/1"]
    );
    assert!(keys(&*store, "zzz/").await.is_empty());

    let resp = store.range(page("a/", None, None)).await.expect("range");
    assert!(resp.items.iter().all(|kv| kv.value == val(&kv.key)));
    let written = store.current_revision().await.expect("revision");
    assert!(resp.revision >= written);

    // A continue point before the prefix starts at the prefix; one past it ends it.
    let resp = store
        .range(page("a/", Some("0"), None))
        .await
        .expect("range");
    assert_eq!(resp.items.len(), 3);
    let resp = store
        .range(page("a/", Some("a/2"), None))
        .await
        .expect("range");
    let found: Vec<_> = resp.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(found, ["a/sub/3"]);
    let resp = store
        .range(page("a/", Some("a0"), None))
        .await
        .expect("range");
    assert!(resp.items.is_empty() && !resp.more);
}

/// Pages of `limit` keys after `start_after` walk a prefix exactly once, with
/// `more` true on every page but the last.
pub async fn range_paging<S: Store + ?Sized>(store: Arc<S>) {
    const COUNT: usize = 250;
    let mut written = Vec::with_capacity(COUNT);
    // Write in an order unlike key order, with neighbours outside the prefix.
    for i in (0..COUNT).rev() {
        let key = format!("page/{i:04}");
        written.push(
            store
                .create(&key, val(&i.to_string()))
                .await
                .expect("create"),
        );
    }
    for key in ["page", "page0", "pagd/x", "pagf/x", "page0/x"] {
        store.create(key, val("noise")).await.expect("create");
    }
    written.sort_by(|a, b| a.key.cmp(&b.key));

    for limit in [1, 7, 50, 249, 250, 251, 1000] {
        let mut seen: Vec<KeyValue> = Vec::new();
        let mut start_after: Option<String> = None;
        let mut pages = 0;
        loop {
            let resp = store
                .range(page("page/", start_after.as_deref(), Some(limit)))
                .await
                .expect("range");
            pages += 1;
            assert!(resp.items.len() <= limit, "page exceeds limit {limit}");
            let total = seen.len() + resp.items.len();
            assert_eq!(
                resp.more,
                total < COUNT,
                "limit {limit}, page {pages}: more={} after {total} of {COUNT} keys",
                resp.more
            );
            if resp.more {
                assert_eq!(resp.items.len(), limit, "a page before the last is full");
            }
            start_after = resp.items.last().map(|kv| kv.key.clone());
            seen.extend(resp.items);
            if !resp.more {
                break;
            }
            assert!(pages <= COUNT, "paging with limit {limit} does not end");
        }
        assert_eq!(seen, written, "paging with limit {limit}");
        assert_eq!(
            pages,
            COUNT.div_ceil(limit).max(1),
            "pages with limit {limit}"
        );
    }
    let all = store.range(page("page/", None, None)).await.expect("range");
    assert_eq!(all.items, written);
    assert!(!all.more);
}

/// A watch replays the history after its revision, then delivers live changes,
/// with deletes carrying the last value, all filtered by prefix.
pub async fn watch_history_then_live<S: Store + ?Sized>(store: Arc<S>) {
    let base = store.current_revision().await.expect("revision");
    let a1 = store.create("w/a", val("1")).await.expect("create");
    let a2 = store
        .update("w/a", val("2"), a1.mod_revision)
        .await
        .expect("update");
    store.create("x/other", val("o")).await.expect("create");
    store
        .create("w", val("not under w/"))
        .await
        .expect("create");
    let b1 = store.create("w/b", val("1")).await.expect("create");
    let (_, del_a) = store.delete("w/a", None).await.expect("delete");

    let mut stream = store.watch("w/", base).await.expect("watch");
    let e = next_event(&mut stream, "history 1").await;
    assert_eq!(
        e,
        WatchEvent {
            kind: EventKind::Put,
            revision: a1.mod_revision,
            kv: a1.clone(),
            prev: None
        }
    );
    let e = next_event(&mut stream, "history 2").await;
    assert_eq!(
        e,
        WatchEvent {
            kind: EventKind::Put,
            revision: a2.mod_revision,
            kv: a2.clone(),
            prev: Some(a1.clone())
        }
    );
    let e = next_event(&mut stream, "history 3").await;
    assert_eq!(
        (e.kind, e.revision, e.kv.clone()),
        (EventKind::Put, b1.mod_revision, b1.clone())
    );
    assert_eq!(e.prev, None);
    let e = next_event(&mut stream, "history 4").await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.revision, del_a);
    assert_eq!(e.kv, a2, "a delete event carries the last value");

    // Live changes, including one outside the prefix that must be skipped.
    store.create("x/other2", val("o")).await.expect("create");
    let c1 = store.create("w/c", val("1")).await.expect("create");
    let b2 = store
        .update("w/b", val("2"), b1.mod_revision)
        .await
        .expect("update");
    let (_, del_c) = store
        .delete("w/c", Some(c1.mod_revision))
        .await
        .expect("delete");
    let e = next_event(&mut stream, "live 1").await;
    assert_eq!(
        (e.kind, e.revision, e.kv),
        (EventKind::Put, c1.mod_revision, c1.clone())
    );
    let e = next_event(&mut stream, "live 2").await;
    assert_eq!(
        (e.kind, e.revision, e.kv),
        (EventKind::Put, b2.mod_revision, b2)
    );
    assert_eq!(e.prev, Some(b1));
    let e = next_event(&mut stream, "live 3").await;
    assert_eq!((e.kind, e.revision, e.kv), (EventKind::Delete, del_c, c1));
    expect_only_marker(&*store, &mut stream, "w/marker").await;
}

/// A watch starts strictly after its revision, also from the current one or a
/// future one.
pub async fn watch_from_a_revision<S: Store + ?Sized>(store: Arc<S>) {
    let mut revs = Vec::new();
    for i in 0..6 {
        let kv = store
            .create(&format!("f/{i}"), val("v"))
            .await
            .expect("create");
        revs.push(kv.mod_revision);
    }
    let mut stream = store.watch("f/", revs[2]).await.expect("watch");
    for (i, rev) in revs.iter().enumerate().skip(3) {
        let e = next_event(&mut stream, "replay").await;
        assert_eq!((e.revision, e.kv.key), (*rev, format!("f/{i}")));
    }
    expect_only_marker(&*store, &mut stream, "f/m1").await;

    let now = store.current_revision().await.expect("revision");
    let mut current = store.watch("f/", now).await.expect("watch");
    expect_only_marker(&*store, &mut current, "f/m2").await;

    // From a revision not reached yet: only changes after it arrive.
    let now = store.current_revision().await.expect("revision");
    let mut future = store.watch("f/", now + 2).await.expect("watch");
    store.create("f/skip1", val("v")).await.expect("create");
    store.create("f/skip2", val("v")).await.expect("create");
    expect_only_marker(&*store, &mut future, "f/m3").await;
}

/// Four writers race while watches start before, during and in the middle of the
/// history: every watch sees every acknowledged write under its prefix exactly
/// once, in revision order.
pub async fn watch_concurrent_writers<S: Store + ?Sized>(store: Arc<S>) {
    const WRITERS: usize = 4;
    const WRITES: usize = 200;
    let base = store.current_revision().await.expect("revision");
    let early = store.watch("cw/", base).await.expect("watch");

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let progress_tx = progress_tx.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::with_capacity(WRITES);
            // Each key is created, then updated: WRITES writes per writer.
            for i in 0..WRITES / 2 {
                let key = format!("cw/{w}/{i:03}");
                let kv = store.create(&key, val("c")).await.expect("create");
                acked.push((kv.mod_revision, key.clone()));
                progress_tx.send_modify(|n| *n += 1);
                // Writes outside the prefix interleave and must not show up.
                store
                    .create(&format!("cx/{w}/{i}"), val("x"))
                    .await
                    .expect("create");
                let kv = store
                    .update(&key, val("u"), kv.mod_revision)
                    .await
                    .expect("update");
                acked.push((kv.mod_revision, key));
                progress_tx.send_modify(|n| *n += 1);
            }
            acked
        }));
    }
    // Start more watches mid-flight: one replaying from the start, one from "now".
    progress
        .wait_for(|n| *n >= WRITERS * WRITES / 4)
        .await
        .expect("writers report progress");
    let replaying = store.watch("cw/", base).await.expect("watch");
    let middle = store.current_revision().await.expect("revision");
    let midway = store.watch("cw/", middle).await.expect("watch");

    let mut acked = BTreeSet::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer task"));
    }
    assert_eq!(acked.len(), WRITERS * WRITES, "revisions must be unique");
    // A write after all the others, so each watch must also get past the race.
    let last = store.create("cw/last", val("l")).await.expect("create");
    acked.insert((last.mod_revision, last.key));

    let mut streams = Vec::new();
    for (name, mut stream, after) in [
        ("early", early, base),
        ("replaying", replaying, base),
        ("midway", midway, middle),
    ] {
        let expected: Vec<_> = acked
            .iter()
            .filter(|(rev, _)| *rev > after)
            .cloned()
            .collect();
        let mut seen = Vec::with_capacity(expected.len());
        for _ in 0..expected.len() {
            let e = next_event(&mut stream, name).await;
            seen.push((e.revision, e.kv.key));
        }
        assert!(
            seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{name} watch: revisions out of order"
        );
        assert_eq!(
            seen, expected,
            "{name} watch: events differ from acknowledged writes"
        );
        streams.push((name, stream));
    }
    // Nothing (no duplicate) may be pending behind the expected events.
    let marker = store.create("cw/marker", val("m")).await.expect("create");
    for (name, mut stream) in streams {
        let e = next_event(&mut stream, name).await;
        assert_eq!(
            (e.revision, e.kv.key),
            (marker.mod_revision, marker.key.clone()),
            "{name} watch: unexpected event after the acknowledged writes"
        );
    }
}

/// A thousand concurrent watches on one store each get every event.
pub async fn watch_many_watchers<S: Store + ?Sized>(store: Arc<S>) {
    const WATCHERS: usize = 1000;
    const EVENTS: usize = 10;
    let base = store.current_revision().await.expect("revision");
    let mut streams = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        let prefix = if i % 2 == 0 { "mw/even/" } else { "mw/" };
        streams.push(store.watch(prefix, base).await.expect("watch"));
    }
    let mut expected = Vec::new();
    for i in 0..EVENTS {
        let kv = store
            .create(&format!("mw/even/{i}"), val("v"))
            .await
            .expect("create");
        expected.push(kv.mod_revision);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(EVENTS);
                for _ in 0..EVENTS {
                    seen.push(
                        next_event(&mut stream, "one of many watchers")
                            .await
                            .revision,
                    );
                }
                seen
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.expect("watcher task"), expected);
    }
}

/// Compaction records its point, refuses watches from before it, serves watches
/// from it, and never moves backwards.
pub async fn watch_compacted<S: Store + ?Sized>(store: Arc<S>) {
    let mut revs = Vec::new();
    for i in 0..10 {
        let kv = store
            .create(&format!("wc/{i}"), val("v"))
            .await
            .expect("create");
        revs.push(kv.mod_revision);
    }
    let point = revs[4];
    store.compact(point).await.expect("compact");
    assert_eq!(store.compacted_revision().await.expect("compacted"), point);

    for (prefix, after) in [("wc/", revs[2]), ("", point - 1)] {
        match store.watch(prefix, after).await {
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                assert_eq!(requested, after);
                assert_eq!(compacted, point);
            }
            Err(other) => panic!("watch from compacted {after}: expected Compacted, got {other}"),
            Ok(_) => panic!("watch from compacted revision {after} must fail"),
        }
    }

    let mut stream = store
        .watch("wc/", point)
        .await
        .expect("watch from the point");
    for rev in &revs[5..] {
        assert_eq!(
            next_event(&mut stream, "after compaction").await.revision,
            *rev
        );
    }
    expect_only_marker(&*store, &mut stream, "wc/marker").await;

    store
        .compact(revs[1])
        .await
        .expect("compacting below the point is allowed");
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        point,
        "the compaction point must not move backwards"
    );
}

/// Compaction keeps every current value, and the store stays fully usable.
pub async fn compaction_keeps_values<S: Store + ?Sized>(store: Arc<S>) {
    let mut live = Vec::new();
    for i in 0..5 {
        live.push(
            store
                .create(&format!("cv/{i}"), val("v1"))
                .await
                .expect("create"),
        );
    }
    live[2] = store
        .update("cv/2", val("v2"), live[2].mod_revision)
        .await
        .expect("update");
    store.delete("cv/3", None).await.expect("delete");
    live.remove(3);
    let now = store.current_revision().await.expect("revision");
    store.compact(now).await.expect("compact");
    assert_eq!(store.compacted_revision().await.expect("compacted"), now);
    assert_eq!(store.current_revision().await.expect("revision"), now);

    let resp = store.range(page("cv/", None, None)).await.expect("range");
    assert_eq!(resp.items, live, "compaction changed current values");
    for kv in &live {
        assert_eq!(store.get(&kv.key).await.expect("get").as_ref(), Some(kv));
    }
    assert_eq!(store.get("cv/3").await.expect("get"), None);

    let mut stream = store.watch("cv/", now).await.expect("watch from the point");
    let updated = store
        .update("cv/2", val("v3"), live[2].mod_revision)
        .await
        .expect("update after compaction");
    assert!(updated.mod_revision > now);
    assert_eq!(updated.create_revision, live[2].create_revision);
    let e = next_event(&mut stream, "after compaction").await;
    assert_eq!((e.revision, e.kv), (updated.mod_revision, updated.clone()));
    assert_eq!(e.prev, Some(live[2].clone()));
    match store.create("cv/0", val("again")).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("create after compaction: expected AlreadyExists, got {other:?}"),
    }
}

/// Racing writers with the same expectation: exactly one wins, the others get
/// `Conflict` (or `AlreadyExists`, `NotFound`) naming the winner's revision.
pub async fn concurrent_compare_and_swap_race<S: Store + ?Sized>(store: Arc<S>) {
    const RACERS: usize = 16;
    let start = store.create("race", val("start")).await.expect("create");

    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update("race", val(&i.to_string()), start.mod_revision)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.expect("racer task") {
            Ok(kv) => winners.push(kv),
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => losers.push((expected, actual)),
            Err(other) => panic!("update race: unexpected error {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racing update must win");
    let winner = &winners[0];
    assert_eq!(losers.len(), RACERS - 1);
    for (expected, actual) in losers {
        assert_eq!(expected, start.mod_revision);
        assert_eq!(actual, winner.mod_revision);
    }
    assert_eq!(store.get("race").await.expect("get").as_ref(), Some(winner));

    let creates: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create("race/new", val(&i.to_string())).await })
        })
        .collect();
    let mut created = 0;
    for task in creates {
        match task.await.expect("racer task") {
            Ok(_) => created += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(other) => panic!("create race: unexpected error {other}"),
        }
    }
    assert_eq!(created, 1, "exactly one racing create must win");

    let deletes: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = store.clone();
            let expected = winner.mod_revision;
            tokio::spawn(async move { store.delete("race", Some(expected)).await })
        })
        .collect();
    let mut deleted = 0;
    for task in deletes {
        match task.await.expect("racer task") {
            Ok(_) => deleted += 1,
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(other) => panic!("delete race: unexpected error {other}"),
        }
    }
    assert_eq!(deleted, 1, "exactly one racing delete must win");
    assert_eq!(store.get("race").await.expect("get"), None);
}
