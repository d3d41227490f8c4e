//! Where the store's keys live in etcd's keyspace: pure functions, no I/O.
//!
//! A store key `k` is the etcd key `<prefix>k`. Both sort bytewise, and UTF-8 byte
//! order is code point order, so etcd's key order is the trait's key order.

use crate::RangeRequest;

use super::EtcdError;

/// The etcd key range a store with one prefix owns.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    root: Vec<u8>,
}

impl Keys {
    /// Keys under `root` (the configured prefix).
    pub(crate) fn new(root: &str) -> Keys {
        Keys {
            root: root.as_bytes().to_vec(),
        }
    }

    /// The etcd key of a store key.
    pub(crate) fn full(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.root.len() + key.len());
        full.extend_from_slice(&self.root);
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// A key the store never writes, for cheap requests that only want a header.
    pub(crate) fn probe(&self) -> Vec<u8> {
        self.root.clone()
    }

    /// The store key of an etcd key, which must lie under the prefix.
    pub(crate) fn strip(&self, full: &[u8]) -> Result<String, EtcdError> {
        let rest =
            full.strip_prefix(self.root.as_slice())
                .ok_or_else(|| EtcdError::ForeignKey {
                    key: String::from_utf8_lossy(full).into_owned(),
                })?;
        std::str::from_utf8(rest)
            .map(str::to_owned)
            .map_err(|source| EtcdError::InvalidKey {
                key: String::from_utf8_lossy(full).into_owned(),
                source,
            })
    }

    /// The etcd range `[start, end)` holding every key under a store prefix.
    pub(crate) fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.full(prefix);
        let end = prefix_end(&start);
        (start, end)
    }

    /// The etcd range of one page, or `None` when the page is empty for sure (its
    /// continue point lies past the prefix).
    pub(crate) fn page_range(&self, req: &RangeRequest) -> Option<(Vec<u8>, Vec<u8>)> {
        let (prefix_start, end) = self.prefix_range(&req.prefix);
        let start = match req.start_after.as_deref() {
            // The smallest key strictly after `after` is `after` followed by NUL.
            Some(after) if after >= req.prefix.as_str() => {
                let mut start = self.full(after);
                start.push(0);
                start
            }
            _ => prefix_start,
        };
        if end != ALL_KEYS_END && start >= end {
            return None;
        }
        Some((start, end))
    }
}

/// etcd's range end meaning "every key from the start on".
const ALL_KEYS_END: [u8; 1] = [0];

/// The smallest key above every key that starts with `prefix` (etcd's prefix
/// range end), or `[0]` when no such key exists (the prefix is empty or all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    ALL_KEYS_END.to_vec()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn page(prefix: &str, start_after: Option<&str>) -> RangeRequest {
        RangeRequest {
            prefix: prefix.into(),
            start_after: start_after.map(Into::into),
            limit: NonZeroUsize::new(10),
        }
    }

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/shoal/"), b"/shoal0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn keys_map_under_the_prefix_and_back() {
        let keys = Keys::new("/shoal/");
        assert_eq!(keys.full("a/b"), b"/shoal/a/b");
        assert_eq!(keys.strip(b"/shoal/a/b").expect("under the prefix"), "a/b");
        assert!(matches!(
            keys.strip(b"/other/a"),
            Err(EtcdError::ForeignKey { .. })
        ));
        assert!(matches!(
            keys.strip(b"/shoal/\xff"),
            Err(EtcdError::InvalidKey { .. })
        ));
    }

    #[test]
    fn pages_start_after_the_continue_point_and_end_at_the_prefix() {
        let keys = Keys::new("/s/");
        assert_eq!(
            keys.page_range(&page("a/", None)),
            Some((b"/s/a/".to_vec(), b"/s/a0".to_vec()))
        );
        // A continue point before the prefix starts at the prefix.
        assert_eq!(
            keys.page_range(&page("a/", Some("0"))),
            Some((b"/s/a/".to_vec(), b"/s/a0".to_vec()))
        );
        assert_eq!(
            keys.page_range(&page("a/", Some("a/2"))),
            Some((b"/s/a/2\0".to_vec(), b"/s/a0".to_vec()))
        );
        // One at or past the prefix's end leaves nothing.
        assert_eq!(keys.page_range(&page("a/", Some("a0"))), None);
        assert_eq!(keys.page_range(&page("a/", Some("b"))), None);
        // The whole store.
        assert_eq!(
            keys.page_range(&page("", None)),
            Some((b"/s/".to_vec(), b"/s0".to_vec()))
        );
    }

    #[test]
    fn an_empty_root_prefix_spans_the_whole_keyspace() {
        let keys = Keys::new("");
        assert_eq!(keys.page_range(&page("", None)), Some((vec![], vec![0])));
        assert_eq!(
            keys.page_range(&page("", Some("zz"))),
            Some((b"zz\0".to_vec(), vec![0]))
        );
    }
}
