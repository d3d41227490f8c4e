//! The redb backend against the conformance suite, restarts and `kill -9`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shoal_store::redb::RedbStore;
use shoal_store::{conformance, EventKind, Store, StoreError};

/// Set (to a database path) only in the child process of the durability test.
const CHILD_DB_ENV: &str = "SHOAL_STORE_TEST_CHILD_DB";
/// What the child prints for each acknowledged create: the key, then the value.
const ACK: &str = "ACKED";
/// How many acknowledged creates the parent waits for before killing the child.
const ACKS_BEFORE_KILL: usize = 300;

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let next = AtomicUsize::new(0);
    conformance::run_all(|| {
        let path = root.path().join(format!(
            "check-{}.redb",
            next.fetch_add(1, Ordering::Relaxed)
        ));
        async move { RedbStore::open(path).expect("open a fresh store") }
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revisions_and_history() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let store = RedbStore::open(&path)?;
    let mut history = Vec::new();
    for i in 0..20 {
        let kv = store
            .create(&format!("r/{i:02}"), Bytes::from(format!("v{i}")))
            .await?;
        history.push(kv.mod_revision);
    }
    let updated = store.update("r/05", Bytes::from("new"), history[5]).await?;
    let (_, deleted) = store.delete("r/06", None).await?;
    store.compact(history[3]).await?;
    let revision = store.current_revision().await?;
    assert_eq!(revision, deleted);
    drop(store);

    let store = RedbStore::open(&path)?;
    assert_eq!(store.current_revision().await?, revision);
    assert_eq!(store.compacted_revision().await?, history[3]);
    assert_eq!(store.get("r/05").await?, Some(updated.clone()));
    assert_eq!(store.get("r/06").await?, None);
    assert_eq!(
        store.get("r/19").await?.map(|kv| kv.value),
        Some(Bytes::from("v19"))
    );
    assert!(matches!(
        store.watch("r/", history[2]).await,
        Err(StoreError::Compacted { .. })
    ));

    // Resume a watch from a revision written before the restart.
    let mut stream = store.watch("r/", history[17]).await?;
    let mut replayed = Vec::new();
    for _ in 0..4 {
        let e = next(&mut stream).await?;
        replayed.push((e.kind, e.revision));
    }
    assert_eq!(
        replayed,
        [
            (EventKind::Put, history[18]),
            (EventKind::Put, history[19]),
            (EventKind::Put, updated.mod_revision),
            (EventKind::Delete, deleted),
        ]
    );
    let fresh = store.create("r/new", Bytes::from("x")).await?;
    assert_eq!(fresh.mod_revision, revision + 1);
    assert_eq!(next(&mut stream).await?.kv, fresh);
    Ok(())
}

#[tokio::test]
async fn a_second_open_of_the_same_file_fails_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _first = RedbStore::open(db_path(&dir))?;
    match RedbStore::open(db_path(&dir)) {
        Err(StoreError::Backend(err)) => {
            assert!(err.to_string().contains("store.redb"), "{err}");
        }
        other => panic!("a second open must fail with Backend, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_end_with_closed_when_the_store_is_dropped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(db_path(&dir))?;
    let mut stream = store.watch("", 0).await?;
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await?;
    assert!(matches!(end, Some(Err(StoreError::Closed))), "{end:?}");
    assert!(stream.next().await.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_gets_lagged_and_ends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(RedbStore::open(db_path(&dir))?);
    let mut stream = store.watch("lag/", 0).await?;
    // Overflow the live buffer while nobody reads the stream.
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..shoal_store::redb::WATCH_BUFFER / 32 + 16 {
                    store.create(&format!("lag/{w}/{i}"), Bytes::new()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await?;
    assert!(
        matches!(first, Some(Err(StoreError::WatcherLagged))),
        "{first:?}"
    );
    assert!(stream.next().await.is_none(), "a lagged watch must end");
    Ok(())
}

async fn next(stream: &mut shoal_store::WatchStream) -> anyhow::Result<shoal_store::WatchEvent> {
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
    Ok(event)
}

/// The child half of `acknowledged_writes_survive_kill_9`: does nothing unless
/// started by it. Creates keys from several tasks forever and prints each one
/// only after `create` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() -> anyhow::Result<()> {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return Ok(());
    };
    let store = Arc::new(RedbStore::open(Path::new(&path))?);
    let deadline = Instant::now() + Duration::from_secs(120);
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                // The deadline only guards against a parent that died.
                while Instant::now() < deadline {
                    let key = format!("k/{task}/{i:06}");
                    let value = format!("value of {key}");
                    store.create(&key, Bytes::from(value.clone())).await?;
                    println!("{ACK} {key} {value}");
                    i += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = db_path(&dir);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");

    // Read every acknowledgement until the child's stdout closes, and report when
    // enough have arrived. The pipe stays open until the kill, so the child dies
    // by SIGKILL mid-write, not by a broken pipe.
    let (enough_tx, enough) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || -> anyhow::Result<BTreeMap<String, String>> {
        let mut acked = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            // libtest may print "test child_writer ... " on the same line first.
            if let Some(at) = line.find(ACK) {
                let (key, value) = line[at + ACK.len()..]
                    .trim_start()
                    .split_once(' ')
                    .ok_or_else(|| anyhow::anyhow!("bad acknowledgement line {line:?}"))?;
                acked.insert(key.to_owned(), value.to_owned());
                if acked.len() == ACKS_BEFORE_KILL {
                    let _ = enough_tx.send(());
                }
            }
        }
        Ok(acked)
    });
    let waited =
        tokio::task::spawn_blocking(move || enough.recv_timeout(Duration::from_secs(120))).await?;
    // Kill before looking at the result, so a failure never leaves the child running.
    child.kill()?;
    let status = child.wait()?;
    let acked = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    if waited.is_err() {
        anyhow::bail!(
            "the child acknowledged only {} writes before it stopped ({status})",
            acked.len()
        );
    }
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the child must die by SIGKILL, got {status}"
    );
    assert!(acked.len() >= ACKS_BEFORE_KILL);

    let store = RedbStore::open(&path)?;
    let mut missing = Vec::new();
    for (key, value) in &acked {
        match store.get(key).await? {
            Some(kv) if kv.value == value.as_bytes() => {}
            other => missing.push(format!("{key}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes were lost after kill -9, first: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    let revision = store.current_revision().await?;
    assert!(
        revision >= acked.len() as i64,
        "revision {revision} is below the {} acknowledged creates",
        acked.len()
    );
    // The history survived the crash as well.
    let mut stream = store.watch("k/", 0).await?;
    for _ in 0..acked.len() {
        next(&mut stream).await?;
    }
    Ok(())
}
