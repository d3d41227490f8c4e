//! Resource semantics on top of the store: Kubernetes metadata rules, optimistic
//! concurrency, finalizers, selectors, paging and watches. No HTTP here.

mod cache;
pub mod codec;
mod crud;
#[cfg(test)]
pub(crate) mod fixture;
mod hub;
mod list;
pub mod merge;
pub mod meta;
mod recent;
mod secretdata;
mod service;
mod tenancy;
pub mod view;
mod watch;

pub use hub::SharedObject;
pub use list::{ListOptions, ListPage};
pub use merge::PatchKind;
pub use recent::DEFAULT_BUDGET as RECENT_OBJECTS_BUDGET;
pub use service::{Resources, Subresource};
pub use watch::{WatchEventType, WatchItem, WatchOptions};
