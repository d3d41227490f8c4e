//! In-memory stand-ins for the host loop's I/O, recording what the loop asked of
//! them: the loop's unit tests run it against these.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use shoal_api::{Machine, MachinePhase};
use shoal_kube::finalizer::Change;

use super::api::{Allocation, HostApi, UserDataError};
use super::network::{ClusterServices, ServiceStarter};
use super::register::HostFacts;
use super::AgentError;
use crate::net::link::{LinkError, Links};
use crate::net::metadata::PhoneHomeSender;
use crate::net::nft::{Firewall, NftError};
use crate::net::plan::{ClusterNet, HostPlan};
use crate::phase::{PhaseWrite, PhaseWriteError};
use crate::vm::migrate::{Incoming, Limits, MigrateError, Outcome, ProgressTx};
use crate::vm::runtime::{Vm, VmError, VmRuntime, VmState, VmStatus};
use crate::vm::VmSpec;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// VMs as entries in a map: "running" until stopped or told they exited.
#[derive(Default)]
pub struct FakeRuntime {
    /// The VMs running, by name, with their spec.
    pub running: Mutex<BTreeMap<String, VmSpec>>,
    /// Names of VMs whose QEMU went away by itself.
    pub exited: Mutex<BTreeSet<String>>,
    /// Every launch, in order.
    pub launches: Mutex<Vec<String>>,
    /// Every stop, in order.
    pub stops: Mutex<Vec<String>>,
    /// VMs that survive from an earlier agent, by state directory.
    pub adoptable: Mutex<BTreeMap<std::path::PathBuf, VmSpec>>,
    /// Every live migration sent, as (VM, target URI).
    pub sent: Mutex<Vec<(String, String)>>,
    /// The reason the next migrations sent fail, if set.
    pub fail_sends: Mutex<Option<String>>,
}

impl VmRuntime for FakeRuntime {
    async fn launch(&self, vm: &mut Vm) -> Result<(), VmError> {
        lock(&self.launches).push(vm.name().to_owned());
        lock(&self.running).insert(vm.name().to_owned(), vm.spec().clone());
        vm.set_running(4242);
        Ok(())
    }

    async fn adopt(&self, state_dir: &Path) -> Result<Vm, VmError> {
        let Some(spec) = lock(&self.adoptable).remove(state_dir) else {
            return Err(VmError::NotRunning {
                vm: state_dir.display().to_string(),
                pidfile: state_dir.join("qemu.pid"),
            });
        };
        lock(&self.running).insert(spec.name.clone(), spec.clone());
        let mut vm = Vm::new(spec);
        vm.set_running(4343);
        Ok(vm)
    }

    async fn status(&self, vm: &mut Vm) -> Result<VmStatus, VmError> {
        if vm.state() == VmState::Running && lock(&self.exited).contains(vm.name()) {
            lock(&self.running).remove(vm.name());
            vm.set_stopped();
        }
        Ok(VmStatus {
            state: vm.state(),
            pid: vm.pid(),
            run: None,
        })
    }

    async fn stop(&self, vm: &mut Vm, _grace: Duration) -> Result<(), VmError> {
        lock(&self.stops).push(vm.name().to_owned());
        lock(&self.running).remove(vm.name());
        vm.set_stopped();
        Ok(())
    }

    async fn listen_incoming(&self, vm: &Vm, addr: Ipv4Addr) -> Result<Incoming, VmError> {
        Ok(Incoming {
            uri: format!("tcp:{addr}:4444"),
            disk: vm
                .spec()
                .boot
                .overlay()
                .map(|_| format!("nbd://{addr}:4445/disk0")),
        })
    }

    async fn migrate_out(
        &self,
        vm: &Vm,
        to: &Incoming,
        _limits: Limits,
        progress: &ProgressTx,
    ) -> Result<Outcome, VmError> {
        lock(&self.sent).push((vm.name().to_owned(), to.uri.clone()));
        progress.send_replace("RAM 1 of 2 MiB sent".into());
        if let Some(reason) = lock(&self.fail_sends).clone() {
            return Err(VmError::Migrate {
                vm: vm.name().to_owned(),
                source: MigrateError::Failed(reason),
            });
        }
        Ok(Outcome {
            downtime_ms: 20,
            total_ms: 150,
            transferred: 1 << 20,
            ram_total: 256 << 20,
        })
    }

    async fn finish_incoming(&self, _vm: &Vm) -> Result<(), VmError> {
        Ok(())
    }
}

/// Links as a set of names, with the peers and taps asked for.
#[derive(Default)]
pub struct FakeLinks {
    /// Links that exist.
    pub links: Mutex<BTreeSet<String>>,
    /// VXLAN peers by VXLAN name.
    pub peers: Mutex<BTreeMap<String, BTreeSet<Ipv4Addr>>>,
    /// Taps attached, with their bridge.
    pub taps: Mutex<BTreeMap<String, String>>,
}

impl Links for FakeLinks {
    async fn ensure_cluster(&self, net: &ClusterNet, _underlay: Ipv4Addr) -> Result<(), LinkError> {
        let mut links = lock(&self.links);
        links.insert(net.bridge.clone());
        links.insert(net.vxlan.clone());
        Ok(())
    }

    async fn set_peers(
        &self,
        net: &ClusterNet,
        peers: &BTreeSet<Ipv4Addr>,
    ) -> Result<(), LinkError> {
        lock(&self.peers).insert(net.vxlan.clone(), peers.clone());
        Ok(())
    }

    async fn attach_tap(
        &self,
        tap: &str,
        bridge: &str,
        _timeout: Duration,
    ) -> Result<(), LinkError> {
        lock(&self.links).insert(tap.to_owned());
        lock(&self.taps).insert(tap.to_owned(), bridge.to_owned());
        Ok(())
    }

    async fn remove_cluster(&self, net: &ClusterNet) -> Result<(), LinkError> {
        let mut links = lock(&self.links);
        links.remove(&net.bridge);
        links.remove(&net.vxlan);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, LinkError> {
        Ok(lock(&self.links).iter().cloned().collect())
    }

    async fn delete(&self, name: &str) -> Result<(), LinkError> {
        lock(&self.links).remove(name);
        lock(&self.taps).remove(name);
        Ok(())
    }
}

/// The last plan applied, and how many times one was.
#[derive(Default)]
pub struct FakeFirewall {
    /// The plan in force.
    pub applied: Mutex<Option<HostPlan>>,
    /// How many applies.
    pub applies: Mutex<usize>,
}

impl Firewall for FakeFirewall {
    async fn apply(&self, plan: &HostPlan) -> Result<(), NftError> {
        *lock(&self.applied) = Some(plan.clone());
        *lock(&self.applies) += 1;
        Ok(())
    }

    async fn tables(&self) -> Result<Vec<(String, String)>, NftError> {
        Ok(Vec::new())
    }
}

/// Network services that keep their tables and serve nothing.
#[derive(Default)]
pub struct FakeServices {
    /// Networks whose services were started, in order.
    pub started: Mutex<Vec<String>>,
}

impl ServiceStarter for FakeServices {
    fn start(
        &self,
        net: &ClusterNet,
        _phone: PhoneHomeSender,
    ) -> Result<ClusterServices, AgentError> {
        lock(&self.started).push(net.key.clone());
        Ok(ClusterServices::unserved(net))
    }
}

/// A phase write the fake API took.
#[derive(Debug, Clone)]
pub struct Written {
    /// The Machine.
    pub machine: String,
    /// The phase.
    pub phase: MachinePhase,
    /// The other status fields.
    pub status: serde_json::Value,
}

/// The API as a record of writes, with bootstrap Secrets from a map.
#[derive(Default)]
pub struct FakeApi {
    /// Phase writes, in order (refused ones are not here).
    pub phases: Mutex<Vec<Written>>,
    /// Writes refused by the transition table.
    pub refused: Mutex<Vec<(String, MachinePhase)>>,
    /// Each Machine's phase as the server holds it after the writes.
    current: Mutex<BTreeMap<String, MachinePhase>>,
    /// Finalizer changes: machine and whether it was added.
    pub finalizers: Mutex<Vec<(String, bool)>>,
    /// Bootstrap Secret values by `namespace/name`.
    pub secrets: Mutex<BTreeMap<String, String>>,
    /// Host reports.
    pub reports: Mutex<Vec<Allocation>>,
    /// Hand-overs after a live migration: machine and its new host.
    pub handovers: Mutex<Vec<(String, String)>>,
    /// Migration requests cleared after a failure.
    pub ended: Mutex<Vec<String>>,
    /// Events recorded: machine, warning, reason, note.
    pub events: Mutex<Vec<(String, bool, String, String)>>,
}

impl FakeApi {
    /// The phases written for `machine`, in order.
    pub fn phases_of(&self, machine: &str) -> Vec<MachinePhase> {
        lock(&self.phases)
            .iter()
            .filter(|w| w.machine == machine)
            .map(|w| w.phase)
            .collect()
    }

    /// The first write of `phase` for `machine`.
    pub fn first_in(&self, machine: &str, phase: MachinePhase) -> Option<Written> {
        lock(&self.phases)
            .iter()
            .find(|w| w.machine == machine && w.phase == phase)
            .cloned()
    }

    /// The last write for `machine`.
    pub fn last(&self, machine: &str) -> Option<Written> {
        lock(&self.phases)
            .iter()
            .rev()
            .find(|w| w.machine == machine)
            .cloned()
    }
}

impl HostApi for FakeApi {
    async fn write_phase(
        &self,
        seen: &Machine,
        to: MachinePhase,
        status: serde_json::Value,
    ) -> Result<PhaseWrite, PhaseWriteError> {
        // The same transition table as the real write, from the phase the server
        // holds (the real write re-reads a stale copy on 409 and decides again).
        let name = seen.metadata.name.clone().unwrap_or_default();
        let from = lock(&self.current).get(&name).copied().or(seen.phase());
        if let Err(illegal) = MachinePhase::check_transition(from, to) {
            lock(&self.refused).push((name, to));
            return Ok(PhaseWrite::Refused(illegal));
        }
        lock(&self.current).insert(name.clone(), to);
        lock(&self.phases).push(Written {
            machine: name,
            phase: to,
            status,
        });
        let mut written = seen.clone();
        written.status.get_or_insert_with(Default::default).phase = Some(to);
        Ok(PhaseWrite::Written(Box::new(written)))
    }

    async fn set_finalizer(&self, m: &Machine, present: bool) -> Result<Change, kube::Error> {
        let name = m.metadata.name.clone().unwrap_or_default();
        lock(&self.finalizers).push((name, present));
        Ok(Change::Done)
    }

    async fn bootstrap_value(&self, namespace: &str, name: &str) -> Result<String, UserDataError> {
        let secret = format!("{namespace}/{name}");
        lock(&self.secrets)
            .get(&secret)
            .cloned()
            .ok_or(UserDataError::NoValue { secret })
    }

    async fn hand_over(&self, m: &Machine, target: &str) -> Result<(), kube::Error> {
        let name = m.metadata.name.clone().unwrap_or_default();
        lock(&self.handovers).push((name, target.to_owned()));
        Ok(())
    }

    async fn end_migration(&self, m: &Machine) -> Result<(), kube::Error> {
        lock(&self.ended).push(m.metadata.name.clone().unwrap_or_default());
        Ok(())
    }

    async fn event(&self, m: &Machine, warning: bool, reason: &str, note: String) {
        let name = m.metadata.name.clone().unwrap_or_default();
        lock(&self.events).push((name, warning, reason.to_owned(), note));
    }

    async fn report(&self, _facts: &HostFacts, allocated: Allocation) -> Result<(), AgentError> {
        lock(&self.reports).push(allocated);
        Ok(())
    }
}
