//! Recording Events on objects, as every Shoal component does it: a failure to
//! record is logged, never fatal.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;

/// Records an Event with `reason` and `note` on `obj`, a Warning if `warning`.
pub async fn record<K>(recorder: &Recorder, obj: &K, warning: bool, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(
            error = %e,
            reason,
            object = %obj.meta().name.as_deref().unwrap_or_default(),
            "could not record an event"
        );
    }
}
