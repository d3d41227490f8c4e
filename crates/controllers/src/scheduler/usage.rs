//! What the Machines assigned to each host take, kept change by change by the
//! Machine watch, so that a placement costs the number of hosts rather than the
//! number of Machines in the fleet.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::ObjectRef;
use shoal_api::Machine;
use shoal_kube::Observer;

use super::place::Resources;
use super::{holds_room, needs};

/// Per-host totals of the Machines assigned to it. Clones are not needed: it is
/// shared behind an `Arc` by the watch that keeps it and the scheduler.
#[derive(Default)]
pub struct HostUsage {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// Each assigned Machine (`namespace/name`): its host, and what it takes there
    /// (nothing once it has failed, since a failed VM is stopped).
    assigned: HashMap<String, (String, Resources)>,
    by_host: HashMap<String, Resources>,
}

impl State {
    fn forget(&mut self, key: &str) {
        if let Some((host, took)) = self.assigned.remove(key) {
            if let Some(total) = self.by_host.get_mut(&host) {
                total.remove(took);
            }
        }
    }

    fn record(&mut self, key: String, m: &Machine) {
        let Some(host) = m.spec.host_name.clone() else {
            return;
        };
        let took = if holds_room(m) {
            needs(m)
        } else {
            Resources::default()
        };
        self.by_host.entry(host.clone()).or_default().add(took);
        self.assigned.insert(key, (host, took));
    }
}

fn key_of(reference: &ObjectRef<Machine>) -> String {
    format!(
        "{}/{}",
        reference.namespace.as_deref().unwrap_or_default(),
        reference.name
    )
}

impl HostUsage {
    /// The usage of `machines` as they are (for caches filled without a watch).
    pub fn of<'a>(machines: impl IntoIterator<Item = &'a Machine>) -> Arc<Self> {
        let usage = Arc::new(Self::default());
        for m in machines {
            usage.changed(ObjectRef::from_obj(m), Some(m));
        }
        usage
    }

    /// What the Machines on each host take.
    pub fn by_host(&self) -> HashMap<String, Resources> {
        self.read().by_host.clone()
    }

    /// Whether Machine `namespace/name` is seen assigned to a host.
    pub fn is_assigned(&self, key: &str) -> bool {
        self.read().assigned.contains_key(key)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Observer<Machine> for HostUsage {
    fn changed(&self, reference: ObjectRef<Machine>, now: Option<&Machine>) {
        let key = key_of(&reference);
        let mut state = self.write();
        state.forget(&key);
        if let Some(m) = now {
            state.record(key, m);
        }
    }

    fn reset(&self, all: &[Arc<Machine>]) {
        let mut fresh = State::default();
        for m in all {
            fresh.record(key_of(&ObjectRef::from_obj(m.as_ref())), m);
        }
        *self.write() = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(name: &str, host: Option<&str>, cpu: &str, phase: Option<&str>) -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-x"},
            "spec": {"cluster": "a", "role": "worker", "release": "test", "hostName": host,
                     "size": {"cpu": cpu, "memory": "1Gi", "disk": "10Gi"}},
            "status": phase.map(|p| json!({"phase": p})),
        }))
        .expect("a valid Machine")
    }

    fn cpu_on(usage: &HostUsage, host: &str) -> u64 {
        usage.by_host().get(host).map_or(0, |r| r.cpu_millis)
    }

    #[test]
    fn usage_follows_placement_moves_failure_and_deletion() {
        let (a, b) = (
            machine("a", Some("h1"), "2", None),
            machine("b", None, "1", None),
        );
        let usage = HostUsage::of([&a, &b]);
        assert_eq!(cpu_on(&usage, "h1"), 2000);
        assert!(usage.is_assigned("org-x/a"));
        assert!(!usage.is_assigned("org-x/b"), "not placed yet");

        let placed = machine("b", Some("h1"), "1", None);
        usage.changed(ObjectRef::from_obj(&placed), Some(&placed));
        assert_eq!(cpu_on(&usage, "h1"), 3000);

        let moved = machine("a", Some("h2"), "2", None);
        usage.changed(ObjectRef::from_obj(&moved), Some(&moved));
        assert_eq!((cpu_on(&usage, "h1"), cpu_on(&usage, "h2")), (1000, 2000));

        let failed = machine("a", Some("h2"), "2", Some("Failed"));
        usage.changed(ObjectRef::from_obj(&failed), Some(&failed));
        assert_eq!(cpu_on(&usage, "h2"), 0, "a failed VM holds no room");
        assert!(usage.is_assigned("org-x/a"), "but it is still placed");

        usage.changed(ObjectRef::from_obj(&placed), None);
        assert_eq!(cpu_on(&usage, "h1"), 0);
        assert!(!usage.is_assigned("org-x/b"));
    }

    #[test]
    fn a_relist_recounts_from_scratch() {
        let usage = HostUsage::of([&machine("a", Some("h1"), "2", None)]);
        usage.reset(&[Arc::new(machine("c", Some("h2"), "4", None))]);
        assert_eq!((cpu_on(&usage, "h1"), cpu_on(&usage, "h2")), (0, 4000));
    }
}
