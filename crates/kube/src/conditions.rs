//! Status conditions: set one, keeping its transition time while its status holds.

use chrono::{SecondsFormat, Utc};
use shoal_api::resources::common::Condition;

/// The current time in the RFC 3339 form conditions and phases use.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A condition of `type_` with a status, reason and message, stamped now.
pub fn condition(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        last_transition_time: Some(now()),
        observed_generation: None,
    }
}

/// Puts `new` into `conditions`, replacing the one of the same type. The old
/// transition time stays when the status did not change.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when both lists say the same, ignoring transition times.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            get(b, &x.type_).is_some_and(|y| {
                x.status == y.status && x.reason == y.reason && x.message == y.message
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_survives_same_status() {
        let mut list = vec![];
        let mut first = condition("Ready", false, "Booting", "a");
        first.last_transition_time = Some("2026-01-01T00:00:00Z".into());
        set(&mut list, first);
        set(&mut list, condition("Ready", false, "Booting", "b"));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].message, "b");
        assert_eq!(
            list[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        set(&mut list, condition("Ready", true, "Ready", ""));
        assert_ne!(
            list[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }
}
