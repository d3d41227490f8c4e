//! Provisioning profiles: the roles newly discovered machines get, by quantity.
//!
//! `--profile control=control-plane:3 --profile worker=worker` makes the first
//! three machines the inventory registers control planes (profile `control`) and
//! every later one a worker. Profiles are tried in order; one with a quantity is
//! full when that many BareMetalMachines already carry its name in `spec.profile`
//! (registered by hand or discovered), one without is never full.

use std::str::FromStr;

use shoal_api::{BareMetalMachine, MachineRole};

/// A profile that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("profile {text:?}: {why}; write NAME=ROLE[:COUNT], e.g. control=control-plane:3")]
pub struct ProfileError {
    text: String,
    why: String,
}

/// One profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Its name, written to `spec.profile`.
    pub name: String,
    /// The role its machines get.
    pub role: MachineRole,
    /// How many machines it takes; `None`: any number.
    pub count: Option<usize>,
}

impl FromStr for Profile {
    type Err = ProfileError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| ProfileError {
            text: text.to_owned(),
            why: why.to_owned(),
        };
        let (name, rest) = text.split_once('=').ok_or_else(|| err("no '='"))?;
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(err("the name must be lower-case letters, digits and '-'"));
        }
        let (role, count) = match rest.split_once(':') {
            Some((role, count)) => {
                let n: usize = count
                    .parse()
                    .map_err(|_| err("the count must be a whole number"))?;
                (role, Some(n))
            }
            None => (rest, None),
        };
        let role = match role {
            "control-plane" => MachineRole::ControlPlane,
            "worker" => MachineRole::Worker,
            _ => return Err(err("the role must be control-plane or worker")),
        };
        Ok(Profile {
            name: name.to_owned(),
            role,
            count,
        })
    }
}

/// The profile a newly discovered machine gets, given the machines that exist:
/// the first that is not full, or `None` when all are (or there are none).
pub fn assign<'a>(profiles: &'a [Profile], existing: &[BareMetalMachine]) -> Option<&'a Profile> {
    profiles.iter().find(|p| {
        p.count.is_none_or(|max| {
            existing
                .iter()
                .filter(|m| m.spec.profile.as_deref() == Some(p.name.as_str()))
                .count()
                < max
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::BareMetalMachineSpec;

    fn with_profile(name: &str) -> BareMetalMachine {
        BareMetalMachine::new(
            "m",
            BareMetalMachineSpec {
                mac: "52:54:00:00:00:01".into(),
                role: MachineRole::Worker,
                profile: Some(name.into()),
                bmc: None,
                network: None,
            },
        )
    }

    #[test]
    fn the_first_three_are_control_planes_and_the_rest_workers() {
        let profiles: Vec<Profile> = ["control=control-plane:3", "worker=worker"]
            .iter()
            .map(|p| p.parse().expect("profile"))
            .collect();
        let mut existing = Vec::new();
        let mut roles = Vec::new();
        for _ in 0..5 {
            let p = assign(&profiles, &existing).expect("a profile");
            roles.push(p.role);
            existing.push(with_profile(&p.name));
        }
        assert_eq!(
            roles,
            [
                MachineRole::ControlPlane,
                MachineRole::ControlPlane,
                MachineRole::ControlPlane,
                MachineRole::Worker,
                MachineRole::Worker
            ]
        );
        // Full profiles everywhere: none.
        let only: Vec<Profile> = vec!["control=control-plane:1".parse().expect("p")];
        assert!(assign(&only, &[with_profile("control")]).is_none());
    }

    #[test]
    fn bad_profiles_say_how_to_write_one() {
        for (text, why) in [
            ("control", "no '='"),
            ("Control=worker", "lower-case"),
            ("c=master", "control-plane or worker"),
            ("c=worker:many", "whole number"),
        ] {
            let e = text.parse::<Profile>().expect_err(text).to_string();
            assert!(e.contains(why) && e.contains("NAME=ROLE[:COUNT]"), "{e}");
        }
    }
}
