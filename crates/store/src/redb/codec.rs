//! Byte layouts of the records redb stores.
//!
//! Current values (`kv` table, keyed by the key):
//! `create_revision: i64 LE | mod_revision: i64 LE | value bytes`.
//!
//! Change log entries (`log` table, keyed by revision):
//! `version: u8 | kind: u8 | key_len: u32 LE | key | kv value | has_prev: u8 | [prev value]`,
//! where a value is `create_revision: i64 LE | mod_revision: i64 LE | len: u32 LE | bytes`.
//! The event's revision is the table key, and the previous value shares the event's key.

use bytes::Bytes;

use crate::{EventKind, KeyValue, Revision, WatchEvent};

/// The layout version written in front of every log entry.
const LOG_VERSION: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

/// A stored record that could not be decoded: the database holds bytes this code
/// did not write.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record ended before a field it must contain.
    #[error("{what} is truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Which record.
        what: &'static str,
        /// Where the missing field starts.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A log entry with a layout version this code does not know.
    #[error("log entry has unknown layout version {0}")]
    UnknownVersion(u8),
    /// A log entry with an event kind this code does not know.
    #[error("log entry has unknown event kind {0}")]
    UnknownKind(u8),
    /// A log entry whose key is not UTF-8.
    #[error("log entry key is not UTF-8")]
    KeyNotUtf8(#[source] std::str::Utf8Error),
    /// A record with bytes left over after its last field.
    #[error("{what} has {extra} unexpected trailing bytes")]
    Trailing {
        /// Which record.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
}

/// Encodes the current value of a key.
pub(crate) fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes the current value of `key`.
pub(crate) fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue, CodecError> {
    let mut r = Reader::new("key-value record", bytes);
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let value = Bytes::copy_from_slice(r.rest());
    Ok(KeyValue {
        key: key.to_owned(),
        value,
        create_revision,
        mod_revision,
    })
}

/// Encodes a change log entry. The revision is the table key and is not repeated.
pub(crate) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| 20 + p.value.len());
    let mut out = Vec::with_capacity(27 + event.kv.key.len() + event.kv.value.len() + prev_len);
    out.push(LOG_VERSION);
    out.push(match event.kind {
        EventKind::Put => KIND_PUT,
        EventKind::Delete => KIND_DELETE,
    });
    put_bytes(&mut out, event.kv.key.as_bytes());
    put_value(&mut out, &event.kv);
    match &event.prev {
        Some(prev) => {
            out.push(1);
            put_value(&mut out, prev);
        }
        None => out.push(0),
    }
    out
}

/// Decodes the change log entry stored under `revision`.
pub(crate) fn decode_event(revision: Revision, bytes: &[u8]) -> Result<WatchEvent, CodecError> {
    let mut r = Reader::new("change log entry", bytes);
    let version = r.u8()?;
    if version != LOG_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let kind = match r.u8()? {
        KIND_PUT => EventKind::Put,
        KIND_DELETE => EventKind::Delete,
        other => return Err(CodecError::UnknownKind(other)),
    };
    let key = std::str::from_utf8(r.bytes()?).map_err(CodecError::KeyNotUtf8)?;
    let kv = r.value(key)?;
    let prev = match r.u8()? {
        0 => None,
        _ => Some(r.value(key)?),
    };
    r.finish()?;
    Ok(WatchEvent {
        kind,
        revision,
        kv,
        prev,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("keys and values are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_value(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    put_bytes(out, &kv.value);
}

/// A cursor over a record that reports truncation instead of panicking.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self {
            what,
            bytes,
            offset: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let rest = &self.bytes[self.offset..];
        if rest.len() < n {
            return Err(CodecError::Truncated {
                what: self.what,
                offset: self.offset,
                needed: n - rest.len(),
            });
        }
        self.offset += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = u32::from_le_bytes(self.array()?);
        let len = usize::try_from(len).expect("usize holds a u32 on supported targets");
        self.take(len)
    }

    fn value(&mut self, key: &str) -> Result<KeyValue, CodecError> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let value = Bytes::copy_from_slice(self.bytes()?);
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.offset..];
        self.offset = self.bytes.len();
        rest
    }

    fn finish(self) -> Result<(), CodecError> {
        match self.bytes.len() - self.offset {
            0 => Ok(()),
            extra => Err(CodecError::Trailing {
                what: self.what,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &'static [u8], create: Revision, modified: Revision) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Bytes::from_static(value),
            create_revision: create,
            mod_revision: modified,
        }
    }

    #[test]
    fn record_round_trips() {
        let original = kv("a/b", b"hello", 3, 7);
        let decoded = decode_record("a/b", &encode_record(&original)).expect("decodes");
        assert_eq!(decoded, original);
    }

    #[test]
    fn empty_value_round_trips() {
        let original = kv("k", b"", 1, 1);
        let decoded = decode_record("k", &encode_record(&original)).expect("decodes");
        assert_eq!(decoded, original);
    }

    #[test]
    fn events_round_trip() {
        let put = WatchEvent {
            kind: EventKind::Put,
            revision: 9,
            kv: kv("ns/x", b"new", 4, 9),
            prev: Some(kv("ns/x", b"old", 4, 6)),
        };
        let delete = WatchEvent {
            kind: EventKind::Delete,
            revision: 10,
            kv: kv("ns/x", b"new", 4, 9),
            prev: Some(kv("ns/x", b"new", 4, 9)),
        };
        let created = WatchEvent {
            kind: EventKind::Put,
            revision: 1,
            kv: kv("é/ü", b"\x00\xff", 1, 1),
            prev: None,
        };
        for event in [put, delete, created] {
            let decoded = decode_event(event.revision, &encode_event(&event)).expect("decodes");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn truncated_and_garbled_entries_are_errors() {
        let event = WatchEvent {
            kind: EventKind::Put,
            revision: 2,
            kv: kv("k", b"value", 2, 2),
            prev: Some(kv("k", b"before", 1, 1)),
        };
        let bytes = encode_event(&event);
        for cut in 0..bytes.len() {
            assert!(
                decode_event(2, &bytes[..cut]).is_err(),
                "a log entry cut at {cut} bytes must not decode"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode_event(2, &trailing),
            Err(CodecError::Trailing { extra: 1, .. })
        ));
        let mut bad_version = bytes.clone();
        bad_version[0] = 99;
        assert!(matches!(
            decode_event(2, &bad_version),
            Err(CodecError::UnknownVersion(99))
        ));
        assert!(decode_record("k", &[0; 15]).is_err());
    }
}
