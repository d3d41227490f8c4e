//! The Organizations page: each organization the user can see, its members and
//! their roles, and (for those who may change the organization: its owners and
//! administrators) forms to add or remove a member. Changes replace the
//! Organization with the resourceVersion it was read at, so a concurrent change
//! is reported, never overwritten.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use http::{HeaderMap, StatusCode};
use kube::api::{Api, ListParams, PostParams};
use shoal_api::resources::organization::{OrgMember, OrgRole, Organization};

use crate::html::{escape, page};
use crate::pages::{client, error_page, to_sign_in, unauthorized};
use crate::{session, UiConfig, UiError};

/// A refusal to show at one organization's add form.
struct AddError<'a> {
    org: &'a str,
    message: &'a str,
}

fn role_name(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Owner => "owner",
        OrgRole::Member => "member",
        OrgRole::Viewer => "viewer",
    }
}

/// One member as (kind, who): a user or a group.
fn identity(m: &OrgMember) -> (&'static str, &str) {
    match (&m.name, &m.group) {
        (Some(n), _) => ("user", n),
        (None, Some(g)) => ("group", g),
        (None, None) => ("user", ""),
    }
}

/// The page: every organization with its members, and forms where `editable`.
fn orgs_page(orgs: &[(Organization, bool)], error: Option<AddError>) -> String {
    let mut b = String::from(
        "<p>Members are users or groups as your identity provider names them (OIDC); owners manage the membership, members manage clusters, viewers read.</p>",
    );
    if orgs.is_empty() {
        b.push_str("<p>You belong to no organization.</p>");
    }
    for (org, editable) in orgs {
        let name = org.metadata.name.as_deref().unwrap_or_default();
        let n = escape(name);
        let title = org
            .spec
            .display_name
            .as_deref()
            .map(|d| format!("{} ({n})", escape(d)))
            .unwrap_or_else(|| n.clone());
        let _ = write!(b, "<h2>{title}</h2>");
        if org.spec.members.is_empty() {
            b.push_str("<p>No members listed: only tokens issued for it (<code>shoal token create</code>) and administrators reach it.</p>");
        } else {
            let _ = write!(
                b,
                r#"<table><caption>Members of {n}</caption><thead><tr><th scope="col">Member</th><th scope="col">Kind</th><th scope="col">Role</th>{}</tr></thead><tbody>"#,
                if *editable {
                    r#"<th scope="col">Remove</th>"#
                } else {
                    ""
                }
            );
            for m in &org.spec.members {
                let (kind, who) = identity(m);
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{kind}</td><td>{}</td>",
                    escape(who),
                    role_name(m.role)
                );
                if *editable {
                    let _ = write!(
                        b,
                        r#"<td><form method="post" action="/ui/organizations/{n}/members/remove"><input type="hidden" name="kind" value="{kind}"><input type="hidden" name="who" value="{w}"><button type="submit" aria-label="Remove {kind} {w} from {n}">Remove</button></form></td>"#,
                        w = escape(who)
                    );
                }
                b.push_str("</tr>");
            }
            b.push_str("</tbody></table>");
        }
        if !*editable {
            if let Some(e) = error.as_ref().filter(|e| e.org == name) {
                let _ = write!(
                    b,
                    r#"<p class="error" role="alert">{}</p>"#,
                    escape(e.message)
                );
            }
            continue;
        }
        let id = format!("who-{n}");
        let _ = write!(
            b,
            r#"<form method="post" action="/ui/organizations/{n}/members">
<label for="kind-{n}">Add a</label><select id="kind-{n}" name="kind"><option value="user">user</option><option value="group">group</option></select>
<label for="{id}">User or group name</label>"#
        );
        match &error {
            Some(e) if e.org == name => {
                let _ = write!(
                    b,
                    r#"<p id="{id}-error" class="error" role="alert">{}</p><input id="{id}" name="who" required aria-invalid="true" aria-describedby="{id}-error">"#,
                    escape(e.message)
                );
            }
            _ => {
                let _ = write!(b, r#"<input id="{id}" name="who" required>"#);
            }
        }
        let _ = write!(
            b,
            r#"<label for="role-{n}">Role</label><select id="role-{n}" name="role"><option value="viewer">viewer</option><option value="member">member</option><option value="owner">owner</option></select>
<button type="submit">Add member</button></form>"#
        );
    }
    page("Organizations", true, &b)
}

/// The organizations the user can see, each with whether it may change it.
async fn load(c: &kube::Client) -> Result<Vec<(Organization, bool)>, UiError> {
    let mut orgs = Api::<Organization>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(UiError::Api)?
        .items;
    orgs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::with_capacity(orgs.len());
    for org in orgs {
        let name = org.metadata.name.clone().unwrap_or_default();
        let editable = crate::can::can(c, "update", "organizations", None, Some(&name)).await;
        out.push((org, editable));
    }
    Ok(out)
}

/// The page, or the sign-in or error page when it cannot be read.
async fn render(
    config: &UiConfig,
    headers: &HeaderMap,
    code: StatusCode,
    error: Option<AddError<'_>>,
) -> Response {
    let Some(token) = session::token(headers) else {
        return to_sign_in();
    };
    let loaded = match client(config, &token) {
        Ok(c) => load(&c).await,
        Err(e) => Err(e),
    };
    match loaded {
        Ok(orgs) => (code, Html(orgs_page(&orgs, error))).into_response(),
        Err(e) if unauthorized(&e) => to_sign_in(),
        Err(e) => error_page(StatusCode::BAD_GATEWAY, "Organizations", &e),
    }
}

/// `GET /ui/organizations`.
pub async fn organizations(State(config): State<UiConfig>, headers: HeaderMap) -> Response {
    render(&config, &headers, StatusCode::OK, None).await
}

/// The add and remove forms' fields.
#[derive(serde::Deserialize)]
pub struct MemberForm {
    kind: String,
    who: String,
    #[serde(default)]
    role: Option<String>,
}

/// What a membership change does.
enum Change {
    Add(OrgMember),
    Remove { group: bool, who: String },
}

/// `POST /ui/organizations/{org}/members`: adds a member, or changes the role of
/// one already listed.
pub async fn add_member(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path(org): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    let who = form.who.trim().to_owned();
    let refuse = |code, message: &str| {
        let (config, headers, org) = (config.clone(), headers.clone(), org.clone());
        let message = message.to_owned();
        async move {
            let error = AddError {
                org: &org,
                message: &message,
            };
            render(&config, &headers, code, Some(error)).await
        }
    };
    if who.is_empty() {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter the user's name or e-mail, or the group's name, as your identity provider gives it.",
        )
        .await;
    }
    let role = match form.role.as_deref() {
        Some("owner") => OrgRole::Owner,
        Some("member") => OrgRole::Member,
        Some("viewer") => OrgRole::Viewer,
        _ => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose a role: owner, member or viewer.",
            )
            .await
        }
    };
    let group = form.kind == "group";
    let member = OrgMember {
        name: (!group).then(|| who.clone()),
        group: group.then(|| who.clone()),
        role,
    };
    match change(&config, &headers, &org, Change::Add(member)).await {
        Ok(()) => Redirect::to("/ui/organizations").into_response(),
        Err((code, message)) => refuse(code, &message).await,
    }
}

/// `POST /ui/organizations/{org}/members/remove`: removes a member.
pub async fn remove_member(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path(org): Path<String>,
    Form(form): Form<MemberForm>,
) -> Response {
    let remove = Change::Remove {
        group: form.kind == "group",
        who: form.who.trim().to_owned(),
    };
    match change(&config, &headers, &org, remove).await {
        Ok(()) => Redirect::to("/ui/organizations").into_response(),
        Err((code, message)) => {
            let error = AddError {
                org: &org,
                message: &message,
            };
            render(&config, &headers, code, Some(error)).await
        }
    }
}

/// Reads the organization, applies `change` to its members and replaces it at
/// the version read; the refusal as a status and a message for the page.
async fn change(
    config: &UiConfig,
    headers: &HeaderMap,
    org: &str,
    change: Change,
) -> Result<(), (StatusCode, String)> {
    let Some(token) = session::token(headers) else {
        return Err((StatusCode::UNAUTHORIZED, "Sign in again.".into()));
    };
    let c = client(config, &token).map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let api = Api::<Organization>::all(c);
    let refusal = |e: kube::Error| {
        match e {
        kube::Error::Api(s) if s.code == 409 => (
            StatusCode::CONFLICT,
            "The organization changed while you were editing it; nothing was changed. Look at it again and retry.".to_owned(),
        ),
        kube::Error::Api(s) if s.code == 403 => (
            StatusCode::FORBIDDEN,
            format!("Your token may not change this organization's members: {}", s.message),
        ),
        kube::Error::Api(s) => (
            StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY),
            s.message,
        ),
        e => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
    };
    let mut current = api.get(org).await.map_err(refusal)?;
    let members = &mut current.spec.members;
    match change {
        Change::Add(member) => {
            let (kind, who) = identity(&member);
            let (kind, who) = (kind, who.to_owned());
            members.retain(|m| identity(m) != (kind, who.as_str()));
            members.push(member);
        }
        Change::Remove { group, who } => {
            let kind = if group { "group" } else { "user" };
            let before = members.len();
            members.retain(|m| identity(m) != (kind, who.as_str()));
            if members.len() == before {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("{kind} {who:?} is not a member of {org}; nothing was changed."),
                ));
            }
        }
    }
    current.metadata.managed_fields = None;
    api.replace(org, &PostParams::default(), &current)
        .await
        .map(|_| ())
        .map_err(refusal)
}
