//! What each machine did on the boot network, by MAC, with times: the proxy's
//! offers, the boot script, kernel and initrd fetches, the seed and the phone home.
//! `GET /machines` on the boot services' HTTP port shows it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use chrono::{DateTime, Utc};
use serde::Serialize;

use shoal_api::HardwareFacts;

use crate::mac::Mac;

/// The events kept per machine; older ones are dropped first.
const KEPT: usize = 64;

/// One step of a network boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// The proxy offered a boot file (DHCP port 67).
    Offered,
    /// The proxy acknowledged the boot file (port 4011).
    Acknowledged,
    /// iPXE fetched the machine's boot script.
    Script,
    /// iPXE fetched the kernel.
    Kernel,
    /// iPXE fetched the initrd.
    Initrd,
    /// The booted system fetched its NoCloud meta-data.
    Seed,
    /// The booted system phoned home.
    PhonedHome,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Its number: events are numbered in the order they were recorded, across
    /// all machines.
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub stage: Stage,
    /// Details: the boot file, the bytes sent, the host name.
    pub detail: String,
}

/// One machine's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineRecord {
    /// Its MAC, `52:54:00:…`.
    pub mac: String,
    /// The address it last came from, once it has one.
    pub ip: Option<String>,
    /// The host name it phoned home with.
    pub hostname: Option<String>,
    /// What its firmware last reported of its hardware.
    pub facts: Option<HardwareFacts>,
    /// Its events, oldest first.
    pub events: Vec<Event>,
}

#[derive(Debug, Default)]
struct Entry {
    ip: Option<String>,
    hostname: Option<String>,
    facts: Option<HardwareFacts>,
    events: VecDeque<Event>,
}

#[derive(Debug, Default)]
struct State {
    machines: BTreeMap<Mac, Entry>,
    next_seq: u64,
    /// Machines changed since [`Journal::take_changed`] last ran.
    changed: BTreeSet<Mac>,
}

/// The journal, shared by the DHCP, TFTP and HTTP services and the inventory that
/// follows it.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    inner: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl Journal {
    /// Records `stage` for `mac`, now.
    pub fn record(&self, mac: Mac, stage: Stage, detail: impl Into<String>) {
        self.update(mac, |e, next_seq| {
            if e.events.len() == KEPT {
                e.events.pop_front();
            }
            *next_seq += 1;
            e.events.push_back(Event {
                seq: *next_seq,
                at: Utc::now(),
                stage,
                detail: detail.into(),
            });
        });
    }

    /// Notes the address `mac` was seen at.
    pub fn saw_ip(&self, mac: Mac, ip: String) {
        self.update(mac, |e, _| e.ip = Some(ip));
    }

    /// Notes what `mac`'s firmware reported of its hardware.
    pub fn reported(&self, mac: Mac, facts: HardwareFacts) {
        self.update(mac, |e, _| e.facts = Some(facts));
    }

    /// Notes the host name `mac` phoned home with.
    pub fn named(&self, mac: Mac, hostname: String) {
        self.update(mac, |e, _| e.hostname = Some(hostname));
    }

    fn update(&self, mac: Mac, f: impl FnOnce(&mut Entry, &mut u64)) {
        {
            let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let state = &mut *state;
            f(state.machines.entry(mac).or_default(), &mut state.next_seq);
            state.changed.insert(mac);
        }
        self.notify.notify_one();
    }

    /// One machine's record.
    pub fn machine(&self, mac: Mac) -> Option<MachineRecord> {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state.machines.get(&mac).map(|e| record(mac, e))
    }

    /// Every machine, by MAC.
    pub fn machines(&self) -> Vec<MachineRecord> {
        let state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .machines
            .iter()
            .map(|(mac, e)| record(*mac, e))
            .collect()
    }

    /// Waits until a machine has changed since the last call, then returns every
    /// machine that has (a follower such as the inventory never misses one: a
    /// change while it works is returned by its next call).
    pub async fn take_changed(&self) -> BTreeSet<Mac> {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                if !state.changed.is_empty() {
                    return std::mem::take(&mut state.changed);
                }
            }
            notified.await;
        }
    }

    /// Marks `mac` changed again, for a follower that could not act on it.
    pub fn retry(&self, mac: Mac) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .changed
            .insert(mac);
        self.notify.notify_one();
    }
}

fn record(mac: Mac, e: &Entry) -> MachineRecord {
    MachineRecord {
        mac: mac.to_string(),
        ip: e.ip.clone(),
        hostname: e.hostname.clone(),
        facts: e.facts.clone(),
        events: e.events.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_in_order_and_bounded() {
        let j = Journal::default();
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        j.record(mac, Stage::Offered, "undionly.kpxe");
        for i in 0..KEPT {
            j.record(mac, Stage::Kernel, i.to_string());
        }
        j.saw_ip(mac, "10.0.0.5".into());
        let all = j.machines();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].mac, "02:00:00:00:00:01");
        assert_eq!(all[0].ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(all[0].events.len(), KEPT);
        assert_eq!(all[0].events[0].detail, "0", "the oldest event went first");
        assert_eq!(all[0].events[KEPT - 1].detail, (KEPT - 1).to_string());
    }
}
