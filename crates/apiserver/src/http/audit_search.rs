//! `GET /shoal/v1/audit`: searching this replica's audit log. Cluster admins see
//! every record; an organization's owners see their organization's with `org=`.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::Response;
use chrono::Utc;
use serde_json::json;
use shoal_api::resources::keypair::parse_ttl;
use shoal_api::OrgRole;

use crate::audit::AuditQuery;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::http::response::json_response;
use crate::http::AppState;

/// The path of the audit search.
pub const AUDIT_PATH: &str = "/shoal/v1/audit";
/// Records returned when the query gives no limit.
const DEFAULT_LIMIT: usize = 500;
/// The most records one query returns.
const MAX_LIMIT: usize = 10_000;

fn forbidden(id: &Identity, why: &str) -> ApiError {
    ApiError::Forbidden {
        user: id.user.clone(),
        verb: "get".into(),
        resource: "the audit log".into(),
        scope: "at the cluster scope".into(),
        why: why.into(),
    }
}

/// Parses the query and checks that the caller may read what it asks for.
fn query(id: &Identity, q: &HashMap<String, String>) -> Result<AuditQuery, ApiError> {
    if let Some(unknown) = q
        .keys()
        .find(|k| !["since", "user", "org", "limit"].contains(&k.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown audit query parameter {unknown:?}: use since (e.g. 1h), user, org and limit"
        )));
    }
    let since = match q.get("since") {
        Some(s) => {
            let secs = parse_ttl(s).map_err(|e| ApiError::BadRequest(format!("since: {e}")))?;
            let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2);
            Some(Utc::now() - chrono::Duration::seconds(secs.min(100 * 365 * 86_400)))
        }
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit {l:?} must be a whole number from 1 to {MAX_LIMIT}"
                ))
            })?,
        None => DEFAULT_LIMIT,
    };
    let org = q.get("org").cloned();
    if !id.is_cluster_admin() {
        match &org {
            None => {
                return Err(forbidden(
                    id,
                    "only cluster admins may search the whole audit log; an organization's owners may search theirs with --org",
                ))
            }
            Some(o) if !id.org_roles().any(|(mine, role)| mine == o && role == OrgRole::Owner) => {
                return Err(forbidden(
                    id,
                    &format!("only owners of organization {o:?} may read its audit records"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(AuditQuery {
        since,
        user: q.get("user").cloned(),
        org,
        limit,
    })
}

/// Answers an audit search.
pub(crate) async fn search(
    state: &AppState,
    id: &Identity,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let query = query(id, q)?;
    let log = state.audit.clone();
    let items = tokio::task::spawn_blocking(move || log.search(&query))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the audit search stopped: {e}; retry")))?
        .map_err(|e| ApiError::Unavailable(format!("cannot read the audit log: {e}")))?;
    Ok(json_response(
        200,
        &json!({
            "apiVersion": "audit.shoal.io/v1alpha1",
            "kind": "AuditRecordList",
            "items": items,
        }),
    ))
}
