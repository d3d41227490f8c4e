//! API errors, and the one exhaustive mapping from each to an HTTP status and a
//! Kubernetes `Status` reason.

use serde_json::{json, Value};
use shoal_api::validate::FieldCause;
use shoal_store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be parsed.
    #[error("the request body is not valid {format}: {message}")]
    MalformedBody {
        /// JSON or YAML.
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The request is wrong in a way that is not about one field's value.
    #[error("{0}")]
    BadRequest(String),
    /// One or more fields are invalid.
    #[error("{kind} {name:?} is invalid: {}", summarize(.causes))]
    Invalid {
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// Each invalid field.
        causes: Vec<FieldCause>,
    },
    /// The object, or its namespace, does not exist.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// The resource (plural, with group).
        resource: String,
        /// The name.
        name: String,
    },
    /// No such resource type is served.
    #[error("the server could not find the requested resource {path}: {hint}")]
    UnknownResource {
        /// The request path.
        path: String,
        /// What is served instead.
        hint: String,
    },
    /// The object exists already.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// The resource.
        resource: String,
        /// The name.
        name: String,
    },
    /// The object was changed since the client read it.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: the object has been modified; please apply your changes to the latest version and try again")]
    Conflict {
        /// The resource.
        resource: String,
        /// The name.
        name: String,
    },
    /// A watch or list asked for history that has been compacted.
    #[error("too old resource version: {requested} ({oldest}); list again to get a current resourceVersion")]
    Gone {
        /// The requested revision.
        requested: i64,
        /// The oldest available revision.
        oldest: i64,
    },
    /// The body is over the size limit.
    #[error("the request body is larger than the limit of {limit} bytes; send a smaller object")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The content type or patch type is not supported.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The verb is not supported on this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The caller is not authenticated.
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{user:?} cannot {verb} {resource} {scope}: {why}")]
    Forbidden {
        /// Who asked.
        user: String,
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// "in namespace x" or "at the cluster scope".
        scope: String,
        /// What the caller would need.
        why: String,
    },
    /// Storage failed; the request may be retried.
    #[error("storage is unavailable: {0}; retry later")]
    Storage(#[source] StoreError),
    /// A server-side fault that is not the caller's.
    #[error("internal error: {0}")]
    Internal(String),
    /// A component the request needs is not available here or not yet; the
    /// message says where to go or when to retry.
    #[error("{0}")]
    Unavailable(String),
}

fn summarize(causes: &[FieldCause]) -> String {
    causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::Gone {
                requested,
                oldest: compacted,
            },
            other => ApiError::Storage(other),
        }
    }
}

impl ApiError {
    /// The HTTP status code and the Kubernetes `reason`.
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            ApiError::MalformedBody { .. } => (400, "BadRequest"),
            ApiError::BadRequest(_) => (400, "BadRequest"),
            ApiError::Invalid { .. } => (422, "Invalid"),
            ApiError::NotFound { .. } => (404, "NotFound"),
            ApiError::UnknownResource { .. } => (404, "NotFound"),
            ApiError::AlreadyExists { .. } => (409, "AlreadyExists"),
            ApiError::Conflict { .. } => (409, "Conflict"),
            ApiError::Gone { .. } => (410, "Expired"),
            ApiError::TooLarge { .. } => (413, "RequestEntityTooLarge"),
            ApiError::UnsupportedMediaType(_) => (415, "UnsupportedMediaType"),
            ApiError::MethodNotAllowed(_) => (405, "MethodNotAllowed"),
            ApiError::Unauthorized(_) => (401, "Unauthorized"),
            ApiError::Forbidden { .. } => (403, "Forbidden"),
            ApiError::Storage(_) => (503, "ServiceUnavailable"),
            ApiError::Internal(_) => (500, "InternalError"),
            ApiError::Unavailable(_) => (503, "ServiceUnavailable"),
        }
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code,
        });
        let details = match self {
            ApiError::Invalid { kind, name, causes } => Some(json!({
                "name": name, "kind": kind,
                "causes": causes,
            })),
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name } => {
                Some(json!({ "name": name, "kind": resource }))
            }
            ApiError::MalformedBody { message, .. } => Some(json!({
                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": ""}]
            })),
            ApiError::Storage(_) => Some(json!({ "retryAfterSeconds": 1 })),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}
