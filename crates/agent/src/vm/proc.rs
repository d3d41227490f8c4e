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

/// Gives every thread of `pid` the nice value `nice`, and its autogroup too: QEMU
/// daemonizes into a session of its own, and where the kernel groups sessions
/// (`sched_autogroup_enabled`), CPU time is shared between the groups by their nice
/// value, and a thread's own counts only within its group.
pub(crate) fn set_nice(pid: u32, nice: i32) -> std::io::Result<()> {
    let autogroup = format!("/proc/{pid}/autogroup");
    match std::fs::write(&autogroup, nice.to_string()) {
        Ok(()) => {}
        // A kernel without autogroups has no such file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = task?.file_name().to_string_lossy().parse::<i32>().ok();
        let Some(tid) = tid.and_then(rustix::process::Pid::from_raw) else {
            continue;
        };
        match rustix::process::setpriority_process(Some(tid), nice) {
            Ok(()) => {}
            // The thread ended between the listing and the call.
            Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The nice value of thread `tid` of `pid`, from its stat line (field 19).
#[cfg(test)]
pub(crate) fn thread_nice(pid: u32, tid: &str) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the name start at 3 (state); nice is field 19.
    rest.split_whitespace().nth(19 - 3)?.parse().ok()
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

    #[test]
    fn a_child_and_all_its_threads_get_the_nice_value() {
        // A child with threads, in a session (so an autogroup) of its own, as a
        // daemonized QEMU is: the test process keeps its share.
        let mut child = std::process::Command::new("setsid")
            .args([
                "python3",
                "-c",
                "import threading, time\n\
                 for _ in range(3): threading.Thread(target=time.sleep, args=(30,)).start()\n\
                 time.sleep(30)",
            ])
            .spawn()
            .expect("setsid and python3 run");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count()) < 4
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let result = set_nice(pid, 7);
        let nices: Vec<Option<i32>> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task list")
            .map(|t| thread_nice(pid, &t.expect("task").file_name().to_string_lossy()))
            .collect();
        let autogroup = std::fs::read_to_string(format!("/proc/{pid}/autogroup")).ok();
        let _ = child.kill();
        let _ = child.wait();
        result.expect("set_nice succeeds on our own child");
        assert_eq!(nices.len(), 4, "the main thread and three more: {nices:?}");
        assert!(nices.iter().all(|n| *n == Some(7)), "{nices:?}");
        if let Some(group) = autogroup {
            assert!(group.trim_end().ends_with("nice 7"), "{group}");
        }
        assert!(set_nice(u32::MAX, 7).is_err(), "no such process");
    }
}
