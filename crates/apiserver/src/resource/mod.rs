//! Resource semantics on top of the store: Kubernetes metadata rules, optimistic
//! concurrency, finalizers, selectors, paging and watches. No HTTP here.

mod cache;
pub mod codec;
mod hub;
pub mod meta;
mod service;
mod tenancy;
pub mod view;
mod watch;

pub use hub::SharedObject;
pub use service::{ListOptions, ListPage, PatchKind, Resources, Subresource};
pub use watch::{WatchEventType, WatchItem, WatchOptions};
