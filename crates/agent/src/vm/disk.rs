//! A VM's copy-on-write disk: a qcow2 overlay on the release's base image, made
//! with `qemu-img` (its JSON output is read back in tests).

use std::path::{Path, PathBuf};

/// Why an overlay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// `qemu-img` could not be run.
    #[error("running {program}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img` refused; `stderr` says why.
    #[error("qemu-img create {overlay}: {stderr}")]
    Failed {
        /// The overlay it was asked to make.
        overlay: PathBuf,
        /// What it said.
        stderr: String,
    },
}

/// The format of a base image, by its extension: `qcow2`, otherwise `raw`.
pub fn base_format(base: &Path) -> &'static str {
    if base.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

/// Creates a qcow2 overlay on `base` with a virtual size of `size` bytes (never
/// smaller than the base: qemu-img refuses that, and the error says so).
pub async fn make_overlay(
    qemu_img: &Path,
    base: &Path,
    overlay: &Path,
    size: u64,
) -> Result<(), DiskError> {
    let out = tokio::process::Command::new(qemu_img)
        .arg("create")
        .args(["-q", "-f", "qcow2", "-F", base_format(base), "-b"])
        .arg(base)
        .arg(overlay)
        .arg(size.to_string())
        .output()
        .await
        .map_err(|source| DiskError::Spawn {
            program: qemu_img.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(DiskError::Failed {
            overlay: overlay.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overlays_a_raw_base_with_the_machine_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base.img");
        std::fs::write(&base, vec![0u8; 1 << 20]).expect("base");
        let overlay = dir.path().join("disk.qcow2");
        make_overlay(Path::new("qemu-img"), &base, &overlay, 1 << 30)
            .await
            .expect("qemu-img create (install qemu-utils)");
        let info = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&overlay)
            .output()
            .expect("qemu-img info");
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).expect("JSON");
        assert_eq!(v["format"], "qcow2");
        assert_eq!(v["virtual-size"], 1u64 << 30);
        assert_eq!(v["backing-filename"], base.display().to_string());
        assert_eq!(v["backing-filename-format"], "raw");

        let missing = make_overlay(
            Path::new("qemu-img"),
            &dir.path().join("nope.img"),
            &dir.path().join("x.qcow2"),
            1 << 30,
        )
        .await
        .expect_err("no base");
        assert!(matches!(missing, DiskError::Failed { .. }), "{missing}");
    }
}
