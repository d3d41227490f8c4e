//! Label and field selectors, parsed once per request.

use std::collections::BTreeMap;

use serde_json::Value;
use shoal_api::validate::{validate_label_key, validate_label_value};

/// Why a label or field selector cannot be parsed; each names the selector or
/// term and says what to send instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A set requirement (`in`, `notin`) without its parentheses.
    #[error("{requirement:?}: the values of {key:?} must be in parentheses, e.g. 'env in (a,b)'")]
    SetWithoutParentheses {
        /// The key of the requirement.
        key: String,
        /// The requirement as written.
        requirement: String,
    },
    /// A label requirement with an invalid key or value.
    #[error("invalid label selector {selector:?} at {requirement:?}: {why}; use e.g. 'app=web,tier in (a,b),!legacy'")]
    InvalidLabel {
        /// The whole selector.
        selector: String,
        /// The requirement at fault.
        requirement: String,
        /// What is wrong with its key or value.
        why: shoal_api::validate::NameError,
    },
    /// A field selector term that is not `field=value` or `field!=value`.
    #[error("invalid field selector {term:?}: use 'field=value' or 'field!=value'")]
    FieldTermSyntax {
        /// The term as written.
        term: String,
    },
    /// A field selector on a field the kind does not support.
    #[error("field label not supported: {field:?}; supported fields are {}", .supported.join(", "))]
    UnsupportedField {
        /// The field named.
        field: String,
        /// The fields the kind supports.
        supported: Vec<String>,
    },
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(key: &str, rest: &str, raw: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::SetWithoutParentheses {
            key: key.to_owned(),
            requirement: raw.to_owned(),
        })?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for raw in split_top(s) {
            let part = raw.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().into(), parse_set(k, rest, part)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(k.trim().into(), parse_set(k, rest, part)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(part.into())
            };
            let (key, values): (&str, &[String]) = match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) => (k, std::slice::from_ref(v)),
                Req::In(k, vs) | Req::NotIn(k, vs) => (k, vs),
                Req::Exists(k) | Req::NotExists(k) => (k, &[]),
            };
            let checked = validate_label_key(key)
                .and_then(|()| values.iter().try_for_each(|v| validate_label_value(v)));
            if let Err(why) = checked {
                return Err(SelectorError::InvalidLabel {
                    selector: s.to_owned(),
                    requirement: part.to_owned(),
                    why,
                });
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// True when the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// True when it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: `path=value` and `path!=value` terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, String, bool)>);

impl FieldSelector {
    /// Parses a field selector, allowing only the given field paths.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(SelectorError::FieldTermSyntax {
                    term: part.to_owned(),
                });
            };
            let field = field.trim();
            if !allowed.contains(&field) {
                return Err(SelectorError::UnsupportedField {
                    field: field.to_owned(),
                    supported: allowed.iter().map(|f| (*f).to_owned()).collect(),
                });
            }
            terms.push((field.to_owned(), value.trim().to_owned(), equal));
        }
        Ok(Self(terms))
    }

    /// True when the object satisfies every term. Missing fields compare as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, value, equal)| {
            let actual = shoal_api::registry::json_path(obj, field);
            let actual = match actual {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }

    /// The value required for `field` by an equality term, if any.
    pub fn required(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _, eq)| f == field && *eq)
            .map(|(_, v, _)| v.as_str())
    }

    /// True when it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads `metadata.labels` as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl FieldSelector {
    /// Both selectors must hold.
    pub fn and(mut self, other: FieldSelector) -> FieldSelector {
        self.0.extend(other.0);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() -> Result<(), SelectorError> {
        let l = labels(&[("env", "prod"), ("tier", "web")]);
        assert!(LabelSelector::parse("env=prod")?.matches(&l));
        assert!(LabelSelector::parse("env==prod,tier")?.matches(&l));
        assert!(!LabelSelector::parse("env!=prod")?.matches(&l));
        assert!(LabelSelector::parse("tier in (web, db),!legacy")?.matches(&l));
        assert!(!LabelSelector::parse("tier notin (web)")?.matches(&l));
        assert!(LabelSelector::parse("")?.is_empty());
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
        assert!(LabelSelector::parse("a===b").is_err());
        assert!(LabelSelector::parse("a in (b, c d)").is_err());
        assert!(LabelSelector::parse("shoal.io/cluster=demo,env=")?
            .matches(&labels(&[("shoal.io/cluster", "demo"), ("env", "")])));
        Ok(())
    }

    #[test]
    fn selector_errors_are_400s_that_name_the_selector_and_why() {
        let cases = [
            (
                LabelSelector::parse("a in x"),
                r#""a in x": the values of "a" must be in parentheses, e.g. 'env in (a,b)'"#,
            ),
            (
                LabelSelector::parse("env=prod,a b=c"),
                r#"invalid label selector "env=prod,a b=c" at "a b=c": "#,
            ),
            (
                LabelSelector::parse("x").and(
                    FieldSelector::parse("spec", &["metadata.name"])
                        .map(|_| LabelSelector::default()),
                ),
                r#"invalid field selector "spec": use 'field=value' or 'field!=value'"#,
            ),
            (
                FieldSelector::parse("spec.x=1", &["metadata.name", "type"])
                    .map(|_| LabelSelector::default()),
                r#"field label not supported: "spec.x"; supported fields are metadata.name, type"#,
            ),
        ];
        for (result, message) in cases {
            let err = ApiError::from(result.expect_err(message));
            assert_eq!(err.code_and_reason(), (400, "BadRequest"));
            let status = err.to_status();
            let text = status["message"].as_str().unwrap_or_default();
            assert!(text.starts_with(message), "{text}");
        }
    }

    #[test]
    fn field_selectors() -> Result<(), SelectorError> {
        let obj = json!({"metadata": {"name": "x", "namespace": "n"}, "involvedObject": {"kind": "Cluster"}});
        let allowed = ["metadata.name", "metadata.namespace", "involvedObject.kind"];
        assert!(
            FieldSelector::parse("metadata.name=x,involvedObject.kind=Cluster", &allowed)?
                .matches(&obj)
        );
        assert!(!FieldSelector::parse("metadata.name!=x", &allowed)?.matches(&obj));
        assert!(FieldSelector::parse("spec.x=1", &allowed).is_err());
        Ok(())
    }

    mod properties {
        use super::*;
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;

        /// Keys from a small set, so that generated labels and selectors meet.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof!["[a-c]", "[a-c][a-z0-9._-]{0,4}[a-z0-9]", "shoal\\.io/[a-c]",]
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof!["", "[x-z]", "[x-z][a-z0-9._-]{0,3}[a-z0-9]"]
        }

        fn set() -> impl Strategy<Value = Vec<String>> {
            vec(value(), 1..4)
        }

        fn req() -> impl Strategy<Value = Req> {
            prop_oneof![
                (key(), value()).prop_map(|(k, v)| Req::Eq(k, v)),
                (key(), value()).prop_map(|(k, v)| Req::NotEq(k, v)),
                (key(), set()).prop_map(|(k, vs)| Req::In(k, vs)),
                (key(), set()).prop_map(|(k, vs)| Req::NotIn(k, vs)),
                key().prop_map(Req::Exists),
                key().prop_map(Req::NotExists),
            ]
        }

        /// Renders a requirement as a client writes it, in one of its spellings.
        fn render(req: &Req, double: bool) -> String {
            let eq = if double { "==" } else { "=" };
            match req {
                Req::Eq(k, v) => format!("{k}{eq}{v}"),
                Req::NotEq(k, v) => format!("{k} != {v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(", ")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            }
        }

        /// What a requirement means, stated independently of `matches`.
        fn holds(req: &Req, labels: &BTreeMap<String, String>) -> bool {
            match req {
                Req::Eq(k, v) => labels.iter().any(|(lk, lv)| lk == k && lv == v),
                Req::NotEq(k, v) => !labels.iter().any(|(lk, lv)| lk == k && lv == v),
                Req::In(k, vs) => vs.iter().any(|v| labels.get(k) == Some(v)),
                Req::NotIn(k, vs) => vs.iter().all(|v| labels.get(k) != Some(v)),
                Req::Exists(k) => labels.keys().any(|lk| lk == k),
                Req::NotExists(k) => labels.keys().all(|lk| lk != k),
            }
        }

        const ALLOWED: &[&str] = &["metadata.name", "metadata.namespace", "type"];

        proptest! {
            #[test]
            fn arbitrary_strings_never_panic(s in "\\PC{0,40}", t in "[a-z =!,()in]{0,30}") {
                let _ = LabelSelector::parse(&s);
                let _ = LabelSelector::parse(&t);
                let _ = FieldSelector::parse(&s, ALLOWED);
                let _ = FieldSelector::parse(&t, ALLOWED);
            }

            #[test]
            fn rendered_label_selectors_parse_back_and_match_exactly(
                reqs in vec(req(), 0..5),
                double in any::<bool>(),
                maps in vec(btree_map(key(), value(), 0..4), 1..6),
            ) {
                let text = reqs.iter().map(|r| render(r, double)).collect::<Vec<_>>().join(",");
                let parsed = LabelSelector::parse(&text);
                prop_assert_eq!(parsed.as_ref().ok(), Some(&LabelSelector(reqs.clone())), "{}", text);
                let parsed = parsed.unwrap_or_default();
                for labels in &maps {
                    let expected = reqs.iter().all(|r| holds(r, labels));
                    prop_assert_eq!(parsed.matches(labels), expected, "{} on {:?}", text, labels);
                }
            }

            #[test]
            fn rendered_field_selectors_parse_back_and_match_exactly(
                terms in vec((0..ALLOWED.len(), "[a-z0-9.-]{0,6}", any::<bool>()), 0..4),
                name in "[a-z]{0,2}",
                type_ in prop::option::of("[a-z]{0,2}"),
            ) {
                let terms: Vec<(String, String, bool)> = terms
                    .into_iter()
                    .map(|(i, v, eq)| (ALLOWED[i].to_owned(), v, eq))
                    .collect();
                let text = terms
                    .iter()
                    .map(|(f, v, eq)| format!("{f}{}{v}", if *eq { "=" } else { "!=" }))
                    .collect::<Vec<_>>()
                    .join(",");
                let parsed = FieldSelector::parse(&text, ALLOWED);
                prop_assert_eq!(parsed.as_ref().ok(), Some(&FieldSelector(terms.clone())), "{}", text);
                let parsed = parsed.unwrap_or_default();
                let mut obj = json!({"metadata": {"name": name}});
                if let Some(t) = &type_ {
                    obj["type"] = json!(t);
                }
                let actual = |f: &str| match f {
                    "metadata.name" => name.clone(),
                    "type" => type_.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                let expected = terms.iter().all(|(f, v, eq)| (actual(f) == *v) == *eq);
                prop_assert_eq!(parsed.matches(&obj), expected, "{} on {}", text, obj);
            }
        }
    }
}
