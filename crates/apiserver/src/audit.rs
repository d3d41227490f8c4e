//! The audit log: one JSON line per write, with who, what, verb, result and time.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;

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
}

/// Appends audit records to a file.
#[derive(Clone)]
pub struct AuditLog {
    file: Option<Arc<Mutex<File>>>,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Some(Arc::new(Mutex::new(file))),
        })
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self { file: None }
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
        })
        .to_string();
        line.push('\n');
        match file.lock() {
            Ok(mut f) => {
                if let Err(e) = f.write_all(line.as_bytes()) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
            Err(_) => tracing::error!("the audit log lock is poisoned"),
        }
    }
}
