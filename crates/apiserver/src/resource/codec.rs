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
