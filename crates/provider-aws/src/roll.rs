//! Rolling a worker group onto its launch template's newest version: when the
//! group launches a new version, the nodes launched from an older one are replaced
//! one at a time. A node is terminated through the group, which keeps its desired
//! size and launches the replacement; the next node goes only once the group is
//! whole again (every instance in service, as many as it wants). EC2 tags each
//! instance with the template version it was launched from
//! (`aws:ec2launchtemplate:version`), so a pass needs no call beyond the ones it
//! already makes.

use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_ec2::types::Instance;

use crate::clients::Clients;
use crate::error::{aws, Error};
use crate::tagging::tag_value;

/// The tag EC2 gives an instance launched from a template: the version.
const VERSION_TAG: &str = "aws:ec2launchtemplate:version";
/// The tag Auto Scaling gives its instances: the group's name.
const GROUP_TAG: &str = "aws:autoscaling:groupName";

/// What to do next for group `g` (named `name`), whose current version is
/// `version`, given the cluster's pending and running instances.
pub fn plan(g: &AutoScalingGroup, name: &str, version: i64, live: &[Instance]) -> Plan {
    let current = version.to_string();
    let members: Vec<&Instance> = live
        .iter()
        .filter(|i| tag_value(i.tags(), GROUP_TAG) == Some(name))
        .collect();
    let older: Vec<&str> = members
        .iter()
        .filter(|i| tag_value(i.tags(), VERSION_TAG) != Some(current.as_str()))
        .filter_map(|i| i.instance_id())
        .collect();
    let Some(first) = older.first() else {
        return Plan::Done;
    };
    let desired = usize::try_from(g.desired_capacity().unwrap_or(0)).unwrap_or(0);
    let in_service = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
        .count();
    let whole = g.instances().len() == desired && in_service == desired;
    let left = format!(
        "{} of {} nodes of {name} were launched from a template version older than {version}",
        older.len(),
        members.len()
    );
    if whole && members.len() == desired {
        Plan::Replace {
            instance: (*first).to_owned(),
            note: format!("{left}; replacing {first}"),
        }
    } else {
        Plan::Wait(format!(
            "{left}; waiting for the group to be whole ({in_service} of {desired} in service) before the next"
        ))
    }
}

/// The next step of a roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is older than the current version.
    Done,
    /// A replacement is under way.
    Wait(String),
    /// Terminate this instance; the group launches its replacement.
    Replace {
        /// The instance to replace.
        instance: String,
        /// What the status says.
        note: String,
    },
}

/// Carries out `plan`; returns what is left to say while older nodes remain.
pub async fn step(c: &Clients, plan: Plan) -> Result<Option<String>, Error> {
    match plan {
        Plan::Done => Ok(None),
        Plan::Wait(note) => Ok(Some(note)),
        Plan::Replace { instance, note } => {
            c.asg
                .terminate_instance_in_auto_scaling_group()
                .instance_id(&instance)
                .should_decrement_desired_capacity(false)
                .send()
                .await
                .map_err(aws("autoscaling:TerminateInstanceInAutoScalingGroup"))?;
            tracing::info!(%instance, "replacing a worker launched from an older template version");
            Ok(Some(note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::{Instance as AsgInstance, LifecycleState};
    use aws_sdk_ec2::types::Tag;

    fn node(id: &str, group: &str, version: &str) -> Instance {
        Instance::builder()
            .instance_id(id)
            .tags(Tag::builder().key(GROUP_TAG).value(group).build())
            .tags(Tag::builder().key(VERSION_TAG).value(version).build())
            .build()
    }

    fn group(desired: i32, states: &[LifecycleState]) -> AutoScalingGroup {
        let mut g = AutoScalingGroup::builder().desired_capacity(desired);
        for (n, s) in states.iter().enumerate() {
            g = g.instances(
                AsgInstance::builder()
                    .instance_id(format!("i-{n}"))
                    .lifecycle_state(s.clone())
                    .build(),
            );
        }
        g.build()
    }

    #[test]
    fn a_whole_group_replaces_one_older_node() {
        let live = [
            node("i-a", "w", "2"),
            node("i-b", "w", "1"),
            node("i-c", "w", "1"),
            node("i-x", "other", "1"),
        ];
        let g = group(3, &vec![LifecycleState::InService; 3]);
        match plan(&g, "w", 2, &live) {
            Plan::Replace { instance, note } => {
                assert_eq!(instance, "i-b");
                assert!(note.starts_with("2 of 3 nodes of w"), "{note}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_group_that_is_not_whole_waits() {
        let live = [node("i-a", "w", "2"), node("i-b", "w", "1")];
        let g = group(
            3,
            &[
                LifecycleState::InService,
                LifecycleState::InService,
                LifecycleState::Pending,
            ],
        );
        match plan(&g, "w", 2, &live) {
            Plan::Wait(note) => assert!(note.contains("2 of 3 in service"), "{note}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_older_is_done() {
        let live = [node("i-a", "w", "2"), node("i-b", "w", "2")];
        let g = group(2, &vec![LifecycleState::InService; 2]);
        assert_eq!(plan(&g, "w", 2, &live), Plan::Done);
        // Nodes of another group do not count.
        let live = [node("i-a", "w", "2"), node("i-z", "v", "1")];
        let g = group(1, &[LifecycleState::InService]);
        assert_eq!(plan(&g, "w", 2, &live), Plan::Done);
    }
}
