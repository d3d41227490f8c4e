//! Where a Machine goes, as a pure function of the hosts and what they already run.

use std::collections::BTreeMap;

use shoal_api::resources::common::MachineRole;

/// What the scheduler knows of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    /// The Host's name.
    pub name: String,
    /// Ready (its Lease is fresh and its agent says so).
    pub ready: bool,
    /// Cordoned by an administrator.
    pub unschedulable: bool,
    /// What it can give to VMs in all.
    pub allocatable: Resources,
    /// What the Machines assigned to it take.
    pub allocated: Resources,
    /// Machines per (cluster key, role) on it, for spreading.
    pub per_cluster: BTreeMap<(String, bool), u32>,
}

/// CPU, memory and disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes.
    pub disk: u64,
}

impl Resources {
    fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory: self.memory.saturating_sub(other.memory),
            disk: self.disk.saturating_sub(other.disk),
        }
    }

    fn fits(self, need: Resources) -> bool {
        self.cpu_millis >= need.cpu_millis && self.memory >= need.memory && self.disk >= need.disk
    }

    /// Adds `other` in place.
    pub fn add(&mut self, other: Resources) {
        self.cpu_millis += other.cpu_millis;
        self.memory += other.memory;
        self.disk += other.disk;
    }

    /// Takes `other` away in place (never below zero).
    pub fn remove(&mut self, other: Resources) {
        *self = self.minus(other);
    }
}

/// What is being placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `namespace/cluster`.
    pub cluster: String,
    /// Its role.
    pub role: MachineRole,
    /// What it needs.
    pub needs: Resources,
}

/// Why nothing fits: a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unschedulable(pub String);

/// Chooses a host for `req`: among Ready, schedulable hosts with room, the one
/// with the fewest Machines of the same cluster and role (control planes spread
/// over hosts, and so do workers where they can), then the most free CPU, then
/// the name, so that the choice is deterministic.
pub fn place(req: &Request, hosts: &[HostView]) -> Result<String, Unschedulable> {
    let key = (req.cluster.clone(), req.role == MachineRole::ControlPlane);
    hosts
        .iter()
        .filter(|h| h.ready && !h.unschedulable)
        .filter(|h| h.allocatable.minus(h.allocated).fits(req.needs))
        .min_by(|a, b| {
            let spread_a = a.per_cluster.get(&key).copied().unwrap_or(0);
            let spread_b = b.per_cluster.get(&key).copied().unwrap_or(0);
            let free_a = a.allocatable.minus(a.allocated).cpu_millis;
            let free_b = b.allocatable.minus(b.allocated).cpu_millis;
            spread_a
                .cmp(&spread_b)
                .then(free_b.cmp(&free_a))
                .then(a.name.cmp(&b.name))
        })
        .map(|h| h.name.clone())
        .ok_or_else(|| Unschedulable(explain(req, hosts)))
}

/// "needs 4 CPU / 8Gi; largest free: host-2 with 2 CPU / 6Gi; 3 hosts unschedulable".
fn explain(req: &Request, hosts: &[HostView]) -> String {
    let mut msg = format!(
        "needs {} CPU / {} memory / {} disk",
        cpu(req.needs.cpu_millis),
        bytes(req.needs.memory),
        bytes(req.needs.disk)
    );
    let usable: Vec<&HostView> = hosts
        .iter()
        .filter(|h| h.ready && !h.unschedulable)
        .collect();
    let largest = usable.iter().max_by_key(|h| {
        let free = h.allocatable.minus(h.allocated);
        (free.cpu_millis, free.memory)
    });
    match largest {
        Some(h) => {
            let free = h.allocatable.minus(h.allocated);
            msg.push_str(&format!(
                "; largest free: {} with {} CPU / {} memory / {} disk",
                h.name,
                cpu(free.cpu_millis),
                bytes(free.memory),
                bytes(free.disk)
            ));
        }
        None if hosts.is_empty() => {
            msg.push_str("; no hosts are registered: start `shoal agent` on a machine")
        }
        None => {}
    }
    let not_ready = hosts.iter().filter(|h| !h.ready).count();
    let cordoned = hosts.iter().filter(|h| h.ready && h.unschedulable).count();
    if not_ready > 0 {
        msg.push_str(&format!("; {not_ready} hosts not ready"));
    }
    if cordoned > 0 {
        msg.push_str(&format!("; {cordoned} hosts unschedulable"));
    }
    msg.push_str("; add a host, free capacity, or choose a smaller machine size");
    msg
}

fn cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

fn bytes(n: u64) -> String {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    if n >= GI && n.is_multiple_of(GI) {
        format!("{}Gi", n / GI)
    } else {
        format!("{}Mi", n / MI)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn host(name: &str, cpu: u64, mem_gi: u64) -> HostView {
        HostView {
            name: name.into(),
            ready: true,
            unschedulable: false,
            allocatable: Resources {
                cpu_millis: cpu * 1000,
                memory: mem_gi * GI,
                disk: 100 * GI,
            },
            allocated: Resources::default(),
            per_cluster: BTreeMap::new(),
        }
    }

    fn req(role: MachineRole, cpu: u64, mem_gi: u64) -> Request {
        Request {
            cluster: "org-a/c".into(),
            role,
            needs: Resources {
                cpu_millis: cpu * 1000,
                memory: mem_gi * GI,
                disk: 10 * GI,
            },
        }
    }

    #[test]
    fn control_planes_spread() {
        let mut hosts = vec![host("h1", 8, 16), host("h2", 4, 16)];
        let first = place(&req(MachineRole::ControlPlane, 1, 1), &hosts).expect("fits");
        assert_eq!(first, "h1", "the host with the most free CPU first");
        hosts[0].per_cluster.insert(("org-a/c".into(), true), 1);
        let second = place(&req(MachineRole::ControlPlane, 1, 1), &hosts).expect("fits");
        assert_eq!(second, "h2", "a second control plane goes elsewhere");
    }

    #[test]
    fn nothing_fits_says_why() {
        let mut hosts = vec![
            host("host-1", 1, 2),
            host("host-2", 2, 6),
            host("host-3", 8, 8),
        ];
        hosts[2].unschedulable = true;
        let mut down = host("host-4", 16, 64);
        down.ready = false;
        hosts.push(down);
        let err = place(&req(MachineRole::Worker, 4, 8), &hosts).expect_err("too big");
        assert_eq!(
            err.0,
            "needs 4 CPU / 8Gi memory / 10Gi disk; largest free: host-2 with 2 CPU / 6Gi memory / 100Gi disk; \
             1 hosts not ready; 1 hosts unschedulable; add a host, free capacity, or choose a smaller machine size"
        );
    }

    #[test]
    fn allocated_capacity_counts() {
        let mut hosts = vec![host("h1", 2, 4)];
        hosts[0].allocated = Resources {
            cpu_millis: 2000,
            memory: GI,
            disk: 0,
        };
        assert!(place(&req(MachineRole::Worker, 1, 1), &hosts).is_err());
        let none = place(&req(MachineRole::Worker, 1, 1), &[]).expect_err("no hosts");
        assert!(none.0.contains("no hosts are registered"), "{}", none.0);
    }
}
