//! The agent's network namespace. With `--netns`, every socket of the data plane
//! (netlink, DHCP, metadata) and every process that owns interfaces (QEMU, `nft`) is
//! created inside it, so the machine's own namespace is never touched.
//!
//! A socket belongs to the namespace it was created in, and a child process starts in
//! the namespace of the thread that forks it. [`NetNs::run`] therefore runs a closure
//! on a short-lived thread that has entered the namespace first; the agent's own
//! threads never move.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where named namespaces are bound, as `ip netns` does.
pub const NETNS_DIR: &str = "/run/netns";

/// A namespace operation failure, naming the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name cannot be a file name under [`NETNS_DIR`].
    #[error("network namespace name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// Creating the namespace failed.
    #[error("creating network namespace {name}: {message}")]
    Create {
        /// The namespace.
        name: String,
        /// What failed.
        message: String,
    },
    /// Opening or entering the namespace failed.
    #[error("entering network namespace {path}")]
    Enter {
        /// The namespace's bind mount.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The thread that entered the namespace panicked.
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(String),
}

/// The network namespace the agent's data plane lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    name: Option<String>,
}

impl NetNs {
    /// No confinement: the data plane lives in the agent's own namespace. Only for
    /// agents that run inside a namespace already (and for tests of the pure parts).
    pub fn current() -> Self {
        NetNs { name: None }
    }

    /// The named namespace `/run/netns/<name>`, created if it does not exist.
    pub async fn ensure(name: &str) -> Result<Self, NetnsError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(NetnsError::BadName(name.to_string()));
        }
        let ns = NetNs {
            name: Some(name.to_string()),
        };
        if let Some(path) = ns.path() {
            if !path.exists() {
                tracing::info!(netns = name, "creating network namespace");
                create(name, &path).await?;
            }
        }
        Ok(ns)
    }

    /// The namespace's name, if confined.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The namespace's bind mount, if confined.
    pub fn path(&self) -> Option<PathBuf> {
        self.name.as_ref().map(|n| Path::new(NETNS_DIR).join(n))
    }

    /// Runs `f` on a thread inside the namespace and returns its result. Sockets `f`
    /// creates stay in the namespace; so do processes it forks.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let Some(path) = self.path() else {
            return Ok(f());
        };
        let label = path.display().to_string();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).map_err(|source| NetnsError::Enter {
                        path: path.clone(),
                        source,
                    })?;
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&file),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| NetnsError::Enter {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                    Ok(f())
                })
                .join()
                .map_err(|_| NetnsError::Panicked(label))?
        })
    }

    /// The argv prefix that starts a program inside the namespace (`nsenter
    /// --net=<path> --`), or nothing when not confined.
    pub fn command_prefix(&self) -> Vec<OsString> {
        match self.path() {
            Some(path) => {
                let mut net = OsString::from("--net=");
                net.push(path);
                vec!["nsenter".into(), net, "--".into()]
            }
            None => Vec::new(),
        }
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl Into<OsString>) -> tokio::process::Command {
        let mut argv = self.command_prefix();
        argv.push(program.into());
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }
}

/// Creates the named namespace with `ip netns add`, which prepares [`NETNS_DIR`] as
/// a shared mount the first time. Nothing is forked from this (multi-threaded)
/// process but the command itself; creations within the process are serialized, and
/// a namespace that another process created meanwhile counts as created.
async fn create(name: &str, path: &Path) -> Result<(), NetnsError> {
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = CREATING.lock().await;
    if path.exists() {
        return Ok(());
    }
    let failed = |message: String| NetnsError::Create {
        name: name.to_string(),
        message,
    };
    let out = tokio::process::Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .await
        .map_err(|e| {
            failed(format!(
                "running `ip netns add`: {e} (is iproute2 installed?)"
            ))
        })?;
    if out.status.success() || path.exists() {
        return Ok(());
    }
    Err(failed(format!(
        "`ip netns add {name}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_bad_names() {
        for bad in ["", "..", "a/b", "a b"] {
            assert!(matches!(
                NetNs::ensure(bad).await,
                Err(NetnsError::BadName(_))
            ));
        }
    }

    #[test]
    fn prefixes_commands() {
        assert!(NetNs::current().command_prefix().is_empty());
        let ns = NetNs {
            name: Some("h1".into()),
        };
        assert_eq!(
            ns.command_prefix(),
            vec![
                OsString::from("nsenter"),
                OsString::from("--net=/run/netns/h1"),
                OsString::from("--")
            ]
        );
        assert_eq!(NetNs::current().run(|| 7).expect("runs"), 7);
    }
}
