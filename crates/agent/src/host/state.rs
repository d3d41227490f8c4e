//! The agent's state directory: one directory per VM under `vms/<namespace>/<name>`,
//! holding QEMU's own state and an owner record that says which Machine (by uid)
//! the VM belongs to, so that a restarted agent re-adopts only what is still wanted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AgentError;
use crate::vm::runtime::Vm;

/// The owner record's file name in a VM's state directory.
pub const OWNER_FILE: &str = "owner.json";

/// Who a VM state directory belongs to, saved beside the VM's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    /// The Machine's namespace.
    pub namespace: String,
    /// The Machine's name.
    pub name: String,
    /// The Machine's uid: a Machine re-created under the same name is another owner.
    pub uid: String,
    /// `<namespace>/<cluster>`.
    pub cluster: String,
}

/// A VM this agent runs, and whose it is.
pub struct OwnedVm {
    /// The VM.
    pub vm: Vm,
    /// Its Machine.
    pub owner: Owner,
}

/// Writes `owner` into the VM state directory `dir`, creating it.
pub fn write_owner(dir: &Path, owner: &Owner) -> Result<(), AgentError> {
    std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let raw = serde_json::to_vec_pretty(owner).map_err(|e| AgentError::Io {
        what: "encoding the owner record".into(),
        source: std::io::Error::other(e),
    })?;
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, raw).map_err(|source| AgentError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// The owner record of `dir`, if it has a readable one.
pub fn read_owner(dir: &Path) -> Option<Owner> {
    std::fs::read(dir.join(OWNER_FILE))
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
}

/// The VM state directories under `vms/<namespace>/<name>`, sorted.
pub fn state_dirs(vms_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(vms_dir) else {
        return dirs;
    };
    for ns in namespaces.flatten() {
        if let Ok(vms) = std::fs::read_dir(ns.path()) {
            dirs.extend(vms.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    dirs.sort();
    dirs
}

/// The last non-empty line of a VM's console log, for failure messages.
pub fn console_tail(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("console.log"))
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "(empty)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_and_dirs_are_found() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let owner = Owner {
            namespace: "org-x".into(),
            name: "m1".into(),
            uid: "u1".into(),
            cluster: "org-x/a".into(),
        };
        let dir = tmp.path().join("org-x/m1");
        write_owner(&dir, &owner)?;
        std::fs::create_dir_all(tmp.path().join("org-a/m0"))?;
        assert_eq!(read_owner(&dir), Some(owner));
        assert_eq!(read_owner(&tmp.path().join("org-a/m0")), None);
        assert_eq!(
            state_dirs(tmp.path()),
            [tmp.path().join("org-a/m0"), tmp.path().join("org-x/m1")]
        );
        Ok(())
    }

    #[test]
    fn the_console_tail_is_its_last_words() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        assert_eq!(console_tail(tmp.path()), "(empty)");
        std::fs::write(
            tmp.path().join("console.log"),
            "boot\nKernel panic - not syncing\n\n",
        )?;
        assert_eq!(console_tail(tmp.path()), "Kernel panic - not syncing");
        Ok(())
    }
}
