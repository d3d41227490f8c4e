//! A Secret's `stringData`, as Kubernetes treats it: a write-only convenience that
//! the server folds into `data` (base64), each key of `stringData` replacing the
//! same key of `data`. What is stored and read back has `data` only.

use base64::Engine;
use serde_json::{Map, Value};

/// Folds `obj.stringData` into `obj.data` and drops `stringData`. Values that are
/// not strings are left for validation to refuse.
pub fn fold_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.get("stringData").cloned() else {
        return;
    };
    if strings.values().any(|v| !v.is_string()) {
        return;
    }
    let mut data = match map.remove("data") {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        data.insert(key, Value::String(encoded));
    }
    map.remove("stringData");
    map.insert("data".into(), Value::Object(data));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_data_replaces_the_same_keys_of_data_and_goes() {
        let mut s = json!({
            "kind": "Secret",
            "data": {"username": "b2xk", "keep": "a2VlcA=="},
            "stringData": {"username": "admin", "password": "s3cret"},
        });
        fold_string_data(&mut s);
        assert_eq!(
            s,
            json!({
                "kind": "Secret",
                "data": {"username": "YWRtaW4=", "keep": "a2VlcA==", "password": "czNjcmV0"},
            })
        );
        // Nothing to fold: unchanged.
        let mut plain = json!({"kind": "Secret", "data": {"a": "Yg=="}});
        let before = plain.clone();
        fold_string_data(&mut plain);
        assert_eq!(plain, before);
        // A non-string value is left for validation to refuse.
        let mut bad = json!({"kind": "Secret", "stringData": {"a": 1}});
        let before = bad.clone();
        fold_string_data(&mut bad);
        assert_eq!(bad, before);
    }
}
