//! How a set of Machines (a control plane, or a node pool) converges on its desired
//! count and release, as a pure plan: replace failed Machines, scale up or down,
//! and roll to a new release one Machine at a time with a surge of one, deleting an
//! old Machine only once its replacement is Ready.

/// One Machine of the set, as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its slot number (from its name), used to pick which to remove first.
    pub slot: u32,
    /// Phase Ready.
    pub ready: bool,
    /// Failed for a reason a new Machine can fix (a lost host, an exited VM).
    pub replaceable: bool,
    /// Being deleted already.
    pub deleting: bool,
    /// On the release the cluster wants.
    pub current: bool,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create a Machine on the current release.
    Create,
    /// Delete this Machine.
    Delete(String),
}

/// The steps that move `members` towards `desired` Machines on the current release.
/// `may_roll` is false while something this set depends on (the control plane, for
/// workers) is still rolling: then no surge Machine is added.
pub fn plan(members: &[Member], desired: u32, may_roll: bool) -> Vec<Step> {
    let desired = desired as usize;
    let mut steps: Vec<Step> = members
        .iter()
        .filter(|m| !m.deleting && m.replaceable)
        .map(|m| Step::Delete(m.name.clone()))
        .collect();
    let active: Vec<&Member> = members
        .iter()
        .filter(|m| !m.deleting && !m.replaceable)
        .collect();
    let outdated: Vec<&Member> = active.iter().copied().filter(|m| !m.current).collect();
    let current_all_ready = active.iter().filter(|m| m.current).all(|m| m.ready);
    let deleting = members.iter().any(|m| m.deleting);

    if active.len() < desired {
        steps.extend(std::iter::repeat_n(Step::Create, desired - active.len()));
        return steps;
    }
    if active.len() > desired {
        let excess = active.len() - desired;
        let mut victims: Vec<&Member> = if outdated.is_empty() {
            active.clone()
        } else {
            // Old Machines go first; a Ready one only once every new one is Ready.
            outdated
                .iter()
                .copied()
                .filter(|m| !m.ready || current_all_ready)
                .collect()
        };
        // Not-ready ones first, then the highest slots.
        victims.sort_by(|a, b| a.ready.cmp(&b.ready).then(b.slot.cmp(&a.slot)));
        steps.extend(
            victims
                .into_iter()
                .take(excess)
                .map(|m| Step::Delete(m.name.clone())),
        );
        return steps;
    }
    // The right count: roll one old Machine when everything is settled.
    if !outdated.is_empty() && may_roll && !deleting && active.iter().all(|m| m.ready) {
        steps.push(Step::Create);
    }
    steps
}

/// True when the set is at `desired`, all current and all Ready.
pub fn settled(members: &[Member], desired: u32) -> bool {
    let live: Vec<&Member> = members.iter().filter(|m| !m.deleting).collect();
    live.len() == desired as usize && live.iter().all(|m| m.current && m.ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, slot: u32, ready: bool, current: bool) -> Member {
        Member {
            name: name.into(),
            slot,
            ready,
            replaceable: false,
            deleting: false,
            current,
        }
    }

    #[test]
    fn scales_up_and_down() {
        assert_eq!(plan(&[], 2, true), vec![Step::Create, Step::Create]);
        let three = [
            m("a", 0, true, true),
            m("b", 1, false, true),
            m("c", 2, true, true),
        ];
        assert_eq!(
            plan(&three, 1, true),
            vec![Step::Delete("b".into()), Step::Delete("c".into())]
        );
        assert!(plan(&three, 3, true).is_empty());
    }

    #[test]
    fn replaces_failed() {
        let mut lost = m("b", 1, false, true);
        lost.replaceable = true;
        let steps = plan(&[m("a", 0, true, true), lost], 2, true);
        assert_eq!(steps, vec![Step::Delete("b".into()), Step::Create]);
    }

    #[test]
    fn rolls_one_at_a_time_with_surge() {
        // Two old, all Ready: add one new.
        let old = [m("a", 0, true, false), m("b", 1, true, false)];
        assert_eq!(plan(&old, 2, true), vec![Step::Create]);
        // Not while the control plane rolls.
        assert!(plan(&old, 2, false).is_empty());
        // The new one boots: wait, delete nothing Ready.
        let surging = [
            m("a", 0, true, false),
            m("b", 1, true, false),
            m("c", 2, false, true),
        ];
        assert!(plan(&surging, 2, true).is_empty());
        // The new one is Ready: one old goes.
        let ready = [
            m("a", 0, true, false),
            m("b", 1, true, false),
            m("c", 2, true, true),
        ];
        assert_eq!(plan(&ready, 2, true), vec![Step::Delete("b".into())]);
        // While it is deleted, nothing else happens.
        let mut gone = m("b", 1, true, false);
        gone.deleting = true;
        assert!(plan(
            &[m("a", 0, true, false), gone, m("c", 2, true, true)],
            2,
            true
        )
        .is_empty());
        assert!(settled(&[m("c", 2, true, true), m("d", 3, true, true)], 2));
    }

    /// Walks a rollout of 3 Machines with the plan, booting each new Machine one
    /// step after it is created, and checks that Ready never drops below desired-1.
    #[test]
    fn never_below_desired_minus_one() {
        let desired = 3;
        let mut set: Vec<Member> = (0..3)
            .map(|i| m(&format!("o{i}"), i, true, false))
            .collect();
        let mut next = 3;
        for _ in 0..40 {
            for s in plan(&set, desired, true) {
                match s {
                    Step::Create => {
                        set.push(m(&format!("n{next}"), next, false, true));
                        next += 1;
                    }
                    Step::Delete(name) => set.retain(|x| x.name != name),
                }
            }
            let ready = set.iter().filter(|x| x.ready).count();
            assert!(ready >= desired as usize - 1, "{set:?}");
            for x in set.iter_mut() {
                x.ready = true;
            }
        }
        assert!(settled(&set, desired), "{set:?}");
    }
}
