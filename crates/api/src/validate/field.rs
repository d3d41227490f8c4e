use serde::{Deserialize, Serialize};

/// One reason a field is invalid, in the shape of a Kubernetes `StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldCause {
    /// The cause type, such as `FieldValueInvalid`, `FieldValueRequired` or `FieldValueNotSupported`.
    pub reason: String,
    /// What is wrong and what to do about it.
    pub message: String,
    /// The field path, such as `spec.controlPlane.replicas`.
    pub field: String,
}

impl FieldCause {
    /// A value that is present but wrong.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueInvalid", field, message)
    }

    /// A value that must be present.
    pub fn required(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueRequired", field, message)
    }

    /// A field or value the API does not know.
    pub fn not_supported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueNotSupported", field, message)
    }

    /// A field that may not be set or changed.
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new("FieldValueForbidden", field, message)
    }

    fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
            field: field.into(),
        }
    }
}

/// A collector of field causes; empty means valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldCause>);

impl FieldErrors {
    /// Records one cause.
    pub fn push(&mut self, cause: FieldCause) {
        self.0.push(cause);
    }

    /// Records a cause for `field` when `result` is an error; its Display is the message.
    pub fn check<E: std::fmt::Display>(&mut self, field: &str, result: Result<(), E>) {
        if let Err(error) = result {
            self.push(FieldCause::invalid(field, error.to_string()));
        }
    }

    /// Ok when nothing was recorded, otherwise every cause.
    pub fn into_result(self) -> Result<(), Vec<FieldCause>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}
