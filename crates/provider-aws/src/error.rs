//! Errors of the AWS provider, each naming the AWS call that failed, AWS's own
//! code and message, and what a person can do about it.

use std::fmt::Debug;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A failed AWS call.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {}{message}{}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(), hint(code.as_deref()))]
pub struct AwsError {
    /// The service and operation, e.g. `ec2:CreateVpc`.
    pub op: &'static str,
    /// AWS's error code, e.g. `UnauthorizedOperation`; none when the request never
    /// got an answer.
    pub code: Option<String>,
    /// AWS's message, or why the request got no answer.
    pub message: String,
}

impl AwsError {
    /// Whether AWS said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            c.contains("NotFound") || c == "NoSuchEntity" || c == "NoSuchHostedZone"
        })
    }

    /// Whether AWS said the resource already exists (or the rule is there).
    pub fn is_duplicate(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            c.contains("Duplicate") || c.contains("AlreadyExists") || c == "EntityAlreadyExists"
        })
    }

    /// Whether AWS refused because something still depends on the resource.
    pub fn is_dependency(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            c == "DependencyViolation" || c == "ResourceInUse" || c == "DeleteConflict"
        })
    }
}

/// What to do about an error code.
fn hint(code: Option<&str>) -> &'static str {
    match code {
        None => " (check that the AWS endpoint is reachable from the server: --aws-endpoint-url, proxies, DNS)",
        Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => {
            " (the credentials' IAM policy must allow this call)"
        }
        Some(
            "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken"
            | "UnrecognizedClientException",
        ) => " (check the AWS credentials: the cluster's or its organization's credentialsSecret and roleArn, else the server's own)",
        Some(c) if c.contains("LimitExceeded") || c.contains("QuotaExceeded") => {
            " (raise the quota in the region, or delete what is unused)"
        }
        Some(c) if c.starts_with("InvalidAMIID") => {
            " (the Release's spec.image.amis must name an AMI of this region)"
        }
        _ => "",
    }
}

/// Converts an SDK error of operation `op` (`service:Operation`).
pub fn aws<E, R>(op: &'static str) -> impl FnOnce(SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    move |err| {
        let code = err.code().map(str::to_owned);
        let message = match (&err, err.message()) {
            (SdkError::ServiceError(_), Some(m)) => m.to_owned(),
            _ => DisplayErrorContext(&err).to_string(),
        };
        AwsError { op, code, message }
    }
}

/// What failed in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A call to the management API.
    #[error("{what}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Something the cluster or its Release lacks; the message says what to set.
    #[error("{0}")]
    Spec(String),
    /// Waiting on AWS or another layer; not a failure.
    #[error("{0}")]
    Waiting(String),
    /// Rendering a node's user-data.
    #[error("render the user-data of {node}")]
    Bootstrap {
        /// The node.
        node: String,
        /// The renderer's error.
        #[source]
        source: shoal_bootstrap::BootstrapError,
    },
}

/// Wraps a kube error with what was being done.
pub fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_call_the_code_and_what_to_do() {
        let e = AwsError {
            op: "ec2:CreateVpc",
            code: Some("UnauthorizedOperation".into()),
            message: "You are not authorized to perform this operation.".into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("ec2:CreateVpc: UnauthorizedOperation: You are not"),
            "{text}"
        );
        assert!(text.contains("IAM policy"), "{text}");
        let gone = AwsError {
            op: "ec2:DeleteSubnet",
            code: Some("InvalidSubnetID.NotFound".into()),
            message: String::new(),
        };
        assert!(gone.is_not_found() && !gone.is_duplicate());
        let busy = AwsError {
            op: "ec2:DeleteVpc",
            code: Some("DependencyViolation".into()),
            message: String::new(),
        };
        assert!(busy.is_dependency());
        let offline = AwsError {
            op: "ec2:DescribeVpcs",
            code: None,
            message: "dispatch failure".into(),
        };
        assert!(offline.to_string().contains("--aws-endpoint-url"));
    }
}
