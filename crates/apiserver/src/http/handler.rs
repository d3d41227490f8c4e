//! The resource handler: authenticate, parse, authorize, run, render, audit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, Response};
use serde_json::Value;

use crate::audit::AuditRecord;
use crate::auth::{authorize, Identity, Restriction, Verb};
use crate::error::ApiError;
use crate::http::request::{
    decode_body, decode_patch, flag, list_options, parse_path, parse_query, Target,
};
use crate::http::response::{error_response, json_response, list_document};
use crate::http::table::{self, wants_table, IncludeObject};
use crate::http::watch::{watch_response, WatchFormat};
use crate::http::AppState;
use crate::http::{discovery, openapi};
use crate::metrics::{RequestLabels, RouteLabels, ShedLabels};
use crate::resource::meta::{parse_resource_version, REQUESTED_BY};
use crate::resource::{ListOptions, WatchOptions};
use crate::selector::FieldSelector;

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads the request body, refusing one over the limit with 413 and never
/// holding more than the limit in memory.
///
/// A client that sent `Expect: 100-continue` with a declared length over the
/// limit is answered at once: it has not sent the body and will not. Any other
/// oversized body is read and dropped up to [`DRAIN_BYTES`] or [`DRAIN_TIME`], so
/// the client finishes sending and reads the 413; closing a connection with unread
/// data resets it and the client would see no answer at all.
async fn read_body(
    state: &AppState,
    body: Body,
    headers: &HeaderMap,
) -> Result<bytes::Bytes, ApiError> {
    use futures::StreamExt;

    let limit = state.limits.body_bytes;
    let too_large = ApiError::TooLarge { limit };
    let declared = header_str(headers, header::CONTENT_LENGTH)
        .parse::<u64>()
        .ok();
    let over = |n: u64| usize::try_from(n).map_or(true, |n| n > limit);
    let expects_continue = header_str(headers, header::EXPECT).eq_ignore_ascii_case("100-continue");
    if expects_continue && declared.is_some_and(over) {
        return Err(too_large);
    }
    let mut chunks = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let mut drain_until = None;
    loop {
        let next = match drain_until {
            None => chunks.next().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, chunks.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::BadRequest(format!("the request body could not be read: {e}"))
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            buf.extend_from_slice(&chunk);
            continue;
        }
        buf = bytes::BytesMut::new();
        if seen > DRAIN_BYTES {
            break;
        }
        drain_until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_TIME);
    }
    if seen > limit {
        return Err(too_large);
    }
    Ok(buf.freeze())
}

/// How much of an oversized body is read and dropped before the 413 is sent
/// regardless (the connection is then closed with data unread).
const DRAIN_BYTES: usize = 256 * 1024 * 1024;

/// How long an oversized body is read and dropped, at most.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Every request outside the health and metrics endpoints. Watches run as long
/// as they like; every other request takes a permit of the in-flight limit (429
/// with Retry-After when none is left) and is answered within the request
/// timeout (504 after it), as kube-apiserver treats long-running requests.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response<Body> {
    let watch = req.method() == Method::GET && flag(&parse_query(req.uri().query()), "watch");
    if watch {
        return serve(state, req).await;
    }
    let metrics = state.metrics.clone();
    let shed = |reason: &str| {
        metrics
            .shed
            .get_or_create(&ShedLabels {
                reason: reason.to_owned(),
            })
            .inc();
    };
    let Some(permit) = state.in_flight.try_acquire() else {
        shed("concurrency");
        return error_response(&ApiError::TooManyRequests {
            limit: state.limits.max_in_flight,
            retry_after: 1,
        });
    };
    let _counted = InFlightGuard::new(&metrics.in_flight);
    let timeout = state.limits.request_timeout;
    let resp = match tokio::time::timeout(timeout, serve(state, req)).await {
        Ok(resp) => resp,
        Err(_) => {
            shed("timeout");
            error_response(&ApiError::Timeout {
                seconds: timeout.as_secs(),
            })
        }
    };
    drop(permit);
    resp
}

/// Counts a request in the in-flight gauge until dropped, also when the client
/// goes away and the request's future is dropped.
struct InFlightGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlightGuard<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Authenticates, parses, authorizes and runs one request, then counts and audits it.
async fn serve(state: AppState, req: Request) -> Response<Body> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    if parts.version != axum::http::Version::HTTP_11
        && parts.version != axum::http::Version::HTTP_10
    {
        // Only HTTP/1.1 has the 100-continue handshake: an HTTP/2 client sends
        // its body regardless, so an oversized one is read and dropped instead.
        parts.headers.remove(header::EXPECT);
    }
    let identity = match authenticate(&state, &parts.headers).await {
        Ok(id) => id,
        Err(e) => return error_response(&e),
    };
    let path = parts.uri.path().to_owned();
    if let Some(resp) = discovery_response(&parts.method, &path, &parts.headers) {
        return resp;
    }
    if path == super::access_review::PATH {
        return access_review(&state, &identity, parts, body).await;
    }
    if path == super::audit_search::AUDIT_PATH && parts.method == Method::GET {
        let query = parse_query(parts.uri.query());
        return match super::audit_search::search(&state, &identity, &query).await {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        };
    }
    let target = match parse_path(&path) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let query = parse_query(parts.uri.query());
    let verb = match verb_of(&parts.method, &target, &query) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let result = run(
        &state,
        &identity,
        verb,
        &target,
        &query,
        &parts.headers,
        body,
    )
    .await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    let code = resp.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.as_str().to_owned(),
            resource: target.kind.plural.to_owned(),
            code,
        })
        .inc();
    if verb != Verb::Watch {
        state
            .metrics
            .latency
            .get_or_create(&RouteLabels {
                verb: verb.as_str().to_owned(),
                resource: target.kind.plural.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
    if verb.is_write() || identity.oidc.is_some() {
        let created = resp.extensions().get::<CreatedName>().map(|c| c.0.clone());
        let resource = format!("{}/{}", target.kind.api_version(), target.kind.plural);
        let result = if code < 300 {
            "Success".to_owned()
        } else {
            format!("Failure {code}")
        };
        state.audit.record(&AuditRecord {
            user: &identity.user,
            verb: verb.as_str(),
            resource: &resource,
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref().or(created.as_deref()),
            code,
            result: &result,
            oidc: identity.oidc.as_ref(),
        });
    }
    resp
}

/// `POST` of a SelfSubjectAccessReview: the caller's own permission, decided by
/// the rules every request goes through.
async fn access_review(
    state: &AppState,
    identity: &Identity,
    parts: axum::http::request::Parts,
    body: Body,
) -> Response<Body> {
    if parts.method != Method::POST {
        return error_response(&ApiError::MethodNotAllowed(format!(
            "{} is created with POST only (nothing is stored to {})",
            super::access_review::PATH,
            parts.method
        )));
    }
    let answer = async {
        let bytes = read_body(state, body, &parts.headers).await?;
        let content_type = header_str(&parts.headers, header::CONTENT_TYPE);
        let review = decode_body(content_type, &bytes)?;
        super::access_review::review(identity, &review)
    };
    answer.await.unwrap_or_else(|e| error_response(&e))
}

/// The name of an object a POST created, for the audit log (the URL has none).
#[derive(Clone, Debug)]
struct CreatedName(String);

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let auth = header_str(headers, header::AUTHORIZATION);
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("no bearer token: use the admin.kubeconfig written by 'shoal server', or 'shoal login'".into()))?;
    state.auth.authenticate(token).await
}

fn discovery_response(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::GET {
        return None;
    }
    let doc = match path.trim_end_matches('/') {
        "/api" => discovery::core_versions(),
        "/apis" => discovery::group_list(),
        "/api/v1" => discovery::resource_list("", "v1")?,
        "/openapi/v2" => {
            let accept = header_str(headers, header::ACCEPT);
            if accept.contains("protobuf") {
                let mut resp = Response::new(Body::from(openapi::v2_protobuf()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(openapi::OPENAPI_PROTOBUF),
                );
                return Some(resp);
            }
            openapi::v2()
        }
        "/openapi/v3" => openapi::v3_discovery(),
        p => {
            if let Some(gv) = p.strip_prefix("/openapi/v3/") {
                return Some(match openapi::v3(gv) {
                    Some(doc) => json_response(200, &doc),
                    None => error_response(&ApiError::UnknownResource {
                        path: p.to_owned(),
                        hint: "GET /openapi/v3 lists the served group-versions".into(),
                    }),
                });
            }
            let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            match segs.as_slice() {
                ["apis", g] => discovery::group(g)?,
                ["apis", g, v] => discovery::resource_list(g, v)?,
                _ => return None,
            }
        }
    };
    Some(json_response(200, &doc))
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> Result<Verb, ApiError> {
    let named = t.name.is_some();
    let verb = match (method.as_str(), named) {
        ("GET", true) if flag(q, "watch") => Verb::Watch,
        ("GET", true) => Verb::Get,
        ("GET", false) if flag(q, "watch") => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        (m, _) => {
            return Err(ApiError::MethodNotAllowed(format!(
                "{m} is not supported on {}{}: use GET/POST on a collection, or GET/PUT/PATCH/DELETE on a named object",
                t.kind.plural,
                if named { " with a name" } else { "" }
            )))
        }
    };
    if t.sub == crate::resource::Subresource::Endpoints && verb != Verb::Get {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} of {}/endpoints is not supported: endpoints is read-only, GET it",
            method, t.kind.plural
        )));
    }
    if t.kind.namespaced && t.namespace.is_none() && verb == Verb::Create {
        return Err(ApiError::BadRequest(format!(
            "{} are namespaced: POST to {}/namespaces/<namespace>/{}",
            t.kind.plural,
            t.kind.group_version_path(),
            t.kind.plural
        )));
    }
    if verb.is_write() && q.get("dryRun").is_some_and(|mode| !mode.is_empty()) {
        return Err(dry_run_unsupported());
    }
    Ok(verb)
}

/// Shoal does not implement dry run, so a write that asks for one is refused
/// rather than performed.
fn dry_run_unsupported() -> ApiError {
    ApiError::BadRequest(
        "dry run is not supported by Shoal and nothing was changed: send the request without dryRun (kubectl: use --dry-run=client)".into(),
    )
}

fn narrow(
    restriction: &Restriction,
    ns: Option<String>,
    opts: &mut ListOptions,
) -> Result<Option<String>, ApiError> {
    match restriction {
        Restriction::None => Ok(ns),
        Restriction::Namespace(own) => Ok(Some(own.clone())),
        Restriction::Name(own) => {
            let extra = FieldSelector::parse(&format!("metadata.name={own}"), &["metadata.name"])?;
            opts.fields = opts.fields.clone().and(extra);
            Ok(ns)
        }
    }
}

async fn run(
    state: &AppState,
    identity: &Identity,
    verb: Verb,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    let kind = t.kind;
    let ns = t.namespace.as_deref();
    let name = t.name.as_deref();
    let restriction = authorize(identity, verb, kind, ns, name)?;
    let res = &state.resources;
    let accept = header_str(headers, header::ACCEPT);
    let as_table = wants_table(accept);
    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
    let content_type = header_str(headers, header::CONTENT_TYPE).to_owned();
    match verb {
        Verb::Get if t.sub == crate::resource::Subresource::Endpoints => {
            let (ns, name) = (ns.unwrap_or_default(), name.unwrap_or_default());
            // 404 for a cluster that does not exist, before asking the gateway.
            res.get(kind, Some(ns), name).await?;
            let source = state.endpoints.as_ref().ok_or_else(|| {
                ApiError::Unavailable(
                    "this server runs no gateway (--gateway=false): ask the gateway's own endpoints address, or read its file-sd output".into(),
                )
            })?;
            let doc = source.endpoints(ns, name).ok_or_else(|| {
                ApiError::Unavailable(format!(
                    "the gateway has no route for cluster {ns}/{name} yet: retry in a few seconds"
                ))
            })?;
            let doc = serde_json::to_value(&doc)
                .map_err(|e| ApiError::Internal(format!("encoding the endpoints: {e}")))?;
            Ok(json_response(200, &doc))
        }
        Verb::Get => {
            let obj = res.get(kind, ns, name.unwrap_or_default()).await?;
            if as_table {
                return Ok(json_response(
                    200,
                    &table::table(kind, &[obj], include, true, None, None),
                ));
            }
            Ok(json_response(200, &obj))
        }
        Verb::List => {
            let mut opts = list_options(kind, q)?;
            let ns = narrow(&restriction, t.namespace.clone(), &mut opts)?;
            let page = res.list(kind, ns.as_deref(), &opts).await?;
            if as_table {
                let doc = table::table(
                    kind,
                    &page.items,
                    include,
                    true,
                    Some(page.resource_version),
                    page.continue_token.as_deref(),
                );
                return Ok(json_response(200, &doc));
            }
            Ok(json_response(
                200,
                &list_document(kind, page.items, page.resource_version, page.continue_token),
            ))
        }
        Verb::Watch => {
            let mut opts = list_options(kind, q)?;
            if let Some(n) = name {
                let by_name =
                    FieldSelector::parse(&format!("metadata.name={n}"), &["metadata.name"])?;
                opts.fields = opts.fields.clone().and(by_name);
            }
            let ns = narrow(&restriction, t.namespace.clone(), &mut opts)?;
            let resource_version = match q.get("resourceVersion").map(String::as_str) {
                None | Some("") | Some("0") => None,
                Some(rv) => Some(parse_resource_version(rv)?),
            };
            let bookmarks =
                flag(q, "allowWatchBookmarks").then_some(state.limits.bookmark_interval);
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs);
            let items = res
                .watch(
                    kind,
                    ns,
                    WatchOptions {
                        list: opts,
                        resource_version,
                        bookmarks,
                        send_initial_events: flag(q, "sendInitialEvents"),
                    },
                )
                .await?;
            let format = WatchFormat {
                table: as_table.then_some(include),
            };
            Ok(watch_response(
                kind,
                items,
                format,
                timeout,
                state.closing.clone(),
                state.metrics.clone(),
            ))
        }
        Verb::Create => {
            let bytes = read_body(state, body, headers).await?;
            let mut obj = decode_body(&content_type, &bytes)?;
            if kind.behavior.requested_by {
                stamp_requester(&mut obj, &identity.user);
            }
            let created = res.create(kind, ns, obj).await?;
            let mut resp = json_response(201, &created);
            if let Some(name) = created.pointer("/metadata/name").and_then(Value::as_str) {
                resp.extensions_mut().insert(CreatedName(name.to_owned()));
            }
            Ok(resp)
        }
        Verb::Update => {
            let bytes = read_body(state, body, headers).await?;
            let obj = decode_body(&content_type, &bytes)?;
            let updated = res
                .update(kind, ns, name.unwrap_or_default(), obj, t.sub)
                .await?;
            Ok(json_response(200, &updated))
        }
        Verb::Patch => {
            let bytes = read_body(state, body, headers).await?;
            let (patch_kind, patch) = decode_patch(&content_type, &bytes)?;
            let patched = res
                .patch(kind, ns, name.unwrap_or_default(), patch_kind, patch, t.sub)
                .await?;
            Ok(json_response(200, &patched))
        }
        Verb::Delete => {
            let bytes = read_body(state, body, headers).await?;
            let precondition = if bytes.is_empty() {
                None
            } else {
                let opts: Value = decode_body(&content_type, &bytes)?;
                let dry_run = opts
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|modes| !modes.is_empty());
                if dry_run {
                    return Err(dry_run_unsupported());
                }
                opts.pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(parse_resource_version)
                    .transpose()?
            };
            let deleted = res
                .delete(kind, ns, name.unwrap_or_default(), precondition)
                .await?;
            Ok(json_response(200, &deleted))
        }
    }
}

fn stamp_requester(obj: &mut Value, user: &str) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            let notes = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if !notes.is_object() {
                *notes = Value::Object(Default::default());
            }
            if let Some(notes) = notes.as_object_mut() {
                notes.insert(REQUESTED_BY.into(), Value::String(user.to_owned()));
            }
        }
    }
}
