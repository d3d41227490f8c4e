//! Why a reconcile failed; every failure is logged and retried with backoff.

/// A reconcile's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error("{action}: {source}")]
    Api {
        /// What was being done, e.g. "create machine org-a/demo-cp-0".
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Addresses could not be allocated.
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    /// Certificates could not be made or read.
    #[error("cluster {cluster}: PKI: {source}")]
    Pki {
        /// `namespace/name` of the cluster.
        cluster: String,
        /// The PKI error.
        #[source]
        source: shoal_pki::PkiError,
    },
    /// User-data could not be rendered.
    #[error("machine {machine}: bootstrap data: {source}")]
    Bootstrap {
        /// The Machine.
        machine: String,
        /// The rendering error.
        #[source]
        source: shoal_bootstrap::BootstrapError,
    },
    /// An object lacks something the controller needs, e.g. an unallocated network.
    #[error("{0}")]
    NotReady(String),
}

/// Wraps a client error with what was being done.
pub fn failed(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

pub use shoal_kube::{is_conflict, is_not_found};
