//! Listing: label and field selectors, and paging with continue tokens that
//! name the last key of the previous page.

use std::num::NonZeroUsize;

use base64::Engine;
use serde_json::{json, Value};
use shoal_api::KindInfo;
use shoal_store::RangeRequest;

use crate::error::ApiError;
use crate::resource::codec::prefix;
use crate::resource::view;
use crate::resource::Resources;
use crate::selector::{labels_of, FieldSelector, LabelSelector};

/// Filters and paging for a list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size.
    pub limit: Option<NonZeroUsize>,
    /// The continue token of the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Value>,
    /// The revision the list reflects.
    pub resource_version: i64,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
}

/// The continue token that resumes a list after `key`.
fn encode_continue(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({ "k": key }).to_string())
}

/// The key a continue token resumes after; a token the server did not make is a 400.
fn decode_continue(token: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "continue token {token:?} is not valid: pass the metadata.continue value of the previous page unchanged"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    v.get("k")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(bad)
}

impl Resources {
    /// Lists objects, filtered and paged.
    pub async fn list(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let mut start_after = match &opts.continue_token {
            Some(t) => Some(decode_continue(t)?),
            None => None,
        };
        let want = opts.limit.map(NonZeroUsize::get);
        let mut items = Vec::new();
        let mut revision = None;
        loop {
            let page = self
                .store
                .range(RangeRequest {
                    prefix: prefix(kind, ns),
                    start_after: start_after.clone(),
                    limit: opts.limit,
                })
                .await?;
            revision.get_or_insert(page.revision);
            let mut last_key = None;
            for kv in &page.items {
                last_key = Some(kv.key.clone());
                let obj = view::from_storage(kind, self.codec.decode(kind, kv)?);
                if opts.labels.matches(&labels_of(&obj)) && opts.fields.matches(&obj) {
                    items.push(obj);
                    if want.is_some_and(|w| items.len() >= w) {
                        break;
                    }
                }
            }
            let full = want.is_some_and(|w| items.len() >= w);
            let consumed_all = last_key.as_ref() == page.items.last().map(|kv| &kv.key);
            if full {
                let more = page.more || !consumed_all;
                let token = if more {
                    last_key.map(|k| encode_continue(&k))
                } else {
                    None
                };
                return Ok(ListPage {
                    items,
                    resource_version: revision.unwrap_or(page.revision),
                    continue_token: token,
                });
            }
            if !page.more || last_key.is_none() {
                return Ok(ListPage {
                    items,
                    resource_version: revision.unwrap_or(page.revision),
                    continue_token: None,
                });
            }
            start_after = last_key;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::resource::fixture::{fixture, lease, lease_kind, NS};

    fn names(items: &[Value]) -> Vec<String> {
        items
            .iter()
            .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    /// Lists every page of `opts`, checking each holds at most `limit` items.
    async fn all_pages(res: &Resources, opts: ListOptions) -> anyhow::Result<(Vec<String>, usize)> {
        let mut opts = opts;
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let page = res.list(lease_kind(), Some(NS), &opts).await?;
            pages += 1;
            if let Some(limit) = opts.limit {
                assert!(page.items.len() <= limit.get());
            }
            out.extend(names(&page.items));
            match page.continue_token {
                Some(t) => opts.continue_token = Some(t),
                None => return Ok((out, pages)),
            }
        }
    }

    #[tokio::test]
    async fn pages_hold_every_item_once() -> anyhow::Result<()> {
        let f = fixture().await?;
        let mut expected = BTreeSet::new();
        let mut prod = BTreeSet::new();
        for i in 0..23 {
            let name = format!("l-{i:02}");
            let env = if i % 3 == 0 { "prod" } else { "dev" };
            f.res
                .create(lease_kind(), Some(NS), lease(&name, json!({"env": env})))
                .await?;
            if env == "prod" {
                prod.insert(name.clone());
            }
            expected.insert(name);
        }
        for limit in [1, 4, 7, 23, 50] {
            let opts = ListOptions {
                limit: NonZeroUsize::new(limit),
                ..ListOptions::default()
            };
            let (got, pages) = all_pages(&f.res, opts).await?;
            assert_eq!(got.len(), expected.len(), "limit {limit}: {got:?}");
            assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), expected);
            assert!(pages >= expected.len().div_ceil(limit), "limit {limit}");
        }
        // With a selector, pages skip what does not match and still lose nothing.
        for limit in [1, 2, 5] {
            let opts = ListOptions {
                labels: LabelSelector::parse("env=prod")?,
                limit: NonZeroUsize::new(limit),
                ..ListOptions::default()
            };
            let (got, _) = all_pages(&f.res, opts).await?;
            assert_eq!(got.len(), prod.len(), "limit {limit}: {got:?}");
            assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), prod);
        }
        Ok(())
    }

    #[tokio::test]
    async fn label_and_field_selectors_filter() -> anyhow::Result<()> {
        let f = fixture().await?;
        for (name, labels) in [
            ("a", json!({"env": "prod", "tier": "web"})),
            ("b", json!({"env": "dev", "tier": "web"})),
            ("c", json!({"env": "prod"})),
        ] {
            f.res
                .create(lease_kind(), Some(NS), lease(name, labels))
                .await?;
        }
        let list = |labels: &str, fields: &str| {
            let opts = ListOptions {
                labels: LabelSelector::parse(labels).expect("a valid label selector"),
                fields: FieldSelector::parse(fields, &["metadata.name", "metadata.namespace"])
                    .expect("a valid field selector"),
                ..ListOptions::default()
            };
            let res = f.res.clone();
            async move { res.list(lease_kind(), Some(NS), &opts).await }
        };
        assert_eq!(names(&list("env=prod", "").await?.items), ["a", "c"]);
        assert_eq!(names(&list("env=prod,tier", "").await?.items), ["a"]);
        assert_eq!(
            names(&list("tier in (web),env!=prod", "").await?.items),
            ["b"]
        );
        assert_eq!(names(&list("!tier", "").await?.items), ["c"]);
        assert_eq!(
            names(&list("", "metadata.name!=a").await?.items),
            ["b", "c"]
        );
        assert_eq!(
            names(&list("env=prod", "metadata.name=c").await?.items),
            ["c"]
        );
        let other_ns = f
            .res
            .list(lease_kind(), Some("org-b"), &ListOptions::default())
            .await?;
        assert!(other_ns.items.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_continue_token_the_server_did_not_make_is_a_400() -> anyhow::Result<()> {
        let f = fixture().await?;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{\"x\": 1}");
        for token in ["not base64!", "bm90IGpzb24", forged.as_str()] {
            let opts = ListOptions {
                continue_token: Some(token.to_owned()),
                ..ListOptions::default()
            };
            let err = f
                .res
                .list(lease_kind(), Some(NS), &opts)
                .await
                .expect_err("a forged continue token");
            assert!(matches!(err, ApiError::BadRequest(_)), "{token}: {err:?}");
            assert!(err.to_string().contains("continue token"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn continue_tokens_round_trip() -> Result<(), ApiError> {
        for key in ["/registry/leases/org-a/x", "", "ключ/\"q\""] {
            assert_eq!(decode_continue(&encode_continue(key))?, key);
        }
        Ok(())
    }
}
