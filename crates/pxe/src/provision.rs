//! Provisioning driven from the API: BareMetalMachines with a BMC are set to boot
//! from PXE and powered on through Redfish, and a machine that does not phone home
//! in time is marked ProvisioningTimeout.
//!
//! A machine with `spec.bmc` is powered on when it has no state yet (it was just
//! registered). Its `shoal.io/bmc-request` annotation asks for more: each new
//! value is acted on once, `reprovision@<time>` by booting it from PXE again and
//! `deprovision@<time>` by powering it off. Its `BmcReady` condition says whether
//! the BMC did it and, when not, what the BMC answered. Every machine, with a BMC or found on the
//! network, has `--provision-timeout` from its power-on (or first PXE contact) to
//! phone home.
//!
//! [`step`] decides, from the object alone; [`Provisioner`] acts. It runs in the
//! inventory's task, so the two never write a machine's status at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use shoal_api::wellknown::{annotation, SYSTEM_NAMESPACE};
use shoal_api::{BareMetalMachine, BareMetalState, BareMetalTransition, BmcSpec, Condition, Host};
use shoal_kube::conditions;

use crate::mac::Mac;
use crate::redfish::{Bmc, RedfishError, Reset};
use crate::seeds::{self, JoinSettings, Seeds};

/// The condition on a BareMetalMachine that says whether its BMC can be driven.
pub const BMC_READY: &str = "BmcReady";
/// How long after a failed attempt a BMC is tried again (BMCs lock accounts
/// that fail too often).
const BMC_RETRY: Duration = Duration::from_secs(10);
/// How many console lines a timeout quotes.
const CONSOLE_LINES: usize = 5;

/// What a machine needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Idle,
    /// Boot it from PXE through its BMC, for this request (if any).
    PowerOn {
        /// The annotation's value being acted on.
        request: Option<String>,
    },
    /// Power it off through its BMC, for this request.
    PowerOff {
        /// The annotation's value being acted on.
        request: String,
    },
    /// It has been provisioning since `since` and the time is up.
    TimeOut {
        /// When the attempt began.
        since: DateTime<Utc>,
    },
    /// The installed system's agent has a Ready Host.
    Join {
        /// The Host's name.
        host: String,
    },
}

/// Whether `m`, Provisioned, has joined: a Host named as it phoned home (its
/// installed system's `shoal agent`) whose `Ready` condition is True and whose
/// agent reported since the machine was provisioned, so that a Host left Ready by
/// the system a reprovision wiped does not count.
pub fn joined(m: &BareMetalMachine, hosts: &[Host]) -> Option<String> {
    let status = m.status.as_ref()?;
    if status.state != Some(BareMetalState::Provisioned) {
        return None;
    }
    let hostname = status.hostname.as_deref()?;
    let provisioned = status
        .history
        .iter()
        .rev()
        .find(|t| t.state == BareMetalState::Provisioned)
        .and_then(|t| DateTime::parse_from_rfc3339(&t.at).ok());
    hosts
        .iter()
        .filter(|h| h.name_any() == hostname)
        .find(|h| {
            let Some(s) = h.status.as_ref() else {
                return false;
            };
            let ready = conditions::get(&s.conditions, "Ready").is_some_and(|c| c.status == "True");
            let beat = s
                .last_heartbeat_time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            let fresh = match (provisioned, beat) {
                (Some(p), Some(b)) => b >= p,
                (None, _) => true,
                (Some(_), None) => false,
            };
            ready && fresh
        })
        .map(|h| h.name_any())
}

/// When the current provisioning attempt began: the earliest of the trailing run
/// of PoweringOn, Discovered and Provisioning transitions.
pub fn attempt_start(history: &[BareMetalTransition]) -> Option<DateTime<Utc>> {
    let in_flight = |s: BareMetalState| {
        matches!(
            s,
            BareMetalState::PoweringOn | BareMetalState::Discovered | BareMetalState::Provisioning
        )
    };
    let run = history.iter().rev().take_while(|t| in_flight(t.state));
    run.last()
        .and_then(|t| DateTime::parse_from_rfc3339(&t.at).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What `m` needs at `now`, given `timeout` to phone home.
pub fn step(m: &BareMetalMachine, now: DateTime<Utc>, timeout: Duration) -> Step {
    let status = m.status.clone().unwrap_or_default();
    if m.spec.bmc.is_some() {
        let request = m.annotations().get(annotation::BMC_REQUEST).cloned();
        let new = request
            .clone()
            .filter(|r| Some(r) != status.provision_request.as_ref());
        match new {
            Some(r) if r.starts_with("deprovision") => return Step::PowerOff { request: r },
            Some(r) => return Step::PowerOn { request: Some(r) },
            None if status.state.is_none() => return Step::PowerOn { request },
            None => {}
        }
    }
    let in_flight = matches!(
        status.state,
        Some(
            BareMetalState::PoweringOn | BareMetalState::Discovered | BareMetalState::Provisioning
        )
    );
    if in_flight {
        if let Some(since) = attempt_start(&status.history) {
            let limit = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
            if now - since > limit {
                return Step::TimeOut { since };
            }
        }
    }
    Step::Idle
}

/// The last `n` lines of the console log at `path`, or why there are none.
fn console_tail(path: &str, n: usize) -> String {
    match std::fs::read(Path::new(path)) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .collect();
            if lines.is_empty() {
                "it is empty".into()
            } else {
                format!(
                    "last lines: {}",
                    lines[lines.len().saturating_sub(n)..].join(" | ")
                )
            }
        }
        Err(e) => format!("it cannot be read here ({e})"),
    }
}

/// The timeout's reason, naming the console log.
pub fn timeout_reason(m: &BareMetalMachine, since: DateTime<Utc>, timeout: Duration) -> String {
    let console = match m.spec.bmc.as_ref().and_then(|b| b.console_log.as_deref()) {
        Some(path) => format!("console log {path}: {}", console_tail(path, CONSOLE_LINES)),
        None => "no console log is configured (spec.bmc.consoleLog)".into(),
    };
    format!(
        "did not phone home within {} s of {}; {console}",
        timeout.as_secs(),
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Why a power-on failed, as a condition reason and message.
fn failure(err: &PowerError) -> (&'static str, String) {
    match err {
        PowerError::Credentials(msg) => ("CredentialsMissing", msg.clone()),
        PowerError::Redfish { error, secret } => {
            let reason = match error.status() {
                Some(401 | 403) => "BmcUnauthorized",
                Some(_) => "BmcError",
                None => match error {
                    RedfishError::Unreachable { .. } => "BmcUnreachable",
                    _ => "BmcError",
                },
            };
            (
                reason,
                format!("{error} (credentials from Secret {SYSTEM_NAMESPACE}/{secret})"),
            )
        }
    }
}

/// A power-on that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The credentials' Secret is missing or incomplete.
    #[error("{0}")]
    Credentials(String),
    /// The BMC refused or failed.
    #[error("{error}")]
    Redfish {
        /// What it said.
        error: RedfishError,
        /// The Secret the credentials came from.
        secret: String,
    },
}

/// The API side of provisioning.
pub struct Provisioner {
    machines: Api<BareMetalMachine>,
    hosts: Api<Host>,
    secrets: Api<Secret>,
    timeout: Duration,
    /// When a machine's BMC last failed, to space out the next try.
    failed: BTreeMap<String, Instant>,
    /// Where each machine's join seed is kept fresh, if machines join.
    join: Option<(Seeds, JoinSettings)>,
}

impl Provisioner {
    /// Acts through `client`; machines have `timeout` to phone home.
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Self {
            machines: Api::all(client.clone()),
            hosts: Api::all(client.clone()),
            secrets: Api::namespaced(client, SYSTEM_NAMESPACE),
            timeout,
            failed: BTreeMap::new(),
            join: None,
        }
    }

    /// Keeps every machine's join seed in `seeds` up to date with its spec.
    pub fn with_join(mut self, seeds: Seeds, join: JoinSettings) -> Self {
        self.join = Some((seeds, join));
        self
    }

    /// One pass over every machine. BMCs are driven at once, so a slow or
    /// unreachable one does not hold up the others.
    pub async fn pass(&mut self) -> Result<(), kube::Error> {
        let list = self.machines.list(&ListParams::default()).await?;
        let provisioned = list.items.iter().any(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| s.state == Some(BareMetalState::Provisioned))
        });
        let hosts = if provisioned {
            self.hosts.list(&ListParams::default()).await?.items
        } else {
            Vec::new()
        };
        let mut powers = Vec::new();
        if let Some((seeds, join)) = &self.join {
            for m in &list.items {
                if let Ok(mac) = m.spec.mac.parse::<Mac>() {
                    seeds::refresh(seeds, join, mac, m);
                }
            }
        }
        for m in list.items {
            let next = match joined(&m, &hosts) {
                Some(host) => Step::Join { host },
                None => step(&m, Utc::now(), self.timeout),
            };
            match next {
                Step::Idle => {}
                Step::TimeOut { since } => self.time_out(&m, since).await?,
                Step::Join { host } => self.join(&m, &host).await?,
                power => {
                    let waiting = self
                        .failed
                        .get(&m.name_any())
                        .is_some_and(|at| at.elapsed() < BMC_RETRY);
                    if !waiting {
                        powers.push((m, power));
                    }
                }
            }
        }
        let this = &*self;
        let driven = futures::future::join_all(powers.into_iter().map(|(m, power)| async move {
            let off = matches!(power, Step::PowerOff { .. });
            let result = match m.spec.bmc.as_ref() {
                Some(bmc) => Some(this.drive(bmc, off).await),
                None => None,
            };
            (m, power, result)
        }))
        .await;
        for (m, power, result) in driven {
            if let Some(result) = result {
                self.record(&m, power, result).await?;
            }
        }
        Ok(())
    }

    async fn credentials(&self, bmc: &BmcSpec) -> Result<(String, String), PowerError> {
        let name = &bmc.credentials_secret;
        let missing = |what: &str| {
            PowerError::Credentials(format!(
                "Secret {SYSTEM_NAMESPACE}/{name} {what}: create it with the BMC's username and password (keys username and password)"
            ))
        };
        let secret = match self.secrets.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(missing("does not exist")),
            Err(e) => return Err(missing(&format!("cannot be read ({e})"))),
        };
        let field = |key: &str| -> Option<String> {
            let data = secret.data.as_ref().and_then(|d| d.get(key));
            match data {
                Some(b) => String::from_utf8(b.0.clone()).ok(),
                None => secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key).cloned()),
            }
        };
        match (field("username"), field("password")) {
            (Some(u), Some(p)) => Ok((u, p)),
            _ => Err(missing("lacks username or password")),
        }
    }

    /// Sets the next boot to PXE and powers on (or power-cycles) the machine, or
    /// (`off`) powers it off.
    async fn drive(&self, bmc: &BmcSpec, off: bool) -> Result<String, PowerError> {
        let (user, password) = self.credentials(bmc).await?;
        let redfish = |error| PowerError::Redfish {
            error,
            secret: bmc.credentials_secret.clone(),
        };
        let client =
            Bmc::new(&bmc.address, &user, &password, bmc.insecure_skip_verify).map_err(redfish)?;
        let system = client
            .system(bmc.system.as_deref())
            .await
            .map_err(redfish)?;
        if off {
            if system.power_state.as_deref() != Some("Off") {
                client
                    .reset(&system, Reset::ForceOff)
                    .await
                    .map_err(redfish)?;
            }
            return Ok(format!(
                "BMC {} powered system {} off",
                bmc.address, system.id
            ));
        }
        client.boot_pxe_once(&system).await.map_err(redfish)?;
        let (how, done) = match system.power_state.as_deref() {
            Some("Off") | None => (Reset::On, "powered on"),
            Some(_) => (Reset::ForceRestart, "power-cycled"),
        };
        client.reset(&system, how).await.map_err(redfish)?;
        Ok(format!(
            "BMC {} set system {} to boot from PXE once and {done} it",
            bmc.address, system.id
        ))
    }

    /// Writes what driving the BMC for `step` gave.
    async fn record(
        &mut self,
        m: &BareMetalMachine,
        step: Step,
        result: Result<String, PowerError>,
    ) -> Result<(), kube::Error> {
        let (off, request) = match step {
            Step::PowerOn { request } => (false, request),
            Step::PowerOff { request } => (true, Some(request)),
            _ => return Ok(()),
        };
        let name = m.name_any();
        let mut status = m.status.clone().unwrap_or_default();
        let (state, power, reason) = if off {
            (BareMetalState::Deprovisioned, "Off", "PoweredOff")
        } else {
            (BareMetalState::PoweringOn, "On", "PoweredOn")
        };
        let patch = match result {
            Ok(done) => {
                self.failed.remove(&name);
                tracing::info!(%name, "{done}");
                status.history.push(BareMetalTransition {
                    state,
                    at: conditions::now(),
                    reason: done.clone(),
                });
                conditions::set(
                    &mut status.conditions,
                    conditions::condition(BMC_READY, true, reason, done),
                );
                json!({"status": {
                    "state": state,
                    "power": power,
                    "provisionRequest": request,
                    "history": status.history,
                    "conditions": status.conditions,
                }})
            }
            Err(err) => {
                self.failed.insert(name.clone(), Instant::now());
                let (reason, message) = failure(&err);
                tracing::warn!(%name, %reason, "{message}");
                let unchanged = conditions::get(&status.conditions, BMC_READY)
                    .is_some_and(|c| c.status == "False" && c.message == message);
                if unchanged {
                    return Ok(());
                }
                conditions::set(
                    &mut status.conditions,
                    conditions::condition(BMC_READY, false, reason, message),
                );
                json!({"status": {"conditions": status.conditions}})
            }
        };
        self.machines
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn join(&mut self, m: &BareMetalMachine, host: &str) -> Result<(), kube::Error> {
        let name = m.name_any();
        tracing::info!(%name, %host, "joined");
        let mut history = m.status.clone().unwrap_or_default().history;
        history.push(BareMetalTransition {
            state: BareMetalState::Joined,
            at: conditions::now(),
            reason: format!("its agent's Host {host} is Ready"),
        });
        let patch = json!({"status": {"state": BareMetalState::Joined, "history": history}});
        self.machines
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn time_out(
        &mut self,
        m: &BareMetalMachine,
        since: DateTime<Utc>,
    ) -> Result<(), kube::Error> {
        let name = m.name_any();
        let reason = timeout_reason(m, since, self.timeout);
        tracing::warn!(%name, "provisioning timed out: {reason}");
        let mut history = m.status.clone().unwrap_or_default().history;
        history.push(BareMetalTransition {
            state: BareMetalState::ProvisioningTimeout,
            at: conditions::now(),
            reason,
        });
        let patch = json!({"status": {
            "state": BareMetalState::ProvisioningTimeout,
            "history": history,
        }});
        self.machines
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// The `BmcReady` condition of `m`, if any (for the CLI and tests).
pub fn bmc_ready(m: &BareMetalMachine) -> Option<&Condition> {
    m.status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, BMC_READY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{BareMetalMachineSpec, BareMetalMachineStatus, MachineRole};

    fn machine(
        bmc: bool,
        state: Option<BareMetalState>,
        history: &[(BareMetalState, &str)],
    ) -> BareMetalMachine {
        let mut m = BareMetalMachine::new(
            "bm1",
            BareMetalMachineSpec {
                mac: "52:54:00:78:01:01".into(),
                role: MachineRole::Worker,
                profile: None,
                bmc: bmc.then(|| BmcSpec {
                    address: "http://10.78.0.2:8000".into(),
                    system: Some("bm1".into()),
                    credentials_secret: "bmc-bm1".into(),
                    insecure_skip_verify: false,
                    console_log: None,
                }),
                network: None,
            },
        );
        m.status = Some(BareMetalMachineStatus {
            state,
            history: history
                .iter()
                .map(|(s, at)| BareMetalTransition {
                    state: *s,
                    at: (*at).into(),
                    reason: String::new(),
                })
                .collect(),
            ..Default::default()
        });
        m
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .with_timezone(&Utc)
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_registered_machine_with_a_bmc_is_powered_on_once() {
        let fresh = machine(true, None, &[]);
        assert_eq!(
            step(&fresh, at("2026-12-07T10:00:00Z"), MIN),
            Step::PowerOn { request: None }
        );
        let on = machine(
            true,
            Some(BareMetalState::PoweringOn),
            &[(BareMetalState::PoweringOn, "2026-12-07T10:00:00Z")],
        );
        assert_eq!(step(&on, at("2026-12-07T10:00:30Z"), MIN), Step::Idle);
        // Without a BMC, nothing to power.
        assert_eq!(
            step(&machine(false, None, &[]), at("2026-12-07T10:00:00Z"), MIN),
            Step::Idle
        );
    }

    #[test]
    fn a_new_reprovision_request_powers_it_on_again_and_an_old_one_does_not() {
        let mut m = machine(
            true,
            Some(BareMetalState::Provisioned),
            &[(BareMetalState::Provisioned, "2026-12-07T10:00:00Z")],
        );
        let r1 = "reprovision@2026-12-07T11:00:00Z";
        m.annotations_mut()
            .insert(annotation::BMC_REQUEST.into(), r1.into());
        assert_eq!(
            step(&m, at("2026-12-07T11:00:00Z"), MIN),
            Step::PowerOn {
                request: Some(r1.into())
            }
        );
        if let Some(s) = m.status.as_mut() {
            s.provision_request = Some(r1.into());
        }
        assert_eq!(step(&m, at("2026-12-07T11:00:00Z"), MIN), Step::Idle);
        // Then a deprovision request: powered off once.
        let r2 = "deprovision@2026-12-07T12:00:00Z";
        m.annotations_mut()
            .insert(annotation::BMC_REQUEST.into(), r2.into());
        assert_eq!(
            step(&m, at("2026-12-07T12:00:00Z"), MIN),
            Step::PowerOff { request: r2.into() }
        );
        if let Some(s) = m.status.as_mut() {
            s.provision_request = Some(r2.into());
            s.state = Some(BareMetalState::Deprovisioned);
        }
        assert_eq!(step(&m, at("2026-12-07T13:00:00Z"), MIN), Step::Idle);
    }

    #[test]
    fn the_timeout_counts_from_the_power_on_of_the_current_attempt() {
        let history = [
            (BareMetalState::PoweringOn, "2026-12-07T09:00:00Z"),
            (BareMetalState::Discovered, "2026-12-07T09:00:20Z"),
            (BareMetalState::Provisioned, "2026-12-07T09:01:00Z"),
            (BareMetalState::PoweringOn, "2026-12-07T10:00:00Z"),
            (BareMetalState::Discovered, "2026-12-07T10:00:20Z"),
            (BareMetalState::Provisioning, "2026-12-07T10:00:25Z"),
        ];
        let m = machine(true, Some(BareMetalState::Provisioning), &history);
        assert_eq!(
            attempt_start(&m.status.as_ref().expect("status").history),
            Some(at("2026-12-07T10:00:00Z"))
        );
        assert_eq!(step(&m, at("2026-12-07T10:00:59Z"), MIN), Step::Idle);
        assert_eq!(
            step(&m, at("2026-12-07T10:01:01Z"), MIN),
            Step::TimeOut {
                since: at("2026-12-07T10:00:00Z")
            }
        );
        // Provisioned and timed-out machines are not timed out (again).
        for done in [
            BareMetalState::Provisioned,
            BareMetalState::ProvisioningTimeout,
        ] {
            let m = machine(true, Some(done), &history);
            assert_eq!(step(&m, at("2026-12-07T12:00:00Z"), MIN), Step::Idle);
        }
    }

    #[test]
    fn a_provisioned_machine_joins_when_the_host_it_named_is_ready() {
        let mut m = machine(true, Some(BareMetalState::Provisioned), &[]);
        if let Some(s) = m.status.as_mut() {
            s.hostname = Some("pxe-525400780101".into());
        }
        let host_at = |name: &str, ready: &str, beat: &str| -> Host {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
                "metadata": {"name": name},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                           "lastHeartbeatTime": beat},
            }))
            .expect("a host")
        };
        let host = |name: &str, ready: &str| host_at(name, ready, "2026-12-07T10:00:00Z");
        assert_eq!(joined(&m, &[host("other", "True")]), None);
        assert_eq!(joined(&m, &[host("pxe-525400780101", "False")]), None);
        assert_eq!(
            joined(&m, &[host("pxe-525400780101", "True")]),
            Some("pxe-525400780101".into())
        );
        // Once provisioned at a time, only a heartbeat since then counts: a Host
        // left Ready by the system a reprovision wiped is not this install's.
        if let Some(s) = m.status.as_mut() {
            s.history.push(BareMetalTransition {
                state: BareMetalState::Provisioned,
                at: "2026-12-07T10:00:05Z".into(),
                reason: "phoned home as pxe-525400780101".into(),
            });
        }
        assert_eq!(joined(&m, &[host("pxe-525400780101", "True")]), None);
        assert_eq!(
            joined(
                &m,
                &[host_at("pxe-525400780101", "True", "2026-12-07T10:00:09Z")]
            ),
            Some("pxe-525400780101".into())
        );
        // Only a Provisioned machine joins (not one already Joined, or still booting).
        for state in [BareMetalState::Joined, BareMetalState::Provisioning] {
            if let Some(s) = m.status.as_mut() {
                s.state = Some(state);
            }
            assert_eq!(joined(&m, &[host("pxe-525400780101", "True")]), None);
        }
    }

    #[test]
    fn a_timeout_quotes_the_console_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("bm1.console");
        std::fs::write(&log, "SeaBIOS\n\niPXE 1.21\nno route to seed\n").expect("write");
        let mut m = machine(true, Some(BareMetalState::Provisioning), &[]);
        if let Some(b) = m.spec.bmc.as_mut() {
            b.console_log = Some(log.display().to_string());
        }
        let reason = timeout_reason(&m, at("2026-12-07T10:00:00Z"), MIN);
        assert_eq!(
            reason,
            format!(
                "did not phone home within 60 s of 2026-12-07T10:00:00Z; console log {}: last lines: SeaBIOS | iPXE 1.21 | no route to seed",
                log.display()
            )
        );
        let none = machine(false, Some(BareMetalState::Provisioning), &[]);
        assert!(timeout_reason(&none, at("2026-12-07T10:00:00Z"), MIN)
            .ends_with("no console log is configured (spec.bmc.consoleLog)"));
    }
}
