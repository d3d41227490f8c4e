//! Live migration through QMP. The target host starts the VM's QEMU paused
//! (`-incoming defer`), exports its empty disk overlay over NBD and listens for the
//! guest's state; the source mirrors its overlay into that export, then sends memory
//! and device state. Once QEMU reports `completed` the guest runs on the target and
//! the source's QEMU stays paused, to be quit. A failure before that leaves the guest
//! running on the source, as QEMU resumes it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::argv::DISK_NODE;
use super::qmp::{QmpClient, QmpError};

/// The block job that mirrors the disk to the target.
const MIRROR_JOB: &str = "migrate-disk0";

/// Where a send is, in words ("disk 12 of 40 MiB mirrored", "RAM 30 of 256 MiB
/// sent, 12 MiB to go"), for the Machine's `status.migration.progress`.
pub type ProgressTx = tokio::sync::watch::Sender<String>;

/// Where a target QEMU waits for a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// QEMU's migration address, `tcp:<ip>:<port>`.
    pub uri: String,
    /// The NBD export of the target's disk, `nbd://<ip>:<port>/disk0`, for VMs with one.
    pub disk: Option<String>,
}

/// How long a migration may take, and how fast it may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole migration's deadline.
    pub timeout: Duration,
    /// Bytes per second for the disk mirror and for memory; `None`: QEMU's defaults.
    pub max_bandwidth: Option<u64>,
}

/// What a completed migration cost, as the source QEMU reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// How long the guest was paused.
    pub downtime_ms: u64,
    /// The whole RAM phase.
    pub total_ms: u64,
    /// Bytes of RAM sent.
    pub transferred: u64,
    /// The guest's RAM size.
    pub ram_total: u64,
}

/// A migration that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Talking QMP failed.
    #[error("QMP")]
    Qmp(#[from] QmpError),
    /// QEMU reports the migration failed, with its reason.
    #[error("QEMU: {0}")]
    Failed(String),
    /// A step did not finish in time.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout {
        /// The step.
        what: &'static str,
        /// Its deadline.
        timeout: Duration,
    },
}

/// Prepares the paused target QEMU at `qmp` to receive: its disk (if `disk`) as a
/// writable NBD export on `addr:nbd_port`, and the migration stream on
/// `addr:migrate_port`.
pub async fn listen(
    qmp: &Path,
    addr: Ipv4Addr,
    migrate_port: u16,
    nbd_port: u16,
    disk: bool,
) -> Result<Incoming, MigrateError> {
    let mut q = QmpClient::connect(qmp).await?;
    let disk = if disk {
        q.execute(
            "nbd-server-start",
            Some(json!({"addr": {"type": "inet", "data": {
                "host": addr.to_string(), "port": nbd_port.to_string()}}})),
        )
        .await?;
        q.execute(
            "block-export-add",
            Some(
                json!({"type": "nbd", "id": DISK_NODE, "node-name": DISK_NODE,
                "writable": true}),
            ),
        )
        .await?;
        Some(format!("nbd://{addr}:{nbd_port}/{DISK_NODE}"))
    } else {
        None
    };
    let uri = format!("tcp:{addr}:{migrate_port}");
    q.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .await?;
    Ok(Incoming { uri, disk })
}

/// Sends the running VM at `qmp` to `to`: mirrors the disk first, then memory and
/// device state, within `timeout`. On any failure the mirror and the migration are
/// cancelled, so the guest runs on here.
pub async fn send(
    qmp: &Path,
    to: &Incoming,
    limits: Limits,
    progress: &ProgressTx,
) -> Result<Outcome, MigrateError> {
    let mut q = QmpClient::connect(qmp).await?;
    let steps = send_steps(&mut q, to, limits.max_bandwidth, progress);
    let result = match tokio::time::timeout(limits.timeout, steps).await {
        Ok(r) => r,
        Err(_) => Err(MigrateError::Timeout {
            what: "the live migration",
            timeout: limits.timeout,
        }),
    };
    if result.is_err() {
        // Best effort: the guest keeps running on the source either way.
        let _ = q.execute("migrate_cancel", None).await;
        if to.disk.is_some() {
            let _ = q
                .execute(
                    "block-job-cancel",
                    Some(json!({"device": MIRROR_JOB, "force": true})),
                )
                .await;
        }
    }
    result
}

/// Where an earlier send of this QEMU got to, for an agent that restarted while
/// QEMU carried on with it.
#[derive(Debug, Clone, PartialEq)]
enum Earlier {
    /// Nothing was sent, or the last attempt failed (the guest runs here).
    None,
    /// QEMU is still sending memory: wait for it.
    Sending,
    /// The guest already runs on the target; this QEMU is paused for good.
    Done(Outcome),
}

/// Reads the outgoing migration's state. A QEMU that once received its guest
/// reports that incoming migration as `completed` until it sends one, so only a
/// paused `postmigrate` QEMU counts as sent.
async fn earlier(q: &mut QmpClient) -> Result<Earlier, MigrateError> {
    let info = q.execute("query-migrate", None).await?;
    let run = q.query_status().await?;
    Ok(match info["status"].as_str().unwrap_or("none") {
        "completed" if run.status == "postmigrate" => Earlier::Done(outcome_of(&info)),
        "setup" | "active" | "pre-switchover" | "device" | "wait-unplug" => Earlier::Sending,
        _ => Earlier::None,
    })
}

/// Cancels a disk mirror left by an earlier attempt, and waits until it is gone.
async fn drop_stale_mirror(q: &mut QmpClient) -> Result<(), MigrateError> {
    for _ in 0..100 {
        let jobs = q.execute("query-block-jobs", None).await?;
        let present = jobs
            .as_array()
            .is_some_and(|a| a.iter().any(|j| j["device"] == MIRROR_JOB));
        if !present {
            return Ok(());
        }
        let _ = q
            .execute(
                "block-job-cancel",
                Some(json!({"device": MIRROR_JOB, "force": true})),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(MigrateError::Failed(
        "a disk mirror left by an earlier attempt did not end".into(),
    ))
}

async fn send_steps(
    q: &mut QmpClient,
    to: &Incoming,
    max_bandwidth: Option<u64>,
    progress: &ProgressTx,
) -> Result<Outcome, MigrateError> {
    match earlier(q).await? {
        Earlier::Done(outcome) => {
            let _ = drop_stale_mirror(q).await;
            return Ok(outcome);
        }
        Earlier::Sending => return finish_sending(q, to, progress).await,
        Earlier::None => {}
    }
    drop_stale_mirror(q).await?;
    // Without a limit QEMU's own default applies (128 MiB/s in QEMU 7.2).
    if let Some(bandwidth) = max_bandwidth {
        q.execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": bandwidth.max(1) })),
        )
        .await?;
    }
    if let Some(nbd) = &to.disk {
        let mut mirror = json!({"device": DISK_NODE, "job-id": MIRROR_JOB, "target": nbd,
            "sync": "top", "mode": "existing", "format": "raw"});
        if let Some(speed) = max_bandwidth {
            mirror["speed"] = json!(speed);
        }
        q.execute("drive-mirror", Some(mirror)).await?;
        loop {
            let jobs = q.execute("query-block-jobs", None).await?;
            let job = jobs
                .as_array()
                .and_then(|a| a.iter().find(|j| j["device"] == MIRROR_JOB))
                .cloned();
            match job {
                Some(j) if j["ready"] == true => break,
                Some(j) if j.get("error").is_some() => {
                    return Err(MigrateError::Failed(format!(
                        "mirroring the disk: {}",
                        j["error"].as_str().unwrap_or("unknown error")
                    )))
                }
                Some(j) => {
                    let n = |k: &str| j[k].as_u64().unwrap_or(0);
                    progress.send_replace(format!(
                        "disk {} of {} MiB mirrored",
                        mib(n("offset")),
                        mib(n("len"))
                    ));
                }
                None => {
                    return Err(MigrateError::Failed(
                        "the disk mirror ended before it was ready".into(),
                    ))
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    q.execute("migrate", Some(json!({ "uri": to.uri }))).await?;
    finish_sending(q, to, progress).await
}

/// Polls the outgoing migration until it completes or fails, then ends the mirror.
async fn finish_sending(
    q: &mut QmpClient,
    to: &Incoming,
    progress: &ProgressTx,
) -> Result<Outcome, MigrateError> {
    let outcome = loop {
        let info = q.execute("query-migrate", None).await?;
        match info["status"].as_str().unwrap_or("") {
            "completed" => break outcome_of(&info),
            "failed" | "cancelled" => {
                return Err(MigrateError::Failed(
                    info["error-desc"]
                        .as_str()
                        .unwrap_or("the migration failed")
                        .to_string(),
                ))
            }
            _ => {
                progress.send_replace(ram_progress(&info));
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    };
    if to.disk.is_some() {
        // The source is paused for good: end the mirror without switching to it.
        q.execute("block-job-cancel", Some(json!({ "device": MIRROR_JOB })))
            .await?;
    }
    Ok(outcome)
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// "RAM 30 of 256 MiB sent, 12 MiB to go", from `query-migrate`.
fn ram_progress(info: &Value) -> String {
    let n = |k: &str| mib(info["ram"][k].as_u64().unwrap_or(0));
    format!(
        "RAM {} of {} MiB sent, {} MiB to go",
        n("transferred"),
        n("total"),
        n("remaining")
    )
}

fn outcome_of(info: &Value) -> Outcome {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Outcome {
        downtime_ms: n(&info["downtime"]),
        total_ms: n(&info["total-time"]),
        transferred: n(&info["ram"]["transferred"]),
        ram_total: n(&info["ram"]["total"]),
    }
}

/// On the target after the guest arrived: ends the disk export and checks that the
/// guest runs.
pub async fn finish_incoming(qmp: &Path) -> Result<(), MigrateError> {
    let mut q = QmpClient::connect(qmp).await?;
    // Absent for VMs without a disk: nothing to end.
    let _ = q
        .execute("block-export-del", Some(json!({ "id": DISK_NODE })))
        .await;
    let _ = q.execute("nbd-server-stop", None).await;
    let status = q.query_status().await?;
    if status.running {
        Ok(())
    } else {
        Err(MigrateError::Failed(format!(
            "the guest arrived but does not run (QEMU state {})",
            status.status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_reads_qemus_figures() {
        let info = json!({"status": "completed", "downtime": 22, "total-time": 159,
            "ram": {"transferred": 24618617, "total": 268967936}});
        assert_eq!(
            outcome_of(&info),
            Outcome {
                downtime_ms: 22,
                total_ms: 159,
                transferred: 24_618_617,
                ram_total: 268_967_936
            }
        );
    }
}
