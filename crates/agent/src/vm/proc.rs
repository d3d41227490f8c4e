//! Process helpers for detached QEMUs, which are not our children: liveness and
//! identity through /proc, signals by PID.

use std::path::Path;

/// Whether `pid` names a live (not zombie) process.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesized command name.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Whether `pid`'s command line holds `marker` as one argument, or inside one
/// (e.g. the VM's pidfile path), so a recycled PID is never mistaken for the VM.
pub(crate) fn cmdline_mentions(pid: u32, marker: &Path) -> bool {
    let marker = marker.to_string_lossy();
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => raw
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(marker.as_ref())),
        Err(_) => false,
    }
}

/// Sends SIGKILL to `pid`.
pub(crate) fn kill(pid: u32) -> std::io::Result<()> {
    let raw = i32::try_from(pid)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "PID out of range"))?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "PID 0 is not a process")
    })?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(std::io::Error::from)
}

/// Polls until `pid` is gone or `timeout` passes; returns whether it is gone.
pub(crate) async fn wait_gone(pid: u32, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !alive(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_identified() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!alive(u32::MAX));
        let exe = std::env::current_exe().expect("current exe");
        let name = exe.file_name().expect("exe has a name");
        assert!(cmdline_mentions(me, Path::new(name)));
        assert!(!cmdline_mentions(me, Path::new("no-such-marker-xyz")));
    }
}
