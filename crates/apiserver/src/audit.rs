//! The audit log: one JSON line per write (and per request of a caller signed in
//! through OIDC), with who, what, verb, result and time; for OIDC callers also
//! the issuer, the subject and the groups. Never a token.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Value};
use shoal_api::resources::organization::org_namespace;

use crate::auth::OidcClaims;
use crate::resource::meta::now_rfc3339;

/// What one audited request did.
#[derive(Clone, Debug)]
pub struct AuditRecord<'a> {
    /// Who asked.
    pub user: &'a str,
    /// The verb.
    pub verb: &'a str,
    /// `group/version/plural`.
    pub resource: &'a str,
    /// The namespace, if any.
    pub namespace: Option<&'a str>,
    /// The object's name, if known.
    pub name: Option<&'a str>,
    /// The HTTP status code returned.
    pub code: u16,
    /// The Status reason, or "Success".
    pub result: &'a str,
    /// The OIDC issuer, subject and groups, when an ID token authenticated the caller.
    pub oidc: Option<&'a OidcClaims>,
}

/// When the audit log is rotated.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// The size in bytes at which the log is rotated.
    pub max_bytes: u64,
    /// How many rotated files (`audit.log.1` newest … `audit.log.<keep>`) are kept.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// The open log file and its size.
struct Current {
    file: File,
    size: u64,
}

/// Appends audit records to a file readable by its owner only (0600), rotated
/// by size with a kept count.
#[derive(Clone)]
pub struct AuditLog {
    file: Option<Arc<Mutex<Current>>>,
    path: PathBuf,
    rotation: Rotation,
    write_errors: Counter,
}

/// Opens `path` for appending with mode 0600, tightening an older file's mode.
fn open_private(path: &Path) -> std::io::Result<Current> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(Current {
        file,
        size: meta.len(),
    })
}

impl AuditLog {
    /// Opens (or creates) the log at `path` for appending, with the default rotation.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_with(path, Rotation::default())
    }

    /// Opens (or creates) the log at `path` for appending, rotated by `rotation`.
    pub fn open_with(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        Ok(Self {
            file: Some(Arc::new(Mutex::new(open_private(path)?))),
            path: path.to_owned(),
            rotation,
            write_errors: Counter::default(),
        })
    }

    /// The path of rotated file `n` (1 is the newest).
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shifts `audit.log.N` to `.N+1` (dropping the oldest), moves the log to
    /// `.1` and starts a new one.
    fn rotate(&self, current: &mut Current) -> std::io::Result<()> {
        if self.rotation.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let oldest = self.rotated_path(self.rotation.keep);
            match std::fs::remove_file(&oldest) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..self.rotation.keep).rev() {
                match std::fs::rename(self.rotated_path(n), self.rotated_path(n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, self.rotated_path(1))?;
        }
        *current = open_private(&self.path)?;
        Ok(())
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self {
            file: None,
            path: PathBuf::new(),
            rotation: Rotation::default(),
            write_errors: Counter::default(),
        }
    }

    /// Counts records that could not be written (and failed rotations) in `counter`.
    pub fn counting_errors_in(mut self, counter: Counter) -> Self {
        self.write_errors = counter;
        self
    }

    /// Writes one record as one line.
    pub fn record(&self, rec: &AuditRecord<'_>) {
        let Some(file) = &self.file else { return };
        let mut line = json!({
            "time": now_rfc3339(),
            "user": rec.user,
            "verb": rec.verb,
            "resource": rec.resource,
            "namespace": rec.namespace,
            "name": rec.name,
            "code": rec.code,
            "result": rec.result,
        });
        if let Some(oidc) = rec.oidc {
            line["issuer"] = json!(oidc.issuer);
            line["subject"] = json!(oidc.subject);
            line["groups"] = json!(oidc.groups);
        }
        let mut line = line.to_string();
        line.push('\n');
        let Ok(mut current) = file.lock() else {
            tracing::error!("the audit log lock is poisoned");
            self.write_errors.inc();
            return;
        };
        let len = line.len() as u64;
        if current.size > 0 && current.size.saturating_add(len) > self.rotation.max_bytes {
            if let Err(e) = self.rotate(&mut current) {
                tracing::error!(error = %e, path = %self.path.display(), "cannot rotate the audit log");
                self.write_errors.inc();
            }
        }
        match current.file.write_all(line.as_bytes()) {
            Ok(()) => current.size = current.size.saturating_add(len),
            Err(e) => {
                tracing::error!(error = %e, "cannot write the audit log");
                self.write_errors.inc();
            }
        }
    }
}

/// What to look for in the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this user's records.
    pub user: Option<String>,
    /// Only records in this organization's namespace, or about the organization itself.
    pub org: Option<String>,
    /// At most this many records, the newest.
    pub limit: usize,
}

impl AuditQuery {
    fn matches(&self, rec: &Value) -> bool {
        let field = |k: &str| rec.get(k).and_then(Value::as_str);
        if let Some(since) = self.since {
            let at = field("time")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if at.is_none_or(|t| t < since) {
                return false;
            }
        }
        if self
            .user
            .as_deref()
            .is_some_and(|u| field("user") != Some(u))
        {
            return false;
        }
        if let Some(org) = &self.org {
            let in_namespace = field("namespace") == Some(org_namespace(org).as_str());
            let the_org = field("resource").is_some_and(|r| r.ends_with("/organizations"))
                && field("name") == Some(org.as_str());
            if !in_namespace && !the_org {
                return false;
            }
        }
        true
    }
}

impl AuditLog {
    /// The records matching `query`, oldest first, from the rotated files and
    /// the current one. Lines that are not JSON (a torn last write) are skipped.
    pub fn search(&self, query: &AuditQuery) -> std::io::Result<Vec<Value>> {
        if self.file.is_none() {
            return Ok(Vec::new());
        }
        let mut files: Vec<PathBuf> = (1..=self.rotation.keep)
            .rev()
            .map(|n| self.rotated_path(n))
            .collect();
        files.push(self.path.clone());
        let mut found = std::collections::VecDeque::new();
        for path in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in text.lines() {
                let Ok(rec) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if query.matches(&rec) {
                    if found.len() == query.limit.max(1) {
                        found.pop_front();
                    }
                    found.push_back(rec);
                }
            }
        }
        Ok(found.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(log: &AuditLog, name: &str) {
        log.record(&AuditRecord {
            user: "admin",
            verb: "create",
            resource: "shoal.io/v1alpha1/clusters",
            namespace: Some("org-a"),
            name: Some(name),
            code: 201,
            result: "Success",
            oidc: None,
        });
    }

    #[test]
    fn private_and_rotated_by_size_keeping_a_count() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.log");
        // An older world-readable log is tightened on open.
        std::fs::write(&path, "")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let log = AuditLog::open_with(
            &path,
            Rotation {
                max_bytes: 1000,
                keep: 2,
            },
        )?;
        for i in 0..40 {
            record(&log, &format!("c{i}"));
        }
        for p in [path.clone(), log.rotated_path(1), log.rotated_path(2)] {
            let meta = std::fs::metadata(&p)?;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", p.display());
            assert!(
                meta.len() <= 1000,
                "{} is {} bytes",
                p.display(),
                meta.len()
            );
            assert!(meta.len() > 0, "{} is empty", p.display());
        }
        assert!(
            !log.rotated_path(3).exists(),
            "only two rotated files are kept"
        );
        let newest = std::fs::read_to_string(&path)?;
        assert!(newest.contains("\"c39\""), "{newest}");
        let older = std::fs::read_to_string(log.rotated_path(1))?;
        let last_rotated: serde_json::Value =
            serde_json::from_str(older.lines().last().unwrap_or_default())?;
        let first_current: serde_json::Value =
            serde_json::from_str(newest.lines().next().unwrap_or_default())?;
        let n = |v: &serde_json::Value| -> i64 {
            v["name"].as_str().unwrap_or("c-1")[1..]
                .parse()
                .unwrap_or(-1)
        };
        assert_eq!(
            n(&last_rotated) + 1,
            n(&first_current),
            "no record is lost between files"
        );
        Ok(())
    }

    #[test]
    fn search_by_user_org_time_and_limit_across_rotated_files() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = AuditLog::open_with(
            &dir.path().join("audit.log"),
            Rotation {
                max_bytes: 600,
                keep: 3,
            },
        )?;
        let oidc = OidcClaims {
            issuer: "https://issuer.example".into(),
            subject: "s-1".into(),
            groups: vec!["platform-team".into()],
        };
        for i in 0..12 {
            let (user, ns) = if i % 2 == 0 {
                ("alice", "org-acme")
            } else {
                ("bob", "org-beta")
            };
            log.record(&AuditRecord {
                user,
                verb: "get",
                resource: "shoal.io/v1alpha1/clusters",
                namespace: Some(ns),
                name: Some(&format!("c{i}")),
                code: 200,
                result: "Success",
                oidc: (user == "alice").then_some(&oidc),
            });
        }
        assert!(log.rotated_path(1).exists(), "the test spans rotated files");
        let all = |q: AuditQuery| -> anyhow::Result<Vec<String>> {
            Ok(log
                .search(&AuditQuery { limit: 100, ..q })?
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect())
        };
        let alice = all(AuditQuery {
            user: Some("alice".into()),
            ..AuditQuery::default()
        })?;
        // Rotation keeps three files of at most 600 bytes: the oldest records are gone.
        assert!(
            !alice.is_empty()
                && alice
                    .iter()
                    .all(|n| n[1..].parse::<u32>().is_ok_and(|i| i % 2 == 0)),
            "{alice:?}"
        );
        assert_eq!(alice.last().map(String::as_str), Some("c10"));
        let beta = all(AuditQuery {
            org: Some("beta".into()),
            ..AuditQuery::default()
        })?;
        assert_eq!(beta.last().map(String::as_str), Some("c11"));
        assert!(beta.iter().all(|n| !alice.contains(n)));
        let future = all(AuditQuery {
            since: Some(Utc::now() + chrono::Duration::seconds(60)),
            ..AuditQuery::default()
        })?;
        assert!(future.is_empty());
        let last_two = log.search(&AuditQuery {
            limit: 2,
            ..AuditQuery::default()
        })?;
        let names: Vec<_> = last_two.iter().map(|r| r["name"].clone()).collect();
        assert_eq!(names, [json!("c10"), json!("c11")]);
        assert_eq!(last_two[0]["issuer"], "https://issuer.example");
        assert_eq!(last_two[0]["groups"], json!(["platform-team"]));
        assert!(last_two[1].get("issuer").is_none());
        Ok(())
    }
}
