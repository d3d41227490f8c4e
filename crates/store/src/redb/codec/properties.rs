//! Property tests of the redb record layouts: what is encoded decodes to the same
//! record, any bytes decode or are refused without a panic, and a log entry is
//! refused when cut short or followed by extra bytes.

use bytes::Bytes;
use proptest::prelude::*;

use super::{decode_event, decode_record, encode_event, encode_record, CodecError};
use crate::{EventKind, KeyValue, WatchEvent};

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "/registry/[a-z.]{1,20}/[a-z0-9-]{0,20}/[a-z0-9-]{1,20}",
        any::<String>(),
    ]
}

fn kv(key: String) -> impl Strategy<Value = KeyValue> {
    (
        prop::collection::vec(any::<u8>(), 0..300),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(move |(value, create_revision, mod_revision)| KeyValue {
            key: key.clone(),
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        })
}

fn event() -> impl Strategy<Value = WatchEvent> {
    key().prop_flat_map(|key| {
        (
            prop_oneof![Just(EventKind::Put), Just(EventKind::Delete)],
            any::<i64>(),
            kv(key.clone()),
            prop::option::of(kv(key)),
        )
            .prop_map(|(kind, revision, kv, prev)| WatchEvent {
                kind,
                revision,
                kv,
                prev,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_record_round_trips(kv in key().prop_flat_map(kv)) {
        let bytes = encode_record(&kv);
        prop_assert_eq!(decode_record(&kv.key, &bytes).expect("decodes"), kv);
    }

    #[test]
    fn an_event_round_trips(event in event()) {
        let bytes = encode_event(&event);
        prop_assert_eq!(decode_event(event.revision, &bytes).expect("decodes"), event);
    }

    #[test]
    fn a_cut_or_padded_event_is_refused(event in event(), cut in any::<usize>(), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let bytes = encode_event(&event);
        let cut = cut % bytes.len();
        prop_assert!(decode_event(event.revision, &bytes[..cut]).is_err(), "cut at {}", cut);
        let mut padded = bytes.clone();
        padded.extend_from_slice(&extra);
        prop_assert!(
            matches!(decode_event(event.revision, &padded), Err(CodecError::Trailing { .. })),
            "{} extra bytes", extra.len()
        );
    }

    #[test]
    fn any_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400), revision in any::<i64>()) {
        // A record is its revisions and the rest: 16 bytes or more decode.
        prop_assert_eq!(decode_record("k", &bytes).is_ok(), bytes.len() >= 16);
        if let Ok(event) = decode_event(revision, &bytes) {
            prop_assert_eq!(event.revision, revision);
            // What decodes encodes back to the same bytes, up to the spelling of
            // the has-previous flag (any non-zero byte reads as yes).
            let mut canonical = bytes.clone();
            let flag = 1 + 1 + 4 + event.kv.key.len() + 20 + event.kv.value.len();
            if canonical[flag] != 0 {
                canonical[flag] = 1;
            }
            prop_assert_eq!(encode_event(&event), canonical);
        }
    }

    #[test]
    fn event_shaped_bytes_decode_or_are_refused(event in event(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = encode_event(&event);
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        if let Ok(back) = decode_event(event.revision, &bytes) {
            prop_assert_eq!(back.prev.is_some(), bytes[6 + back.kv.key.len() + 20 + back.kv.value.len()] != 0);
        }
    }
}
