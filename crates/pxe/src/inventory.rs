//! The machine inventory: what the boot services see becomes a BareMetalMachine in
//! Shoal's API, one per MAC.
//!
//! A machine's first contact (the proxy's offer) creates `bm-<mac>` in state
//! Discovered, unless a BareMetalMachine with that MAC was registered beforehand;
//! fetching its boot script, kernel, initrd or seed moves it to Provisioning; its
//! phone home to Provisioned. Every change of state is appended to
//! `status.history` with the time the boot services saw it and what they saw.
//!
//! The inventory follows the [`Journal`]: level-triggered, so an API that is down
//! or slow loses nothing; the machine is synced again two seconds later.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use shoal_api::{
    BareMetalMachine, BareMetalMachineSpec, BareMetalMachineStatus, BareMetalState,
    BareMetalTransition, MachineRole,
};

use crate::journal::{Event, Journal, MachineRecord, Stage};
use crate::mac::Mac;
use crate::profile::{assign, Profile};
use crate::provision::Provisioner;
use crate::seeds::{self, JoinSettings, Seeds};

/// How long to wait before syncing a machine again after the API failed.
const RETRY: Duration = Duration::from_secs(2);

/// The state a boot step puts a machine in.
pub fn state_of(stage: Stage) -> BareMetalState {
    match stage {
        Stage::Offered | Stage::Acknowledged => BareMetalState::Discovered,
        Stage::Script | Stage::Kernel | Stage::Initrd | Stage::Seed => BareMetalState::Provisioning,
        Stage::PhonedHome => BareMetalState::Provisioned,
    }
}

/// What a person reads for a boot step.
fn reason(e: &Event) -> String {
    match e.stage {
        Stage::Offered => format!("PXE firmware asked to boot and was offered {}", e.detail),
        Stage::Acknowledged => format!("PXE firmware took the boot file {}", e.detail),
        Stage::Script => "fetched its boot script".into(),
        Stage::Kernel => format!("fetched the kernel ({})", e.detail),
        Stage::Initrd => format!("fetched the initrd ({})", e.detail),
        Stage::Seed => "fetched its NoCloud seed".into(),
        Stage::PhonedHome => format!("phoned home as {}", e.detail),
    }
}

/// The name of the BareMetalMachine the inventory creates for `mac`.
pub fn name_of(mac: Mac) -> String {
    format!("bm-{}", mac.hyphenated().replace('-', ""))
}

/// The transitions `events` make from `current`: one per change of state, with
/// the time and reason of the event that made it.
pub fn transitions(current: Option<BareMetalState>, events: &[Event]) -> Vec<BareMetalTransition> {
    let mut state = current;
    let mut out = Vec::new();
    for e in events {
        let next = state_of(e.stage);
        if state != Some(next) {
            out.push(BareMetalTransition {
                state: next,
                at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                reason: reason(e),
            });
            state = Some(next);
        }
    }
    out
}

/// The inventory's writer.
pub struct Inventory {
    api: Api<BareMetalMachine>,
    role: MachineRole,
    profiles: Vec<Profile>,
    /// Per machine, the number of the last journal event written to the API.
    synced: BTreeMap<Mac, u64>,
    provisioner: Provisioner,
    /// Where machines' join seeds go, and what they carry; `None`: no seeds.
    join: Option<(Seeds, JoinSettings)>,
}

impl Inventory {
    /// Writes through `client`; machines it creates get the first of `profiles`
    /// that is not full, else `role`; machines have `provision_timeout` from
    /// power-on or first contact to phone home.
    pub fn new(
        client: kube::Client,
        role: MachineRole,
        profiles: Vec<Profile>,
        provision_timeout: Duration,
    ) -> Self {
        Self {
            api: Api::all(client.clone()),
            role,
            profiles,
            synced: BTreeMap::new(),
            provisioner: Provisioner::new(client, provision_timeout),
            join: None,
        }
    }

    /// Renders a join seed into `seeds` for each machine as it syncs it, so that
    /// its installed system runs `shoal agent` with `join`'s kubeconfig.
    pub fn with_join(mut self, seeds: Seeds, join: JoinSettings) -> Self {
        self.provisioner = self.provisioner.with_join(seeds.clone(), join.clone());
        self.join = Some((seeds, join));
        self
    }

    fn render_seed(&self, mac: Mac, machine: &BareMetalMachine) {
        if let Some((seeds, join)) = &self.join {
            seeds::refresh(seeds, join, mac, machine);
        }
    }

    /// Follows `journal`, and every two seconds powers on and times out machines
    /// (the [`Provisioner`]), until the task is dropped. One task does both, so
    /// they never write a machine's status at once.
    pub async fn follow(mut self, journal: Journal) {
        let mut tick = tokio::time::interval(RETRY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = journal.take_changed() => {
                    for mac in changed {
                        self.sync_or_retry(&journal, mac).await;
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.provisioner.pass().await {
                        tracing::warn!(error = %e, "provisioning pass failed; retrying");
                    }
                }
            }
        }
    }

    async fn sync_or_retry(&mut self, journal: &Journal, mac: Mac) {
        let Some(record) = journal.machine(mac) else {
            return;
        };
        if let Err(e) = self.sync(mac, &record).await {
            tracing::warn!(%mac, error = %e, "inventory not updated; retrying");
            let journal = journal.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY).await;
                journal.retry(mac);
            });
        }
    }

    /// The BareMetalMachine of `mac`: `bm-<mac>`, else one registered with that
    /// MAC; when there is none, every machine (for the profiles' counts).
    async fn find(
        &self,
        mac: Mac,
    ) -> Result<Result<BareMetalMachine, Vec<BareMetalMachine>>, kube::Error> {
        if let Some(found) = self.api.get_opt(&name_of(mac)).await? {
            return Ok(Ok(found));
        }
        let all = self.api.list(&ListParams::default()).await?.items;
        match all
            .iter()
            .position(|m| m.spec.mac.parse::<Mac>().ok() == Some(mac))
        {
            Some(i) => Ok(Ok(all[i].clone())),
            None => Ok(Err(all)),
        }
    }

    /// Writes what the journal knows of `mac` that the API does not.
    pub async fn sync(&mut self, mac: Mac, record: &MachineRecord) -> Result<(), kube::Error> {
        let done = self.synced.get(&mac).copied().unwrap_or(0);
        let fresh: Vec<Event> = record
            .events
            .iter()
            .filter(|e| e.seq > done)
            .cloned()
            .collect();
        let Some(last) = fresh.last().map(|e| e.seq) else {
            return Ok(());
        };
        let machine = match self.find(mac).await? {
            Ok(m) => m,
            Err(existing) => {
                let profile = assign(&self.profiles, &existing);
                let bmm = BareMetalMachine::new(
                    &name_of(mac),
                    BareMetalMachineSpec {
                        mac: mac.to_string(),
                        role: profile.map_or(self.role, |p| p.role),
                        profile: profile.map(|p| p.name.clone()),
                        bmc: None,
                        network: None,
                    },
                );
                match self.api.create(&PostParams::default(), &bmm).await {
                    Ok(created) => {
                        tracing::info!(%mac, name = %created.name_any(), "machine discovered");
                        created
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        self.api.get(&name_of(mac)).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.render_seed(mac, &machine);
        let status: BareMetalMachineStatus = machine.status.clone().unwrap_or_default();
        let added = transitions(status.state, &fresh);
        let mut history = status.history.clone();
        history.extend(added.iter().cloned());
        let state = history.last().map(|t| t.state).or(status.state);
        let ip = record.ip.clone().or(status.ip.clone());
        let hostname = record.hostname.clone().or(status.hostname.clone());
        let facts = record.facts.clone().or(status.facts.clone());
        if !added.is_empty()
            || ip != status.ip
            || hostname != status.hostname
            || facts != status.facts
        {
            let patch = json!({"status": {
                "state": state,
                "ip": ip,
                "hostname": hostname,
                "facts": facts,
                "history": history,
            }});
            self.api
                .patch_status(
                    &machine.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            for t in &added {
                tracing::info!(%mac, name = %machine.name_any(), state = ?t.state, reason = %t.reason, "machine state");
            }
        }
        self.synced.insert(mac, last);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event(seq: u64, stage: Stage, detail: &str) -> Event {
        Event {
            seq,
            at: Utc
                .timestamp_opt(1_800_000_000 + seq as i64, 0)
                .single()
                .expect("a time"),
            stage,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_boot_goes_discovered_provisioning_provisioned_once_each() {
        let events = [
            event(1, Stage::Offered, "http://x/boot.ipxe"),
            event(2, Stage::Acknowledged, "http://x/boot.ipxe"),
            event(3, Stage::Script, ""),
            event(4, Stage::Kernel, "8 bytes"),
            event(5, Stage::Initrd, "9 bytes"),
            event(6, Stage::Seed, "default"),
            event(7, Stage::PhonedHome, "pxe-1"),
        ];
        let t = transitions(None, &events);
        let states: Vec<_> = t.iter().map(|t| t.state).collect();
        assert_eq!(
            states,
            [
                BareMetalState::Discovered,
                BareMetalState::Provisioning,
                BareMetalState::Provisioned
            ]
        );
        assert_eq!(t[1].reason, "fetched its boot script");
        assert_eq!(t[2].reason, "phoned home as pxe-1");
        assert!(t[0].at < t[1].at && t[1].at < t[2].at, "{t:?}");
        // Synced in two rounds, the second starts where the API stands.
        let later = transitions(Some(BareMetalState::Provisioning), &events[4..]);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].state, BareMetalState::Provisioned);
        // A machine that boots again is provisioned again.
        let again = transitions(
            Some(BareMetalState::Provisioned),
            &[event(8, Stage::Offered, "f"), event(9, Stage::Script, "")],
        );
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn names_come_from_the_mac() {
        let mac: Mac = "52:54:00:78:00:07".parse().expect("mac");
        assert_eq!(name_of(mac), "bm-525400780007");
    }
}
