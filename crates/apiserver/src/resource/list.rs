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
