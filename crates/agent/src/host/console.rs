//! The console report: while a Machine's Node has not registered in its Kubernetes
//! guest (the controllers set `NodeReady=False NodeNotRegistered`), the agent copies
//! the last lines of the VM's serial console into `status.console`, at most once per
//! [`REFRESH`], so `shoal cluster get` shows where the node's boot stopped without a
//! login on the host.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_api::wellknown::condition::{NODE_NOT_REGISTERED, NODE_READY};
use shoal_api::{ConsoleTail, Machine};

/// How many console lines a report carries.
pub const LINES: usize = 12;
/// How often a report is refreshed while the Node stays unregistered.
pub const REFRESH: Duration = Duration::from_secs(60);
/// The longest line kept, in characters; longer ones are cut.
const LINE_CHARS: usize = 200;

/// Whether `m` wants a fresh console report at `now`.
pub fn due(m: &Machine, now: DateTime<Utc>) -> bool {
    let Some(status) = m.status.as_ref() else {
        return false;
    };
    let unregistered = status
        .conditions
        .iter()
        .any(|c| c.type_ == NODE_READY && c.status == "False" && c.reason == NODE_NOT_REGISTERED);
    if !unregistered {
        return false;
    }
    match status
        .console
        .as_ref()
        .and_then(|c| DateTime::parse_from_rfc3339(&c.time).ok())
    {
        Some(then) => (now - then.with_timezone(&Utc))
            .to_std()
            .is_ok_and(|age| age >= REFRESH),
        None => true,
    }
}

/// The last [`LINES`] non-empty lines of the console log in `dir`, read at `now`,
/// with terminal escapes and carriage returns removed.
pub fn read(dir: &Path, now: DateTime<Utc>) -> ConsoleTail {
    let text = std::fs::read(dir.join("console.log")).unwrap_or_default();
    ConsoleTail {
        lines: last_lines(&String::from_utf8_lossy(&text), LINES),
        time: now.to_rfc3339(),
    }
}

/// The last `n` non-empty lines of `text`, printable and cut to [`LINE_CHARS`].
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .map(printable)
        .filter(|l| !l.is_empty())
        .take(n)
        .collect();
    lines.reverse();
    lines
}

/// `line` without ANSI escape sequences and control characters, trimmed and cut.
fn printable(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().chars().take(LINE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Condition, MachineStatus};

    fn machine(reason: &str, console_at: Option<&str>) -> Machine {
        let mut m = Machine::new(
            "kc-default-0",
            serde_json::from_value(serde_json::json!({
                "cluster": "kc", "role": "worker", "release": "kubeadm-1-35-4",
                "size": {"cpu": "2", "memory": "2Gi", "disk": "10Gi"},
            }))
            .expect("a valid spec"),
        );
        m.status = Some(MachineStatus {
            conditions: vec![Condition {
                type_: NODE_READY.into(),
                status: "False".into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: None,
                observed_generation: None,
            }],
            console: console_at.map(|t| ConsoleTail {
                lines: vec!["old".into()],
                time: t.into(),
            }),
            ..Default::default()
        });
        m
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn an_unregistered_node_gets_a_report_then_one_a_minute() {
        let now = at("2026-12-04T10:00:00Z");
        assert!(due(&machine(NODE_NOT_REGISTERED, None), now));
        assert!(!due(
            &machine(NODE_NOT_REGISTERED, Some("2026-12-04T09:59:30Z")),
            now
        ));
        assert!(due(
            &machine(NODE_NOT_REGISTERED, Some("2026-12-04T09:58:59Z")),
            now
        ));
        assert!(due(&machine(NODE_NOT_REGISTERED, Some("garbage")), now));
    }

    #[test]
    fn a_registered_or_unknown_node_gets_none() {
        let now = at("2026-12-04T10:00:00Z");
        assert!(!due(&machine("KubeletNotReady", None), now));
        let mut bare = machine(NODE_NOT_REGISTERED, None);
        bare.status = None;
        assert!(!due(&bare, now));
    }

    #[test]
    fn the_tail_is_the_last_printable_lines() {
        let long = "x".repeat(500);
        let text = format!(
            "boot\n\n\u{1b}[0;32m  OK  \u{1b}[0m Started kubelet\r\n{long}\nkubelet: failed to load config\n\n"
        );
        let got = last_lines(&text, 3);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "OK   Started kubelet");
        assert_eq!(got[1].len(), LINE_CHARS);
        assert_eq!(got[2], "kubelet: failed to load config");
        assert_eq!(
            last_lines(&text, 10).first().map(String::as_str),
            Some("boot")
        );
        assert!(last_lines("", 5).is_empty());
    }

    #[test]
    fn a_missing_log_reads_as_no_lines() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let now = at("2026-12-04T10:00:00Z");
        let tail = read(tmp.path(), now);
        assert!(tail.lines.is_empty());
        assert_eq!(tail.time, now.to_rfc3339());
        std::fs::write(tmp.path().join("console.log"), "a\nb\n")?;
        assert_eq!(read(tmp.path(), now).lines, vec!["a", "b"]);
        Ok(())
    }
}
