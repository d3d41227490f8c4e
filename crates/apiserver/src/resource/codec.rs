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
        self.decode_at(kind, &kv.value, kv.mod_revision)
    }

    /// The object in `bytes`, with resourceVersion `rv`.
    pub fn decode_at(&self, kind: &KindInfo, bytes: &[u8], rv: i64) -> Result<Value, ApiError> {
        let mut obj: Value = if kind.sensitive {
            let plain = self
                .sealer
                .open(bytes)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            serde_json::from_slice(&plain)
        } else {
            serde_json::from_slice(bytes)
        }
        .map_err(|e| ApiError::Internal(format!("a stored object is corrupt: {e}")))?;
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
