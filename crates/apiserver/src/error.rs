//! API errors, and the one exhaustive mapping from each to an HTTP status and a
//! Kubernetes `Status` reason.

use serde_json::{json, Value};
use shoal_api::validate::FieldCause;
use shoal_store::StoreError;

use crate::resource::merge::MergeError;
use crate::selector::SelectorError;

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
    /// A label or field selector cannot be parsed.
    #[error("{0}")]
    Selector(#[from] SelectorError),
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
    /// A body, a patch result or a part of one that must be a JSON object is not.
    #[error("{} must be a JSON object, not {found}: send an object with apiVersion, kind, metadata and spec", describe_field(.field))]
    NotAnObject {
        /// The field path, empty for the whole object.
        field: String,
        /// What was found instead: "an array", "a number", ...
        found: &'static str,
    },
    /// Storage failed; what the client should do depends on the store error's kind
    /// (see [`ApiError::code_and_reason`]).
    #[error("{}", storage_message(.0))]
    Storage(#[source] StoreError),
    /// A stored object could not be decoded: an operator must repair or delete it.
    #[error("the stored object at {key} cannot be read ({message}): this is not transient; an administrator must restore or delete it")]
    CorruptObject {
        /// The storage key.
        key: String,
        /// The decoder's message.
        message: String,
    },
    /// A request took longer than the server's request timeout.
    #[error("the request did not finish within {seconds} s and was abandoned; it may or may not have taken effect: read the object and retry")]
    Timeout {
        /// The timeout in seconds.
        seconds: u64,
    },
    /// The server is at its limit of concurrent requests.
    #[error("the server is handling {limit} requests already; retry after {retry_after} s")]
    TooManyRequests {
        /// The concurrency limit.
        limit: usize,
        /// Seconds the client should wait.
        retry_after: u64,
    },
    /// A server-side fault that is not the caller's.
    #[error("internal error: {0}")]
    Internal(String),
    /// A component the request needs is not available here or not yet; the
    /// message says where to go or when to retry.
    #[error("{0}")]
    Unavailable(String),
}

fn describe_field(field: &str) -> String {
    if field.is_empty() {
        "the object".to_owned()
    } else {
        field.to_owned()
    }
}

/// What JSON type a value is, for messages: "an array", "a number", ...
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn storage_message(e: &StoreError) -> String {
    match e {
        StoreError::Backend(_) | StoreError::Closed => {
            format!("storage is unavailable: {e}; retry later")
        }
        StoreError::WatcherLagged => {
            format!("{e}: list again and watch from the new resourceVersion")
        }
        StoreError::AlreadyExists { .. }
        | StoreError::NotFound { .. }
        | StoreError::Conflict { .. }
        | StoreError::Compacted { .. } => {
            format!("storage refused the write: {e}; read the object again and retry")
        }
    }
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

impl From<MergeError> for ApiError {
    fn from(e: MergeError) -> Self {
        match e {
            MergeError::NotAnObject { field, found } => ApiError::NotAnObject { field, found },
            MergeError::EndpointsReadOnly => ApiError::MethodNotAllowed(e.to_string()),
            MergeError::StrategicUnsupported { resource } => ApiError::UnsupportedMediaType(format!(
                "strategic merge patch is not supported for {resource}: use --type merge or --type json"
            )),
            MergeError::InvalidJsonPatch(e) => ApiError::BadRequest(format!(
                "the JSON patch is not valid: {e}; send an array of RFC 6902 operations"
            )),
            MergeError::PatchFailed { kind, name, source } => ApiError::Invalid {
                kind: kind.to_owned(),
                name,
                causes: vec![FieldCause::invalid(
                    "",
                    format!("the JSON patch cannot be applied: {source}"),
                )],
            },
        }
    }
}

impl ApiError {
    /// The HTTP status code and the Kubernetes `reason`.
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            ApiError::MalformedBody { .. } => (400, "BadRequest"),
            ApiError::BadRequest(_) => (400, "BadRequest"),
            ApiError::Selector(_) => (400, "BadRequest"),
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
            ApiError::NotAnObject { .. } => (422, "Invalid"),
            // Each store error kind decides for itself: only a backend that is down
            // or closing is worth retrying as it is.
            ApiError::Storage(e) => match e {
                StoreError::Backend(_) => (503, "ServiceUnavailable"),
                StoreError::Closed => (503, "ServiceUnavailable"),
                StoreError::AlreadyExists { .. } => (409, "AlreadyExists"),
                StoreError::NotFound { .. } => (404, "NotFound"),
                StoreError::Conflict { .. } => (409, "Conflict"),
                StoreError::Compacted { .. } => (410, "Expired"),
                StoreError::WatcherLagged => (410, "Expired"),
            },
            ApiError::CorruptObject { .. } => (500, "InternalError"),
            ApiError::Timeout { .. } => (504, "Timeout"),
            ApiError::TooManyRequests { .. } => (429, "TooManyRequests"),
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
            ApiError::NotAnObject { field, .. } => Some(json!({
                "causes": [{"reason": "FieldValueInvalid", "message": self.to_string(), "field": field}]
            })),
            ApiError::Storage(StoreError::Backend(_) | StoreError::Closed) => {
                Some(json!({ "retryAfterSeconds": 1 }))
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                Some(json!({ "retryAfterSeconds": retry_after }))
            }
            _ => None,
        };
        if let Some(d) = details {
            if let Some(map) = status.as_object_mut() {
                map.insert("details".into(), d);
            }
        }
        status
    }
}
