//! `/etc/shoal/node.yaml`, written by the controllers through `write_files`: which
//! role this VM plays and which Kubernetes release it stands for.
//!
//! Only the keys the image uses are read; other keys are ignored, so that the
//! controllers can add some without breaking images already built.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Where the node file is, relative to the guest's root.
pub const NODE_FILE: &str = "etc/shoal/node.yaml";

/// What the node does in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The first control-plane node.
    ControlPlaneInit,
    /// A further control-plane node.
    ControlPlaneJoin,
    /// A worker.
    Worker,
}

impl Role {
    /// Whether the node runs the control plane (and so serves the API server).
    pub fn is_control_plane(self) -> bool {
        match self {
            Role::ControlPlaneInit | Role::ControlPlaneJoin => true,
            Role::Worker => false,
        }
    }

    /// The role as written in the node file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlaneInit => "control-plane-init",
            Role::ControlPlaneJoin => "control-plane-join",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes release, `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeVersion {
    /// The major version, e.g. 1.
    pub major: u32,
    /// The minor version, e.g. 31.
    pub minor: u32,
    /// The patch version, e.g. 2.
    pub patch: u32,
}

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes version: use MAJOR.MINOR.PATCH, e.g. 1.31.2")]
pub struct BadVersion(pub String);

impl FromStr for KubeVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_string());
        let digits = s.strip_prefix('v').unwrap_or(s);
        let mut parts = digits.split('.').map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u32>().map_err(|_| bad())
        });
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(major), Some(minor), Some(patch), None) => Ok(KubeVersion {
                major: major?,
                minor: minor?,
                patch: patch?,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The parts of the node file the image uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFile {
    /// What the node does.
    pub role: Role,
    /// The cluster's name, for log lines.
    #[serde(default)]
    pub cluster: String,
    /// The Kubernetes release the node stands for.
    pub kubernetes_version: KubeVersion,
}

/// Why the node file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The file does not exist: the VM was not made by Shoal's controllers.
    #[error("{}: no such file (the VM has no role)", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid node file.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_yaml::Error,
    },
}

impl NodeFile {
    /// Reads and parses the node file at `path`.
    pub fn read(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NodeError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                NodeError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        serde_yaml::from_str(&text).map_err(|source| NodeError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_strictly() {
        let v: KubeVersion = "1.31.2".parse().expect("valid");
        assert_eq!(
            v,
            KubeVersion {
                major: 1,
                minor: 31,
                patch: 2
            }
        );
        assert_eq!(v.to_string(), "v1.31.2");
        assert_eq!("v1.20.0".parse::<KubeVersion>().expect("valid").minor, 20);
        for bad in [
            "",
            "1.31",
            "1.31.2.4",
            "1.x.2",
            "1..2",
            "+1.2.3",
            "1.31.2-rc.1",
        ] {
            assert_eq!(
                bad.parse::<KubeVersion>(),
                Err(BadVersion(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_node_file_the_controllers_write_parses_and_new_keys_are_ignored() {
        // As crates/bootstrap's NodeFile serializes it, plus a key from the future.
        let text = "role: control-plane-join\ncluster: demo\norg: acme\nhostname: demo-cp-1\n\
                    controlPlaneEndpoint: api.demo.acme.shoal.test:443\n\
                    advertiseAddress: 10.0.0.11\nkubernetesVersion: 1.31.2\nsurprise: 1\n";
        let node: NodeFile = serde_yaml::from_str(text).expect("parses");
        assert_eq!(node.role, Role::ControlPlaneJoin);
        assert!(node.role.is_control_plane());
        assert_eq!(node.cluster, "demo");
        assert_eq!(node.kubernetes_version.to_string(), "v1.31.2");

        let worker: NodeFile =
            serde_yaml::from_str("role: worker\nkubernetesVersion: 1.30.0\n").expect("parses");
        assert!(!worker.role.is_control_plane());

        let bad_role = serde_yaml::from_str::<NodeFile>("role: etcd\nkubernetesVersion: 1.30.0\n");
        assert!(bad_role.is_err());
        let bad_version =
            serde_yaml::from_str::<NodeFile>("role: worker\nkubernetesVersion: latest\n")
                .expect_err("refused");
        assert!(
            bad_version.to_string().contains("MAJOR.MINOR.PATCH"),
            "{bad_version}"
        );
    }

    #[test]
    fn a_missing_file_is_named_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = NodeFile::read(&dir.path().join(NODE_FILE)).expect_err("missing");
        assert!(matches!(err, NodeError::Missing { .. }), "{err}");
        let path = dir.path().join("node.yaml");
        std::fs::write(&path, "role: [").expect("write");
        let err = NodeFile::read(&path).expect_err("invalid");
        assert!(matches!(err, NodeError::Parse { .. }), "{err}");
    }
}
