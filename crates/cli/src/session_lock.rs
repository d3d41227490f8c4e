//! One sign-in file, one writer at a time. kubectl may run the credential plugin
//! several times at once; each run that finds the ID token expired would spend the
//! same refresh token, and an issuer that rotates refresh tokens treats the second
//! use as a replay and revokes the whole grant. Runs therefore hold an exclusive
//! `flock` on `<file>.lock` from reading the session until the refreshed tokens are
//! written, so the runs after the first find fresh tokens and use them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("locking {path}: {source}")]
pub struct LockError {
    /// The lock file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The lock file next to `session`.
fn lock_path(session: &Path) -> PathBuf {
    let mut name = session.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    session.with_file_name(name)
}

/// Waits for and takes the exclusive lock of the sign-in file `session`.
pub async fn lock(session: &Path) -> Result<SessionLock, LockError> {
    let path = lock_path(session);
    let owned = path.clone();
    let taken = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        if let Some(dir) = owned.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&owned)?;
        flock(&file, FlockOperation::LockExclusive)?;
        Ok(file)
    })
    .await
    .map_err(|e| LockError {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    taken
        .map(|file| SessionLock { _file: file })
        .map_err(|source| LockError { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("config");
        assert_eq!(lock_path(&session), dir.path().join("config.lock"));
        let first = lock(&session).await.expect("first lock");
        let waiting = tokio::spawn({
            let session = session.clone();
            async move { lock(&session).await.expect("second lock") }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the second lock did not wait");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second lock was taken after the first was released")
            .expect("joins");
    }
}
