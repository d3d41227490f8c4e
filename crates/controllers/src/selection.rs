//! Which controllers a server runs (`shoal server --controllers`): `true` (all, the
//! default), `false` (none: the server only serves the API), or a comma-separated
//! list of names, where `*` means all and `-name` takes one away, e.g.
//! `*,-hostdrain` or `hostlife,hostdrain`.

use std::collections::BTreeSet;
use std::str::FromStr;

/// Every controller, by the name `--controllers` uses.
/// `aws` is the AWS provider's, which the server runs beside these.
pub const NAMES: [&str; 7] = [
    "cluster",
    "nodepool",
    "scheduler",
    "hostlife",
    "hostdrain",
    "keypair",
    "aws",
];

/// The controllers to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection(BTreeSet<&'static str>);

impl Selection {
    /// Every controller.
    pub fn all() -> Self {
        Self(NAMES.into_iter().collect())
    }

    /// Whether controller `name` runs.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Whether any controller runs.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

impl Default for Selection {
    fn default() -> Self {
        Self::all()
    }
}

/// A `--controllers` value that names no controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown controller {0:?}: use true, false, or a comma-separated list of {names} \
     (`*` for all, `-name` to leave one out)",
    names = NAMES.join(", ")
)]
pub struct UnknownController(pub String);

impl FromStr for Selection {
    type Err = UnknownController;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "true" => return Ok(Self::all()),
            "false" | "" => return Ok(Self(BTreeSet::new())),
            _ => {}
        }
        let mut set = BTreeSet::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                set.extend(NAMES);
                continue;
            }
            let (remove, name) = match item.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, item),
            };
            let known = NAMES
                .into_iter()
                .find(|n| *n == name)
                .ok_or_else(|| UnknownController(name.to_owned()))?;
            if remove {
                set.remove(known);
            } else {
                set.insert(known);
            }
        }
        Ok(Self(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Selection {
        s.parse().expect("a valid selection")
    }

    #[test]
    fn true_false_lists_and_exclusions() {
        assert_eq!(parse("true"), Selection::all());
        assert!(!parse("false").any());
        let some = parse("hostlife, hostdrain");
        assert!(some.has("hostdrain") && some.has("hostlife") && !some.has("cluster"));
        let most = parse("*,-hostdrain");
        assert!(most.has("cluster") && !most.has("hostdrain"));
        let err = "cluster,clusters".parse::<Selection>().expect_err("a typo");
        assert!(err.to_string().contains("\"clusters\""), "{err}");
        assert!(err.to_string().contains("hostdrain"), "{err}");
    }
}
