//! Property tests of the controllers' pure planners: rollout plans
//! ([`rollout::plan`]), Machine addresses ([`addressing::pick_ip`] with the
//! [`Recent`] creations a lagging cache does not show yet) and the IPAM slots
//! ([`IpamConfig`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;

use proptest::prelude::*;
use shoal_api::validate::Cidr;
use shoal_controllers::addressing::{pick_ip, FIRST_MACHINE_OFFSET};
use shoal_controllers::context::Recent;
use shoal_controllers::ipam::IpamConfig;
use shoal_controllers::rollout::{plan, settled, Member, Step};

/// One Machine in the simulation, with the rounds until it boots or is gone.
#[derive(Debug, Clone)]
struct Sim {
    m: Member,
    boot_in: u32,
    gone_in: u32,
}

fn member() -> impl Strategy<Value = Sim> {
    (any::<[bool; 4]>(), 0u32..4, 0u32..4).prop_map(
        |([ready, replaceable, deleting, current], boot_in, gone_in)| Sim {
            m: Member {
                name: String::new(),
                slot: 0,
                // A replaceable Machine has failed, so it is not Ready.
                ready: ready && !replaceable,
                replaceable,
                deleting,
                current,
            },
            boot_in,
            gone_in,
        },
    )
}

/// A set of Machines in any state, a desired count, and how the world answers:
/// every Machine that has not failed boots within a few rounds (one that failed
/// for good waits for a person, and no plan can settle around it).
#[derive(Debug, Clone)]
struct World {
    initial: Vec<Sim>,
    desired: u32,
    /// Rounds before the dependency (e.g. the control plane) lets this set roll.
    held_for: u32,
    /// Boot and deletion times of new Machines, used in turn.
    delays: Vec<u32>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(member(), 0..7),
        0u32..6,
        0u32..4,
        prop::collection::vec(0u32..4, 1..8),
    )
        .prop_map(|(mut initial, desired, held_for, delays)| {
            for (i, s) in initial.iter_mut().enumerate() {
                s.m.name = format!("old-{i}");
                s.m.slot = i as u32;
            }
            World {
                initial,
                desired,
                held_for,
                delays,
            }
        })
}

fn members(set: &[Sim]) -> Vec<Member> {
    set.iter().map(|s| s.m.clone()).collect()
}

/// Active: neither being deleted nor failed.
fn active(set: &[Member]) -> impl Iterator<Item = &Member> {
    set.iter().filter(|m| !m.deleting && !m.replaceable)
}

/// Checks one plan against the limits; returns how many Machines it creates.
fn check_plan(set: &[Member], desired: usize, steps: &[Step]) -> Result<usize, TestCaseError> {
    let creates = steps.iter().filter(|s| **s == Step::Create).count();
    let deleted: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Delete(name) => Some(name.as_str()),
            Step::Create => None,
        })
        .collect();
    let distinct: BTreeSet<&str> = deleted.iter().copied().collect();
    prop_assert_eq!(
        distinct.len(),
        deleted.len(),
        "a Machine deleted twice: {:?}",
        steps
    );
    for name in &deleted {
        let target = set.iter().find(|m| m.name == *name);
        prop_assert!(
            target.is_some_and(|m| !m.deleting),
            "deletes {} which is not a live Machine",
            name
        );
    }
    let before = active(set).count();
    let gone_active = active(set)
        .filter(|m| distinct.contains(m.name.as_str()))
        .count();
    // Surge: never more than one Machine above the desired count, and only by
    // rolling a set that is at its count.
    prop_assert!(
        before - gone_active + creates <= before.max(desired + 1),
        "surge beyond one: {} active, desired {}, {:?}",
        before,
        desired,
        steps
    );
    if before >= desired && creates > 0 {
        // A surge Machine only into a settled set: at its count, all Ready,
        // nothing being deleted.
        prop_assert!(creates == 1 && before == desired, "{:?}", steps);
        prop_assert!(
            active(set).all(|m| m.ready) && set.iter().all(|m| !m.deleting),
            "a surge Machine while the set is not settled: {:?} {:?}",
            set,
            steps
        );
    }
    // Never both scale down and create: what is deleted is not recreated.
    prop_assert!(
        gone_active == 0 || creates == 0,
        "deletes an active Machine and creates one: {:?}",
        steps
    );
    // Unavailability: Ready Machines go only above the desired count.
    let ready_before = active(set).filter(|m| m.ready).count();
    let ready_after = active(set)
        .filter(|m| m.ready && !distinct.contains(m.name.as_str()))
        .count();
    prop_assert!(
        ready_after >= ready_before.min(desired),
        "Ready {} -> {} with desired {}: {:?}",
        ready_before,
        ready_after,
        desired,
        steps
    );
    // Failed Machines are always cleared away.
    for m in set.iter().filter(|m| m.replaceable && !m.deleting) {
        prop_assert!(
            distinct.contains(m.name.as_str()),
            "{} failed but stays",
            m.name
        );
    }
    Ok(creates)
}

/// One round of the world: Machines boot, deletions finish.
fn tick(set: &mut Vec<Sim>) {
    set.retain_mut(|s| {
        if s.m.deleting {
            if s.gone_in == 0 {
                return false;
            }
            s.gone_in -= 1;
        } else if !s.m.ready && !s.m.replaceable {
            if s.boot_in == 0 {
                s.m.ready = true;
            } else {
                s.boot_in -= 1;
            }
        }
        true
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn plans_stay_within_limits_and_converge(w in world()) {
        let mut set = w.initial.clone();
        let desired = w.desired as usize;
        // Current Machines that will serve; no more are created than are missing.
        let keep = active(&members(&set)).filter(|m| m.current).count();
        let mut creates = 0;
        let mut next = set.len() as u32;
        let mut delays = w.delays.iter().copied().cycle();
        // Each Machine boots and goes within 4 rounds; a few rounds per Machine.
        let bound = 5 * (set.len() as u32 + w.desired + 2) * 5 + w.held_for;
        let mut round = 0;
        while !(settled(&members(&set), w.desired) && set.iter().all(|s| !s.m.deleting)) {
            prop_assert!(round < bound, "not settled after {} rounds: {:?}", round, set);
            let now = members(&set);
            let steps = plan(&now, w.desired, round >= w.held_for);
            creates += check_plan(&now, desired, &steps)?;
            for step in steps {
                match step {
                    Step::Create => {
                        set.push(Sim {
                            m: Member {
                                name: format!("new-{next}"),
                                slot: next,
                                ready: false,
                                replaceable: false,
                                deleting: false,
                                current: true,
                            },
                            boot_in: delays.next().unwrap_or(0),
                            gone_in: delays.next().unwrap_or(0),
                        });
                        next += 1;
                    }
                    Step::Delete(name) => {
                        for s in set.iter_mut().filter(|s| s.m.name == name) {
                            s.m.deleting = true;
                        }
                    }
                }
            }
            tick(&mut set);
            round += 1;
        }
        // No churn: exactly the missing current Machines were created.
        prop_assert_eq!(creates, desired.saturating_sub(keep), "{:?}", w);
        // A settled set stays as it is.
        prop_assert!(plan(&members(&set), w.desired, true).is_empty());
    }

    #[test]
    fn any_single_plan_stays_within_limits(w in world(), may_roll in any::<bool>()) {
        let set = members(&w.initial);
        let steps = plan(&set, w.desired, may_roll);
        check_plan(&set, w.desired as usize, &steps)?;
    }
}

/// What happens next in one cluster's network.
#[derive(Debug, Clone)]
enum Op {
    /// A controller creates a Machine with the address `pick_ip` chooses.
    Create,
    /// The Machine at this index (of those live) is deleted.
    Delete(usize),
    /// The cache catches up by this many API changes.
    Catch(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Create),
        2 => any::<usize>().prop_map(Op::Delete),
        2 => (1usize..4).prop_map(Op::Catch),
    ]
}

/// A change the API made that the cache has not shown yet.
#[derive(Debug)]
enum Change {
    Created(String, Ipv4Addr),
    Deleted(String),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn addresses_are_unique_usable_and_the_lowest_free(
        (bits, prefix) in (any::<u32>(), 24u8..=30),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mask = u32::MAX << (32 - u32::from(prefix));
        let network = bits & mask;
        let broadcast = network | !mask;
        let cidr = format!("{}/{prefix}", Ipv4Addr::from(network));
        let mut live: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        let mut cache: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        let mut lag: VecDeque<Change> = VecDeque::new();
        let mut recent = Recent::default();
        let mut next = 0;
        for op in ops {
            match op {
                Op::Create => {
                    // What the controller knows: its cache and its own creations.
                    let (_, mut used) = recent.of();
                    used.extend(cache.values().copied());
                    let Some(ip) = pick_ip(&cidr, &used) else {
                        let usable = broadcast.saturating_sub(network + FIRST_MACHINE_OFFSET) as usize;
                        prop_assert!(used.len() >= usable, "none free with {} of {} used", used.len(), usable);
                        continue;
                    };
                    let n = u32::from(ip);
                    prop_assert!(n & mask == network, "{} is outside {}", ip, cidr);
                    prop_assert!(n - network >= FIRST_MACHINE_OFFSET, "{} is reserved (network, gateway)", ip);
                    prop_assert!(n != broadcast, "{} is the broadcast address", ip);
                    prop_assert!(!used.contains(&ip), "{} was known to be used", ip);
                    prop_assert!(
                        (network + FIRST_MACHINE_OFFSET..n).all(|x| used.contains(&Ipv4Addr::from(x))),
                        "{} is not the lowest free address", ip
                    );
                    prop_assert!(!live.values().any(|x| *x == ip), "{} handed out twice", ip);
                    let name = format!("m-{next}");
                    next += 1;
                    live.insert(name.clone(), ip);
                    recent.remember(name.clone(), ip);
                    lag.push_back(Change::Created(name, ip));
                }
                Op::Delete(i) => {
                    if let Some(name) = live.keys().nth(i % live.len().max(1)).cloned() {
                        live.remove(&name);
                        lag.push_back(Change::Deleted(name));
                    }
                }
                Op::Catch(n) => {
                    for change in lag.drain(..n.min(lag.len())) {
                        match change {
                            Change::Created(name, ip) => {
                                cache.insert(name, ip);
                            }
                            Change::Deleted(name) => {
                                cache.remove(&name);
                            }
                        }
                    }
                    recent.confirm(&cache.keys().cloned().collect());
                }
            }
        }
    }

    #[test]
    fn any_node_cidr_text_is_handled(text in "[0-9.]{0,16}/[0-9]{0,3}", bits in any::<u32>(), prefix in 0u8..=32) {
        let _ = pick_ip(&text, &BTreeSet::new());
        // Host bits in the text do not move the range outside the network.
        let cidr = format!("{}/{prefix}", Ipv4Addr::from(bits));
        if let Some(ip) = pick_ip(&cidr, &BTreeSet::new()) {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            prop_assert_eq!(u32::from(ip), (bits & mask) + FIRST_MACHINE_OFFSET, "{}", cidr);
        }
    }
}

fn ipam_config() -> impl Strategy<Value = IpamConfig> {
    (1u32..(1 << 24), any::<u32>(), 0u8..=30, 8u8..=30).prop_map(|(vni_base, bits, a, b)| {
        let (pool, node) = (a.min(b), b);
        let mask = u32::MAX.checked_shl(32 - u32::from(pool)).unwrap_or(0);
        IpamConfig {
            vni_base,
            node_pool: Ipv4Addr::from(bits & mask),
            node_pool_prefix: pool,
            node_prefix: node,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn ipam_slots_are_disjoint_networks_inside_the_pool(c in ipam_config(), picks in prop::collection::vec(any::<u32>(), 1..50)) {
        prop_assert!(c.validate().is_ok(), "{:?}", c);
        let capacity = c.capacity();
        prop_assert!(capacity >= 1);
        let pool: Cidr = c.pool_text().parse().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let mut seen: Vec<(Cidr, u32)> = Vec::new();
        let mut vnis = BTreeSet::new();
        // Both ends and random slots in between.
        let slots: BTreeSet<u32> = picks.iter().map(|p| p % capacity).chain([0, capacity - 1]).collect();
        for slot in slots {
            let a = c.allocation(slot);
            prop_assert_eq!(a.slot, slot);
            prop_assert!((1..1 << 24).contains(&a.vni), "VNI {} of slot {}", a.vni, slot);
            prop_assert!(vnis.insert(a.vni), "VNI {} twice", a.vni);
            let net: Cidr = a.node_cidr.parse().map_err(|e| TestCaseError::fail(format!("{}: {e:?}", a.node_cidr)))?;
            prop_assert_eq!(net.prefix(), c.node_prefix);
            prop_assert!(pool.overlaps(&net), "{} is outside the pool {}", net, pool);
            for (other, other_slot) in &seen {
                prop_assert!(!net.overlaps(other), "slots {} and {} overlap: {} {}", slot, other_slot, net, other);
            }
            seen.push((net, slot));
        }
    }
}

proptest! {
    #[test]
    fn ipam_pools_the_agents_cannot_use_are_refused(c in ipam_config(), node in 0u8..=40, pool in 0u8..=40) {
        let c = IpamConfig { node_prefix: node, node_pool_prefix: pool, ..c };
        let usable = pool <= node && (8..=30).contains(&node);
        prop_assert_eq!(c.validate().is_ok(), usable, "{:?}", c);
    }
}
