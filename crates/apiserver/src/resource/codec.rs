//! How objects become stored bytes and back: JSON, sealed for sensitive kinds,
//! with `resourceVersion` taken from the store's revision.

use bytes::Bytes;
use serde_json::Value;
use shoal_api::KindInfo;
use shoal_store::KeyValue;

use crate::crypto::Sealer;
use crate::error::ApiError;
use crate::resource::meta::set_resource_version;

/// Encodes and decodes stored objects.
#[derive(Clone, Debug)]
pub struct Codec {
    sealer: Sealer,
}

impl Codec {
    /// A codec sealing sensitive kinds with `sealer`.
    pub fn new(sealer: Sealer) -> Self {
        Self { sealer }
    }

    /// The stored bytes of an object; `resourceVersion` is not stored.
    pub fn encode(&self, kind: &KindInfo, obj: &Value) -> Result<Bytes, ApiError> {
        let mut obj = obj.clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let json = serde_json::to_vec(&obj)
            .map_err(|e| ApiError::Internal(format!("encoding an object: {e}")))?;
        if kind.sensitive {
            let sealed = self
                .sealer
                .seal(&json)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(Bytes::from(sealed))
        } else {
            Ok(Bytes::from(json))
        }
    }

    /// The object stored in `kv`, with its resourceVersion.
    pub fn decode(&self, kind: &KindInfo, kv: &KeyValue) -> Result<Value, ApiError> {
        self.decode_at(kind, &kv.key, &kv.value, kv.mod_revision)
    }

    /// The object stored at `key` as `bytes`, with resourceVersion `rv`. A record
    /// that cannot be opened or parsed, or is not an object, is corrupt: that is
    /// named with its key and is not a transient failure.
    pub fn decode_at(
        &self,
        kind: &KindInfo,
        key: &str,
        bytes: &[u8],
        rv: i64,
    ) -> Result<Value, ApiError> {
        let corrupt = |message: String| ApiError::CorruptObject {
            key: key.to_owned(),
            message,
        };
        let mut obj: Value = if kind.sensitive {
            let plain = self
                .sealer
                .open(bytes)
                .map_err(|e| corrupt(e.to_string()))?;
            serde_json::from_slice(&plain)
        } else {
            serde_json::from_slice(bytes)
        }
        .map_err(|e| corrupt(e.to_string()))?;
        if !obj.is_object() {
            return Err(corrupt(format!(
                "the record is {}, not an object",
                crate::error::json_type(&obj)
            )));
        }
        set_resource_version(&mut obj, rv);
        Ok(obj)
    }
}

/// The storage key of one object.
pub fn object_key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced => format!("/registry/{}/{ns}/{name}", kind.storage),
        _ => format!("/registry/{}/{name}", kind.storage),
    }
}

/// The storage prefix of a kind, in one namespace or all.
pub fn prefix(kind: &KindInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kind.namespaced => format!("/registry/{}/{ns}/", kind.storage),
        _ => format!("/registry/{}/", kind.storage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map};
    use shoal_api::registry::kinds;

    fn codec() -> Codec {
        Codec::new(Sealer::new(&Sealer::generate_key()).expect("a generated key is 32 bytes"))
    }

    /// Arbitrary JSON without floats (which JSON text does not carry exactly).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An object with a metadata map that may hold a stale resourceVersion.
    fn object() -> impl Strategy<Value = Value> {
        (
            prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..4),
            prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..4),
            prop::option::of("[0-9]{1,4}"),
        )
            .prop_map(|(top, meta, rv)| {
                let mut meta: Map<String, Value> = meta.into_iter().collect();
                if let Some(rv) = rv {
                    meta.insert("resourceVersion".into(), json!(rv));
                }
                let mut obj: Map<String, Value> = top.into_iter().collect();
                obj.insert("metadata".into(), Value::Object(meta));
                Value::Object(obj)
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_object_at_the_store_revision(
            obj in object(),
            rv in 0..i64::MAX,
            sensitive in any::<bool>(),
        ) {
            let kind = if sensitive { kinds::SECRET.info() } else { kinds::CLUSTER.info() };
            let codec = codec();
            let bytes = codec.encode(kind, &obj).expect("a JSON object encodes");
            if sensitive {
                let plain = serde_json::to_vec(&obj).expect("a JSON object serializes");
                prop_assert_ne!(&bytes[..], &plain[..], "a sensitive kind is stored sealed");
            }
            let back = codec.decode_at(kind, "/k", &bytes, rv).expect("what was encoded decodes");
            let mut expected = obj.clone();
            expected["metadata"]["resourceVersion"] = json!(rv.to_string());
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn arbitrary_bytes_are_an_object_or_a_corrupt_record(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            sensitive in any::<bool>(),
        ) {
            let kind = if sensitive { kinds::SECRET.info() } else { kinds::CLUSTER.info() };
            match codec().decode_at(kind, "/registry/x", &bytes, 1) {
                Ok(obj) => prop_assert!(obj.is_object()),
                Err(e) => prop_assert!(
                    matches!(&e, ApiError::CorruptObject { key, .. } if key == "/registry/x"),
                    "{:?}", e
                ),
            }
        }
    }
}
