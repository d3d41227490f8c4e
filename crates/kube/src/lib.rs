//! What Shoal's in-cluster processes (the controllers, the gateway and the host
//! agent) share as clients of the API: one watch cache per kind with a fan-out of
//! every change and secondary indexes over it, finalizer and condition helpers, deletes that ignore what is
//! already gone, task teardown, error rendering, the probe of a guest API's
//! `/readyz`, a client of a guest API through the gateway, and the browser
//! session cookie of the web UI and the monitoring front ends.
//!
//! It depends only on `shoal-api`; nothing here talks to the store or the API
//! server's internals.

pub mod api;
pub mod chain;
pub mod conditions;
pub mod endpoint;
pub mod events;
pub mod finalizer;
pub mod guest;
pub mod index;
pub mod readyz;
pub mod session;
pub mod task;
pub mod watch;

pub use api::{delete_ignoring_missing, is_conflict, is_not_found};
pub use chain::chain;
pub use index::{Index, Observer};
pub use task::AbortOnDrop;
pub use watch::Shared;
