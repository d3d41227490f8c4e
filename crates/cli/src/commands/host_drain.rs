//! `shoal host drain`: cordons the host and asks for a drain (`spec.drain`); the
//! controllers carry it out, live-migrating each VM (or replacing the Machines with
//! `--replace`), and report it in the Host's `Drained` condition, which `--wait`
//! follows.

use chrono::{SecondsFormat, Utc};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;
use shoal_api::{Condition, Host};

use crate::args::WaitArgs;
use crate::client::CliError;
use crate::commands::cluster_view::condition;
use crate::commands::wait::{Deadline, LinePrinter};
use crate::output::emit_line;

/// Where a drain asked for at `requested_at` stands, from the Host: `None` while the
/// controllers have not looked at this request yet.
pub fn progress<'a>(host: &'a Host, requested_at: &str) -> Option<&'a Condition> {
    let status = host.status.as_ref()?;
    let seen = status.drain.as_ref()?.requested_at.as_deref() == Some(requested_at);
    seen.then(|| condition(&status.conditions, "Drained"))
        .flatten()
}

/// Asks for host `name` to be drained, and waits (if asked) until it is, or until
/// the drain says what blocks it.
pub async fn drain(
    hosts: &Api<Host>,
    name: &str,
    replace: bool,
    include_control_plane: bool,
    wait: WaitArgs,
) -> Result<(), CliError> {
    let requested_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let mode = if replace { "Replace" } else { "Migrate" };
    let patch = json!({"spec": {"unschedulable": true, "drain": {
        "mode": mode,
        "includeControlPlane": include_control_plane,
        "requestedAt": requested_at,
    }}});
    hosts
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let how = if replace {
        "deleting its machines so that their clusters recreate them elsewhere"
    } else {
        "live-migrating its machines to other hosts"
    };
    emit_line(format_args!(
        "host.shoal.io/{name} cordoned; draining: {how}"
    ))?;
    if !wait.wait {
        return Ok(());
    }
    let deadline = Deadline::after(wait.timeout);
    let mut lines = LinePrinter::default();
    loop {
        let host = hosts.get(name).await?;
        match progress(&host, &requested_at) {
            Some(c) if c.status == "True" => {
                return emit_line(format_args!("host {name} drained"));
            }
            Some(c) if c.reason == "DrainBlocked" => {
                return Err(CliError::Usage(format!(
                    "the drain of host {name} is blocked: {}",
                    c.message
                )));
            }
            Some(c) => lines.print(c.message.clone())?,
            None => lines.print("waiting for the controllers to take the drain up".into())?,
        }
        if !deadline.tick().await {
            let last = progress(&host, &requested_at)
                .map(|c| c.message.clone())
                .unwrap_or_else(|| "the controllers never took the drain up".into());
            return Err(deadline.timeout(
                format!("host {name} to drain"),
                format!(
                    "{last}; the controllers and the host agents carry the drain out (are \
                     they running?)"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(requested_at: Option<&str>, reason: &str, status: &str) -> Host {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": "h1"},
            "spec": {"unschedulable": true, "drain": {"requestedAt": "t2"}},
            "status": {
                "drain": {"requestedAt": requested_at, "remaining": 1},
                "conditions": [{"type": "Drained", "status": status, "reason": reason,
                                "message": "m"}]}
        }))
        .expect("a valid Host")
    }

    #[test]
    fn only_the_condition_of_this_request_counts() {
        let stale = host(Some("t1"), "Drained", "True");
        assert!(
            progress(&stale, "t2").is_none(),
            "an earlier drain's verdict"
        );
        let fresh = host(Some("t2"), "DrainBlocked", "False");
        assert_eq!(
            progress(&fresh, "t2").map(|c| c.reason.as_str()),
            Some("DrainBlocked")
        );
        assert!(progress(&host(None, "Draining", "False"), "t2").is_none());
    }
}
