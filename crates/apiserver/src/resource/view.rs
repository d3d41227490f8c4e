//! Kind-specific views over shared storage: both Event kinds store the core form.

use serde_json::Value;
use shoal_api::registry::StorageView;
use shoal_api::{events, KindInfo};

/// Converts an incoming object into its stored form.
pub fn to_storage(kind: &KindInfo, obj: Value) -> Value {
    match kind.behavior.view {
        StorageView::EventsV1 => events::to_core(&obj),
        StorageView::CoreEvent => {
            let mut obj = obj;
            events::normalize_core(&mut obj);
            obj
        }
        StorageView::AsServed => obj,
    }
}

/// True when `kind`'s view of a stored object is the stored object itself.
pub fn is_stored_form(kind: &KindInfo) -> bool {
    kind.behavior.view != StorageView::EventsV1
}

/// Converts a stored object into the view of `kind`.
pub fn from_storage(kind: &KindInfo, obj: Value) -> Value {
    match kind.behavior.view {
        StorageView::EventsV1 => events::to_events_v1(&obj),
        StorageView::CoreEvent | StorageView::AsServed => obj,
    }
}

/// The field selectors a kind supports.
pub fn selectable_fields(kind: &KindInfo) -> &'static [&'static str] {
    kind.behavior.field_selectors
}
